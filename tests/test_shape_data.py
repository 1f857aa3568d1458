"""Im2Hands' examples from the synthetic world: crops, crop cameras, occupancy samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfl_jax import conventions, errors
from dfl_jax.network import initial_occupancy
from dfl_jax.training import shape_steps
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


def test_a_tiny_i_learns_the_hands_occupancy(raw, tmp_path):
  """HALO alone (no image), a few hundred steps on two frames: the occupancy classification
  beats the majority answer and the loss falls."""
  data = shape_data.load(shape_data.build(raw, "val", tmp_path / "v.npz", size=64, limit=2,
                                          num_uniform=256, num_near=256))
  batch = {k: jnp.asarray(v) for k, v in data.items() if k != "annotation_id"}
  batch["keypoints"] = batch["joints"]
  model = initial_occupancy.InitialOccupancy(hidden=32, layers=3, pose_code=2,
                                             image_conditioning=False)
  variables = model.init(jax.random.key(0), batch["image"], batch["keypoints"], batch["focal"],
                         batch["princpt"], batch["points"])
  state = shape_steps.State.create(variables, shape_steps.optimizer(3e-3, 0.2, 5000, 1e-5))
  step = shape_steps.make_initial_step(model)
  history = []
  for i in range(150):
    state, metrics = step(state, batch, jax.random.key(i))
    history.append({k: float(v) for k, v in metrics.items()})
  w = np.broadcast_to(data["hand_valid"][..., None], data["inside"].shape)
  majority = max(np.sum(data["inside"] * w), np.sum(~data["inside"] * w)) / np.sum(w)
  assert history[-1]["loss"] < 0.6 * history[0]["loss"], (history[0], history[-1])
  assert history[-1]["accuracy"] > majority + 0.05, (majority, history[-1])
