"""The decoupling heterogeneous feature decoder (paper Sec. 3.3) and its non-decoupled baselines.

Decoupled decoder (DFL), N scales coarse to fine, T iterations:
  1. Initialisation (Eq. 1-2): learnable queries Q^a attend to the coarsest appearance features
     only; the one attention map A^a_0 aggregates J^a_0 = A F^a_0 and J^p_0 = A F^p_0.
  2. Iteration t = 1..T:
       J-J (Sec. 3.3.2): self-attention among the 2J joints whose logits come from the position
         features; each type aggregates its own values. Residual, LayerNorm, FFN per type.
       J-I (Sec. 3.3.3, Eq. 3): decoupled attention to the image at scale s(t) with
         logits Q_a K_a^T/sqrt(d_a) + Q_p K_p^T/sqrt(d_p), one softmax, each type aggregates its
         own values. Residual, LayerNorm, FFN per type.
       An intermediate 2.5D head on J^p (supervised on x, y: Sec. 3.4.1).
  3. SPR on J^p after the last iteration, then the final 2.5D regression from J^p only.

Choices the paper leaves open (written here so they are findable):
  * Pre-norm transformer sub-layers (x + Attn(LN(x)), x + FFN(LN(x)), a LayerNorm before every
    head). With DETR's post-norm (``pre_norm=False``) we measured the joints losing their
    identity: the share of feature variance that differs between joints fell from 0.33 after the
    initialisation to 0.02 after three iterations, and to 0 with training, so all 42 joints were
    predicted at one point. Only the initialisation's attention tells the joints apart; the
    pre-norm residual stream carries that through every iteration.
  * The attention widths (``attn_dim`` per type, ``num_heads`` heads) and the FFN width
    (``dim_ff``) are ours, sized so that the paper configuration has the paper's 42M
    parameters (``python -m dfl_jax.summary``).
  * Scale schedule: the initialisation uses scale 0 (coarsest); iteration t uses scale
    1 + (t - 1) mod (N - 1), so T = N - 1 sweeps coarse to fine once and T >= N (Table 3's 4 and
    5 iterations) starts the sweep again. ``multi_scale=False`` (supplement Table 1) uses the finest
    scale for every stage.
  * The initial queries are used as in Eq. 1, without projections; queries are N(0, 1).
  * Regression heads output (Dense(x) + 0.5) * (W, H, 256): the network regresses coordinates
    normalised to the crop and the 256-unit depth range, centred at the crop centre, from a
    small initial kernel so untrained predictions sit near the centre.

Baselines of Table 1 (no decoupling). Ids 2-4 are this decoder with ``jj_relation`` and
``ji_relation`` set to 'coupled' (``attention.py``): the position is added to the queries and
keys of every J-J and J-I attention after their projections, as DETR adds its positional
embeddings, so the relationships mix the two types (cross terms ``Q_a K_p^T + Q_p K_a^T``)
instead of being computed per type and summed. Everything else is DFL's: the initialisation
stage (Eq. 1-2, which has no projections to couple), the scale schedule, T, the per-type value
streams, SPR, the heads (on J^p) and the losses; id 2 drops J-J and SPR, id 3 drops SPR
(``use_jj``, ``use_spr``). configs/ablation.py lists each row's fields. ``PooledRegressor``
regresses from average-pooled encoder features (id 1).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfl_jax.conventions import DEPTH_UNITS, NUM_JOINTS
from dfl_jax.network.attention import DecoupledAttention, attention_maps
from dfl_jax.network.spatial_position_refinement import SpatialPositionRefinement

# Regression heads start near the crop centre: with a default-scale kernel the untrained
# outputs would spread over +-1 crop (+-256 depth units) and dominate the first steps.
HEAD_INIT = nn.initializers.variance_scaling(1e-3, "fan_in", "normal")


def scale_schedule(num_scales: int, num_iterations: int, multi_scale: bool = True):
  """Returns (initialisation scale, [scale of iteration 1..T]) as indices coarse (0) to fine."""
  if not multi_scale or num_scales == 1:
    return num_scales - 1, [num_scales - 1] * num_iterations
  return 0, [1 + (t - 1) % (num_scales - 1) for t in range(1, num_iterations + 1)]


class FeedForward(nn.Module):
  dim_ff: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(nn.Dense(self.dim_ff, dtype=self.dtype, name="dense0")(x))
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="dense1")(y)


class Residual(nn.Module):
  """A sub-layer's residual and FFN.

  Pre-norm (default): x <- x + Dropout(update), x <- x + Dropout(FFN(LayerNorm(x))), where the
  caller computed ``update`` from LayerNorm(x) (``sublayer_input``).
  Post-norm (DETR): x <- LayerNorm(x + Dropout(update)), x <- LayerNorm(x + Dropout(FFN(x))).
  """

  dim_ff: int
  dropout: float = 0.0
  pre_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, update, train: bool):
    drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
    ffn = FeedForward(self.dim_ff, self.dropout, self.dtype, name="ffn")
    if self.pre_norm:
      x = x + drop(update)
      return x + drop(ffn(nn.LayerNorm(dtype=self.dtype, name="norm1")(x), train))
    x = nn.LayerNorm(dtype=self.dtype, name="norm0")(x + drop(update))
    return nn.LayerNorm(dtype=self.dtype, name="norm1")(x + drop(ffn(x, train)))


def sublayer_input(x, name, pre_norm):
  """What a sub-layer's attention reads: LayerNorm(x) in pre-norm, x itself in post-norm."""
  return nn.LayerNorm(dtype=x.dtype, name=name)(x) if pre_norm else x


