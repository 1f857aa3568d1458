"""The two visual domains of the synthetic world: an InterHand-like studio and the wild.

``studio`` (InterHand2.6M's capture dome): a dark, nearly uniform background, soft frontal
light with a high ambient share, colour and grey cameras of a multi-view rig, mild sensor noise
and light JPEG compression.

``wild`` (hands in everyday pictures): textured backgrounds (gradients, multi-scale noise,
stripes, checkers, shapes), colour casts, hard light from any side with a low ambient share and
strong highlights, defocus or motion blur, strong noise, and heavy JPEG artefacts.

A style decides the scene's light (``light``), the background (``background``), the camera's
effects on the rendered image (``finish``), the JPEG quality, and the capture rig (``RIGS``).
Every draw comes from the generator it is given, so a style is as deterministic as the world.
"""

import functools
import math

import cv2
import numpy as np

STYLES = ("studio", "wild")
# Per style: cameras per capture, default views per frame, focal range (px), distance (mm).
RIGS = {
    "studio": dict(cameras=8, views=2, focal=(1200.0, 1300.0), distance=(800.0, 1150.0),
                   grey=0.15),
    "wild": dict(cameras=24, views=1, focal=(900.0, 1600.0), distance=(650.0, 1300.0),
                 grey=0.0),
}


def check(style):
  if style not in STYLES:
    raise ValueError(f"style must be one of {STYLES}, got {style!r}")
  return style


@functools.lru_cache(maxsize=4)
def _pixel_grid(h, w):
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  return xs, ys


def light(rng, style):
  """dict(direction [3] towards the light (camera frame), colour [3] BGR gain, ambient,
  specular, shininess, wrap) of one image."""
  if style == "studio":
    direction = np.array([rng.normal(0.0, 0.3), rng.normal(-0.3, 0.2), -1.0])
    colour = rng.uniform(1.2, 1.4) * (np.ones(3) + rng.normal(0.0, 0.02, 3))   # lit hands
    return dict(direction=direction / np.linalg.norm(direction), colour=colour,
                ambient=rng.uniform(0.45, 0.6), specular=rng.uniform(0.04, 0.1),
                shininess=20.0, wrap=0.4)
  direction = rng.normal(size=3)
  direction[2] = -abs(direction[2]) - 0.2     # from the camera's side of the hands, any angle
  warm = rng.uniform(-0.25, 0.25)
  colour = np.array([1.0 - warm, 1.0, 1.0 + warm]) * rng.uniform(0.9, 1.3)
  return dict(direction=direction / np.linalg.norm(direction), colour=colour,
              ambient=rng.uniform(0.08, 0.3), specular=rng.uniform(0.15, 0.45),
              shininess=float(rng.uniform(10.0, 40.0)), wrap=0.0)


def _colour(rng, lo=0, hi=255):
  return tuple(float(c) for c in rng.uniform(lo, hi, 3))


def _noise_field(rng, h, w, cells, channels=3):
  g = rng.uniform(-1.0, 1.0, (cells[0], cells[1], channels)).astype(np.float32)
  out = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
  return out.reshape(h, w, channels)


def _studio_background(rng, h, w):
  xs, ys = _pixel_grid(h, w)
  level = rng.uniform(4.0, 35.0)
  tint = level * (1.0 + rng.normal(0.0, 0.08, 3)).astype(np.float32)
  r2 = ((xs - w / 2) / w) ** 2 + ((ys - h / 2) / h) ** 2
  img = tint * (1.0 - rng.uniform(0.0, 0.6) * r2)[..., None]
  img += _noise_field(rng, h, w, rng.integers(2, 5, 2)) * rng.uniform(1.0, 6.0)
  return img


