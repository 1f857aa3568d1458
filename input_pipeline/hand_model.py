"""The kinematic hand of the synthetic world: bones, joint limits, forward kinematics.

Right-hand local frame (mm): x radial (towards the thumb), y wrist -> middle MCP, z palmar; the
wrist at the origin. Finger bases and phalanx lengths are the mean of the genuine InterHand2.6M
fixture hands (their own joint positions; e.g. index 41/25/22 mm, thumb CMC-MCP 37 mm), scaled
per subject by ``HAND_SCALE_RANGE``. A left hand is the mirror image (x -> -x) of a right hand
with the same angles. Joints come in InterHand order (per finger tip, 3rd, 2nd, base joint;
thumb, index, middle, ring, pinky; the wrist last).

Angles [5, 4] (degrees) per finger row (thumb, index, middle, ring, pinky) and column (base
flexion, base abduction, 2nd-joint flexion, 3rd-joint flexion): fingers MCP, MCP, PIP, DIP;
thumb CMC, CMC, MCP, IP. Flexion is positive towards the palm, abduction towards the thumb.
"""

import numpy as np

from dfl_jax import conventions

# Bases: thumb CMC, index/middle/ring/pinky MCP.
BASES = np.array([[21., 22., 20.], [24., 82., 7.], [0., 85., 0.], [-22., 78., 1.],
                  [-40., 66., 5.]])
# Phalanx lengths per finger from the base out (mm): thumb metacarpal, proximal, distal;
# fingers proximal, middle, distal.
PHALANGES = np.array([[37., 31., 27.], [41., 25., 22.], [44., 29., 22.], [40., 27., 22.],
                      [31., 19.5, 19.]])
# Flesh radii (mm) at each finger's joints, InterHand order: tip, 3rd, 2nd, base.
RADII = np.array([[8.0, 9.0, 10.0, 12.0], [7.0, 8.0, 8.8, 9.8], [7.2, 8.2, 9.0, 10.0],
                  [6.8, 7.8, 8.6, 9.4], [6.0, 7.0, 7.6, 8.4]])
FINGER_SPLAY_DEG = np.array([0., 6., 0., -6., -12.])   # rest direction, + towards the thumb
SPREAD_DIRECTION = np.array([0., 1., 0.2, -0.6, -1.])   # how abduction spreads the fingers
LIMITS_DEG = np.array([
    [[-15., 40.], [-20., 25.], [-10., 60.], [-15., 80.]],
    *[[[-20., 90.], [-20., 20.], [0., 110.], [0., 80.]]] * 4,
])
HAND_SCALE_RANGE = (0.85, 1.15)


def rotation(axis, angle):
  """Rotation matrices [..., 3, 3] about a coordinate axis by ``angle`` (radians)."""
  c, s = np.cos(angle), np.sin(angle)
  o, z = np.ones_like(c), np.zeros_like(c)
  m = {0: [[o, z, z], [z, c, -s], [z, s, c]],
       1: [[c, z, s], [z, o, z], [-s, z, c]],
       2: [[c, -s, z], [s, c, z], [z, z, o]]}[axis]
  return np.moveaxis(np.array(m, dtype=np.float64), (0, 1), (-2, -1))


def normalize(v):
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _base_frames():
  """[5, 3, 3] rest frames (columns x, y, z) of the five digits in the local hand frame."""
  frames = rotation(2, -np.radians(FINGER_SPLAY_DEG))
  y = normalize(np.array([0.55, 0.75, 0.35]))            # thumb metacarpal direction
  z = normalize(np.array([-1.0, 0.0, 0.6]) - np.dot([-1.0, 0.0, 0.6], y) * y)  # thumb flexes
  frames[0] = np.stack([np.cross(y, z), y, z], axis=1)    # across the palm, nail pronated
  return frames


BASE_FRAMES = _base_frames()


def bone_lengths(scale=1.0):
  """[20] bone lengths (mm) of one hand in ``conventions.hand_bones()`` order."""
  per = np.concatenate([PHALANGES[:, ::-1], np.linalg.norm(BASES, axis=1, keepdims=True)], 1)
  return scale * per.reshape(20)


def kinematics(angles_deg, scale=1.0, left=False):
  """Forward kinematics: (joints [21, 3] mm, segment frames [5, 3, 3, 3]).

  ``frames[f, k]`` is the rotation (columns x across, y along, z palmar) of finger ``f``'s
  segment ``k`` (0 from the base joint, 1, 2 the distal one) in the local hand frame; for a
  left hand both are mirrored (x -> -x), so z still points to the palm side.
  """
  a = np.radians(np.asarray(angles_deg, np.float64))
  r1 = BASE_FRAMES @ rotation(2, -a[:, 1]) @ rotation(0, a[:, 0])
  r2 = r1 @ rotation(0, a[:, 2])
  r3 = r2 @ rotation(0, a[:, 3])
  lengths = PHALANGES * scale
  p0 = BASES * scale
  p1 = p0 + lengths[:, :1] * r1[:, :, 1]
  p2 = p1 + lengths[:, 1:2] * r2[:, :, 1]
  p3 = p2 + lengths[:, 2:] * r3[:, :, 1]
  joints = np.zeros((conventions.NUM_JOINTS_PER_HAND, 3))
  joints[:20] = np.stack([p3, p2, p1, p0], axis=1).reshape(20, 3)
  frames = np.stack([r1, r2, r3], axis=1)
  if left:
    joints[:, 0] *= -1.0
    frames = frames * np.array([-1.0, 1.0, 1.0])[:, None]   # mirror rows: x of every column
  return joints, frames


def hand_joints(angles_deg, scale=1.0, left=False):
  """[21, 3] local joints (mm, InterHand order) for angles [5, 4] (degrees, ``LIMITS_DEG``)."""
  return kinematics(angles_deg, scale, left)[0]


def clip_angles(angles):
  return np.clip(angles, LIMITS_DEG[..., 0], LIMITS_DEG[..., 1])


def sample_angles(rng):
  """Uniform-style random joint angles [5, 4] inside ``LIMITS_DEG``: a shared curl plus noise."""
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
  return clip_angles(angles)


def random_rotation(rng):
  """A uniformly random 3x3 rotation."""
  w, x, y, z = normalize(rng.normal(size=4))
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
