"""Pseudo part segmentation from 2D joints (docs/pseudo_segmentation.md), in TensorFlow ops.

InterHand2.6M has no part masks, so the segmentation targets are drawn from the joints: per hand
a palm polygon (wrist and the five finger bases, as a fan of triangles from the wrist) and 15
phalanx capsules (consecutive finger joints), classes 1-16 for the right hand and 17-32 for the
left, 0 background. Where parts overlap the nearest one wins (painting far to near by the mean
camera depth of a part's joints), so the nearer hand occludes the farther.

Class order within a hand (offset 0 right, 16 left): 1 palm; then per finger thumb, index,
middle, ring, pinky the proximal, middle and distal phalanx (2-4 thumb, ..., 14-16 pinky).
A part is drawn only when all its joints are valid.
"""

import numpy as np
import tensorflow as tf

from dfl_jax.conventions import NUM_JOINTS_PER_HAND, RIGHT_WRIST

NUM_CLASSES = 33


def _part_tables():
  """Capsules (joint a, joint b, class) and palm triangles (wrist, base i, base i+1, class)."""
  capsules, triangles = [], []
  for hand in range(2):
    off, cls_off = NUM_JOINTS_PER_HAND * hand, 16 * hand
    wrist = RIGHT_WRIST + off
    for finger in range(5):
      base = 4 * finger + off  # tip = base, then towards the palm: base+1, base+2, base+3
      for k, (a, b) in enumerate([(base + 3, base + 2), (base + 2, base + 1), (base + 1, base)]):
        capsules.append((a, b, cls_off + 2 + 3 * finger + k))
    bases = [4 * f + 3 + off for f in range(5)]
    for i in range(4):
      triangles.append((wrist, bases[i], bases[i + 1], cls_off + 1))
  return np.asarray(capsules, np.int32), np.asarray(triangles, np.int32)


CAPSULES, TRIANGLES = _part_tables()


def render(joints_xy, joints_depth, joint_valid, radius, size):
  """Rasterises the part labels.

  Args:
    joints_xy: [42, 2] joint positions in segmentation-map pixels (pixel centres at integers).
    joints_depth: [42] camera depth of each joint (any unit; only the order matters).
    joint_valid: [42] in {0, 1}.
    radius: [2] capsule radius of the right and left hand, in segmentation-map pixels.
    size: (height, width) of the map.
  Returns:
    int32 [height, width] labels in 0..32.
  """
  h, w = size
  joints_xy = tf.cast(joints_xy, tf.float32)
  depth = tf.cast(joints_depth, tf.float32)
  valid = tf.cast(joint_valid, tf.float32) > 0
  # Pixel coordinates broadcast against the parts (last axis): no [h, w, P, 2] intermediates.
  px = tf.range(w, dtype=tf.float32)[None, :, None]
  py = tf.range(h, dtype=tf.float32)[:, None, None]

  # Capsules: squared distance from each pixel to each segment.
  a = tf.gather(joints_xy, CAPSULES[:, 0])
  b = tf.gather(joints_xy, CAPSULES[:, 1])
  abx, aby = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
  inv_len2 = 1.0 / tf.maximum(abx * abx + aby * aby, 1e-6)
  rx, ry = px - a[:, 0], py - a[:, 1]
  t = tf.clip_by_value((rx * abx + ry * aby) * inv_len2, 0.0, 1.0)  # [h, w, 30]
  dx, dy = rx - t * abx, ry - t * aby
  r = tf.gather(tf.cast(radius, tf.float32), CAPSULES[:, 2] // 17)
  cap_in = (dx * dx + dy * dy <= r * r) & (tf.gather(valid, CAPSULES[:, 0]) &
                                           tf.gather(valid, CAPSULES[:, 1]))
  cap_depth = 0.5 * (tf.gather(depth, CAPSULES[:, 0]) + tf.gather(depth, CAPSULES[:, 1]))

  # Palm triangles: the pixel is on the same side of the three edges.
  v = [tf.gather(joints_xy, TRIANGLES[:, i]) for i in range(3)]

  def side(q0, q1):
    return (q1[:, 0] - q0[:, 0]) * (py - q0[:, 1]) - (q1[:, 1] - q0[:, 1]) * (px - q0[:, 0])

  s0, s1, s2 = side(v[0], v[1]), side(v[1], v[2]), side(v[2], v[0])
  tri_in = ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))
  tri_in &= (tf.gather(valid, TRIANGLES[:, 0]) & tf.gather(valid, TRIANGLES[:, 1]) &
             tf.gather(valid, TRIANGLES[:, 2]))
  tri_depth = (tf.gather(depth, TRIANGLES[:, 0]) + tf.gather(depth, TRIANGLES[:, 1]) +
               tf.gather(depth, TRIANGLES[:, 2])) / 3.0

  inside = tf.concat([cap_in, tri_in], axis=-1)                       # [h, w, P]
  part_depth = tf.concat([cap_depth, tri_depth], axis=0)              # [P]
  part_class = tf.constant(np.concatenate([CAPSULES[:, 2], TRIANGLES[:, 3]]), tf.int32)
  masked = tf.where(inside, part_depth, np.float32(np.inf))
  nearest = tf.argmin(masked, axis=-1, output_type=tf.int32)
  return tf.where(tf.reduce_any(inside, axis=-1), tf.gather(part_class, nearest), 0)
