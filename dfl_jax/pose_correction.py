"""Pose correction: a hand template registered greedily, root to leaf, onto predicted joints.

The cross-domain dual-modality system's last stage (its supplement, Sec. C and Fig. c; the
procedure is SemiHand's, Yang et al., ICCV 2021). Per hand, with a template of bone lengths and
a valid interval per joint angle:

1. the template's root (the wrist) is translated onto the predicted root;
2. each bone, from the root out, is turned towards the predicted child joint: its direction is
   the one from the already registered parent joint to the predicted child (the grey dotted
   line of Fig. c), its length the template's;
3. where that direction makes a joint angle outside its interval, the angle is rectified (set
   to the nearer end of the interval) before the child joint is placed.

The registered joints have the template's bone lengths exactly, the predicted roots, and every
joint angle within its interval; errors do not accumulate along a finger because each bone aims
at the predicted joint itself, not at the predicted bone's direction.

Joint angles (the supplement's "local coordinate system for the hand", Spurr et al., ECCV 2020,
Sec. 3.2, its reference [4]): the five root bones (wrist to each finger's base joint) span the
palm; the normals of consecutive root bones give each finger's first frame (z along the root
bone, x the palm normal on the palmar side, y = z x x); a frame is carried to the next bone by
the smallest rotation taking one bone's direction to the next. A bone's flexion is the angle of
its projection on the frame's x-z plane from z (positive towards the palm), its abduction the
angle out of that plane (positive along y). Root bones have no interval (the palm is taken from
the prediction, its bone lengths from the template); the 15 finger bones have one interval for
flexion and one for abduction. A left hand is mirrored (x -> -x), corrected as a right hand, and
mirrored back, so one table serves both hands.

The default template (``default_template``): bone lengths of the synthetic world's hand
(``input_pipeline.hand_model``: the mean of the genuine InterHand2.6M fixture hands), and angle
intervals that Spurr et al. obtain from annotated data; here from the synthetic hand's
anatomical range of motion (``hand_model.LIMITS_DEG``: fingers MCP flexion -20..90 degrees,
abduction -20..20, PIP 0..110, DIP 0..80; thumb CMC -15..40 / -20..25, MCP -10..60, IP -15..80),
expressed in the frames above by ``fit_template`` over the corners of that range and widened by
``DEFAULT_MARGIN_DEG`` (20 degrees: genuine hands go beyond the synthetic range, the thumb's IP
hyperextending by 32 degrees in one fixture frame; every fixture hand lies inside, tested). Box
intervals are coarser than Spurr et al.'s convex hulls over (flexion, abduction) pairs, a choice
made because the supplement speaks of a valid interval per angle. ``fit_template`` fits a template on a user's own annotations (mean bone
lengths, angle percentiles), which is Spurr et al.'s procedure; ``save_template`` /
``load_template`` read and write it as JSON (``python -m dfl_jax.correct_pose --template``).

``correct`` works on NumPy arrays [..., 21, 3] (one hand) and ``correct_two_hands`` on
[..., 42, 3] (InterHand2.6M order: right 0-20, left 21-41, wrists 20 and 41).
"""

import itertools
import json
import pathlib

import numpy as np

from dfl_jax import conventions, errors
from input_pipeline import hand_model

WRIST = conventions.RIGHT_WRIST   # 20, within one hand
# Per finger (thumb, index, middle, ring, pinky), its joints from the base out (InterHand order
# holds tip..base per finger: base 4f+3, then 4f+2, 4f+1, tip 4f).
CHAINS = np.array([[4 * f + 3, 4 * f + 2, 4 * f + 1, 4 * f] for f in range(5)])
EPS = 1e-9
DEFAULT_MARGIN_DEG = 20.0


# ------------------------------------------------------------------ frames and angles

def _normalize(v):
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), EPS)


def _dot(a, b):
  return np.sum(a * b, axis=-1)


def _rotate_min(v, a, b):
  """v rotated by the smallest rotation taking unit vector a to unit vector b (Rodrigues)."""
  axis = np.cross(a, b)
  s = np.linalg.norm(axis, axis=-1, keepdims=True)
  c = _dot(a, b)[..., None]
  k = axis / np.maximum(s, EPS)
  rotated = v * c + np.cross(k, v) * s + k * _dot(k, v)[..., None] * (1.0 - c)
  return np.where(s > 1e-12, rotated, v)   # parallel: nothing to rotate (antiparallel is not
  # reachable: flexion and abduction intervals keep a bone within 180 degrees of its parent)


def palm_frames(root_bones):
  """First frames of the five fingers [..., 5, 3 (x, y, z), 3] from the root bones [..., 5, 3].

  z along the root bone; x the palmar normal: of the neighbouring root bones' plane for the
  thumb, index and pinky, the mean of the two planes' normals for the middle and ring fingers
  (Spurr et al.'s choice); y = z x x.
  """
  z = _normalize(root_bones)
  normals = _normalize(np.cross(root_bones[..., :4, :], root_bones[..., 1:, :]))
  x = np.stack([normals[..., 0, :], normals[..., 1, :],
                _normalize(normals[..., 1, :] + normals[..., 2, :]),
                _normalize(normals[..., 2, :] + normals[..., 3, :]), normals[..., 3, :]], -2)
  x = _normalize(x - _dot(x, z)[..., None] * z)
  return np.stack([x, np.cross(z, x), z], axis=-2)


