"""Decoupled multi-head attention (paper Sec. 3.3.3-3.3.4, supplement Eq. 1-3).

Each token carries two feature types: appearance ``a`` and position ``p``. The attention logits
are built from the relationship(s) selected by ``relation`` (paper Eq. 4):

    'appearance':  A = Q_a K_a^T / sqrt(d_a)                       (initialisation, M1)
    'position':    A = Q_p K_p^T / sqrt(d_p)                       (J-J, M2)
    'both':        A = Q_a K_a^T / sqrt(d_a) + Q_p K_p^T / sqrt(d_p)  (J-I, M3)

and ONE softmax over the keys gives weights that aggregate each type's own values:
``out_a = O_a(softmax(A) V_a)``, ``out_p = O_p(softmax(A) V_p)``. The supplement shows this is
multi-head attention on the concatenated features with block-diagonal projections
(``tests/test_attention.py`` checks it numerically against Flax's MultiHeadDotProductAttention).

With ``p=None`` the module is ordinary multi-head attention on one (fused) feature type, which the
non-decoupled baselines of Table 1 use.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

RELATIONS = ("appearance", "position", "both")


def _proj(heads, head_dim, name, dtype):
  return nn.DenseGeneral((heads, head_dim), dtype=dtype, name=name)


def _out(features, name, dtype):
  return nn.DenseGeneral(features, axis=(-2, -1), dtype=dtype, name=name)


def head_logits(q, k):
  """q [B, Q, H, D], k [B, K, H, D] -> scaled logits [B, H, Q, K] in float32."""
  q = q.astype(jnp.float32) / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  return jnp.einsum("bqhd,bkhd->bhqk", q, k.astype(jnp.float32))


class DecoupledAttention(nn.Module):
  """Attention from queries (q_a, q_p) to keys/values (kv_a, kv_p).

  Attributes:
    num_heads: heads H; each head has an appearance and a position part.
    inner_a / inner_p: projected width of each type (split across heads).
    relation: which relationship(s) form the logits, see module docstring.
    out_a / out_p: output widths (default: the query widths).
  Returns (out_a, out_p, logits) with logits {'appearance': [B,H,Q,K] or None,
  'position': ... or None}; out_p is None when the position stream is absent.
  """

  num_heads: int = 8
  inner_a: int = 256
  inner_p: int = 256
  relation: str = "both"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q_a, q_p, kv_a, kv_p, mask: Optional[jax.Array] = None):
    if self.relation not in RELATIONS:
      raise ValueError(f"relation must be one of {RELATIONS}, got {self.relation!r}")
    decoupled = q_p is not None
    use_a = self.relation in ("appearance", "both") or not decoupled
    use_p = decoupled and self.relation in ("position", "both")
    h = self.num_heads
    if self.inner_a % h or (decoupled and self.inner_p % h):
      raise ValueError(f"inner widths {self.inner_a}/{self.inner_p} must divide by {h} heads")
    da, dp = self.inner_a // h, self.inner_p // h

    parts = {"appearance": None, "position": None}
    if use_a:
      parts["appearance"] = head_logits(_proj(h, da, "query_a", self.dtype)(q_a),
                                        _proj(h, da, "key_a", self.dtype)(kv_a))
    if use_p:
      parts["position"] = head_logits(_proj(h, dp, "query_p", self.dtype)(q_p),
                                      _proj(h, dp, "key_p", self.dtype)(kv_p))
    logits = sum(v for v in parts.values() if v is not None)
    if mask is not None:
      logits = jnp.where(mask, logits, -1e9)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # [B, H, Q, K]

    def aggregate(kv, width, inner, suffix):
      v = _proj(h, inner // h, f"value_{suffix}", self.dtype)(kv)
      return _out(width, f"out_{suffix}", self.dtype)(jnp.einsum("bhqk,bkhd->bqhd", weights, v))

    out_a = aggregate(kv_a, q_a.shape[-1], self.inner_a, "a")
    out_p = aggregate(kv_p, q_p.shape[-1], self.inner_p, "p") if decoupled else None
    return out_a, out_p, parts


def attention_maps(parts, mask=None):
  """Head-averaged attention maps for figures (paper Fig. 1 and 6).

  Returns {'fused': softmax(A_a + A_p), 'appearance': softmax(A_a), 'position': softmax(A_p)}
  (each [B, Q, K], averaged over heads); a part that was not used is omitted. The
  per-type maps are each part's own softmax: the paper's Fig. 6 shows appearance and position
  maps that each localise the joint on their own.
  """
  present = {k: v for k, v in parts.items() if v is not None}
  maps = {}
  if present:
    maps["fused"] = jax.nn.softmax(sum(present.values()), axis=-1).mean(axis=1)
  for k, v in present.items():
    maps[k] = jax.nn.softmax(v, axis=-1).mean(axis=1)
  return maps
