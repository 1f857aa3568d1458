"""Probabilistic part segmentation S_n (paper Sec. 3.2, after DIGIT [9]).

A head on the highest-resolution FPN map predicts C_S = 33 classes per pixel (16 parts for each
hand plus background; classes 1-16 right, 17-32 left, 0 background; the training labels:
docs/pseudo_segmentation.md).
The lower-resolution volumes are the softmax probabilities average-pooled to each scale
("the low-resolution segmentation map is obtained by down-sampling the high-resolution map").

The head's layout (3x3 conv, GroupNorm, ReLU, 1x1 classifier) is our choice; the paper only says
the volumes are estimated from the last (finest) feature map.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NUM_PART_CLASSES = 33


class PartSegmentationHead(nn.Module):
  num_classes: int = NUM_PART_CLASSES
  hidden: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] finest FPN map -> logits [B, H, W, num_classes] (float32)."""
    x = nn.Conv(self.hidden, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="conv")(x)
    x = nn.relu(nn.GroupNorm(num_groups=32, dtype=self.dtype, name="norm")(x))
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
    return logits.astype(jnp.float32)


def pooled_probabilities(logits: jax.Array, shapes: Sequence[Sequence[int]]):
  """Softmax of the finest logits, average-pooled to each (H, W) in ``shapes``.

  The pooling windows tile the map, so it is a reshape and a mean: the same numbers as
  ``nn.avg_pool`` with stride = window, without reduce_window, whose gradient costs 9 ms a
  training step of configs/tiny.py on 2 CPU cores.
  """
  probs = jax.nn.softmax(logits, axis=-1)
  b, hh, ww, c = probs.shape
  out = []
  for h, w in shapes:
    fy, fx = hh // h, ww // w
    if fy * h != hh or fx * w != ww:
      raise ValueError(f"scale {h}x{w} does not divide the segmentation map {probs.shape[1:3]}")
    out.append(probs if (fy, fx) == (1, 1)
               else probs.reshape(b, h, fy, w, fx, c).mean(axis=(2, 4)))
  return out