def angles_in_frame(bone, frame):
  """(flexion, abduction) radians of ``bone`` [..., 3] in ``frame`` [..., 3, 3] (rows x, y, z)."""
  u = _normalize(bone)
  x, y, z = _dot(u, frame[..., 0, :]), _dot(u, frame[..., 1, :]), _dot(u, frame[..., 2, :])
  return np.arctan2(x, z), np.arcsin(np.clip(y, -1.0, 1.0))


def direction_from_angles(flexion, abduction, frame):
  """The unit vector with these angles in ``frame`` (the inverse of ``angles_in_frame``)."""
  ca = np.cos(abduction)[..., None]
  return (ca * (np.sin(flexion)[..., None] * frame[..., 0, :]
                + np.cos(flexion)[..., None] * frame[..., 2, :])
          + np.sin(abduction)[..., None] * frame[..., 1, :])


def mirror(joints, left=True):
  """One hand's joints [..., 3] reflected x -> -x when ``left`` (a left hand as a right one and
  back: the template is a right hand)."""
  return joints * np.array([-1.0, 1.0, 1.0]) if left else joints


def joint_angles(joints, left=False):
  """Flexion and abduction (degrees) [..., 5, 3, 2] of the 15 finger bones of one hand [..., 21, 3]
  (per finger, the bones from the base joint out; last axis flexion, abduction)."""
  j = mirror(np.asarray(joints, np.float64), left)
  root = j[..., CHAINS[:, 0], :] - j[..., WRIST:WRIST + 1, :]
  frame = palm_frames(root)
  parent = _normalize(root)
  out = []
  for k in range(1, 4):
    bone = j[..., CHAINS[:, k], :] - j[..., CHAINS[:, k - 1], :]
    out.append(np.stack(angles_in_frame(bone, frame), -1))
    child = _normalize(bone)
    frame = _rotate_min(frame, parent[..., None, :], child[..., None, :])
    parent = child
  return np.degrees(np.stack(out, -2))


def bone_lengths(joints):
  """[..., 5, 4] bone lengths of one hand [..., 21, 3]: per finger root bone, then outwards."""
  j = np.asarray(joints, np.float64)
  chain = j[..., CHAINS, :]                                   # [..., 5, 4, 3]
  parents = np.concatenate([np.broadcast_to(j[..., None, None, WRIST, :], chain[..., :1, :].shape),
                            chain[..., :3, :]], axis=-2)
  return np.linalg.norm(chain - parents, axis=-1)


# ------------------------------------------------------------------ the template

def _wrap(a):
  return (a + np.pi) % (2.0 * np.pi) - np.pi


def rectify(angle, lo, hi):
  """``angle`` (radians) set to the angularly nearer end of [lo, hi] when outside it."""
  inside = (angle >= lo) & (angle <= hi)
  to_lo, to_hi = np.abs(_wrap(angle - lo)), np.abs(_wrap(angle - hi))
  return np.where(inside, angle, np.where(to_lo <= to_hi, lo, hi))


def fit_template(joints, valid=None, percentiles=(0.5, 99.5), margin_deg=0.0, left=False):
  """A template fitted on annotated hands [N, 21, 3] (Spurr et al.'s limits from data).

  Bone lengths: the mean over hands whose joints are all valid (``valid`` [N, 21], default
  all); intervals: the ``percentiles`` of each angle over those hands, widened by
  ``margin_deg``.
  """
  j = np.asarray(joints, np.float64)
  keep = np.ones(len(j), bool) if valid is None else np.all(np.asarray(valid) > 0, axis=-1)
  if not keep.any():
    raise errors.InputError("fit_template: no hand has all 21 joints valid")
  j = j[keep]
  angles = joint_angles(j, left=left)
  lo = np.percentile(angles, percentiles[0], axis=0) - margin_deg
  hi = np.percentile(angles, percentiles[1], axis=0) + margin_deg
  return {"bone_lengths_mm": bone_lengths(j).mean(0),
          "flexion_deg": np.stack([lo[..., 0], hi[..., 0]], -1),
          "abduction_deg": np.stack([lo[..., 1], hi[..., 1]], -1),
          "source": f"fitted on {int(keep.sum())} hands"}


def _default_template():
  lo, hi = hand_model.LIMITS_DEG[..., 0], hand_model.LIMITS_DEG[..., 1]
  # Every corner of each finger's range (the others at rest): 2^4 poses per finger.
  poses = []
  for corner in itertools.product((0, 1), repeat=4):
    angles = np.where(np.array(corner, bool), hi, lo)
    poses.append(hand_model.hand_joints(angles))
  for t in np.linspace(0.0, 1.0, 5):                    # and the way between, all at once
    poses.append(hand_model.hand_joints(lo + t * (hi - lo)))
  template = fit_template(np.stack(poses), percentiles=(0.0, 100.0),
                          margin_deg=DEFAULT_MARGIN_DEG)
  template["bone_lengths_mm"] = bone_lengths(hand_model.hand_joints(np.zeros((5, 4))))
  template["source"] = ("default: the synthetic hand's bone lengths (mean of the InterHand2.6M "
                        "fixture hands) and its range of motion (hand_model.LIMITS_DEG) in "
                        "Spurr et al.'s frames, widened by 20 degrees")
  return template


