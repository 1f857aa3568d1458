"""Coordinate conventions shared by the data, the network, the metrics and inference.

One home for them (docs/coordinates.md explains each):

- Joints: 42 in InterHand2.6M order, right hand 0-20 (wrist 20), left hand 21-41 (wrist 41);
  inside a hand thumb tip..base 0-3, index 4-7, middle 8-11, ring 12-15, pinky 16-19, wrist 20;
  the bones join each joint to the next one towards the wrist.
- 2.5D: x, y in crop pixels; depth relative to that hand's wrist, encoded in ``DEPTH_UNITS`` (256)
  over a ``DEPTH_RANGE_MM`` (400 mm) range, 128 meaning the wrist's own depth, whatever the input
  size (A2J-Transformer's target space, which DFL follows: the paper's smooth-L1 thresholds of 1
  and 3, Eq. 6, are in these units).

``depth_mm_to_units`` and ``depth_units_to_mm`` are plain arithmetic: they take NumPy arrays, JAX
arrays and TensorFlow tensors alike, so the pipeline encodes and the metrics decode with the
same two lines.
"""

import numpy as np

NUM_JOINTS_PER_HAND = 21
NUM_JOINTS = 2 * NUM_JOINTS_PER_HAND
RIGHT_WRIST = 20
LEFT_WRIST = 41
WRISTS = (RIGHT_WRIST, LEFT_WRIST)   # (right, left), the order of every per-hand pair
RIGHT = slice(0, NUM_JOINTS_PER_HAND)
LEFT = slice(NUM_JOINTS_PER_HAND, NUM_JOINTS)
HANDS = ("right", "left")
HAND_SLICES = {"right": RIGHT, "left": LEFT}
HAND_TYPE_IDS = {"right": 0, "left": 1, "interacting": 2}
# Joint -> index of its hand's wrist; joint -> 0 (right) or 1 (left).
ROOT_OF = np.array([RIGHT_WRIST] * NUM_JOINTS_PER_HAND + [LEFT_WRIST] * NUM_JOINTS_PER_HAND)
HAND_OF = np.array([0] * NUM_JOINTS_PER_HAND + [1] * NUM_JOINTS_PER_HAND)
# Flipping an image horizontally swaps the hands: right joint i <-> left joint i.
FLIP_PERMUTATION = np.concatenate([np.arange(NUM_JOINTS_PER_HAND, NUM_JOINTS),
                                   np.arange(0, NUM_JOINTS_PER_HAND)])



def hand_bones(offset: int = 0):
  """The 20 bones of one hand as (child, parent) pairs, parent towards the wrist."""
  bones = []
  for finger in range(5):
    base = 4 * finger
    bones += [(base + i + offset, base + i + 1 + offset) for i in range(3)]
    bones.append((base + 3 + offset, RIGHT_WRIST + offset))
  return bones


BONES = hand_bones(0) + hand_bones(NUM_JOINTS_PER_HAND)  # 40 bones

DEPTH_RANGE_MM = 400.0   # 2.5D depth spans +-200 mm about each hand's wrist
DEPTH_UNITS = 256.0      # ... encoded in [0, 256), 128 = the wrist's depth


def depth_mm_to_units(relative_depth_mm):
  """``z = (d_rel / 200 mm + 1) / 2 * 256``: a depth relative to the wrist, mm -> 2.5D units."""
  return relative_depth_mm / (0.5 * DEPTH_RANGE_MM) * (0.5 * DEPTH_UNITS) + 0.5 * DEPTH_UNITS


def depth_units_to_mm(z):
  """The inverse of ``depth_mm_to_units``: ``d_rel = (z / 256 * 2 - 1) * 200 mm``."""
  return (z / DEPTH_UNITS * 2.0 - 1.0) * (0.5 * DEPTH_RANGE_MM)
