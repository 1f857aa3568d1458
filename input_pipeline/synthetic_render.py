"""Synthetic mini-InterHand: rendered articulated hands in the official InterHand2.6M v1.0 layout.

The project's embedded default dataset (nothing is downloaded). It writes exactly what the real
data's reader expects (docs/coordinates.md; the genuine fixture frames for the schema):

  DIR/annotations/{split}/InterHand2.6M_{split}_data.json      images, annotations
  DIR/annotations/{split}/InterHand2.6M_{split}_camera.json    capture -> campos/camrot/...
  DIR/annotations/{split}/InterHand2.6M_{split}_joint_3d.json  capture -> frame_idx -> ...
  DIR/images/{split}/Capture{c}/{seq_name}/cam{camera}/image{frame_idx}.jpg

    python -m input_pipeline.synthetic --out DIR --num_images 2000 --seed 0 [--split train]
    python -m input_pipeline.synthetic --out DIR --splits train:2000,val:200,test:200 --seed 0

Scene model (our choices, written down here):
- Hand: kinematic tree in a right-hand local frame (mm; x radial towards the thumb, y wrist to
  middle MCP, z palmar). Finger bases and phalanx lengths are the mean of the genuine fixture
  hands (InterHand's own joint positions; e.g. index 41/25/22 mm, thumb CMC-MCP 37 mm), scaled
  per subject by U(0.85, 1.15). Joint limits in ``LIMITS_DEG``; the left hand mirrors x.
- Frames: 50% interacting (wrists 40-150 mm apart, independent random rotations, joints of the
  two hands kept >= 15 mm apart), 25% right, 25% left. One subject per capture. Each frame (one
  ``joint_3d`` entry) is seen by ``views_per_frame`` cameras of its capture's rig, as in
  InterHand, so images of one frame share ``capture`` and ``frame_idx``.
- Cameras: 334x512 (70%) or 512x334, f ~ U(1200, 1300) px, principal point near the centre,
  800-1150 mm from the capture's workspace centre (which sits ~1 m from the world origin, as in
  InterHand's world frame); 15% grey cameras. A view is used only when every present hand's
  wrist projects inside the image and at most ``MAX_OUT_OF_IMAGE`` joints fall outside; those get
  joint_valid 0 in ``data.json`` (``joint_3d``'s joint_valid says which hands exist).
- Absent hand: world_coord [1, 1, 1] and joint_valid 0/False, as the real single-hand frames.
- Rendering: shaded capsules per phalanx, a palm polygon, an optional forearm (sometimes
  sleeved), painted far to near by mean depth so the nearer hand occludes; skin tone per subject;
  backgrounds from gradients, low-frequency noise, shapes and stripes (or dark studio-like).
- Deterministic: geometry comes from one generator seeded by (seed, split); each image's
  appearance from (seed, split, image id), so the worker count never changes a byte.
"""

import argparse
import functools
import json
import math
import multiprocessing
import os
import pathlib
import sys
import time
import zlib

import cv2
import numpy as np

from dfl_jax import conventions

# ------------------------------------------------------------------------------- hand model

# Right-hand local frame (mm): x radial (towards the thumb), y wrist -> middle MCP, z palmar.
# Bases: thumb CMC, index/middle/ring/pinky MCP (mean of the genuine fixture hands).
BASES = np.array([[21., 22., 20.], [24., 82., 7.], [0., 85., 0.], [-22., 78., 1.],
                  [-40., 66., 5.]])
# Phalanx lengths per finger from the base out (mm): thumb metacarpal, proximal, distal;
# fingers proximal, middle, distal.
PHALANGES = np.array([[37., 31., 27.], [41., 25., 22.], [44., 29., 22.], [40., 27., 22.],
                      [31., 19.5, 19.]])
# Capsule radii (mm) at each finger's joints, InterHand order: tip, 2nd, 3rd, base.
RADII = np.array([[8.0, 9.0, 10.0, 12.0], [7.0, 8.0, 8.8, 9.8], [7.2, 8.2, 9.0, 10.0],
                  [6.8, 7.8, 8.6, 9.4], [6.0, 7.0, 7.6, 8.4]])
