"""Poses people make: common one-hand gestures and two-hand interactions, with noise.

The synthetic world mixes these with poses drawn uniformly within the joint limits
(``hand_model.sample_angles``); ``gesture_fraction`` of the frames use them. Angles are in
``hand_model``'s convention ([5, 4] degrees: per finger base flexion, base abduction, 2nd and 3rd
joint flexion; rows thumb, index, middle, ring, pinky).

One hand: open, relaxed, fist, point, victory, pinch (thumb and index pads meet, solved by a
small search over the thumb's angles), ok, thumbs-up, grasp.

Two hands (the left hand placed in the right hand's local frame, then both turned at random):
pray (palms together), fingertips (steeple: fingertips touching, palms apart), clasp (fingers
interlaced), hold (one hand wraps round the other's palm). Each placement is a template plus
noise; the world then resolves any interpenetration with the exact inside test
(``hand_shape.penetration``) by pushing the hands apart.
"""

import numpy as np

from input_pipeline import hand_model

ANGLE_NOISE_DEG = 6.0
PLACE_NOISE_DEG = 6.0
PLACE_NOISE_MM = 4.0


def _hand(thumb, fingers):
  """[5, 4] angles from a thumb row and one row for each of index..pinky (or one for all)."""
  fingers = np.asarray(fingers, np.float64)
  if fingers.ndim == 1:
    fingers = np.repeat(fingers[None], 4, 0)
  return np.concatenate([np.asarray(thumb, np.float64)[None], fingers])


_FIST = [85., 0., 100., 60.]
_OPEN = [0., 0., 0., 0.]
GESTURES = {
    "open": _hand([0., 15., 0., 0.], _OPEN),
    "relaxed": _hand([10., 5., 15., 15.], [15., 0., 25., 15.]),
    "fist": _hand([35., -10., 50., 40.], _FIST),
    "point": _hand([30., -5., 40., 30.], [_OPEN, _FIST, _FIST, _FIST]),
    "victory": _hand([30., -5., 40., 30.], [[0., 10., 0., 0.], [0., -8., 0., 0.], _FIST, _FIST]),
    "pinch": _hand([20., 0., 20., 20.], [[45., 0., 50., 30.], [20., 0., 30., 20.],
                                         [25., 0., 35., 20.], [30., 0., 40., 25.]]),
    "ok": _hand([20., 0., 20., 20.], [[45., 0., 50., 30.], [5., 0., 5., 0.], [5., 0., 5., 0.],
                                      [5., 0., 5., 0.]]),
    "thumbs_up": _hand([-10., 20., 0., 0.], _FIST),
    "grasp": _hand([30., 20., 20., 20.], [50., 0., 60., 40.]),
}
PINCHES = ("pinch", "ok")
INTERACTIONS = ("pray", "fingertips", "clasp", "hold")


def _noisy(angles, rng, noise=ANGLE_NOISE_DEG):
  return hand_model.clip_angles(angles + rng.normal(0.0, noise, angles.shape))


def solve_pinch(angles, rng, scale=1.0, candidates=256):
  """Turns the thumb (and the index's flexion) so the thumb and index tips meet (~6 mm apart,
  the pads touching): the best of ``candidates`` random tries around ``angles``."""
  lo, hi = hand_model.LIMITS_DEG[..., 0], hand_model.LIMITS_DEG[..., 1]
  tries = np.repeat(angles[None], candidates, 0)
  tries[:, 0] = rng.uniform(lo[0], hi[0], (candidates, 4))
  tries[:, 1, [0, 2, 3]] += rng.normal(0.0, 10.0, (candidates, 3))
  tries = hand_model.clip_angles(tries)
  best, err = angles, np.inf
  for t in tries:
    j = hand_model.hand_joints(t, scale)
    e = abs(np.linalg.norm(j[0] - j[4]) - 6.0 * scale)
    if e < err:
      best, err = t, e
  return best


def gesture_angles(name, rng, scale=1.0):
  """Noisy angles [5, 4] of the named one-hand gesture."""
  angles = _noisy(GESTURES[name], rng)
  if name in PINCHES:
    angles = solve_pinch(angles, rng, scale)
  return angles


def sample_gesture(rng, scale=1.0):
  """(name, angles [5, 4]) of a random one-hand gesture."""
  name = str(rng.choice(list(GESTURES)))
  return name, gesture_angles(name, rng, scale)


def _small_rotation(rng, deg=PLACE_NOISE_DEG):
  axis = hand_model.normalize(rng.normal(size=3))
  angle = np.radians(rng.normal(0.0, deg))
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def sample_interaction(rng, scale=1.0, name=None):
  """A two-hand interaction in the right hand's local frame.

  Returns (name, right angles [5, 4], left angles [5, 4], rot [3, 3], shift [3]): the left hand's
  local joints (``hand_model``, mirrored) go to ``local @ rot.T + shift``; the right hand stays
  at its local frame.
  """
  name = name or str(rng.choice(INTERACTIONS))
  s = float(scale)
  facing = hand_model.rotation(1, np.pi)        # the left palm faces the right palm
  if name == "pray":
    right = left = GESTURES["open"] * np.array([1.0, 0.3, 1.0, 1.0])
    rot, shift = facing, np.array([0.0, 0.0, 19.0 * s])
  elif name == "fingertips":
    right = left = GESTURES["relaxed"]
    tip_y = hand_model.hand_joints(right, s)[8, 1]           # middle fingertip height
    hinge = np.array([0.0, tip_y, 9.5 * s])
    opening = hand_model.rotation(0, -2.0 * np.radians(rng.uniform(10.0, 25.0)))
    rot = opening @ facing
    shift = hinge + opening @ (np.array([0.0, 0.0, 19.0 * s]) - hinge)
  elif name == "clasp":
    right = left = _hand([20., 0., 20., 10.], [70., 0., 60., 30.])
    rot = facing
    shift = np.array([rng.choice([-1.0, 1.0]) * 11.0 * s, 0.0, 42.0 * s])
  elif name == "hold":
    right, left = GESTURES["grasp"], GESTURES["relaxed"]
    turn = hand_model.rotation(2, rng.choice([-1.0, 1.0]) * np.pi / 2)
    rot = turn
    shift = np.array([0.0, 50.0 * s, 24.0 * s]) - turn @ np.array([0.0, 45.0 * s, 0.0])
  else:
    raise ValueError(f"unknown interaction {name!r}; choose from {INTERACTIONS}")
  noise = _small_rotation(rng)
  return (name, _noisy(right, rng), _noisy(left, rng), noise @ rot,
          shift + rng.normal(0.0, PLACE_NOISE_MM * s, 3))