class InitialAggregation(nn.Module):
  """Eq. (1)-(2): J^a_0 = A F^a, J^p_0 = A F^p with A = softmax(Q F^T / sqrt(C)).

  F^p may have batch 1 (position features do not depend on the image; see DFL).

  ``relation`` selects what the learnable queries match (Table 2, 'Initialization'):
  'appearance' (DFL: Q^a against F^a), 'position' (Q^p against F^p) or 'both' (summed logits).
  """

  relation: str = "appearance"
  num_joints: int = NUM_JOINTS

  @nn.compact
  def __call__(self, f_a, f_p):
    logits = 0.0
    init = nn.initializers.normal(1.0)
    if self.relation in ("appearance", "both"):
      q = self.param("query_a", init, (self.num_joints, f_a.shape[-1]), jnp.float32)
      logits += jnp.einsum("jc,bkc->bjk", q, f_a.astype(jnp.float32)) / jnp.sqrt(f_a.shape[-1])
    if self.relation in ("position", "both"):  # f_p may have batch 1: broadcast by the sum
      q = self.param("query_p", init, (self.num_joints, f_p.shape[-1]), jnp.float32)
      logits += jnp.einsum("jc,bkc->bjk", q, f_p.astype(jnp.float32)) / jnp.sqrt(f_p.shape[-1])
      logits = jnp.broadcast_to(logits, (f_a.shape[0],) + logits.shape[1:])
    if self.relation not in ("appearance", "position", "both"):
      raise ValueError(f"init_relation must be appearance|position|both, got {self.relation!r} "
                       "(the initialisation has no projections to couple; see the module doc)")
    weights = nn.softmax(logits, axis=-1).astype(f_a.dtype)  # [B, 2J, K]
    j_p = (jnp.einsum("bjk,kc->bjc", weights, f_p[0]) if f_p.shape[0] == 1 != f_a.shape[0]
           else jnp.einsum("bjk,bkc->bjc", weights, f_p))
    return jnp.einsum("bjk,bkc->bjc", weights, f_a), j_p, weights


class JointHead(nn.Module):
  """Per-joint 2.5D regression: (Dense(x) + 0.5) * (W, H, 256), see module docstring."""

  input_hw: Sequence[int]

  @nn.compact
  def __call__(self, x):
    scale = jnp.asarray([self.input_hw[1], self.input_hw[0], DEPTH_UNITS], jnp.float32)
    return (nn.Dense(3, dtype=jnp.float32, kernel_init=HEAD_INIT, name="dense")(
        x.astype(jnp.float32)) + 0.5) * scale


def _flatten(x):
  return x.reshape(x.shape[0], -1, x.shape[-1])


def _select(j_a, j_p, which):
  if which == "position":
    return j_p
  if which == "appearance":
    return j_a
  if which == "both":
    return jnp.concatenate([j_a, j_p.astype(j_a.dtype)], axis=-1)
  raise ValueError(f"regression_features must be appearance|position|both, got {which!r}")