FINGER_SPLAY_DEG = np.array([0., 6., 0., -6., -12.])   # rest direction, + towards the thumb
SPREAD_DIRECTION = np.array([0., 1., 0.2, -0.6, -1.])   # how abduction spreads the fingers
# Joint limits (degrees) per finger row (thumb, index, middle, ring, pinky) and column
# (base flexion, base abduction, 2nd-joint flexion, 3rd-joint flexion): fingers MCP, MCP, PIP,
# DIP; thumb CMC, CMC, MCP, IP. Flexion is positive towards the palm.
LIMITS_DEG = np.array([
    [[-15., 40.], [-20., 25.], [-10., 60.], [-15., 80.]],
    *[[[-20., 90.], [-20., 20.], [0., 110.], [0., 80.]]] * 4,
])
HAND_SCALE_RANGE = (0.85, 1.15)
HAND_TYPES = ("interacting", "right", "left")
PLACEHOLDER = 1.0      # world_coord of absent joints, as in the real data
MAX_OUT_OF_IMAGE = 3   # joints of one view allowed outside the image (they become invalid)
BBOX_ENLARGE = 1.2


def _rot(axis, angle):
  """Rotation matrices [..., 3, 3] about a coordinate axis by ``angle`` (radians)."""
  c, s = np.cos(angle), np.sin(angle)
  o, z = np.ones_like(c), np.zeros_like(c)
  m = {0: [[o, z, z], [z, c, -s], [z, s, c]],
       1: [[c, z, s], [z, o, z], [-s, z, c]],
       2: [[c, -s, z], [s, c, z], [z, z, o]]}[axis]
  return np.moveaxis(np.array(m, dtype=np.float64), (0, 1), (-2, -1))


def _normalize(v):
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _base_frames():
  """[5, 3, 3] rest frames (columns x, y, z) of the five digits in the local hand frame."""
  frames = _rot(2, -np.radians(FINGER_SPLAY_DEG))
  y = _normalize(np.array([0.55, 0.75, 0.35]))            # thumb metacarpal direction
  z = _normalize(np.array([-1.0, 0.0, 0.6]) - np.dot([-1.0, 0.0, 0.6], y) * y)  # thumb flexes
  frames[0] = np.stack([np.cross(y, z), y, z], axis=1)    # across the palm, nail pronated
  return frames


BASE_FRAMES = _base_frames()


def bone_lengths(scale=1.0):
  """[20] bone lengths (mm) of one hand in ``conventions.hand_bones()`` order."""
  per = np.concatenate([PHALANGES[:, ::-1], np.linalg.norm(BASES, axis=1, keepdims=True)], 1)
  return scale * per.reshape(20)


def hand_joints(angles_deg, scale=1.0, left=False):
  """[21, 3] local joints (mm, InterHand order) for angles [5, 4] (degrees, ``LIMITS_DEG``)."""
  a = np.radians(np.asarray(angles_deg, np.float64))
  r1 = BASE_FRAMES @ _rot(2, -a[:, 1]) @ _rot(0, a[:, 0])
  r2 = r1 @ _rot(0, a[:, 2])
  r3 = r2 @ _rot(0, a[:, 3])
  lengths = PHALANGES * scale
  p0 = BASES * scale
  p1 = p0 + lengths[:, :1] * r1[:, :, 1]
  p2 = p1 + lengths[:, 1:2] * r2[:, :, 1]
  p3 = p2 + lengths[:, 2:] * r3[:, :, 1]
  joints = np.zeros((21, 3))
  joints[:20] = np.stack([p3, p2, p1, p0], axis=1).reshape(20, 3)
  if left:
    joints[:, 0] *= -1.0
  return joints


