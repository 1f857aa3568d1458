"""K, Im2Hands' input keypoint refinement network (its supplement, S.3.1), on DFL's 42 joints.

"For KptEnc, we use (1) an embedding layer to embed the index of each keypoint and (2) an MLP
composed of two fully-connected layers to encode the coordinate of each keypoint. We then
concatenate the index feature and the coordinate feature for each of the keypoints and set them
as node features in a two-hand skeleton graph. We then feed the skeleton graph to a graph
convolutional network (GCN) composed of four layers with residual connections. The updated
node features are directly used for multi-headed self-attention (MSA) between the patch-wise
image features, which are extracted by the same Vision Transformer encoder used in I. The
updated node features are then fed to an output keypoint coordinate regressor, which is an MLP
composed of two fully-connected layers - each of them followed by ReLU activation and dropout
of a rate of 0.01."

Choices where it is silent:

- Coordinates: the 42 camera-space joints (mm) relative to the midpoint of the two wrists, in
  units of 100 mm (``normalize_keypoints``); K returns the refined joints in mm, the input plus
  the regressed offset (a residual, so that an untrained K is close to the identity: the last
  layer starts at zero).
- The graph: ``skeleton.adjacency`` (the bones, self-loops, the two wrists joined), normalised
  D^-1/2 A D^-1/2; a layer is h + ReLU(LayerNorm(A h W)).
- MSA: one multi-head self-attention over the node tokens and the image's patch tokens together
  (projected to the node width); the node tokens' outputs are added to the node features. Only
  the nodes' outputs are read, so the patches' own outputs are not computed.
- The regressor: the supplement's two layers, each ReLU and dropout 0.01, then a linear layer
  to the 3 coordinates (a coordinate regressor cannot end in a ReLU).
- The image: ``image_features.ImageEncoderDecoder`` then ``PatchViT``, K's own weights.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dfl_jax.conventions import LEFT_WRIST, NUM_JOINTS, RIGHT_WRIST
from dfl_jax.network import image_features, skeleton

COORD_SCALE_MM = 100.0
DROPOUT = 0.01


def normalized_adjacency() -> np.ndarray:
  """[42, 42] D^-1/2 A D^-1/2 of the two-hand skeleton graph."""
  a = skeleton.adjacency(connect_wrists=True)
  d = 1.0 / np.sqrt(a.sum(1))
  return (a * d[:, None] * d[None, :]).astype(np.float32)


def keypoint_centre(joints_mm):
  """[B, 42, 3] -> [B, 1, 3]: the midpoint of the two wrists."""
  return 0.5 * (joints_mm[:, RIGHT_WRIST] + joints_mm[:, LEFT_WRIST])[:, None]


def normalize_keypoints(joints_mm):
  return (joints_mm - keypoint_centre(joints_mm)) / COORD_SCALE_MM


class GraphConvolution(nn.Module):
  """h + ReLU(LayerNorm(A h W)) over the 42 joints."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h):
    a = jnp.asarray(normalized_adjacency(), h.dtype)
    y = nn.Dense(h.shape[-1], use_bias=False, dtype=self.dtype, name="weight")(h)
    y = jnp.einsum("ij,bjc->bic", a, y)
    return h + nn.relu(nn.LayerNorm(dtype=self.dtype, name="norm")(y))


class KeypointRefinement(nn.Module):
  """K: (images [B, S, S, 3], joints [B, 42, 3] mm) -> refined joints [B, 42, 3] mm."""

  index_features: int = 32
  coord_features: int = 96
  gcn_layers: int = 4
  heads: int = 4
  regressor_hidden: int = 128
  image_stages: Sequence[int] = (3, 4, 6, 3)
  image_width: int = 64
  image_features_dim: int = 64
  vit_dim: int = 128
  vit_depth: int = 4
  vit_heads: int = 4
  patch: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, joints_mm, train: bool = False):
    b = joints_mm.shape[0]
    x = normalize_keypoints(joints_mm.astype(jnp.float32))
    index = nn.Embed(NUM_JOINTS, self.index_features, name="index_embedding")(
        jnp.broadcast_to(jnp.arange(NUM_JOINTS), (b, NUM_JOINTS)))
    c = nn.relu(nn.Dense(self.coord_features, name="coord1")(x))
    c = nn.relu(nn.Dense(self.coord_features, name="coord2")(c))
    h = jnp.concatenate([index, c], -1)                                  # KptEnc
    for i in range(self.gcn_layers):
      h = GraphConvolution(self.dtype, name=f"gcn{i + 1}")(h)
    _, patches = image_features.patch_tokens(self, images, train)
    width = h.shape[-1]
    tokens = jnp.concatenate([h, nn.Dense(width, name="patch_projection")(patches)], 1)
    h = h + nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype,
                                            name="image_attention")(
        nn.LayerNorm(name="norm_q")(h), nn.LayerNorm(name="norm_kv")(tokens))
    for i in range(2):
      h = nn.relu(nn.Dense(self.regressor_hidden, name=f"regressor{i + 1}")(h))
      h = nn.Dropout(DROPOUT, deterministic=not train)(h)
    offset = nn.Dense(3, kernel_init=nn.initializers.zeros, name="offset")(h)
    return joints_mm + offset.astype(jnp.float32) * COORD_SCALE_MM
