"""The contrastive pre-training's augmentations (cross-domain supplement, Sec. B), in JAX.

Texture augmentations leave the labels alone; geometric ones move them:

- T_RGB: colour jitter (brightness, contrast and saturation factors in [0.6, 1.4], in that
  order), grey-scale (with probability 0.2) and random erasure (with probability 0.5 a rectangle of 2-20% of the image,
  aspect 0.3-3.3, filled with uniform noise; torchvision's RandomErasing defaults).
- T_DM: random erasure (the same rectangle law, depth set to 0, "no depth") and salt and pepper
  noise (2% of the pixels: half set to 0, half to a depth drawn from the crop's hand depths
  +-100 mm).
- G_RGB = G_DM: rotation in [-180, 180] degrees, scale in [0.8, 1] and translation in
  [-20, 20] px about the crop's centre. The translation is given for the paper's 256-pixel
  crops and scaled with the input size. One geometric draw serves both modalities of a view, so
  that the depth attention lands on the RGB features beside it (Fig. b); the two views of a
  sample have independent draws. Images are resampled bilinearly, depth maps and part labels
  (at stride 4) by nearest neighbour; 2D joints move with the image and become invalid outside
  it; the 3D joints (relative to each hand's wrist, camera axes) turn with the in-plane rotation
  about the optical axis (exact for a crop centred on the principal point, the usual
  approximation otherwise); scale and translation leave them alone.

Every draw comes from the key given, so a step's augmentation is reproducible.
"""

import jax
import jax.numpy as jnp

SEG_STRIDE = 4
ROTATION_DEG = 180.0
SCALE = (0.8, 1.0)
TRANSLATION_PX_AT_256 = 20.0


def sample_geometry(key, batch: int, image_size: int):
  """dict(angle [B] radians, scale [B], shift [B, 2] px) of G (Sec. B)."""
  u = jax.random.uniform(key, (batch, 4))
  t = TRANSLATION_PX_AT_256 * image_size / 256.0
  return {"angle": (2.0 * u[:, 0] - 1.0) * jnp.radians(ROTATION_DEG),
          "scale": SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 1],
          "shift": (2.0 * u[:, 2:] - 1.0) * t}