def sample_angles(rng):
  """Random joint angles [5, 4] (degrees) inside ``LIMITS_DEG``: a shared curl plus noise."""
  lo, hi = LIMITS_DEG[..., 0], LIMITS_DEG[..., 1]
  curl = np.clip(rng.random() + rng.normal(0.0, 0.3, 5), 0.0, 1.0)
  curl = np.where(rng.random(5) < 0.25, rng.random(5), curl)   # independent fingers
  t = np.clip(curl[:, None] * rng.uniform(0.75, 1.1, (5, 4)) + rng.normal(0.0, 0.1, (5, 4)),
              -0.25, 1.0)
  # t in [0, 1] bends from the open pose (0 degrees) to the upper limit, t < 0 hyperextends.
  angles = np.where(t >= 0.0, t * hi, (-t / 0.25) * lo)
  spread = rng.uniform(-0.3, 1.0)
  angles[:, 1] = spread * SPREAD_DIRECTION * 15.0 + rng.normal(0.0, 5.0, 5)
  angles[0, 1] = rng.uniform(lo[0, 1], hi[0, 1])
  return np.clip(angles, lo, hi)


def random_rotation(rng):
  """A uniformly random 3x3 rotation."""
  w, x, y, z = _normalize(rng.normal(size=4))
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def sample_frame(rng, hand_type, scale, centre):
  """World joints [42, 3] (mm; absent hand at the placeholder) and presence [2] of one frame."""
  present = np.array([hand_type != "left", hand_type != "right"])
  local = [hand_joints(sample_angles(rng), scale, left=bool(h)) for h in range(2)]
  if hand_type == "interacting":
    for _ in range(30):
      right = local[0] @ random_rotation(rng).T
      offset = _normalize(rng.normal(size=3)) * rng.uniform(40.0, 150.0) * scale
      left = local[1] @ random_rotation(rng).T + offset
      gap = np.linalg.norm(right[:, None] - left[None], axis=-1).min()
      if gap >= 15.0:
        break
    joints = np.concatenate([right, left])
    joints -= joints.mean(0)
  else:
    h = 0 if hand_type == "right" else 1
    hand = local[h] @ random_rotation(rng).T
    joints = np.full((42, 3), PLACEHOLDER)
    joints[21 * h:21 * h + 21] = hand - hand.mean(0)
  joints[np.repeat(present, 21)] += centre + rng.uniform(-40.0, 40.0, 3)
  return joints, present


# ----------------------------------------------------------------------------------- cameras

def _f32(x):
  """Round to float32 and back, as the real annotations store their numbers."""
  return np.asarray(x, np.float32).astype(np.float64)


def make_rig(rng, centre, names):
  """A capture's cameras: dict name -> (campos, camrot, focal, princpt, (w, h), grey)."""
  rig = {}
  down = np.array([0.0, 1.0, 0.0])   # InterHand's world y points down, like a camera's
  for name in names:
    w, h = (334, 512) if rng.random() < 0.7 else (512, 334)
    f = rng.uniform(1200.0, 1300.0)
    focal = np.array([f, f * (1.0 + rng.normal(0.0, 5e-4))])
    princpt = np.array([w / 2, h / 2]) + np.clip(rng.normal(0.0, 12.0, 2), -30.0, 30.0)
    az, el = np.radians(rng.uniform(-75.0, 75.0)), np.radians(rng.uniform(-45.0, 45.0))
    direction = np.array([np.sin(az) * np.cos(el), -np.sin(el), -np.cos(az) * np.cos(el)])
    campos = centre + direction * rng.uniform(800.0, 1150.0)
    z = _normalize(centre + rng.normal(0.0, 15.0, 3) - campos)
    x = _normalize(np.cross(down, z))
    camrot = _rot(2, rng.normal(0.0, 0.1)) @ np.stack([x, np.cross(z, x), z])
    rig[name] = (_f32(campos), _f32(camrot), _f32(focal), _f32(princpt), (w, h),
                 bool(rng.random() < 0.15))
  return rig


def world_to_camera(world, campos, camrot):
  """InterHand: X_cam = R @ (X_world - campos), for points [..., 3]."""
  return (np.asarray(world) - campos) @ np.asarray(camrot).T


def project(cam, focal, princpt):
  """Pinhole projection of camera points [..., 3] to pixels [..., 2]."""
  return cam[..., :2] / cam[..., 2:] * np.asarray(focal) + np.asarray(princpt)


