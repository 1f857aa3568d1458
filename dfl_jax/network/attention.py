"""Decoupled multi-head attention (paper Sec. 3.3.3-3.3.4, supplement Eq. 1-3).

Each token carries two feature types: appearance ``a`` and position ``p``. The attention logits
are built from the relationship(s) selected by ``relation`` (paper Eq. 4):

    'appearance':  A = Q_a K_a^T / sqrt(d_a)                       (initialisation, M1)
    'position':    A = Q_p K_p^T / sqrt(d_p)                       (J-J, M2)
    'both':        A = Q_a K_a^T / sqrt(d_a) + Q_p K_p^T / sqrt(d_p)  (J-I, M3)

    'coupled':     A = (Q_a + Q_p)(K_a + K_p)^T / sqrt(d)          (Table 1 baselines)

and ONE softmax over the keys gives weights that aggregate each type's own values:
``out_a = O_a(softmax(A) V_a)``, ``out_p = O_p(softmax(A) V_p)``. The supplement shows this is
multi-head attention on the concatenated features with block-diagonal projections
(``tests/test_attention.py`` checks it numerically against Flax's MultiHeadDotProductAttention).

'coupled' is the non-decoupled attention of the Table 1 baselines: the position is added to the
queries and the keys after their projections, as DETR adds its positional embeddings, so the
logits hold the cross terms ``Q_a K_p^T + Q_p K_a^T`` that decoupling removes; values stay per
type (DETR's values carry no position either). It is multi-head attention on the concatenated
features with full query/key projections where DFL's are block-diagonal (supplement Eq. 1-3),
with exactly the parameters of 'both' (``d_a = d_p`` required).

With ``p=None`` the module is ordinary multi-head attention on one feature type (SPR's
self-attention over the joints).

Fused kernel. When the attention logits are not asked for (training, inference without figures),
the same numbers come from ONE call of ``jax.nn.dot_product_attention``: per head the query is
``[Q_a / sqrt(d_a), Q_p / sqrt(d_p)]``, the key ``[K_a, K_p]`` and the value ``[V_a, V_p]``
(concatenated on the head dimension, scale 1), so Q K^T is exactly the 'both' logits and the one
softmax aggregates both value types, which are split again afterwards. That is the memory-lean
flash-attention form on GPUs (cuDNN; XLA elsewhere), instead of materialising [B, H, Q, K]
logits per type. ``implementation`` picks it: 'explicit' (the einsum reference above), 'xla'
(the fused form through XLA), 'cudnn', or 'auto': cuDNN on an Ampere-or-newer GPU in bfloat16 or
float16 (cuDNN's flash attention has no float32 and no Volta kernels), XLA on other GPUs and on
TPUs, explicit on CPUs (see ``resolve_implementation``). A single relation (DFL's J-J uses
'position' alone) has a query/key head narrower than the value's [V_a, V_p]; its query and key
get zero columns up to the value's width, which leave Q K^T unchanged, so it takes the same one
call (on an H100, compiled: no [B, H, 42, 42] logits in float32 and no value transposes per J-J
layer). When 'auto' chose cuDNN and cuDNN refuses while tracing, the XLA form is used with a
warning. ``tests/test_attention.py`` checks the two paths agree.

Keys and values with batch 1 (the position features, which do not depend on the image) are
projected once and broadcast to the queries' batch, instead of being projected per image.
"""

import logging
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

RELATIONS = ("appearance", "position", "both", "coupled")
IMPLEMENTATIONS = ("auto", "explicit", "xla", "cudnn")