_DEFAULT = None


def default_template():
  """The default template (see the module docstring); a fresh copy each call."""
  global _DEFAULT
  if _DEFAULT is None:
    _DEFAULT = _default_template()
  return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in _DEFAULT.items()}


def check_template(template, source="template"):
  """The template with float arrays of the right shapes, or an InputError naming ``source``."""
  shapes = {"bone_lengths_mm": (5, 4), "flexion_deg": (5, 3, 2), "abduction_deg": (5, 3, 2)}
  out = dict(template)
  for key, shape in shapes.items():
    if key not in template:
      raise errors.InputError(f"{source}: no '{key}' (a template holds {sorted(shapes)})")
    try:
      value = np.asarray(template[key], np.float64)
    except (TypeError, ValueError) as e:
      raise errors.InputError(f"{source}: '{key}' is not an array of numbers ({e})") from e
    if value.shape != shape or not np.all(np.isfinite(value)):
      raise errors.InputError(f"{source}: '{key}' must be {shape} finite numbers, got shape "
                              f"{value.shape}")
    out[key] = value
  if np.any(out["bone_lengths_mm"] <= 0):
    raise errors.InputError(f"{source}: 'bone_lengths_mm' must be positive")
  for key in ("flexion_deg", "abduction_deg"):
    if np.any(out[key][..., 0] > out[key][..., 1]):
      raise errors.InputError(f"{source}: '{key}' has an interval whose low end is above its high")
  if np.any(np.abs(out["abduction_deg"]) > 90) or np.any(np.abs(out["flexion_deg"]) > 180):
    raise errors.InputError(f"{source}: abduction within [-90, 90] and flexion within [-180, 180]"
                            " degrees")
  return out


def save_template(template, path):
  template = check_template(template)
  data = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in template.items()}
  data["layout"] = ("bone_lengths_mm [finger][root bone, then outwards]; flexion_deg and "
                    "abduction_deg [finger][bone from the base joint out][low, high]; fingers "
                    "thumb, index, middle, ring, pinky")
  pathlib.Path(path).write_text(json.dumps(data, indent=1))


def load_template(path):
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.MissingFileError(f"--template: {path} does not exist")
  try:
    data = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.InputError(f"--template: {path} is not JSON ({e})") from e
  if not isinstance(data, dict):
    raise errors.InputError(f"--template: {path} must hold a JSON object")
  return check_template(data, source=f"--template {path}")


# ------------------------------------------------------------------ the correction

def correct(joints, template=None, left=False):
  """One hand's joints [..., 21, 3] registered to the template (the module docstring's steps)."""
  t = check_template(default_template() if template is None else template)
  j = mirror(np.asarray(joints, np.float64), left)
  out = np.array(j)
  wrist = j[..., WRIST, :]                                           # step 1: the root
  lengths = t["bone_lengths_mm"]
  root = _normalize(j[..., CHAINS[:, 0], :] - wrist[..., None, :])   # step 2 for root bones
  base = wrist[..., None, :] + lengths[:, 0, None] * root
  out[..., CHAINS[:, 0], :] = base
  frame = palm_frames(root)
  parent, position = root, base
  flex, abd = np.radians(t["flexion_deg"]), np.radians(t["abduction_deg"])
  for k in range(1, 4):                                              # steps 2-3, root to leaf
    aim = j[..., CHAINS[:, k], :] - position
    f, a = angles_in_frame(aim, frame)
    short = np.linalg.norm(aim, axis=-1) < 1e-6                      # aims at itself: straight
    f, a = np.where(short, 0.0, f), np.where(short, 0.0, a)
    f = rectify(f, flex[:, k - 1, 0], flex[:, k - 1, 1])
    a = rectify(a, abd[:, k - 1, 0], abd[:, k - 1, 1])
    child = direction_from_angles(f, a, frame)
    position = position + lengths[:, k, None] * child
    out[..., CHAINS[:, k], :] = position
    frame = _rotate_min(frame, parent[..., None, :], child[..., None, :])
    parent = child
  return mirror(out, left)


def correct_two_hands(joints, template=None):
  """Both hands of [..., 42, 3] joints (InterHand2.6M order) corrected with one template."""
  j = np.asarray(joints, np.float64)
  if j.shape[-2:] != (conventions.NUM_JOINTS, 3):
    raise errors.InputError(f"pose correction takes [..., 42, 3] joints, got {j.shape}")
  t = check_template(default_template() if template is None else template)
  return np.concatenate([correct(j[..., conventions.RIGHT, :], t, left=False),
                         correct(j[..., conventions.LEFT, :], t, left=True)], axis=-2)