def rotation(angle):
  """[...] angles (radians) -> [..., 2, 2] counter-clockwise rotation matrices."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)   # [..., 2, 2]


def forward_points(points, geometry, size: int, stride: int = 1):
  """Pixel points [B, K, 2] of a map of side ``size / stride`` under G: s R (p - c) + c + t."""
  n = size // stride
  c = (n - 1) / 2.0
  r = rotation(geometry["angle"])
  moved = jnp.einsum("bij,bkj->bki", r, points - c) * geometry["scale"][:, None, None]
  return moved + c + geometry["shift"][:, None, :] / stride


def warp(maps, geometry, size: int, order: int, stride: int = 1, cval=0.0):
  """Maps [B, h, w] or [B, h, w, C] resampled under G (inverse mapping, ``order`` 0 or 1)."""
  n = size // stride
  c = (n - 1) / 2.0
  ys, xs = jnp.meshgrid(jnp.arange(n, dtype=jnp.float32), jnp.arange(n, dtype=jnp.float32),
                        indexing="ij")
  grid = jnp.stack([xs, ys], -1).reshape(1, -1, 2)                      # output pixels
  inv = jnp.swapaxes(rotation(geometry["angle"]), -1, -2)
  src = jnp.einsum("bij,bkj->bki", inv, grid - c - geometry["shift"][:, None, :] / stride)
  src = src / geometry["scale"][:, None, None] + c                      # [B, n*n, 2] (x, y)

  flat = maps.astype(jnp.float32).reshape(maps.shape[0], n * n, -1)   # [B, n*n, C]
  out = _sample(flat, src, n, order, cval)
  return out.reshape(maps.shape)


def _sample(flat, points, n: int, order: int, cval):
  """Values of ``flat`` [B, n*n, C] (an n x n map) at ``points`` [B, K, 2] (x, y): nearest or
  bilinear, ``cval`` outside; one gather per corner (jax.scipy's map_coordinates compiles slowly
  on CPU for many maps)."""
  def gather(ix, iy):
    inside = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
    index = jnp.clip(iy, 0, n - 1) * n + jnp.clip(ix, 0, n - 1)
    values = jnp.take_along_axis(flat, index[..., None], axis=1)
    return jnp.where(inside[..., None], values, cval)

  x, y = points[..., 0], points[..., 1]
  if order == 0:
    return gather(jnp.round(x).astype(jnp.int32), jnp.round(y).astype(jnp.int32))
  x0, y0 = jnp.floor(x), jnp.floor(y)
  wx, wy = (x - x0)[..., None], (y - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  return ((1 - wx) * (1 - wy) * gather(x0, y0) + wx * (1 - wy) * gather(x0 + 1, y0)
          + (1 - wx) * wy * gather(x0, y0 + 1) + wx * wy * gather(x0 + 1, y0 + 1))


def geometric(batch, geometry):
  """G applied to a batch dict (images, depth, segmentation, joints, joint_valid, joints_3d)."""
  size = batch["images"].shape[1]
  out = dict(batch)
  out["images"] = warp(batch["images"], geometry, size, order=1)
  out["depth"] = warp(batch["depth"], geometry, size, order=0)
  out["segmentation"] = warp(batch["segmentation"], geometry, size, order=0,
                             stride=SEG_STRIDE).astype(jnp.int32)
  xy = forward_points(batch["joints"][..., :2], geometry, size)
  inside = jnp.all((xy >= 0) & (xy <= size - 1), axis=-1)
  out["joints"] = jnp.concatenate([xy, batch["joints"][..., 2:]], -1)
  out["joint_valid"] = batch["joint_valid"] * inside
  r = rotation(geometry["angle"])
  rel = batch["joints_3d"]
  out["joints_3d"] = jnp.concatenate([jnp.einsum("bij,bkj->bki", r, rel[..., :2]),
                                      rel[..., 2:]], -1)
  return out


ERASE_DRAWS = 5


def _erase_mask(u, h: int, w: int, p: float = 0.5):
  """[B, h, w] bool rectangles (torchvision RandomErasing's law: area 2-20%, aspect 0.3-3.3)
  from uniform draws ``u`` [B, 5]."""
  area = (0.02 + 0.18 * u[:, 0]) * h * w
  ratio = jnp.exp(jnp.log(0.3) + (jnp.log(1 / 0.3) - jnp.log(0.3)) * u[:, 1])
  eh = jnp.clip(jnp.sqrt(area * ratio), 1, h)
  ew = jnp.clip(jnp.sqrt(area / ratio), 1, w)
  y0 = u[:, 2] * (h - eh)
  x0 = u[:, 3] * (w - ew)
  ys = jnp.arange(h)[None, :, None]
  xs = jnp.arange(w)[None, None, :]
  box = ((ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
         & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None]))
  return box & (u[:, 4] < p)[:, None, None]


def texture_rgb(key, images):
  """T_RGB on float images [B, S, S, 3] in [0, 255]: jitter, grey-scale, erasure; returns
  floats in [0, 1] (what the encoders take besides uint8). Two draws in all (per image and
  per pixel): every random call is one more generator for XLA to compile."""
  b, h, w, _ = images.shape
  ks, kn = jax.random.split(key)
  u = jax.random.uniform(ks, (b, 4 + ERASE_DRAWS))
  factor = lambda i: (0.6 + 0.8 * u[:, i])[:, None, None, None]
  x = images / 255.0
  x = x * factor(0)                                                     # brightness
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  x = (x - mean) * factor(1) + mean                                     # contrast
  grey = jnp.sum(x * jnp.array([0.299, 0.587, 0.114]), -1, keepdims=True)
  x = (x - grey) * factor(2) + grey                                     # saturation
  x = jnp.clip(x, 0.0, 1.0)
  grey = jnp.sum(x * jnp.array([0.299, 0.587, 0.114]), -1, keepdims=True)
  x = jnp.where((u[:, 3] < 0.2)[:, None, None, None], jnp.broadcast_to(grey, x.shape), x)
  erase = _erase_mask(u[:, 4:], h, w)[..., None]
  return jnp.where(erase, jax.random.uniform(kn, x.shape), x)


def texture_depth(key, depth, fraction: float = 0.02):
  """T_DM on depth maps [B, S, S] mm: erasure (to 0) and salt and pepper noise."""
  b, h, w = depth.shape
  ks, kn = jax.random.split(key)
  depth = jnp.where(_erase_mask(jax.random.uniform(ks, (b, ERASE_DRAWS)), h, w), 0.0, depth)
  valid = depth > 0
  mean = jnp.sum(depth, axis=(1, 2)) / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1)
  u, v = jax.random.uniform(kn, (2, b, h, w))
  salt = mean[:, None, None] + (v * 200.0 - 100.0)
  noisy = jnp.where(u < fraction / 2, 0.0, jnp.where(u < fraction, salt, depth))
  return jnp.where(mean[:, None, None] > 0, noisy, depth)   # no depth at all: leave it


def two_views(key, batch):
  """Two augmented views of a batch (each G then T, per modality) and their geometries.

  A view's ``depth`` is E_D's input (after T_DM), ``depth_target`` the label (after G only).
  """
  size = batch["images"].shape[1]
  views = []
  for k in jax.random.split(key, 2):
    kg, kr, kd = jax.random.split(k, 3)   # one split: the keys of a view
    geometry = sample_geometry(kg, batch["images"].shape[0], size)
    view = geometric(dict(batch, images=batch["images"].astype(jnp.float32)), geometry)
    view["images"] = texture_rgb(kr, view["images"])
    view["depth_target"] = view["depth"]
    view["depth"] = texture_depth(kd, view["depth"])
    views.append((view, geometry))
  return views