class DecoupledDecoder(nn.Module):
  """DFL's decoder. Inputs: per scale (coarse to fine) F^a [B,H,W,C_a] and F^p [B,H,W,C_p]."""

  num_iterations: int = 3
  num_heads: int = 8
  attn_dim: int = 256
  dim_ff: int = 1024
  dropout: float = 0.0
  multi_scale: bool = True
  use_jj: bool = True
  use_spr: bool = True
  spr_layers: int = 1
  init_relation: str = "appearance"
  jj_relation: str = "position"
  ji_relation: str = "both"
  regression_features: str = "position"
  pre_norm: bool = True
  attention_implementation: str = "auto"   # attention.py: auto | explicit | xla | cudnn
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f_a, f_p, input_hw, train: bool = False, return_attention: bool = False):
    pre = lambda x, name: sublayer_input(x, name, self.pre_norm)
    res = lambda name: Residual(self.dim_ff, self.dropout, self.pre_norm, self.dtype, name=name)
    init_scale, scales = scale_schedule(len(f_a), self.num_iterations, self.multi_scale)
    attn = {"init": None, "jj": [], "ji": []}
    j_a, j_p, a0 = InitialAggregation(self.init_relation, name="init")(
        _flatten(f_a[init_scale]), _flatten(f_p[init_scale]))
    attn["init"] = a0.reshape(a0.shape[:2] + f_a[init_scale].shape[1:3])
    iterations = []
    for t, s in enumerate(scales):
      if self.use_jj:  # J-J: relationships among joints from position features (Sec. 3.3.2).
        x_a, x_p = pre(j_a, f"jj{t}_norm_a"), pre(j_p, f"jj{t}_norm_p")
        u_a, u_p, parts = DecoupledAttention(
            self.num_heads, self.attn_dim, self.attn_dim, self.jj_relation, self.dtype,
            self.attention_implementation, name=f"jj{t}")(
                x_a, x_p, x_a, x_p, return_logits=return_attention)
        j_a, j_p = res(f"jj{t}_a")(j_a, u_a, train), res(f"jj{t}_p")(j_p, u_p, train)
        if return_attention:
          attn["jj"].append(attention_maps(parts))
      # J-I: decoupled joints-image attention at scale s (Sec. 3.3.3, supplement Eq. 1-3).
      u_a, u_p, parts = DecoupledAttention(
          self.num_heads, self.attn_dim, self.attn_dim, self.ji_relation, self.dtype,
          self.attention_implementation, name=f"ji{t}")(
              pre(j_a, f"ji{t}_norm_a"), pre(j_p, f"ji{t}_norm_p"), _flatten(f_a[s]),
              _flatten(f_p[s]), return_logits=return_attention)
      j_a, j_p = res(f"ji{t}_a")(j_a, u_a, train), res(f"ji{t}_p")(j_p, u_p, train)
      if return_attention:
        hw = f_a[s].shape[1:3]
        attn["ji"].append({k: v.reshape(v.shape[:2] + hw)
                           for k, v in attention_maps(parts).items()})
      iterations.append(JointHead(input_hw, name=f"head{t}")(_select(
          pre(j_a, f"head{t}_norm_a"), pre(j_p, f"head{t}_norm_p"), self.regression_features)))
    j_a, j_p = pre(j_a, "final_norm_a"), pre(j_p, "final_norm_p")
    if self.use_spr:
      j_p = SpatialPositionRefinement(self.spr_layers, self.num_heads, self.dtype,
                                      self.attention_implementation, name="spr")(j_p)
    joints = JointHead(input_hw, name="head_final")(_select(j_a, j_p, self.regression_features))
    out = {"joints": joints, "joints_iterations": _stack(iterations, joints),
           "appearance_features": j_a, "position_features": j_p}
    if return_attention:
      out["attention"] = attn
    return out


class PooledRegressor(nn.Module):
  """Table 1 id 1: 2.5D joints from the average-pooled encoder features of every scale."""

  hidden: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f_a, f_p, input_hw, train: bool = False, return_attention: bool = False):
    del f_p, train
    pooled = jnp.concatenate([x.mean(axis=(1, 2)) for x in f_a], axis=-1)
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(pooled))
    scale = jnp.asarray([input_hw[1], input_hw[0], DEPTH_UNITS], jnp.float32)
    joints = (nn.Dense(NUM_JOINTS * 3, dtype=jnp.float32, kernel_init=HEAD_INIT,
                       name="head_final")(
        h.astype(jnp.float32)).reshape(-1, NUM_JOINTS, 3) + 0.5) * scale
    out = {"joints": joints, "joints_iterations": _stack([], joints), "pooled_features": h}
    if return_attention:
      out["attention"] = {"jj": [], "ji": []}
    return out


def _stack(iterations, like):
  if not iterations:
    return jnp.zeros((like.shape[0], 0) + like.shape[1:], like.dtype)
  return jnp.stack(iterations, axis=1)