def bbox_from_joints(uv, valid, enlarge=BBOX_ENLARGE):
  """xywh: tight box of the valid joints enlarged ``enlarge`` times about its centre."""
  pts = uv[np.asarray(valid, bool)]
  lo, hi = pts.min(0), pts.max(0)
  size = (hi - lo) * enlarge
  return np.concatenate([(lo + hi) / 2 - size / 2, size])


# --------------------------------------------------------------------------------- rendering

@functools.lru_cache(maxsize=4)
def _pixel_grid(h, w):
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  return xs, ys


def _colour(rng, lo=0, hi=255):
  return tuple(float(c) for c in rng.uniform(lo, hi, 3))


def random_background(rng, h, w):
  """[h, w, 3] uint8: gradient + low-frequency noise + shapes/stripes, or dark studio-like."""
  xs, ys = _pixel_grid(h, w)
  studio = rng.random() < 0.3
  c0, c1 = rng.uniform(0, 60 if studio else 255, (2, 3)).astype(np.float32)
  th = rng.uniform(0.0, 2 * math.pi)
  t = (xs * math.cos(th) + ys * math.sin(th)) / (w + h) + 0.5
  img = c0 + (c1 - c0) * t[..., None]
  gh, gw = rng.integers(2, 9, 2)
  noise = rng.uniform(-1.0, 1.0, (gh, gw, 3)).astype(np.float32)
  img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(5, 20 if studio
                                                                                else 60)
  if not studio and rng.random() < 0.3:
    th2, period = rng.uniform(0.0, 2 * math.pi), rng.uniform(8.0, 60.0)
    stripes = np.sin((xs * math.cos(th2) + ys * math.sin(th2)) * (2 * math.pi / period)) > 0
    img = np.where(stripes[..., None], img,
                   img * 0.5 + np.float32(rng.uniform(0, 255, 3)) * 0.5)
  img = np.clip(img, 0, 255).astype(np.uint8)
  for _ in range(rng.integers(0, 3 if studio else 10)):
    kind, col = rng.integers(4), _colour(rng, 0, 120 if studio else 255)
    thick = -1 if rng.random() < 0.6 else int(rng.integers(1, 8))
    p = (rng.uniform(-0.2, 1.2, 2) * (w, h)).astype(int)
    q = (rng.uniform(-0.2, 1.2, 2) * (w, h)).astype(int)
    if kind == 0:
      cv2.rectangle(img, tuple(p), tuple(q), col, thick, cv2.LINE_AA)
    elif kind == 1:
      cv2.circle(img, tuple(p), int(rng.uniform(5, 0.4 * w)), col, thick, cv2.LINE_AA)
    elif kind == 2:
      cv2.line(img, tuple(p), tuple(q), col, int(rng.integers(1, 15)), cv2.LINE_AA)
    else:
      cv2.ellipse(img, tuple(p), (int(rng.uniform(5, w / 3)), int(rng.uniform(5, h / 3))),
                  rng.uniform(0, 180), 0, 360, col, thick, cv2.LINE_AA)
  sigma = rng.uniform(0.0, 2.5)
  return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0.5 else img


_SHIFT = 4
_ONE = 1 << _SHIFT


def _capsule(img, a, b, ra, rb, colour):
  """A filled 2D capsule (tapered thick segment) from pixel a (radius ra) to b (radius rb)."""
  d = b - a
  n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
  quad = np.stack([a + ra * n, b + rb * n, b - rb * n, a - ra * n])
  cv2.fillConvexPoly(img, np.round(quad * _ONE).astype(np.int32), colour, cv2.LINE_AA, _SHIFT)
  for c, r in ((a, ra), (b, rb)):
    cv2.circle(img, tuple(int(v) for v in np.round(c * _ONE)), int(round(r * _ONE)), colour,
               -1, cv2.LINE_AA, _SHIFT)