def _wild_background(rng, h, w):
  xs, ys = _pixel_grid(h, w)
  c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
  th = rng.uniform(0.0, 2 * math.pi)
  t = (xs * math.cos(th) + ys * math.sin(th)) / (w + h) + 0.5
  img = c0 + (c1 - c0) * t[..., None]
  for cells, amp in (((3, 3), 50.0), ((12, 12), 25.0), ((48, 48), 12.0)):   # multi-scale
    img += _noise_field(rng, h, w, (int(cells[0] * rng.uniform(0.5, 1.5)) + 1,
                                    int(cells[1] * rng.uniform(0.5, 1.5)) + 1)) * (
                                        amp * rng.uniform(0.2, 1.2))
  kind = rng.integers(3)
  th2, period = rng.uniform(0.0, 2 * math.pi), rng.uniform(6.0, 60.0)
  u = xs * math.cos(th2) + ys * math.sin(th2)
  v = -xs * math.sin(th2) + ys * math.cos(th2)
  other = np.float32(rng.uniform(0, 255, 3))
  if kind == 0:     # stripes (fabric, blinds, wood)
    pattern = np.sin(u * (2 * math.pi / period) + 2.0 * np.sin(v / (3 * period))) > 0
  elif kind == 1:   # checkers (tiles)
    pattern = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
  else:
    pattern = None
  if pattern is not None:
    img = np.where(pattern[..., None], img, img * 0.5 + other * 0.5)
  img = np.clip(img, 0, 255).astype(np.uint8)
  for _ in range(rng.integers(2, 12)):
    shape, col = rng.integers(4), _colour(rng)
    thick = -1 if rng.random() < 0.6 else int(rng.integers(1, 8))
    p = tuple(int(v) for v in rng.uniform(-0.2, 1.2, 2) * (w, h))
    q = tuple(int(v) for v in rng.uniform(-0.2, 1.2, 2) * (w, h))
    if shape == 0:
      cv2.rectangle(img, p, q, col, thick, cv2.LINE_AA)
    elif shape == 1:
      cv2.circle(img, p, int(rng.uniform(5, 0.4 * w)), col, thick, cv2.LINE_AA)
    elif shape == 2:
      cv2.line(img, p, q, col, int(rng.integers(1, 15)), cv2.LINE_AA)
    else:
      cv2.ellipse(img, p, (int(rng.uniform(5, w / 3)), int(rng.uniform(5, h / 3))),
                  rng.uniform(0, 180), 0, 360, col, thick, cv2.LINE_AA)
  sigma = rng.uniform(0.0, 3.0)
  img = cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0.5 else img
  return img.astype(np.float32)


def background(rng, style, h, w):
  """[h, w, 3] float32 BGR background in 0..255."""
  return _studio_background(rng, h, w) if style == "studio" else _wild_background(rng, h, w)


def _motion_kernel(rng):
  n = int(rng.integers(3, 10))
  k = np.zeros((n, n), np.float32)
  k[n // 2] = 1.0
  rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(0, 180), 1.0)
  k = cv2.warpAffine(k, rot, (n, n))
  return k / max(k.sum(), 1e-6)


def finish(img, rng, style, grey):
  """The camera's effects on a rendered float image -> uint8 BGR."""
  if style == "studio":
    out = img * rng.uniform(0.92, 1.08) + rng.uniform(-6.0, 6.0)
    out += rng.normal(0.0, rng.uniform(0.5, 3.0), img.shape[:2] + (1,)).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
      out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 0.8))
  else:
    cast = rng.uniform(0.75, 1.25, 3).astype(np.float32)
    contrast = rng.uniform(0.7, 1.3)
    out = (img - 128.0) * contrast + 128.0 + rng.uniform(-30.0, 30.0)
    out = out * cast
    blur = rng.random()
    if blur < 0.35:
      out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.6, 2.2))
    elif blur < 0.6:
      out = cv2.filter2D(out, -1, _motion_kernel(rng))
    sigma = rng.uniform(2.0, 14.0)
    out += rng.normal(0.0, sigma, img.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
  if grey:
    out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
  return out


def jpeg_quality(rng, style, quality):
  """The JPEG quality of one image: ``quality`` in the studio, 25..80 (at most ``quality``) in
  the wild."""
  return int(quality) if style == "studio" else min(int(rng.integers(25, 81)), int(quality))


def skin(rng):
  """A BGR skin tone from very light to dark."""
  hsv = np.uint8([[[rng.uniform(4, 18), rng.uniform(50, 160), rng.uniform(70, 240)]]])
  return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)
