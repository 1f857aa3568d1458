"""Pure NumPy coordinate helpers for InterHand2.6M (docs/coordinates.md).

They follow the official InterHand2.6M code (facebookresearch/InterHand2.6M):
``common/utils/transforms.py`` (world2cam, cam2pixel, pixel2cam) and
``common/utils/preprocessing.py`` (get_bbox, process_bbox, gen_trans_from_patch_cv without
rotation or scale, transform_input_to_output_space). Arrays may carry any leading batch shape;
the last axis holds the coordinates. Everything is computed in float64 and returned as float64
unless stated otherwise, so callers choose when to round to float32.
"""

import numpy as np

from dfl_jax.conventions import (DEPTH_UNITS, LEFT_WRIST, RIGHT_WRIST, ROOT_OF,
                                 depth_mm_to_units)


def world_to_camera(joint_world, camrot, campos):
  """World to camera coordinates (mm): ``X_cam = R @ (X_world - campos)`` (official world2cam).

  joint_world: [..., 3]; camrot: [3, 3]; campos: [3]. Returns [..., 3].
  """
  joint_world = np.asarray(joint_world, np.float64)
  camrot = np.asarray(camrot, np.float64)
  campos = np.asarray(campos, np.float64)
  return (joint_world - campos) @ camrot.T


def camera_to_pixel(joint_cam, focal, princpt):
  """Pinhole projection ``u = fx X / Z + cx``, ``v = fy Y / Z + cy`` (official cam2pixel).

  joint_cam: [..., 3] mm; focal, princpt: [2]. Returns pixels [..., 2].
  """
  joint_cam = np.asarray(joint_cam, np.float64)
  focal = np.asarray(focal, np.float64)
  princpt = np.asarray(princpt, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return joint_cam[..., :2] / joint_cam[..., 2:3] * focal + princpt


def pixel_to_camera(joint_img, depth, focal, princpt):
  """Back-projection of pixels with their camera depth Z in mm (official pixel2cam).

  joint_img: [..., 2] px; depth: [...] mm. Returns [..., 3] mm.
  """
  joint_img = np.asarray(joint_img, np.float64)
  depth = np.asarray(depth, np.float64)
  focal = np.asarray(focal, np.float64)
  princpt = np.asarray(princpt, np.float64)
  xy = (joint_img - princpt) / focal * depth[..., None]
  return np.concatenate([xy, depth[..., None]], axis=-1)


def tight_bbox(joint_img, joint_valid, scale=1.2):
  """Tight xywh box of the valid joints enlarged ``scale`` times about its centre.

  The official get_bbox; InterHand2.6M's annotation ``bbox`` is this box with scale 1.2.
  """
  joint_img = np.asarray(joint_img, np.float64)
  points = joint_img[np.asarray(joint_valid) > 0]
  if len(points) == 0:
    raise ValueError("tight_bbox: no valid joint")
  lo, hi = points.min(axis=0), points.max(axis=0)
  centre, size = (lo + hi) / 2.0, (hi - lo) * scale
  return np.concatenate([centre - size / 2.0, size])


def process_bbox(bbox, aspect=1.0, scale=1.25):
  """Crop box of the official process_bbox: pad ``bbox`` (xywh) about its centre to the
  width/height ratio ``aspect`` (1 for the 256x256 input), then enlarge it ``scale`` times.
  """
  x, y, w, h = np.asarray(bbox, np.float64)
  cx, cy = x + w / 2.0, y + h / 2.0
  if w > aspect * h:
    h = w / aspect
  elif w < aspect * h:
    w = h * aspect
  w, h = w * scale, h * scale
  return np.array([cx - w / 2.0, cy - h / 2.0, w, h])


def _size_wh(input_size):
  if np.ndim(input_size) == 0:
    return float(input_size), float(input_size)
  width, height = input_size
  return float(width), float(height)


def crop_affine(crop_box, input_size=256):
  """[2, 3] affine taking image pixels to crop pixels: ``crop_box`` (xywh) onto the
  ``input_size`` (int, or (width, height)) input, no rotation.

  The official gen_trans_from_patch_cv with scale 1 and rotation 0 (box centre to input centre,
  box width to input width); apply it to [x, y, 1].
  """
  x, y, w, h = np.asarray(crop_box, np.float64)
  out_w, out_h = _size_wh(input_size)
  sx, sy = out_w / w, out_h / h
  return np.array([[sx, 0.0, -x * sx], [0.0, sy, -y * sy]])


def image_to_crop(points, crop_box, input_size=256):
  """Image pixels [..., 2] to pixels of the crop resized to ``input_size``."""
  points = np.asarray(points, np.float64)
  x, y, w, h = np.asarray(crop_box, np.float64)
  out_w, out_h = _size_wh(input_size)
  return (points - [x, y]) * [out_w / w, out_h / h]


def crop_to_image(points, crop_box, input_size=256):
  """Inverse of image_to_crop: crop pixels [..., 2] back to image pixels."""
  points = np.asarray(points, np.float64)
  x, y, w, h = np.asarray(crop_box, np.float64)
  out_w, out_h = _size_wh(input_size)
  return points * [w / out_w, h / out_h] + [x, y]


def targets_25d(joint_img_in_crop_px, joint_cam):
  """A2J-Transformer's 2.5D targets (docs/coordinates.md; official
  transform_input_to_output_space with the output space equal to the input).

  joint_img_in_crop_px: [..., 42, 2] pixels in the crop; joint_cam: [..., 42, 3] mm. Returns
  ``(joint_uvd [..., 42, 3], rel_root_depth [...])``: x, y in crop pixels and
  ``z = (d_rel / 200 mm + 1) / 2 * 256`` (``conventions.depth_mm_to_units``, whatever the crop
  size) with ``d_rel = Z_joint - Z_wrist`` of that joint's hand; ``rel_root_depth =
  Z_left_wrist - Z_right_wrist`` in mm (InterNet's relative root depth, left unnormalised).
  """
  xy = np.asarray(joint_img_in_crop_px, np.float64)
  z = np.asarray(joint_cam, np.float64)[..., 2]
  z_target = depth_mm_to_units(z - z[..., ROOT_OF])
  joint_uvd = np.concatenate([xy, z_target[..., None]], axis=-1)
  rel_root_depth = z[..., LEFT_WRIST] - z[..., RIGHT_WRIST]
  return joint_uvd, rel_root_depth


def in_target_range(joint_uvd, input_size=256):
  """[..., 42] bool: x, y inside the ``input_size`` crop and z inside the depth range [0, 256),
  the official range check (a joint outside it loses its validity for the loss)."""
  joint_uvd = np.asarray(joint_uvd, np.float64)
  out_w, out_h = _size_wh(input_size)
  x, y, z = joint_uvd[..., 0], joint_uvd[..., 1], joint_uvd[..., 2]
  return (x >= 0) & (x < out_w) & (y >= 0) & (y < out_h) & (z >= 0) & (z < DEPTH_UNITS)
