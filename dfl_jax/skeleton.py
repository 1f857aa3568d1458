"""The 42-joint two-hand skeleton in InterHand2.6M order (DESIGN section 1).

Per hand: thumb tip..base 0-3, index 4-7, middle 8-11, ring 12-15, pinky 16-19, wrist 20; the
right hand is 0-20 and the left 21-41.
"""

import numpy as np

NUM_JOINTS_PER_HAND = 21
NUM_JOINTS = 2 * NUM_JOINTS_PER_HAND
RIGHT_WRIST = 20
LEFT_WRIST = 41
RIGHT = slice(0, 21)
LEFT = slice(21, 42)


def hand_bones(offset: int = 0):
  """The 20 bones of one hand as (child, parent) pairs, parent towards the wrist."""
  bones = []
  for finger in range(5):
    base = 4 * finger
    bones += [(base + i + offset, base + i + 1 + offset) for i in range(3)]
    bones.append((base + 3 + offset, RIGHT_WRIST + offset))
  return bones


BONES = hand_bones(0) + hand_bones(NUM_JOINTS_PER_HAND)  # 40 bones
# Flipping an image horizontally swaps the hands: right joint i <-> left joint i.
FLIP_PERMUTATION = np.concatenate([np.arange(21, 42), np.arange(0, 21)])


def adjacency(connect_wrists: bool = True) -> np.ndarray:
  """[42, 42] symmetric 0/1 adjacency with self-loops.

  The two hands' trees are joined wrist to wrist when ``connect_wrists`` (our choice, so that the
  graph convolution of the spatial position refinement can pass information between hands).
  """
  a = np.eye(NUM_JOINTS, dtype=np.float32)
  for i, j in BONES:
    a[i, j] = a[j, i] = 1.0
  if connect_wrists:
    a[RIGHT_WRIST, LEFT_WRIST] = a[LEFT_WRIST, RIGHT_WRIST] = 1.0
  return a
