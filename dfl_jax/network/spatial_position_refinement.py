"""Spatial position refinement, SPR (paper Sec. 3.3.2, Table 1 id 4).

The paper refines the joints' position features "to model local and global skeletal structure
priors like [52]" with "lightweight GCN and an attention module". We build, per layer:

  local:  a graph convolution on the two-hand skeleton (``skeleton.adjacency``) whose edge
          weights are learnable and row-normalised by a softmax over each joint's neighbours
          (semantic graph convolution, as GraFormer-style refiners use), ReLU, residual, LayerNorm;
  global: multi-head self-attention over the 42 joints, residual, LayerNorm.

Placement (the paper is ambiguous): the model applies SPR to J^p after the last iteration's
joints-image interaction, immediately before the final regression, as Fig. 2's caption says
("Finally, position features are refined (SPR) and used for the regression of poses").
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfl_jax.network import skeleton
from dfl_jax.network.attention import DecoupledAttention


class SkeletonGraphConv(nn.Module):
  """x' = softmax_row(M masked by A) @ (x W) + b, with M learnable over the skeleton's edges."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    adj = jnp.asarray(skeleton.adjacency())
    edge_logits = self.param("edge_logits", nn.initializers.zeros, adj.shape, jnp.float32)
    weights = jax.nn.softmax(jnp.where(adj > 0, edge_logits, -1e9), axis=-1)
    h = nn.Dense(self.features, dtype=self.dtype, name="dense")(x)
    return jnp.einsum("ij,bjc->bic", weights.astype(self.dtype), h)


class SpatialPositionRefinement(nn.Module):
  num_layers: int = 1
  num_heads: int = 8
  dtype: Any = jnp.float32
  attention_implementation: str = "auto"

  @nn.compact
  def __call__(self, j_p):
    """j_p: [B, 42, C_P] -> refined [B, 42, C_P]."""
    c = j_p.shape[-1]
    for i in range(self.num_layers):
      g = nn.relu(SkeletonGraphConv(c, self.dtype, name=f"gcn{i}_0")(j_p))
      g = SkeletonGraphConv(c, self.dtype, name=f"gcn{i}_1")(g)
      j_p = nn.LayerNorm(dtype=self.dtype, name=f"gcn{i}_norm")(j_p + g)
      att, _, _ = DecoupledAttention(self.num_heads, inner_a=c, dtype=self.dtype,
                                     implementation=self.attention_implementation,
                                     name=f"attention{i}")(j_p, None, j_p, None,
                                                           return_logits=False)
      j_p = nn.LayerNorm(dtype=self.dtype, name=f"attention{i}_norm")(j_p + att)
    return j_p
