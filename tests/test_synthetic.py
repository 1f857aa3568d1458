"""The synthetic mini-InterHand: official schema, geometry, painter's order, determinism."""

import json

import numpy as np
import pytest

from input_pipeline import geometry, interhand, synthetic


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  out = tmp_path_factory.mktemp("synthetic")
  summary = synthetic.generate(out / "a", 24, seed=3, split="test", workers=1)
  return out, summary


def _load(summary, kind):
  with open(summary[f"{kind}_json"]) as f:
    return json.load(f)


def _keys(fixtures, kind):
  with open(fixtures / "interhand26m_samples" / f"test_interhand2.6m_{kind}.json") as f:
    return json.load(f)


def test_schema_matches_the_genuine_files(generated, fixtures):
  _, summary = generated
  data, real = _load(summary, "data"), _keys(fixtures, "data")
  assert set(data) == set(real)
  assert set(data["images"][0]) == set(real["images"][0])
  assert set(data["annotations"][0]) == set(real["annotations"][0])
  cam, real_cam = _load(summary, "camera"), _keys(fixtures, "camera")
  assert set(next(iter(cam.values()))) == set(next(iter(real_cam.values())))
  joints, real_joints = _load(summary, "joint_3d"), _keys(fixtures, "joint_3d")
  entry = next(iter(next(iter(joints.values())).values()))
  real_entry = next(iter(next(iter(real_joints.values())).values()))
  assert set(entry) == set(real_entry)
  assert {a["hand_type"] for a in data["annotations"]} == {"right", "left", "interacting"}


def test_the_reader_reads_every_image_and_geometry_holds(generated):
  out, summary = generated
  reader = interhand.InterHandReader.from_root(out / "a", "test")
  records = reader.read_all()
  assert len(records) == summary["num_images"] == 24 and not reader.skipped
  for r in records:
    v = r["joint_valid"] > 0
    assert v.sum() >= 18
    uv = r["joint_img"][v]
    assert (uv >= 0).all() and (uv[:, 0] < r["image_width"]).all()
    assert (uv[:, 1] < r["image_height"]).all()
    # The annotation box is the tight box of the valid projections enlarged 1.2x.
    np.testing.assert_allclose(r["bbox"], geometry.tight_bbox(r["joint_img"], r["joint_valid"]),
                               atol=1e-2)


def test_bone_lengths_and_joint_limits(generated):
  _, summary = generated
  joints = _load(summary, "joint_3d")
  scales = summary["subject_scales"]
  lengths_checked = 0
  for capture, frames in joints.items():
    for frame in frames.values():
      world = np.asarray(frame["world_coord"], np.float64)
      present = np.asarray(frame["joint_valid"], np.float64).reshape(42)
      for h in range(2):
        if present[21 * h + 20] == 0:
          continue
        j = world[21 * h:21 * h + 21]
        lengths = [np.linalg.norm(j[4 * f + k] - j[4 * f + k + 1])
                   for f in range(5) for k in (2, 1, 0)]  # base->2nd, 2nd->3rd, 3rd->tip
        expected = synthetic.PHALANGES.reshape(-1) * _scale(scales, capture)
        np.testing.assert_allclose(lengths, expected, rtol=1e-4)
        lengths_checked += 1
        for f in range(1, 5):  # fingers: PIP <= 110 deg, DIP <= 80 deg of bending
          base, pip, dip, tip = j[4 * f + 3], j[4 * f + 2], j[4 * f + 1], j[4 * f]
          assert _bend(base, pip, dip) <= 110.5 and _bend(pip, dip, tip) <= 80.5
  assert lengths_checked >= 10


def _scale(scales, capture):
  if isinstance(scales, dict):
    return float(scales[str(capture)] if str(capture) in scales else scales[int(capture)])
  return float(scales[int(capture)])


def _bend(a, b, c):
  u, v = b - a, c - b
  return np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))


def test_the_nearer_hand_is_painted_on_top():
  right = synthetic.hand_joints(np.zeros((5, 4)), left=False)
  left = synthetic.hand_joints(np.zeros((5, 4)), left=True)
  focal, princpt = (1200.0, 1200.0), (200.0, 200.0)
  probe = np.round(geometry.camera_to_pixel(
      (right[11] + np.array([0, 0, 800.0]))[None], focal, princpt)[0, :2]).astype(int)

  def colour_at(z_right, z_left):
    cam = np.concatenate([right + [0, 0, z_right], left + [0, 0, z_left]])
    img = np.zeros((400, 400, 3), np.uint8)
    synthetic.draw_hands(img, cam, np.array([1, 1]), focal, princpt,
                         skins=[(0, 0, 250), (250, 0, 0)])  # right red, left blue (BGR)
    return img[probe[1], probe[0]].astype(int)

  near_right, near_left = colour_at(800.0, 900.0), colour_at(900.0, 800.0)
  assert near_right[2] > near_right[0]  # red wins where the right hand is nearer
  assert near_left[0] > near_left[2]    # blue wins when the left hand is nearer


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
  out, summary = generated
  again = synthetic.generate(tmp_path / "b", 24, seed=3, split="test", workers=1)
  other = synthetic.generate(tmp_path / "c", 24, seed=4, split="test", workers=1)
  for kind in ("data", "camera", "joint_3d"):
    assert _load(summary, kind) == _load(again, kind)
  images = sorted((out / "a" / "images").rglob("*.jpg"))
  images_b = sorted((tmp_path / "b" / "images").rglob("*.jpg"))
  assert [p.read_bytes() for p in images] == [p.read_bytes() for p in images_b]
  assert _load(summary, "joint_3d") != _load(other, "joint_3d")
