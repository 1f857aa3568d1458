"""The 16 part frames of a hand skeleton, in JAX: HALO's canonicalisation of a query point.

HALO (Karunratanakul et al., 3DV 2021), which Im2Hands' initial occupancy network I builds on,
evaluates one occupancy function per hand part in that part's own frame, computed from the
keypoints alone, so that the shape follows the skeleton. The 16 parts are the project's part
classes (``pseudo_segmentation``: 1 the palm, then per finger thumb..pinky the proximal, middle
and distal phalanx), and a frame is (origin, rotation rows x, y, z):

- the palm: origin at the wrist, y towards the middle finger's MCP, z the palmar normal (of the
  plane through the wrist, the index MCP and the pinky MCP), x = y x z;
- a phalanx: origin at its proximal joint, y along the bone, z its parent's z carried along the
  smallest rotation that takes the parent bone's direction to this bone's (the finger's root
  bone, wrist to base joint, is the first phalanx's parent and starts with the palm's z); no
  choice of an up vector, so no degenerate pose.

Left hands are mirrored (x -> -x) first, so that one set of part functions serves both hands,
as the project's pose correction does; ``local_coordinates`` gives a query in every part's
frame, which is what the part functions read. The frames only rotate and translate, so the
local coordinates are invariant to a rigid motion of the hand and the query together.
"""

import jax.numpy as jnp
import numpy as np

from dfl_jax.conventions import RIGHT_WRIST

NUM_PARTS = 16
EPS = 1e-8
# Per part (1..16 -> index 0..15): (proximal joint, distal joint) within a hand; the palm
# (part 1) spans the wrist to the middle MCP.
PART_BONES = np.array([(RIGHT_WRIST, 11)] + [(4 * f + 3 - k, 4 * f + 2 - k)
                                             for f in range(5) for k in range(3)], np.int32)


def _normalize(v):
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), EPS)


def _rotate_min(v, a, b):
  """v rotated by the smallest rotation taking unit a to unit b (Rodrigues); a = b: v."""
  axis = jnp.cross(a, b)
  s = jnp.linalg.norm(axis, axis=-1, keepdims=True)
  c = jnp.sum(a * b, -1, keepdims=True)
  k = axis / jnp.maximum(s, EPS)
  rotated = v * c + jnp.cross(k, v) * s + k * jnp.sum(k * v, -1, keepdims=True) * (1.0 - c)
  return jnp.where(s > 1e-7, rotated, v)


def mirror(joints, left):
  """[..., 21, 3] reflected x -> -x where ``left`` ([...] bool or a Python bool)."""
  sign = jnp.where(jnp.asarray(left)[..., None, None], -1.0, 1.0)
  return joints * jnp.concatenate([sign, jnp.ones_like(sign), jnp.ones_like(sign)], -1)


def part_frames(joints):
  """One right hand's joints [..., 21, 3] -> (origins [..., 16, 3], rotations [..., 16, 3, 3]
  with rows x, y, z, lengths [..., 16] of the parts' bones)."""
  wrist = joints[..., RIGHT_WRIST, :]
  y = _normalize(joints[..., 11, :] - wrist)
  normal = jnp.cross(joints[..., 7, :] - wrist, joints[..., 19, :] - wrist)
  z = _normalize(normal - jnp.sum(normal * y, -1, keepdims=True) * y)
  rotations = [jnp.stack([jnp.cross(y, z), y, z], -2)]
  for f in range(5):
    parent, up = _normalize(joints[..., 4 * f + 3, :] - wrist), z
    for k in range(3):
      bone = _normalize(joints[..., 4 * f + 2 - k, :] - joints[..., 4 * f + 3 - k, :])
      up = _normalize(_rotate_min(up, parent, bone))
      up = _normalize(up - jnp.sum(up * bone, -1, keepdims=True) * bone)
      rotations.append(jnp.stack([jnp.cross(bone, up), bone, up], -2))
      parent = bone
  origins = joints[..., PART_BONES[:, 0], :]
  lengths = jnp.linalg.norm(joints[..., PART_BONES[:, 1], :] - origins, axis=-1)
  return origins, jnp.stack(rotations, -3), lengths


def local_coordinates(points, origins, rotations):
  """Queries [..., N, 3] -> [..., N, 16, 3]: each query in each part's frame, R (x - o)."""
  d = points[..., :, None, :] - origins[..., None, :, :]
  return jnp.einsum("...pij,...npj->...npi", rotations, d)
