"""The cross-domain dual-modality network: RGB and depth-map encoders joined by depth attention.

The cross-domain dual-modality system (its supplement, Sec. A, Fig. a and b) pre-trains an RGB
encoder E_R beside a depth-map encoder E_D. Both are ResNet-50s (``resnet.py``); at the end of
each downsampling stage (the stem and the four layers: C = 64, 256, 512, 1024, 2048, Fig. b)
an attention module (Fig. a) computes attention weights from the depth features f^D and applies
them to f^D (the self-attended features, which continue through E_D) and to the RGB features
f^R of the attention-fused stream (which continue through E_R). E_R therefore runs two streams
with one set of weights: the original RGB stream (s_R at its end, the only one that needs no
depth map, hence the one used after pre-training) and the attention-fused stream (s_F). E_D
outputs the self-attended s_D.

Choices where the supplement is silent, each a field of the modules below:

- Fig. a's module (``DepthAttention``): a spatial attention map A = sigmoid(conv1x1(relu(
  conv3x3(f, C / 8)))) of shape [H, W, 1], applied as f * A. A spatial map is what Fig. f shows
  ("attention weights from depth maps, and attention weights on RGB images").
- The attention source (Table a): ``attention_source='depth'`` (the system) computes A from f^D;
  ``'rgb'`` (the ablation) computes the fused stream's A from its own RGB features with a
  module of its own, while E_D keeps its depth self-attention.
- The stop-gradient (Sec. D, Table b): with ``stop_gradient=True`` the fused stream multiplies
  by stop_gradient(A), so the RGB features' loss cannot reshape the attention, which learns from
  the depth stream alone.
- E_D's input: two channels, the depth relative to the median depth of the crop's hand pixels
  in units of 200 mm, and the hand mask (1 where there is depth); E_R's input is E_R's own
  normalisation of RGB pixels (``resnet.py``).
- The decoder (``MultiModalDecoder``) is shared by the three latent features: from the stride-32
  features, upsampled to stride 4, the depth map (relative depth, as E_D's input), the 33-class
  part segmentation (whose non-zero classes are the hand mask of Fig. f), 2D heatmaps of the 42
  joints (read by soft-argmax) and, from the pooled features, the 3D joints relative to each
  hand's wrist (in units of 100 mm). Two hands, 42 joints, where the supplement's data hold one.
- The contrastive head (``ProjectionHead``): pooled features through a two-layer MLP to
  ``2 * projection_points`` numbers, read as 2-D points so that the geometric augmentation can be
  undone on them (``training/contrastive.py``).

Parameter names: E_R is ``backbone`` with exactly ``resnet.ResNet``'s tree, so that its weights
load into DFL as an encoder file (``config.train.encoder_init``, module ``backbone``).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfl_jax.conventions import NUM_JOINTS
from dfl_jax.network import resnet

STAGE_CHANNELS = (64, 256, 512, 1024, 2048)   # Fig. b, for width 64
DEPTH_SCALE_MM = 200.0
POSE_SCALE_MM = 100.0
ATTENTION_SOURCES = ("depth", "rgb")


def depth_input(depth_mm):
  """E_D's input [B, H, W, 2] from depth maps [B, H, W] in mm (0 where none): the depth
  relative to the median of the non-zero pixels, / 200 mm, and the hand mask."""
  depth_mm = depth_mm.astype(jnp.float32)
  mask = (depth_mm > 0).astype(jnp.float32)
  flat = jnp.where(mask > 0, depth_mm, jnp.nan).reshape(depth_mm.shape[0], -1)
  median = jnp.nan_to_num(jnp.nanmedian(flat, axis=1), nan=0.0)[:, None, None]
  relative = jnp.where(mask > 0, (depth_mm - median) / DEPTH_SCALE_MM, 0.0)
  return jnp.stack([relative, mask], axis=-1)


class DepthAttention(nn.Module):
  """Fig. a: attention weights A [B, H, W, 1] in (0, 1) computed from one feature map."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features):
    hidden = max(features.shape[-1] // 8, 8)
    x = nn.Conv(hidden, (3, 3), padding=1, dtype=self.dtype, name="reduce")(features)
    x = nn.Conv(1, (1, 1), dtype=self.dtype, name="weights")(nn.relu(x))
    return nn.sigmoid(x.astype(jnp.float32))


class StagedResNet(nn.Module):
  """``resnet.ResNet`` one downsampling stage at a time, with the same parameter names.

  ``__call__(x, stage)`` runs ``resnet.stage``: stage 0 is the stem (C = 64 at width 64), stages
  1-4 are layer1..layer4. ``rgb_input`` True takes RGB pixels (normalised as ``resnet.ResNet``
  does), False takes features as they are (E_D's depth input). Calling it several times shares
  its weights: E_R's two streams.
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  rgb_input: bool = True
  trainable_bn: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, stage: int, train: bool = False):
    return resnet.stage(x, stage, self.stage_sizes, self.width, self.trainable_bn,
                        self.bn_axis_name, self.dtype, train, rgb_input=self.rgb_input)


class DualModalityEncoder(nn.Module):
  """E_R and E_D with Fig. a's attention after each of their 5 downsampling stages (Fig. b).

  Returns dict(s_R, s_F, s_D) of stride-32 features [B, H/32, W/32, 8 * width] and
  ``attention`` (the 5 maps that weighted the fused stream, for figures); without a depth map
  (``depth=None``) only s_R, the plain RGB stream, is computed.
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  attention_source: str = "depth"
  stop_gradient: bool = True
  trainable_bn: bool = True
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, depth_mm=None, train: bool = False):
    if self.attention_source not in ATTENTION_SOURCES:
      raise ValueError(f"attention_source must be one of {ATTENTION_SOURCES}, got "
                       f"{self.attention_source!r}")
    kw = dict(stage_sizes=self.stage_sizes, width=self.width, trainable_bn=self.trainable_bn,
              bn_axis_name=self.bn_axis_name, dtype=self.dtype)
    e_r = StagedResNet(rgb_input=True, name="backbone", **kw)
    if depth_mm is None:
      x = images
      for stage in range(5):
        x = e_r(x, stage, train)
      return {"s_R": x}
    e_d = StagedResNet(rgb_input=False, name="depth_backbone", **kw)
    n = images.shape[0]
    rgb, fused, d = images, images, depth_input(depth_mm)
    maps = []
    for stage in range(5):
      # The plain and the fused stream through E_R's one set of weights, as one batch.
      both = e_r(jnp.concatenate([rgb, fused]) if stage else rgb, stage, train)
      rgb, fused = (both[:n], both[n:]) if stage else (both, both)
      d = e_d(d, stage, train)
      a_depth = DepthAttention(self.dtype, name=f"attention{stage + 1}")(d)
      d = d * a_depth.astype(d.dtype)                             # s_D's stream
      a_fused = a_depth if self.attention_source == "depth" else DepthAttention(
          self.dtype, name=f"rgb_attention{stage + 1}")(fused)
      if self.stop_gradient:
        a_fused = jax.lax.stop_gradient(a_fused)
      fused = fused * a_fused.astype(fused.dtype)                 # s_F's stream
      maps.append(a_fused)
    return {"s_R": rgb, "s_F": fused, "s_D": d, "attention": maps}


