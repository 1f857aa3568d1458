"""I, Im2Hands' initial hand occupancy network: HALO's part occupancy, conditioned on the image.

Per hand, the occupancy of a query point x follows HALO (Karunratanakul et al., 3DV 2021): the
keypoints give 16 part frames (``hand_frames``: the palm and the 15 phalanges), x is read in
every part's frame, and one small MLP per part (the "part occupancy functions") maps that to an
occupancy logit; the hand's logit is the largest of its parts' (a union of parts). Im2Hands adds
the image (its supplement, S.3.1; main paper Eq. 3): a query-image attention feature

    f(x) = MSA([PosEnc(x); ViT(ImgEnc(I))])[query token]

(PosEnc a shared two-layer MLP with ReLU and dropout 0.01; MSA two heads over the query token
and the 8x8 patch tokens of ``image_features``), "concatenated with the features extracted by
HALO encoder after the first layer in the part occupancy functions".

Choices where the supplement and HALO leave room, each a field below:

- A part function's input: the query in that part's frame, a per-part projection of the query in
  all 16 frames (NASA's and HALO's pose-dependent code, ``pose_code`` numbers per part), and the
  part's bone length, all in units of 100 mm; layers of ``hidden`` units (ReLU), the image
  feature concatenated after the first.
- Both hands with one set of weights: a left hand and its queries are mirrored (x -> -x) into a
  right one for the part functions; the image feature is computed where the query really is.
- PosEnc's input: where the query projects into the crop, (u, v) scaled to [-1, 1], and its
  depth relative to its hand's wrist / 100 mm: the image tokens live in the crop, so the
  projection is what relates a query to them (the crop's camera: ``focal``, ``princpt`` in crop
  pixels).
- The Table S1/S2 switches: ``image_conditioning=False`` is HALO alone ("I - ImageCond");
  ``query_image_attention=False`` replaces the attention by pixel-aligned features (PIFu: ImgEnc
  features sampled bilinearly at the projection, concatenated with PosEnc(x) and projected to
  the same width; "I - QueryImageAtt").
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfl_jax.conventions import LEFT, RIGHT, RIGHT_WRIST
from dfl_jax.network import hand_frames, image_features

SCALE_MM = 100.0
DROPOUT = 0.01


def project(points_mm, focal, princpt):
  """Camera points [B, N, 3] -> crop pixels [B, N, 2] with the crop's pinhole camera."""
  z = jnp.maximum(points_mm[..., 2:3], 1.0)
  return points_mm[..., :2] / z * focal[:, None, :] + princpt[:, None, :]


def _sample(feature_map, cells):
  """[h, w, C] at cell coordinates [N, 2] (x, y), bilinear, zero outside."""
  h, w, _ = feature_map.shape
  x, y = cells[:, 0], cells[:, 1]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  out = 0.0
  for dx in (0, 1):
    for dy in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      wgt = (1 - jnp.abs(x - xi)) * (1 - jnp.abs(y - yi))
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      v = feature_map[jnp.clip(yi, 0, h - 1).astype(jnp.int32),
                      jnp.clip(xi, 0, w - 1).astype(jnp.int32)]
      out = out + v * (wgt * inside)[:, None]
  return out


class QueryImageAttention(nn.Module):
  """Multi-head self-attention over [query; patches], read at the query token, for many queries
  at once: each query attends to itself and to the P patch tokens (never to other queries), so
  the patches' keys and values are computed once per image. Exactly the query row of
  ``nn.MultiHeadDotProductAttention`` over the concatenated tokens (tested)."""

  heads: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries, patches):
    """queries [B, M, F], patches [B, P, F] -> [B, M, F]."""
    f = queries.shape[-1]
    dh = f // self.heads
    dense = lambda name: nn.DenseGeneral((self.heads, dh), dtype=self.dtype, name=name)
    q = dense("query")(queries)
    key, value = dense("key"), dense("value")
    k_self, v_self = key(queries), value(queries)
    k_p, v_p = key(patches), value(patches)
    scale = 1.0 / jnp.sqrt(jnp.asarray(dh, jnp.float32))
    l_self = jnp.sum(q * k_self, -1) * scale                        # [B, M, H]
    l_p = jnp.einsum("bmhd,bphd->bmhp", q, k_p) * scale             # [B, M, H, P]
    w = jax.nn.softmax(jnp.concatenate([l_self[..., None], l_p], -1).astype(jnp.float32), -1)
    out = w[..., :1] * v_self + jnp.einsum("bmhp,bphd->bmhd", w[..., 1:].astype(v_p.dtype), v_p)
    return nn.DenseGeneral(f, axis=(-2, -1), dtype=self.dtype, name="out")(out)


class PosEnc(nn.Module):
  """The shared query positional embedding: two dense layers, each ReLU and dropout 0.01."""

  features: int = 64

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i in range(2):
      x = nn.relu(nn.Dense(self.features, name=f"dense{i + 1}")(x))
      x = nn.Dropout(DROPOUT, deterministic=not train)(x)
    return x


