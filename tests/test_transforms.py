"""Crop/augmentation geometry and pseudo part segmentation (TensorFlow ops)."""

import numpy as np
import tensorflow as tf

from input_pipeline import pseudo_segmentation, transforms


def _example(seed=0, width=334, height=512):
  r = np.random.RandomState(seed)
  img = np.stack([r.uniform(60, 270, 42), r.uniform(100, 400, 42)], -1).astype(np.float32)
  cam = np.concatenate([r.uniform(-100, 100, (42, 2)), r.uniform(900, 1100, (42, 1))], -1)
  return dict(joint_img=tf.constant(img), joint_cam=tf.constant(cam, tf.float32),
              joint_valid=tf.constant((r.rand(42) > 0.1).astype(np.float32)),
              crop_box=tf.constant([40.0, 90.0, 250.0, 250.0]), hand_type=tf.constant(2),
              hand_type_valid=tf.constant(1.0), image_width=tf.constant(width),
              image_height=tf.constant(height), focal=tf.constant([1200.0, 1200.0]))


def _aug(flip, rotation=20.0, scale=1.1, shift=(0.0, 0.0)):
  return dict(shift=shift, scale=tf.constant(scale), rotation=tf.constant(rotation),
              flip=tf.constant(flip), colour=tf.ones([3]))


def test_flip_twice_is_identity():
  ex = _example()
  twice = transforms.flip_example(transforms.flip_example(ex))
  for k in ("joint_img", "joint_cam", "joint_valid", "crop_box", "hand_type"):
    np.testing.assert_allclose(twice[k], ex[k], atol=1e-4)
  t0 = transforms.make_targets(ex, _aug(False), 256)
  t2 = transforms.make_targets(twice, _aug(False), 256)
  for k in ("joints", "joint_valid", "hand_presence", "rel_root_depth"):
    np.testing.assert_allclose(t2[k], t0[k], atol=1e-3)


def test_flip_augmentation_equals_mirrored_record():
  """Flipping inside the augmentation gives the targets of the mirrored image's record, with
  the hands swapped and the relative root depth negated."""
  ex = _example(1)
  flipped = transforms.make_targets(ex, _aug(True), 256)
  mirrored = transforms.make_targets(transforms.flip_example(ex), _aug(False), 256)
  for k in ("joints", "joint_valid", "hand_presence", "rel_root_depth"):
    np.testing.assert_allclose(flipped[k], mirrored[k], atol=1e-3)
  plain = transforms.make_targets(ex, _aug(False), 256)
  np.testing.assert_allclose(flipped["rel_root_depth"] - 128, -(plain["rel_root_depth"] - 128),
                             atol=1e-3)


def test_crop_uncrop_round_trip_within_1e3_px():
  ex = _example(2)
  m = transforms.crop_affine(ex["crop_box"], 256, 1.2, 33.0, (0.1, -0.05), True, 334)
  crop = transforms.apply_affine(m, ex["joint_img"])
  back = transforms.apply_affine(tf.linalg.inv(m), crop)
  np.testing.assert_allclose(back, ex["joint_img"], atol=1e-3)


def test_no_augmentation_maps_box_to_crop():
  box = tf.constant([40.0, 90.0, 250.0, 250.0])
  m = transforms.crop_affine(box, 256)
  corners = transforms.apply_affine(m, tf.constant([[40.0, 90.0], [290.0, 340.0]]))
  np.testing.assert_allclose(corners, [[0, 0], [256, 256]], atol=1e-4)


def test_warped_image_shows_the_joint_where_the_targets_say():
  image = np.zeros((512, 334, 3), np.uint8)
  p = np.array([200.0, 250.0])
  image[250, 200] = 255
  m = transforms.crop_affine(tf.constant([40.0, 90.0, 250.0, 250.0]), 256, 0.9, 25.0,
                             (0.05, 0.0), True, 334)
  crop = transforms.warp_image(tf.constant(image), m, 256).numpy()[..., 0].astype(np.float32)
  q = transforms.apply_affine(m, tf.constant(p[None], tf.float32)).numpy()[0]
  ys, xs = np.nonzero(crop > 0)
  centre = np.array([np.average(xs, weights=crop[ys, xs]), np.average(ys, weights=crop[ys, xs])])
  assert np.linalg.norm(centre - q) < 0.75, (centre, q)


def test_out_of_crop_joints_lose_validity():
  ex = _example(3)
  ex["joint_img"] = tf.tensor_scatter_nd_update(ex["joint_img"], [[5]], [[-500.0, 10.0]])
  ex["joint_valid"] = tf.ones([42])
  t = transforms.make_targets(ex, _aug(False, 0.0, 1.0), 256)
  assert float(t["joint_valid"][5]) == 0.0
  inside = transforms.make_targets(_example(3), _aug(False, 0.0, 1.0), 256)
  assert float(tf.reduce_sum(inside["joint_valid"])) > 30


def _hand(centre, spread=6.0):
  """A flat open hand in segmentation pixels: wrist below, fingers fanning up."""
  pts = np.zeros((21, 2), np.float32)
  pts[20] = centre + np.array([0, 8.0])
  for f in range(5):
    direction = np.array([(f - 2) * 0.35, -1.0])
    base = centre + np.array([(f - 2) * 2.0, 0.0])
    for k in range(4):  # base (index 3) .. tip (index 0)
      pts[4 * f + 3 - k] = base + direction * spread * k / 3.0 * 1.5
  return pts


def test_pseudo_segmentation_nearer_hand_on_top():
  right, left = _hand(np.array([14.0, 16.0])), _hand(np.array([17.0, 16.0]))
  xy = np.concatenate([right, left])
  radius = np.array([1.5, 1.5], np.float32)

  def render(right_depth, left_depth, valid=np.ones(42, np.float32)):
    depth = np.concatenate([np.full(21, right_depth), np.full(21, left_depth)]).astype(np.float32)
    return pseudo_segmentation.render(xy, depth, valid, radius, (32, 32)).numpy()

  only_right = render(800.0, 900.0, np.repeat([1.0, 0.0], 21).astype(np.float32))
  only_left = render(800.0, 900.0, np.repeat([0.0, 1.0], 21).astype(np.float32))
  overlap = (only_right > 0) & (only_left > 0)
  assert overlap.sum() > 10
  right_near = render(800.0, 900.0)
  left_near = render(900.0, 800.0)
  np.testing.assert_array_equal(right_near[overlap], only_right[overlap])
  np.testing.assert_array_equal(left_near[overlap], only_left[overlap])
  assert right_near.min() == 0 and right_near.max() <= 32
  # Every class of both hands is drawn somewhere.
  assert len(set(np.unique(right_near)) - {0}) >= 20


def test_pseudo_segmentation_skips_invalid_joints():
  xy = np.concatenate([_hand(np.array([10.0, 16.0])), _hand(np.array([24.0, 16.0]))])
  valid = np.concatenate([np.ones(21), np.zeros(21)]).astype(np.float32)
  seg = pseudo_segmentation.render(xy, np.full(42, 900.0, np.float32), valid,
                                   np.array([1.5, 1.5], np.float32), (32, 32)).numpy()
  assert seg.max() <= 16 and seg.max() > 0