class MultiModalDecoder(nn.Module):
  """Depth map, part segmentation and 2D heatmaps at stride 4, 3D joints, from stride-32 latents.

  Returns dict(depth [B, S/4, S/4] relative depth in units of 200 mm, segmentation logits
  [B, S/4, S/4, 33], heatmaps [B, S/4, S/4, 42], joints_2d [B, 42, 2] in input pixels (soft-argmax
  of the heatmaps), joints_3d [B, 42, 3] relative to each hand's wrist in units of 100 mm).
  """

  features: int = 256
  num_classes: int = 33
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latent, train: bool = False):
    del train
    x = latent
    for i in range(3):   # stride 32 -> 4
      x = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding="SAME",
                           dtype=self.dtype, name=f"up{i + 1}")(x)
      x = nn.relu(nn.GroupNorm(num_groups=min(32, self.features // 4), dtype=self.dtype,
                               name=f"norm{i + 1}")(x))
    x = x.astype(jnp.float32)
    depth = nn.Conv(1, (1, 1), name="depth")(x)[..., 0]
    segmentation = nn.Conv(self.num_classes, (1, 1), name="segmentation")(x)
    heatmaps = nn.Conv(NUM_JOINTS, (1, 1), name="heatmaps")(x)
    pooled = jnp.mean(latent.astype(jnp.float32), axis=(1, 2))
    h = nn.relu(nn.Dense(self.features, name="pose_hidden")(pooled))
    joints_3d = nn.Dense(NUM_JOINTS * 3, name="pose_3d")(h).reshape(-1, NUM_JOINTS, 3)
    return {"depth": depth, "segmentation": segmentation, "heatmaps": heatmaps,
            "joints_2d": soft_argmax(heatmaps, stride=4), "joints_3d": joints_3d}


def soft_argmax(heatmaps, stride: int = 4):
  """[B, h, w, K] logits -> [B, K, 2] expected (x, y) in input pixels (cell centres)."""
  b, h, w, k = heatmaps.shape
  p = jax.nn.softmax(heatmaps.reshape(b, h * w, k).astype(jnp.float32), axis=1)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  centres = jnp.stack([xs.reshape(-1), ys.reshape(-1)], -1)          # [h*w, 2] cells
  cells = jnp.einsum("bnk,nc->bkc", p, centres)
  return (cells + 0.5) * stride - 0.5


class ProjectionHead(nn.Module):
  """Pooled latent -> [B, points, 2]: the contrastive embedding, as 2-D points."""

  hidden: int = 512
  points: int = 64

  @nn.compact
  def __call__(self, latent):
    pooled = jnp.mean(latent.astype(jnp.float32), axis=(1, 2))
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(pooled))
    return nn.Dense(2 * self.points, name="out")(h).reshape(-1, self.points, 2)


