"""The 42-joint two-hand skeleton graph in InterHand2.6M order (docs/coordinates.md).

The joint order and the bones live in ``dfl_jax.conventions``; this module adds the graph that
the spatial position refinement (Sec. 3.3.4) convolves over.
"""

import numpy as np

from dfl_jax.conventions import BONES, LEFT_WRIST, NUM_JOINTS, RIGHT_WRIST


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