def _shaded_capsule(img, p, q, rp, rq, base, light, ambient, focal, princpt):
  """A 3D capsule (camera mm) drawn as three bands lit by ``light`` (a cylinder's shading)."""
  a, b = project(np.stack([p, q]), focal, princpt)
  ra, rb = focal[0] * rp / p[2], focal[0] * rq / q[2]
  axis = _normalize(q - p)
  lit = light - np.dot(light, axis) * axis          # best-lit surface normal (unnormalised)
  strength = float(np.linalg.norm(lit))
  towards_camera = -_normalize((p + q) / 2)
  facing = 0.5 + 0.5 * float(np.dot(lit, towards_camera)) / max(strength, 1e-6)
  offset = lit[:2] / max(float(np.linalg.norm(lit[:2])), 1e-6) * facing
  diffuse = 1.0 - ambient
  for scale, shift, k in ((1.0, 0.0, 0.55), (0.74, 0.18, 0.8), (0.4, 0.35, 1.0)):
    level = ambient + diffuse * k * (0.35 + 0.65 * strength * facing)
    _capsule(img, a + offset * shift * ra, b + offset * shift * rb, ra * scale, rb * scale,
             tuple(float(c) for c in np.clip(base * level, 0, 255)))


def _palm(img, pts, normal, base, light, ambient, edge_mm, focal, princpt):
  """The palm: its outline's convex hull filled, edges rounded, lit as a two-sided plate."""
  uv = project(pts, focal, princpt)
  hull = cv2.convexHull(np.round(uv * _ONE).astype(np.int32))
  centre = pts.mean(0)
  palmar = float(np.dot(normal, -centre)) > 0
  colour = base * (np.array([1.04, 1.06, 1.12]) if palmar else np.array([0.94, 0.95, 0.97]))
  level = ambient + (1.0 - ambient) * (0.3 + 0.7 * abs(float(np.dot(normal, light))))
  colour = tuple(float(c) for c in np.clip(colour * level, 0, 255))
  cv2.fillConvexPoly(img, hull, colour, cv2.LINE_AA, _SHIFT)
  thick = max(int(round(2 * focal[0] * edge_mm / centre[2])), 1)
  cv2.polylines(img, [hull], True, colour, thick, cv2.LINE_AA, _SHIFT)


def _forearm(img, p, q, rp, rq, base, sleeve, light, ambient, focal, princpt):
  """A forearm capsule from the wrist side p to q, its far part optionally in a sleeve."""
  _shaded_capsule(img, p, q, rp, rq, base, light, ambient, focal, princpt)
  if sleeve is not None:
    start = p + 0.3 * (q - p)
    _shaded_capsule(img, start, q, 0.7 * rp + 0.3 * rq + 2.0, rq + 2.0, sleeve, light, ambient,
                    focal, princpt)


def draw_hands(img, cam_joints, present, focal, princpt, skins, scales=(1.0, 1.0),
               light=(0.0, 0.0, -1.0), ambient=0.5, arms=(None, None)):
  """Paint the present hands of camera-frame joints [42, 3] (mm) onto ``img`` in place.

  Each hand is 15 phalanx capsules, a palm and optionally a forearm (``arms[h]``: None or a
  (length_mm, sleeve_bgr_or_None) pair); all primitives of both hands are painted far to near
  by mean depth (painter's algorithm), so the nearer hand occludes the farther one.
  """
  light = _normalize(np.asarray(light, np.float64))
  focal, princpt = np.asarray(focal, np.float64), np.asarray(princpt, np.float64)
  prims = []   # (depth, function, args)
  for h in np.flatnonzero(present):
    j = np.asarray(cam_joints, np.float64)[21 * h:21 * h + 21]
    base, s = np.asarray(skins[h], np.float64), float(scales[h])
    radii = (RADII * s).reshape(20)
    for child, parent in conventions.hand_bones():
      if parent == 20:
        continue
      p, q, rq = j[parent], j[child], radii[child]
      if child % 4 == 0:   # a fingertip joint lies on the skin: stop the capsule short of it
        q = q - 0.8 * rq * _normalize(q - p)
      prims.append(((p[2] + q[2]) / 2, _shaded_capsule,
                    (p, q, radii[parent], rq, base, light, ambient, focal, princpt)))
    across = j[7] - j[19]   # index MCP - pinky MCP
    outline = np.stack([j[20] - 0.3 * across, j[20] + 0.3 * across, j[3], (j[3] + j[2]) / 2,
                        j[7], j[11], j[15], j[19]])
    normal = _normalize(np.cross(j[7] - j[20], j[19] - j[20])) * (1.0 if h == 0 else -1.0)
    prims.append((outline[:, 2].mean(), _palm,
                  (outline, normal, base, light, ambient, 8.0 * s, focal, princpt)))
    if arms[h] is not None:
      length, sleeve = arms[h]
      axis = _normalize(j[20] - (j[7] + j[19]) / 2)
      if axis[2] < 0:   # keep the forearm in front of the camera
        length = min(length, 0.5 * j[20][2] / -axis[2])
      p, q = j[20] + 5.0 * s * axis, j[20] + (5.0 * s + length) * axis
      colour = base * 0.93
      prims.append((0.75 * p[2] + 0.25 * q[2], _forearm,   # the wrist end decides occlusion
                    (p, q, 21.0 * s, 27.0 * s, colour,
                     None if sleeve is None else np.asarray(sleeve, np.float64), light, ambient,
                     focal, princpt)))
  order = np.argsort([-p[0] for p in prims], kind="stable")
  for i in order:
    prims[i][1](img, *prims[i][2])
  return img


