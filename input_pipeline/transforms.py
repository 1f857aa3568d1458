"""Crop, augmentation and 2.5D targets in TensorFlow ops (docs/coordinates.md).

One affine ``A`` maps image pixels to crop pixels (integer coordinates are pixel centres, as in
cv2.warpAffine): optional horizontal flip of the image, then the crop box's centre (shifted by
the translation) to the crop centre, scaled so the box (times the scale factor) fills the crop,
rotated about the centre. The image is warped with A, the joints are mapped with A, and an
evaluation uses A^-1 to return predictions to the image.

Augmentation follows InterNet's recipe (which A2J-Transformer and DFL train with): translation
uniform +-15% of the box, scale 1 + 0.25 * clip(N(0,1), -1, 1), rotation
45 deg * clip(N(0,1), -2, 2) with probability 0.6, horizontal flip with probability 0.5 (the two
hands' joint blocks and hand types swap, the relative root depth changes sign), colour scale
uniform [0.8, 1.2] per channel. A joint pushed outside the crop or the depth range loses its
validity.
"""

import math

import cv2
import numpy as np
import tensorflow as tf

from dfl_jax.conventions import (DEPTH_UNITS, FLIP_PERMUTATION, LEFT_WRIST, RIGHT_WRIST,
                                 ROOT_OF, depth_mm_to_units)

HAND_CAPSULE_RADIUS_MM = 9.0