class PartOccupancy(nn.Module):
  """The 16 part occupancy functions: [..., 16, D_in] (and image features [..., F] or None) ->
  part logits [..., 16]; one MLP per part (weights stacked on a leading axis of 16).

  The layers run with the part axis leading ([16, M, D]: one batched matrix product per layer,
  batch = part): with the part axis beside the features, XLA transposes every activation around
  each product and its gradient, which made I's training step 2.5x slower on a CPU."""

  hidden: int = 64
  layers: int = 4

  @nn.compact
  def __call__(self, part_inputs, image_feature=None):
    def dense(x, name, features):
      d_in = x.shape[-1]
      kernel = self.param(f"{name}_kernel", nn.initializers.variance_scaling(
          1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)),
          (hand_frames.NUM_PARTS, d_in, features))
      bias = self.param(f"{name}_bias", nn.initializers.zeros,
                        (hand_frames.NUM_PARTS, features))
      return jnp.einsum("pmi,pio->pmo", x, kernel) + bias[:, None]

    lead = part_inputs.shape[:-2]
    parts, d_in = part_inputs.shape[-2:]
    x = jnp.moveaxis(part_inputs.reshape(-1, parts, d_in), 1, 0)          # [16, M, D_in]
    x = nn.relu(dense(x, "layer1", self.hidden))
    if image_feature is not None:
      f = image_feature.reshape(1, -1, image_feature.shape[-1])
      x = jnp.concatenate([x, jnp.broadcast_to(f, x.shape[:2] + f.shape[-1:])], -1)
    for i in range(1, self.layers):
      x = nn.relu(dense(x, f"layer{i + 1}", self.hidden))
    return jnp.moveaxis(dense(x, "out", 1)[..., 0], 0, -1).reshape(lead + (parts,))


class InitialOccupancy(nn.Module):
  """I: (images [B, S, S, 3], joints [B, 42, 3] mm, focal [B, 2], princpt [B, 2] crop pixels,
  queries [B, 2, N, 3] mm per hand, right then left) -> dict(logits [B, 2, N], part_logits
  [B, 2, N, 16])."""

  hidden: int = 64
  layers: int = 4
  pose_code: int = 4
  image_conditioning: bool = True
  query_image_attention: bool = True
  attention_features: int = 64
  heads: int = 2
  image_stages: Sequence[int] = (3, 4, 6, 3)
  image_width: int = 64
  image_features_dim: int = 64
  vit_dim: int = 128
  vit_depth: int = 4
  vit_heads: int = 4
  patch: int = 8
  dtype: Any = jnp.float32

  def image_feature(self, images, queries, wrists, focal, princpt, train):
    """[B, 2, N, attention_features] for the queries (called inside ``__call__``)."""
    b, _, n, _ = queries.shape
    size = images.shape[1]
    flat = queries.reshape(b, 2 * n, 3)
    pixels = project(flat, focal, princpt)
    depth = (flat[..., 2] - jnp.repeat(wrists[..., 2], n, axis=1)) / SCALE_MM
    position = jnp.concatenate([pixels / size * 2.0 - 1.0, depth[..., None]], -1)
    pos = PosEnc(self.attention_features, name="pos_enc")(position, train)
    fmap, patches = image_features.patch_tokens(self, images, train,
                                                vit=self.query_image_attention)
    if self.query_image_attention:
      patches = nn.Dense(self.attention_features, name="patch_projection")(patches)
      feature = pos + QueryImageAttention(self.heads, self.dtype,
                                          name="query_image_attention")(pos, patches)
    else:
      stride = size / fmap.shape[1]
      sampled = sample_features(fmap, (pixels + 0.5) / stride - 0.5)
      feature = nn.Dense(self.attention_features, name="pixel_aligned")(
          jnp.concatenate([sampled, pos], -1))
    return feature.reshape(b, 2, n, -1)

  @nn.compact
  def __call__(self, images, joints, focal, princpt, queries, train: bool = False):
    b, _, n, _ = queries.shape
    hands = jnp.stack([joints[:, RIGHT], joints[:, LEFT]], 1).astype(jnp.float32)  # [B,2,21,3]
    left = jnp.broadcast_to(jnp.array([False, True]), (b, 2))
    canon = hand_frames.mirror(hands, left)
    canon_q = hand_frames.mirror(queries.astype(jnp.float32), left)
    origins, rotations, lengths = hand_frames.part_frames(canon)
    local = hand_frames.local_coordinates(canon_q, origins, rotations) / SCALE_MM  # [B,2,N,16,3]
    pose = nn.Dense(hand_frames.NUM_PARTS * self.pose_code, name="pose_projection")(
        local.reshape(b, 2, n, -1)).reshape(b, 2, n, hand_frames.NUM_PARTS, self.pose_code)
    bone = jnp.broadcast_to((lengths / SCALE_MM)[:, :, None, :, None],
                            (b, 2, n, hand_frames.NUM_PARTS, 1))
    inputs = jnp.concatenate([local, pose, bone], -1)
    feature = None
    if self.image_conditioning:
      feature = self.image_feature(images, queries.astype(jnp.float32),
                                   hands[:, :, RIGHT_WRIST], focal, princpt, train)
    parts = PartOccupancy(self.hidden, self.layers, name="part_occupancy")(inputs, feature)
    return {"logits": jnp.max(parts, -1), "part_logits": parts}


def sample_features(features, cells):
  """features [B, h, w, C] at cell coordinates [B, N, 2] (x, y): bilinear, zero outside."""
  return jax.vmap(_sample)(features, cells)