def render_image(cam_joints, present, focal, princpt, size, skins, scales, grey, seed):
  """[h, w, 3] uint8 BGR image of one view; its appearance depends only on ``seed``."""
  rng = np.random.default_rng(seed)
  w, h = size
  img = random_background(rng, h, w)
  light = np.array([rng.normal(0.0, 0.6), rng.normal(-0.4, 0.5), -1.0])
  sleeve = _colour(rng, 20, 230) if rng.random() < 0.5 else None
  arms = tuple((rng.uniform(120.0, 320.0), sleeve) if rng.random() < 0.85 else None
               for _ in range(2))
  draw_hands(img, cam_joints, present, focal, princpt, skins, scales, light,
             rng.uniform(0.35, 0.55), arms)
  out = img.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.uniform(-15.0, 15.0)
  out += rng.normal(0.0, rng.uniform(1.0, 5.0), (h, w, 1)).astype(np.float32)
  out = np.clip(out, 0, 255).astype(np.uint8)
  if rng.random() < 0.5:
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 0.9))
  if grey:
    out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
  return out


def _render_job(job):
  """Render one view and write its JPEG (runs in the worker processes)."""
  path, quality, args = job
  ok, buf = cv2.imencode(".jpg", render_image(*args), [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise RuntimeError(f"JPEG encoding failed for {path}")
  with open(path, "wb") as f:
    f.write(buf.tobytes())
  return len(buf)


def _worker_init():
  cv2.setNumThreads(1)


# -------------------------------------------------------------------------------- the dataset

def _split_code(split):
  return zlib.crc32(split.encode())


def _skin(rng):
  """A BGR skin tone from light to dark."""
  hsv = np.uint8([[[rng.uniform(4, 17), rng.uniform(60, 150), rng.uniform(80, 235)]]])
  return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def _accept_view(world, present, cam):
  """(uv [42, 2], joint_valid [42]) of a usable view, or None."""
  campos, camrot, focal, princpt, (w, h), _ = cam
  xc = world_to_camera(world, campos, camrot)
  mask = np.repeat(present, 21)
  if (xc[mask, 2] < 200.0).any():
    return None
  uv = project(xc, focal, princpt)
  inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
  valid = mask & inside
  wrists = np.array(conventions.WRISTS)[present]
  if not valid[wrists].all() or (mask & ~inside).sum() > MAX_OUT_OF_IMAGE:
    return None
  return uv, valid


def _plan(num_images, seed, split, views_per_frame, cameras_per_capture, num_captures,
          capture_offset, image_id_offset, hand_type_probs, image_dir):
  """All geometry and JSON of a split, and one render job per image (no pixels yet)."""
  rng = np.random.default_rng([seed, _split_code(split)])
  if num_captures is None:
    num_captures = int(np.clip(math.ceil(num_images / 250), 2, 20))
  num_captures = max(1, min(num_captures, num_images))
  per_capture = np.diff(np.linspace(0, num_images, num_captures + 1).round().astype(int))
  planned = math.ceil(num_images / views_per_frame) + num_captures
  counts = np.floor(np.asarray(hand_type_probs) / np.sum(hand_type_probs) * planned).astype(int)
  counts[0] += planned - counts.sum()
  types = rng.permutation(np.repeat(np.arange(3), counts))
  images, annotations, cameras, joint_3d, jobs, scales = [], [], {}, {}, [], {}
  n_frames, type_counts = 0, {t: 0 for t in HAND_TYPES}
  for ci in range(num_captures):
    capture = capture_offset + ci
    subject = capture
    scale = float(rng.uniform(*HAND_SCALE_RANGE))
    skin = _skin(rng)
    scales[subject] = scale
    centre = np.array([0.0, 0.0, 1000.0]) + rng.normal(0.0, 50.0, 3)
    names = [str(n) for n in sorted(rng.choice(np.r_[400000:400080, 410000:410080],
                                               cameras_per_capture, replace=False))]
    rig = make_rig(rng, centre, names)
    cameras[str(capture)] = {
        "campos": {n: rig[n][0].tolist() for n in names},
        "camrot": {n: rig[n][1].tolist() for n in names},
        "focal": {n: rig[n][2].tolist() for n in names},
        "princpt": {n: rig[n][3].tolist() for n in names}}
    joint_3d[str(capture)] = {}
    frame_idx = int(rng.integers(0, 2000))
    seq_counts = {t: 0 for t in HAND_TYPES}
    done = 0
    while done < per_capture[ci]:
      hand_type = HAND_TYPES[types[n_frames % len(types)]]
      for _ in range(200):
        world, present = sample_frame(rng, hand_type, scale, centre)
        world = _f32(world)
        views = [(n, v) for n in rng.permutation(names)
                 if (v := _accept_view(world, present, rig[n])) is not None]
        if views:
          break
      else:
        raise RuntimeError("no camera sees a sampled frame; check the rig parameters")
      views = views[:min(views_per_frame, per_capture[ci] - done)]
      frame_idx += int(rng.integers(1, 40))
      seq_no = {"right": 0, "left": 100, "interacting": 200}[hand_type]
      tag = {"right": "rh", "left": "lh", "interacting": "dh"}[hand_type]
      seq_name = f"{seq_no + seq_counts[hand_type] // 40:04d}_{tag}_synthetic"
      seq_counts[hand_type] += 1
      mask = np.repeat(present, 21)
      joint_3d[str(capture)][str(frame_idx)] = {
          "world_coord": world.tolist(),
          "joint_valid": [[bool(v)] for v in mask],
          "hand_type": hand_type,
          "hand_type_valid": True}
      skins = [skin * (1.0 + rng.normal(0.0, 0.04, 3)) for _ in range(2)]
      for name, (uv, valid) in views:
        image_id = image_id_offset + len(images)
        campos, camrot, focal, princpt, (w, h), grey = rig[name]
        file_name = f"Capture{capture}/{seq_name}/cam{name}/image{frame_idx}.jpg"
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h,
                       "capture": capture, "subject": subject, "seq_name": seq_name,
                       "camera": name, "frame_idx": frame_idx})
        annotations.append({"id": image_id, "image_id": image_id,
                            "bbox": _f32(bbox_from_joints(uv, valid)).tolist(),
                            "joint_valid": [[int(v)] for v in valid],
                            "hand_type": hand_type, "hand_type_valid": 1})
        xc = world_to_camera(world, campos, camrot)
        seed_i = [seed, _split_code(split), image_id]
        jobs.append((str(image_dir / file_name), None,
                     (xc, present, focal, princpt, (w, h), skins, (scale, scale), grey, seed_i)))
        type_counts[hand_type] += 1
      done += len(views)
      n_frames += 1
  data = {"images": images, "annotations": annotations}
  return data, cameras, joint_3d, jobs, scales, n_frames, type_counts, num_captures