def crop_affine(crop_box, out_size, scale=1.0, rotation_deg=0.0, shift=(0.0, 0.0), flip=False,
                image_width=None):
  """3x3 matrix from image pixels to crop pixels.

  crop_box: [4] xywh (square, from the official process_bbox); shift: fraction of the box.
  flip: mirror the image horizontally first (x -> image_width - 1 - x), as InterNet does.
  """
  box = tf.cast(crop_box, tf.float32)
  s = tf.cast(out_size, tf.float32)
  cx = box[0] + 0.5 * box[2] + shift[0] * box[2]
  cy = box[1] + 0.5 * box[3] + shift[1] * box[3]
  mirror = tf.eye(3)
  if flip is not False:
    flip = tf.cast(flip, tf.bool)
    width = tf.cast(image_width, tf.float32)
    # The shifted box centre is mirrored with the image: x -> width - 1 - x.
    cx = tf.where(flip, width - 1.0 - cx, cx)
    flipped = tf.stack([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mirror = tf.where(flip, flipped, mirror)
  k = s / (box[2] * scale)
  theta = tf.cast(rotation_deg, tf.float32) * (math.pi / 180.0)
  c, n = tf.cos(theta), tf.sin(theta)
  zero, one = tf.zeros([]), tf.ones([])
  to_origin = tf.stack([[one, zero, -cx], [zero, one, -cy], [zero, zero, one]])
  rotate_scale = tf.stack([[k * c, -k * n, zero], [k * n, k * c, zero], [zero, zero, one]])
  to_centre = tf.stack([[one, zero, 0.5 * s], [zero, one, 0.5 * s], [zero, zero, one]])
  return to_centre @ rotate_scale @ to_origin @ mirror


def apply_affine(matrix, points):
  """points [..., 2] -> [..., 2] under a 3x3 affine."""
  points = tf.cast(points, tf.float32)
  return points @ tf.transpose(matrix[:2, :2]) + matrix[:2, 2]


def _warp_cv2(image, matrix, out_size, colour):
  out = cv2.warpAffine(image, matrix[:2], (int(out_size), int(out_size)),
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  if not np.all(colour == 1.0):
    out = cv2.transform(out, np.diag(colour).astype(np.float32))  # saturating per channel
  return out


def warp_image(image, matrix, out_size, colour=None):
  """Crop pixel q shows image pixel A^-1 q (bilinear, zero outside), times a colour scale.

  image: uint8 [H, W, 3]. cv2.warpAffine through tf.numpy_function: about 3x faster than
  TensorFlow's ImageProjectiveTransformV3 on a CPU core, and it releases the GIL while it works.
  Returns uint8 [out_size, out_size, 3].
  """
  colour = tf.ones([3]) if colour is None else tf.cast(colour, tf.float32)
  out = tf.numpy_function(_warp_cv2, [tf.cast(image, tf.uint8), tf.cast(matrix, tf.float32),
                                      out_size, colour], tf.uint8, stateful=False)
  return tf.ensure_shape(out, [out_size, out_size, 3])


def sample_augmentation(seed):
  """InterNet's augmentation parameters from a stateless seed [2]."""
  u = tf.random.stateless_uniform([8], seed=seed)
  g = tf.random.stateless_normal([2], seed=seed + 1)
  shift = (0.15 * (2.0 * u[0] - 1.0), 0.15 * (2.0 * u[1] - 1.0))
  scale = 1.0 + 0.25 * tf.clip_by_value(g[0], -1.0, 1.0)
  rotation = tf.where(u[2] <= 0.6, 45.0 * tf.clip_by_value(g[1], -2.0, 2.0), 0.0)
  flip = u[3] <= 0.5
  colour = 0.8 + 0.4 * u[4:7]
  return dict(shift=shift, scale=scale, rotation=rotation, flip=flip, colour=colour)


def no_augmentation():
  return dict(shift=(0.0, 0.0), scale=tf.constant(1.0), rotation=tf.constant(0.0),
              flip=tf.constant(False), colour=tf.ones([3]))


def make_targets(example, aug, out_size):
  """Crop matrix, 2.5D joints, validity, hand presence and root depth after augmentation.

  example: a decoded record (joint_img [42,2], joint_cam [42,3], joint_valid [42], crop_box,
  hand_type in {0 right, 1 left, 2 interacting}, hand_type_valid, image_width).
  Returns a dict; 'affine' is the 3x3 image->crop matrix.
  """
  flip = aug["flip"]
  matrix = crop_affine(example["crop_box"], out_size, aug["scale"], aug["rotation"],
                       aug["shift"], flip, example["image_width"])
  joint_img = tf.cast(example["joint_img"], tf.float32)
  xy = apply_affine(matrix, joint_img)
  cam_z = tf.cast(example["joint_cam"], tf.float32)[:, 2]
  valid = tf.cast(example["joint_valid"], tf.float32)

  def swap(x):
    return tf.where(flip, tf.gather(x, FLIP_PERMUTATION), x)

  xy, cam_z, valid = swap(xy), swap(cam_z), swap(valid)
  wrist_z = tf.gather(cam_z, ROOT_OF)
  z = depth_mm_to_units(cam_z - wrist_z)
  joints = tf.concat([xy, z[:, None]], axis=-1)
  s = tf.cast(out_size, tf.float32)
  inside = ((xy[:, 0] >= 0) & (xy[:, 0] < s) & (xy[:, 1] >= 0) & (xy[:, 1] < s) &
            (z >= 0) & (z < DEPTH_UNITS))
  valid = valid * tf.cast(inside, tf.float32)

  hand_type = tf.cast(example["hand_type"], tf.int32)
  presence = tf.gather(tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), hand_type)
  presence = tf.where(flip, presence[::-1], presence)
  # Relative root depth Z_left - Z_right (after the swap) in the same 256-unit, 400 mm range.
  rel_root = depth_mm_to_units(cam_z[LEFT_WRIST] - cam_z[RIGHT_WRIST])
  both = tf.cast(example["joint_valid"][RIGHT_WRIST] * example["joint_valid"][LEFT_WRIST] > 0,
                 tf.float32)
  root_valid = both * tf.cast(tf.equal(hand_type, 2), tf.float32) * tf.cast(
      (rel_root >= 0) & (rel_root < DEPTH_UNITS), tf.float32)
  return dict(affine=matrix, joints=joints, joint_valid=valid, hand_presence=presence,
              hand_presence_valid=tf.cast(example["hand_type_valid"], tf.float32),
              rel_root_depth=rel_root, rel_root_depth_valid=root_valid,
              joint_depth_mm=cam_z)


def capsule_radius(example, aug, out_size, seg_stride):
  """[2] capsule radius of the right/left hand in segmentation-map pixels (9 mm at the wrist)."""
  focal = tf.reduce_mean(tf.cast(example["focal"], tf.float32))
  cam_z = tf.cast(example["joint_cam"], tf.float32)[:, 2]
  wrist_z = tf.maximum(tf.stack([cam_z[RIGHT_WRIST], cam_z[LEFT_WRIST]]), 1.0)
  wrist_z = tf.where(aug["flip"], wrist_z[::-1], wrist_z)
  k = tf.cast(out_size, tf.float32) / (tf.cast(example["crop_box"][2], tf.float32) * aug["scale"])
  return HAND_CAPSULE_RADIUS_MM * focal / wrist_z * k / seg_stride


def flip_example(example):
  """The record of the horizontally mirrored image: x -> W - 1 - x, hands and hand types swap.

  Only the fields the targets use are mirrored (joint_img, joint_cam, joint_valid, crop_box,
  hand_type). Flipping twice is the identity.
  """
  width = tf.cast(example["image_width"], tf.float32)
  out = dict(example)
  img = tf.gather(tf.cast(example["joint_img"], tf.float32), FLIP_PERMUTATION)
  out["joint_img"] = tf.stack([width - 1.0 - img[:, 0], img[:, 1]], axis=-1)
  cam = tf.gather(tf.cast(example["joint_cam"], tf.float32), FLIP_PERMUTATION)
  out["joint_cam"] = cam * tf.constant([-1.0, 1.0, 1.0])
  out["joint_valid"] = tf.gather(tf.cast(example["joint_valid"], tf.float32), FLIP_PERMUTATION)
  box = tf.cast(example["crop_box"], tf.float32)
  out["crop_box"] = tf.stack([width - 1.0 - box[0] - box[2], box[1], box[2], box[3]])
  out["hand_type"] = tf.gather(tf.constant([1, 0, 2]), tf.cast(example["hand_type"], tf.int32))
  return out
