"""Im2Hands' examples from the synthetic world: crops, crop cameras, occupancy samples."""

import numpy as np
import pytest

from dfl_jax import conventions, errors
from input_pipeline import geometry, hand_shape, shape_data, synthetic_render


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("shapes_raw")
  synthetic_render.generate(root, 6, seed=11, split="val", workers=1)
  return root


def test_examples_carry_the_crop_its_camera_and_each_hands_samples(raw, tmp_path):
  path = shape_data.build(raw, "val", tmp_path / "val.npz", size=64, num_uniform=256,
                          num_near=256)
  data = shape_data.load(path)
  records = shape_data.records(raw, "val")
  n = len(records)
  assert data["image"].shape == (n, 64, 64, 3) and data["image"].dtype == np.uint8
  assert data["points"].shape == (n, 2, 512, 3) and data["inside"].shape == (n, 2, 512)
  assert data["hand_valid"].sum() >= n    # 6 views: at least one hand each
  for i, record in enumerate(records):
    np.testing.assert_allclose(data["joints"][i], record["joint_cam"], rtol=1e-6)
    # The crop's camera projects the 3D joints where the crop has them.
    cam = data["joints"][i].astype(np.float64)
    uv = cam[:, :2] / cam[:, 2:] * data["focal"][i] + data["princpt"][i]
    expect = geometry.image_to_crop(record["joint_img"][:, :2], record["crop_box"], 64)
    ok = np.asarray(record["joint_valid"]).reshape(42) > 0
    np.testing.assert_allclose(uv[ok], expect[ok], atol=1e-2)
    solids = shape_data.solids_in_camera(record, raw, "val")
    for h, side in enumerate(conventions.HANDS):
      present = solids[side] is not None
      assert data["hand_valid"][i, h] == float(present and ok[conventions.WRISTS[h]])
      if not data["hand_valid"][i, h]:
        assert not data["inside"][i, h].any()
        continue
      # Labels are the exact inside test of the hand in camera coordinates, which holds the
      # palm's centre (between the wrist and the middle finger's base).
      inside = hand_shape.contains(solids[side], data["points"][i, h].astype(np.float64))
      np.testing.assert_array_equal(data["inside"][i, h], inside)
      assert 0.1 < data["inside"][i, h].mean() < 0.9
      palm = 0.5 * (cam[conventions.WRISTS[h]] + cam[11 + 21 * h])
      assert hand_shape.contains(solids[side], palm[None])[0]


def test_a_missing_shape_file_is_named(raw, tmp_path):
  record = dict(shape_data.records(raw, "val")[0], frame_idx=999999)
  with pytest.raises(errors.MissingFileError, match="frame999999.npz"):
    shape_data.solids_in_camera(record, raw, "val")
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not an npz")
  with pytest.raises(errors.InputError, match="bad.npz"):
    shape_data.load(bad)