class DualModalityNet(nn.Module):
  """The pre-training network: the encoder, one shared decoder, one projection head.

  ``__call__(images uint8 [B, S, S, 3], depth_mm [B, S, S] or None)`` returns, per latent
  ('R', 'F', 'D'; only 'R' without depth), the decoder's outputs and the projection:
  ``{"R": {..., "projection": [B, P, 2]}, ..., "attention": [...]}``.
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  attention_source: str = "depth"
  stop_gradient: bool = True
  decoder_features: int = 256
  projection_hidden: int = 512
  projection_points: int = 64
  trainable_bn: bool = True
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, depth_mm=None, train: bool = False):
    latents = DualModalityEncoder(self.stage_sizes, self.width, self.attention_source,
                                  self.stop_gradient, self.trainable_bn, self.bn_axis_name,
                                  self.dtype, name="encoder")(images, depth_mm, train)
    decoder = MultiModalDecoder(self.decoder_features, dtype=self.dtype, name="decoder")
    projection = ProjectionHead(self.projection_hidden, self.projection_points,
                                name="projection")
    keys = [k for k in ("R", "F", "D") if f"s_{k}" in latents]
    # The latents through the one decoder and head as one batch, then split.
    stacked = jnp.concatenate([latents[f"s_{k}"] for k in keys])
    decoded = dict(decoder(stacked, train), projection=projection(stacked))
    n = images.shape[0]
    out = {k: jax.tree_util.tree_map(lambda x, i=i: x[i * n:(i + 1) * n], decoded)
           for i, k in enumerate(keys)}
    if "attention" in latents:
      out["attention"] = latents["attention"]
    return out


def create_model(config, bn_axis_name=None):
  """The network of a cross-domain config's ``model`` section (configs/crossdomain.py)."""
  m = config.model
  return DualModalityNet(
      stage_sizes=tuple(m.backbone_stages), width=m.backbone_width,
      attention_source=m.attention_source, stop_gradient=m.stop_gradient,
      decoder_features=m.decoder_features, projection_hidden=m.projection_hidden,
      projection_points=m.projection_points, trainable_bn=m.get("trainable_bn", True),
      bn_axis_name=bn_axis_name, dtype=jnp.dtype(m.get("dtype", "float32")))
