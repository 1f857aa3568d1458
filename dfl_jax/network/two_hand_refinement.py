"""R, Im2Hands' two-hand occupancy refinement network (its supplement, S.3.1; main paper Eq. 5-7).

From I's two initial shapes: each hand's iso-surface points (``point_cloud``: the grid points
nearest I's 0.5 level, then farthest point sampling to ``num_points``, 512 in the paper), turned
into a feature cloud (each point with the ImgEnc features where it projects into the image), and
encoded by one point cloud encoder shared by both sides, which are told apart by a label
concatenated to every point ([1, 0] left, [0, 1] right). A context encoder mixes the two hands'
latents and the image's (z_c = MLP(z_l, z_r, z_I), two layers with ReLU), and a point cloud
decoder gives each query's refined occupancy from the query, its initial occupancy, its own
hand's local features A_s and z_c.

PCEnc and PCDec follow AIR-Nets (Giebenhain and Goldluecke, 3DV 2021), whose exact sizes the
supplement leaves to that paper; here, each a field below:

- PCEnc: a dense embedding of every point's input, ``encoder_layers`` point-transformer layers
  (vector self-attention over each point's ``k`` nearest points with a learned encoding of the
  relative position, Zhao et al.'s layer, which AIR-Nets use), farthest point sampling to
  ``num_anchors`` anchors that gather their neighbours with the same kind of attention: the
  local features A_s at the anchors' positions; the global latent is the anchors' mean and max
  through a dense layer.
- PCDec: the query's embedding (its coordinates and, with ``init_occupancy_condition``, I's
  occupancy probability there) attends to its ``k`` nearest anchors (vector cross-attention with
  relative positions), is concatenated with z_c, and three dense layers give the logit.
- Coordinates: camera mm relative to the midpoint of the two wrists, / 100 mm (as K's).
- Table S1/S2 switches: ``init_occupancy_condition`` (off: "I + R - InitOccCond", the query
  without I's occupancy), ``feature_cloud`` (off: "- FeatureCloud", points without image
  features), ``context_latent`` (off: "- ContextLatent", each hand decoded with its own global
  latent instead of z_c).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfl_jax.network import image_features, initial_occupancy, point_cloud

SCALE_MM = 100.0
SIDE_LABELS = ((0.0, 1.0), (1.0, 0.0))   # per hand in the project's order: right, left


def gather(values, index):
  """values [B, N, C], index [B, M, k] -> [B, M, k, C]."""
  return jax.vmap(lambda v, i: v[i])(values, index)


class VectorAttention(nn.Module):
  """Point-transformer attention of queries over their k neighbours (Zhao et al., ICCV 2021):
  y_i = sum_j softmax_j(MLP(q_i - k_j + d_ij)) * (v_j + d_ij), d_ij = MLP(p_i - p_j)."""

  features: int

  @nn.compact
  def __call__(self, q_feat, q_pos, feats, pos, index):
    """q_feat [B, M, C], q_pos [B, M, 3], feats [B, N, C], pos [B, N, 3], index [B, M, k]."""
    c = self.features
    q = nn.Dense(c, name="query")(q_feat)
    k = gather(nn.Dense(c, name="key")(feats), index)
    v = gather(nn.Dense(c, name="value")(feats), index)
    rel = q_pos[:, :, None, :] - gather(pos, index)
    d = nn.Dense(c, name="position2")(nn.relu(nn.Dense(c, name="position1")(rel)))
    w = nn.Dense(c, name="weight2")(nn.relu(nn.Dense(c, name="weight1")(q[:, :, None] - k + d)))
    w = jax.nn.softmax(w, axis=2)
    return nn.Dense(c, name="out")(jnp.sum(w * (v + d), axis=2))


class PointCloudEncoder(nn.Module):
  """PCEnc: points [B, N, 3] and per-point inputs [B, N, D] -> (anchors [B, M, 3], A_s
  [B, M, C], z [B, C])."""

  features: int = 64
  encoder_layers: int = 2
  num_anchors: int = 128
  k: int = 16

  @nn.compact
  def __call__(self, pos, inputs):
    h = nn.Dense(self.features, name="embedding")(inputs)
    index = jax.vmap(lambda p: point_cloud.knn(p, p, self.k))(pos)
    for i in range(self.encoder_layers):
      h = h + VectorAttention(self.features, name=f"self_attention{i + 1}")(h, pos, h, pos,
                                                                            index)
      h = nn.LayerNorm(name=f"norm{i + 1}")(h)
    chosen = jax.vmap(lambda p: point_cloud.farthest_point_sampling(p, self.num_anchors))(pos)
    anchors = jax.vmap(lambda p, i: p[i])(pos, chosen)
    a_feat = jax.vmap(lambda f, i: f[i])(h, chosen)
    near = jax.vmap(lambda a, p: point_cloud.knn(a, p, self.k))(anchors, pos)
    local = a_feat + VectorAttention(self.features, name="anchor_attention")(
        a_feat, anchors, h, pos, near)
    local = nn.LayerNorm(name="anchor_norm")(local)
    z = nn.Dense(self.features, name="global")(
        jnp.concatenate([jnp.mean(local, 1), jnp.max(local, 1)], -1))
    return anchors, local, z


class PointCloudDecoder(nn.Module):
  """PCDec: queries [B, Q, D_q] at [B, Q, 3], one hand's anchors and A_s, a latent [B, C]
  -> logits [B, Q]."""

  features: int = 64
  k: int = 16

  @nn.compact
  def __call__(self, query_inputs, query_pos, anchors, local, latent):
    h = nn.relu(nn.Dense(self.features, name="embedding")(query_inputs))
    near = jax.vmap(lambda q, a: point_cloud.knn(q, a, min(self.k, a.shape[0])))(query_pos,
                                                                                  anchors)
    h = h + VectorAttention(self.features, name="cross_attention")(h, query_pos, local,
                                                                   anchors, near)
    h = jnp.concatenate([h, jnp.broadcast_to(latent[:, None], h.shape[:2] + latent.shape[-1:])],
                        -1)
    for i in range(3):
      h = nn.relu(nn.Dense(self.features, name=f"dense{i + 1}")(h))
    return nn.Dense(1, name="out")(h)[..., 0]


class TwoHandRefinement(nn.Module):
  """R: (images [B, S, S, 3], the crop's focal [B, 2] and princpt [B, 2], surface points
  [B, 2, P, 3] mm, centre [B, 3] mm, queries [B, 2, Q, 3] mm, initial occupancy probabilities
  [B, 2, Q]) -> refined logits [B, 2, Q]; hands in the project's order (right, left).

  The feature cloud and z_I come from R's own ImgEnc, the architecture of I's ("the same image
  encoder-decoder used in I"), which the pipeline starts from I's trained weights.
  """

  features: int = 64
  encoder_layers: int = 2
  num_anchors: int = 128
  k: int = 16
  init_occupancy_condition: bool = True
  feature_cloud: bool = True
  context_latent: bool = True
  image_stages: Sequence[int] = (3, 4, 6, 3)
  image_width: int = 64
  image_features_dim: int = 64
  image_latent: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, focal, princpt, surface, centre, queries, init_prob,
               train: bool = False):
    b, _, p, _ = surface.shape
    fmap, image_latent = image_features.ImageEncoderDecoder(
        self.image_stages, self.image_width, self.image_features_dim, self.image_latent,
        dtype=self.dtype, name="image_encoder")(images, train)
    pos = (surface - centre[:, None, None]) / SCALE_MM
    label = jnp.broadcast_to(jnp.asarray(SIDE_LABELS, jnp.float32)[None, :, None],
                             (b, 2, p, 2))
    parts = [pos, label]
    if self.feature_cloud:   # each point with the image features where it projects
      pixels = initial_occupancy.project(surface.reshape(b, 2 * p, 3), focal, princpt)
      stride = images.shape[1] / fmap.shape[1]
      sampled = initial_occupancy.sample_features(fmap, (pixels + 0.5) / stride - 0.5)
      parts.insert(1, sampled.reshape(b, 2, p, -1))
    inputs = jnp.concatenate(parts, -1)
    encoder = PointCloudEncoder(self.features, self.encoder_layers, self.num_anchors, self.k,
                                name="point_cloud_encoder")
    # One encoder for both sides: the hands as one batch of 2B clouds.
    anchors, local, z = encoder(pos.reshape(2 * b, p, 3), inputs.reshape(2 * b, p, -1))
    anchors = anchors.reshape(b, 2, *anchors.shape[1:])
    local = local.reshape(b, 2, *local.shape[1:])
    z = z.reshape(b, 2, -1)
    if self.context_latent:
      context = jnp.concatenate([z[:, 1], z[:, 0], image_latent], -1)    # (z_l, z_r, z_I)
      for i in range(2):
        context = nn.relu(nn.Dense(self.features, name=f"context{i + 1}")(context))
      latents = jnp.stack([context, context], 1)
    else:
      latents = z
    q_pos = (queries - centre[:, None, None]) / SCALE_MM
    q_in = jnp.concatenate([q_pos, init_prob[..., None]], -1) if (
        self.init_occupancy_condition) else q_pos
    decoder = PointCloudDecoder(self.features, self.k, name="point_cloud_decoder")
    n_q = queries.shape[2]
    logits = decoder(q_in.reshape(2 * b, n_q, -1), q_pos.reshape(2 * b, n_q, 3),
                     anchors.reshape(2 * b, *anchors.shape[2:]),
                     local.reshape(2 * b, *local.shape[2:]), latents.reshape(2 * b, -1))
    return logits.reshape(b, 2, n_q)