def resolve_implementation(implementation: str, dtype, device=None) -> str:
  """'auto' -> 'cudnn' on an sm_80+ GPU in bfloat16/float16, 'xla' on other GPUs and on TPUs
  (float16 on a TPU: 'explicit'), 'explicit' on CPUs; any other name is returned unchanged."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got "
                     f"{implementation!r}")
  if implementation != "auto":
    return implementation
  device = device or jax.devices()[0]
  half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  if device.platform == "gpu":
    try:
      major = int(str(getattr(device, "compute_capability", "0")).split(".")[0])
    except ValueError:
      major = 0
    return "cudnn" if half and major >= 8 else "xla"
  # XLA:CPU has no F16_F16_F32 dot (the fused form's float16 gradient fails there) and gains
  # nothing from the fused form (measured: 237 vs 236-239 ms a configs/tiny.py step); TPUs
  # have no float16 either.
  if device.platform == "tpu" and jnp.dtype(dtype) != jnp.float16:
    return "xla"
  return "explicit"


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
  'position': ... or None, 'coupled': ... or None}; out_p is None when the position stream is
  absent.
  """

  num_heads: int = 8
  inner_a: int = 256
  inner_p: int = 256
  relation: str = "both"
  dtype: Any = jnp.float32
  implementation: str = "auto"

  @nn.compact
  def __call__(self, q_a, q_p, kv_a, kv_p, mask: Optional[jax.Array] = None,
               return_logits: bool = True):
    """``return_logits=False`` allows the fused kernel; ``parts`` are both None when it runs
    (implementation 'explicit' still returns them)."""
    if self.relation not in RELATIONS:
      raise ValueError(f"relation must be one of {RELATIONS}, got {self.relation!r}")
    decoupled = q_p is not None
    coupled = decoupled and self.relation == "coupled"
    use_a = self.relation in ("appearance", "both", "coupled") or not decoupled
    use_p = decoupled and self.relation in ("position", "both", "coupled")
    h = self.num_heads
    if self.inner_a % h or (decoupled and self.inner_p % h):
      raise ValueError(f"inner widths {self.inner_a}/{self.inner_p} must divide by {h} heads")
    if coupled and self.inner_a != self.inner_p:
      raise ValueError(f"'coupled' adds the projected types: inner widths {self.inner_a} and "
                       f"{self.inner_p} must be equal")
    da, dp = self.inner_a // h, self.inner_p // h
    batch = q_a.shape[0]

    def project(x, width, name):  # a batch-1 input is projected once, then broadcast
      y = _proj(h, width, name, self.dtype)(x)
      return jnp.broadcast_to(y, (batch,) + y.shape[1:])

    q = {"a": _proj(h, da, "query_a", self.dtype)(q_a) if use_a else None,
         "p": _proj(h, dp, "query_p", self.dtype)(q_p) if use_p else None}
    k = {"a": project(kv_a, da, "key_a") if use_a else None,
         "p": project(kv_p, dp, "key_p") if use_p else None}
    v = {"a": project(kv_a, da, "value_a"),
         "p": project(kv_p, dp, "value_p") if decoupled else None}
    if coupled:  # the position added to queries and keys (DETR); one logit term
      q = {"a": q["a"] + q["p"], "p": None}
      k = {"a": k["a"] + k["p"], "p": None}
      use_p = False
    qk_width = da * use_a + dp * use_p
    v_width = da + dp * decoupled
    impl = resolve_implementation(self.implementation, self.dtype)
    parts = {"appearance": None, "position": None, "coupled": None}
    if return_logits or impl == "explicit":
      if coupled:
        parts["coupled"] = head_logits(q["a"], k["a"])
      elif use_a:
        parts["appearance"] = head_logits(q["a"], k["a"])
      if use_p:
        parts["position"] = head_logits(q["p"], k["p"])
      logits = sum(x for x in parts.values() if x is not None)
      if mask is not None:
        logits = jnp.where(mask, logits, -1e9)
      weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # [B, H, Q, K]
      agg = {t: jnp.einsum("bhqk,bkhd->bqhd", weights, x) for t, x in v.items() if x is not None}
    else:
      scaled = [(q[t] / jnp.sqrt(float(q[t].shape[-1]))).astype(self.dtype)
                for t in ("a", "p") if q[t] is not None]
      keys = [k[t].astype(self.dtype) for t in ("a", "p") if k[t] is not None]
      if qk_width < v_width:  # one relation: zero columns leave Q K^T as it is
        scaled.append(jnp.zeros(scaled[0].shape[:-1] + (v_width - qk_width,), self.dtype))
        keys.append(jnp.zeros(keys[0].shape[:-1] + (v_width - qk_width,), self.dtype))
      values = [v[t].astype(self.dtype) for t in ("a", "p") if v[t] is not None]
      args = (jnp.concatenate(scaled, axis=-1), jnp.concatenate(keys, axis=-1),
              jnp.concatenate(values, axis=-1))
      mask = None if mask is None else jnp.asarray(mask, bool)
      try:
        fused = jax.nn.dot_product_attention(*args, mask=mask, scale=1.0,
                                             implementation=None if impl == "xla" else impl)
      except (ValueError, RuntimeError, NotImplementedError) as e:
        if self.implementation != "auto" or impl != "cudnn":
          raise
        # 'auto' chose cuDNN, which refused (its checks run while tracing): use XLA's form.
        logging.warning("cuDNN attention refused (%s); using the XLA form", e)
        fused = jax.nn.dot_product_attention(*args, mask=mask, scale=1.0)
      agg = {"a": fused[..., :da], "p": fused[..., da:] if decoupled else None}
    out_a = _out(q_a.shape[-1], "out_a", self.dtype)(agg["a"])
    out_p = _out(q_p.shape[-1], "out_p", self.dtype)(agg["p"]) if decoupled else None
    return out_a, out_p, parts


def attention_maps(parts, mask=None):
  """Head-averaged attention maps for figures (paper Fig. 1 and 6).

  Returns {'fused': softmax(A_a + A_p), 'appearance': softmax(A_a), 'position': softmax(A_p)}
  (each [B, Q, K], averaged over heads), or {'fused': softmax(A)} for 'coupled' attention (a
  single term: the types cannot be told apart); a part that was not used is omitted. The
  per-type maps are each part's own softmax: the paper's Fig. 6 shows appearance and position
  maps that each localise the joint on their own.
  """
  present = {k: v for k, v in parts.items() if v is not None}
  maps = {}
  if present:
    maps["fused"] = jax.nn.softmax(sum(present.values()), axis=-1).mean(axis=1)
  for k, v in present.items():
    if k != "coupled":
      maps[k] = jax.nn.softmax(v, axis=-1).mean(axis=1)
  return maps