def generate(out_dir, num_images, seed, split="train", *, views_per_frame=2,
             cameras_per_capture=8, num_captures=None, capture_offset=0, image_id_offset=0,
             hand_type_probs=(0.5, 0.25, 0.25), workers=2, quality=90, verbose=False):
  """Write ``num_images`` synthetic views of one split; returns a summary dict.

  ``hand_type_probs`` are the shares of (interacting, right, left) frames. ``workers`` > 1
  renders in that many spawned processes; the output bytes do not depend on it.
  """
  start = time.time()
  out_dir = pathlib.Path(out_dir)
  ann_dir = out_dir / "annotations" / split
  image_dir = out_dir / "images" / split
  data, cameras, joint_3d, jobs, scales, n_frames, type_counts, n_captures = _plan(
      num_images, seed, split, views_per_frame, cameras_per_capture, num_captures,
      capture_offset, image_id_offset, hand_type_probs, image_dir)
  ann_dir.mkdir(parents=True, exist_ok=True)
  paths = {}
  for kind, obj in (("data", data), ("camera", cameras), ("joint_3d", joint_3d)):
    paths[kind] = ann_dir / f"InterHand2.6M_{split}_{kind}.json"
    with open(paths[kind], "w") as f:
      json.dump(obj, f, separators=(",", ":"))
  for d in sorted({os.path.dirname(j[0]) for j in jobs}):
    os.makedirs(d, exist_ok=True)
  jobs = [(path, quality, args) for path, _, args in jobs]
  step = max(1, len(jobs) // 10)

  def report(i):
    if verbose and (i % step == 0 or i == len(jobs)):
      el = time.time() - start
      print(f"[{split}] {i}/{len(jobs)} images  {el:.1f} s  ({i / max(el, 1e-9):.1f} images/s)",
            flush=True)

  if workers > 1 and len(jobs) > 32:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
      for i, _ in enumerate(pool.imap(_render_job, jobs, chunksize=16), 1):
        report(i)
  else:
    for i, job in enumerate(jobs, 1):
      _render_job(job)
      report(i)
  seconds = time.time() - start
  return {"split": split, "out_dir": str(out_dir), "image_dir": str(image_dir),
          "data_json": str(paths["data"]), "camera_json": str(paths["camera"]),
          "joint_3d_json": str(paths["joint_3d"]), "num_images": len(jobs),
          "num_frames": n_frames, "num_captures": n_captures, "hand_types": type_counts,
          "subject_scales": scales, "seconds": seconds,
          "images_per_second": len(jobs) / max(seconds, 1e-9)}


def generate_splits(out_dir, counts, seed, **kwargs):
  """``generate`` for several splits ({'train': n, ...}) with disjoint captures, subjects, ids."""
  summaries, capture_offset, image_id_offset = {}, 0, 0
  for split, n in counts.items():
    s = generate(out_dir, n, seed, split, capture_offset=capture_offset,
                 image_id_offset=image_id_offset, **kwargs)
    summaries[split] = s
    capture_offset += s["num_captures"]
    image_id_offset += n
  return summaries


def _parse_splits(text):
  counts = {}
  for part in text.split(","):
    name, n = part.split(":")
    counts[name.strip()] = int(n)
  return counts


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m input_pipeline.synthetic",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output root (annotations/, images/)")
  parser.add_argument("--num_images", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default="train")
  parser.add_argument("--splits", default=None, help="e.g. train:2000,val:200,test:200")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--views_per_frame", type=int, default=2)
  parser.add_argument("--quality", type=int, default=90)
  args = parser.parse_args(argv)
  counts = _parse_splits(args.splits) if args.splits else {args.split: args.num_images}
  start = time.time()
  summaries = generate_splits(args.out, counts, args.seed, workers=args.workers,
                              views_per_frame=args.views_per_frame, quality=args.quality,
                              verbose=True)
  total = sum(s["num_images"] for s in summaries.values())
  seconds = time.time() - start
  for s in summaries.values():
    print(f"[{s['split']}] {s['num_images']} images, {s['num_frames']} frames, "
          f"{s['num_captures']} captures, hand types {s['hand_types']} -> {s['data_json']}")
  print(f"done: {total} images in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} images/s)")
  return summaries


def command():
  """Console script ``dfl-synthetic`` and ``python -m input_pipeline.synthetic``."""
  main(sys.argv[1:])
