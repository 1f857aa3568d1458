"""The tf.data pipeline on genuine InterHand2.6M frames (built into a TFDS dataset first)."""

import json

import cv2
import ml_collections
import numpy as np
import pytest

from input_pipeline import dataset_build, pipeline

from conftest import build_official_tree


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  import conftest  # pylint: disable=import-outside-toplevel
  fixtures = conftest.fixtures_dir()
  tmp = tmp_path_factory.mktemp("pipeline")
  root = build_official_tree(fixtures, tmp / "ih")
  # One frame as a true single-channel (grey) JPEG, as some InterHand cameras are.
  grey = sorted((root / "images" / "test").rglob("image29590.jpg"))[0]
  cv2.imwrite(str(grey), cv2.imread(str(grey), cv2.IMREAD_GRAYSCALE))
  assert cv2.imread(str(grey), cv2.IMREAD_UNCHANGED).ndim == 2
  dataset_build.build(root, tmp / "tfds", splits=("test",), workers=2)
  return tmp / "tfds"


def _data(data_dir, **kw):
  cfg = dict(data_dir=str(data_dir), image_size=256, annotation="H+M", train_split="test",
             eval_split="test", frames="all", shuffle_buffer=16, augment=True)
  cfg.update(kw)
  return ml_collections.ConfigDict(cfg)


def test_eval_targets_match_derived_anchors(data_dir, fixtures):
  anchors = {a["frame_idx"]: a for a in json.loads(
      (fixtures / "interhand26m_samples" / "derived_anchors.json").read_text())}
  batches = list(pipeline.eval_dataset(_data(data_dir), 3).as_numpy_iterator())
  seen = 0
  for b in batches:
    for i in np.nonzero(b["mask"])[0]:
      seen += 1
      frame = _frame_of(b["annotation_id"][i])
      target = anchors[frame]["a2j_256"]
      np.testing.assert_allclose(b["joints"][i, 20], target["target_xyz_root_right"], atol=1e-2)
      np.testing.assert_allclose(b["joints"][i, 0], target["target_xyz_joint0"], atol=1e-2)
      assert int(b["joint_valid"][i].sum()) == target["valid_after_range_check"]
  assert seen == 4


FRAME_OF = {326750: 69148, 286291: 44669, 680801: 29590, 471953: 2017}


def _frame_of(annotation_id):
  return FRAME_OF[int(annotation_id)]


def test_eval_yields_every_example_once_with_a_masked_padded_tail(data_dir):
  batches = list(pipeline.eval_dataset(_data(data_dir), 3).as_numpy_iterator())
  assert [b["images"].shape[0] for b in batches] == [3, 3]
  np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]), [1, 1, 1, 1, 0, 0])
  ids = np.concatenate([b["annotation_id"][b["mask"] > 0] for b in batches])
  assert sorted(ids) == sorted(FRAME_OF)
  pad = batches[-1]
  assert pad["images"][1:].max() == 0 and pad["joint_valid"][1:].max() == 0


def test_eval_pads_to_a_common_number_of_batches(data_dir):
  """Multi-host: every process steps through the same number of batches."""
  batches = list(pipeline.eval_dataset(_data(data_dir), 3, num_batches=4).as_numpy_iterator())
  assert len(batches) == 4
  np.testing.assert_array_equal([b["mask"].sum() for b in batches], [3, 1, 0, 0])


def test_eval_splits_by_process_without_overlap(data_dir):
  parts = []
  for index in range(2):
    ds = pipeline.eval_dataset(_data(data_dir), 4, process_index=index, process_count=2)
    b = next(ds.as_numpy_iterator())
    parts.append(set(b["annotation_id"][b["mask"] > 0].tolist()))
  assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(FRAME_OF)


def test_frames_filter(data_dir):
  ids = lambda frames: set(np.concatenate([
      b["annotation_id"][b["mask"] > 0] for b in pipeline.eval_dataset(
          _data(data_dir, frames=frames), 4).as_numpy_iterator()]).tolist())
  assert ids("single") == {680801, 471953}
  assert ids("interacting") == {326750, 286291}
  with pytest.raises(ValueError, match="frames"):
    pipeline.eval_dataset(_data(data_dir, frames="both"), 4)


def test_training_batches_are_deterministic_for_a_seed(data_dir):
  def first(seed, n=3):
    it = pipeline.train_dataset(_data(data_dir), 4, seed=seed).as_numpy_iterator()
    return [next(it) for _ in range(n)]
  a, b, c = first(0), first(0), first(1)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  assert any(not np.array_equal(x["images"], z["images"]) for x, z in zip(a, c))


def test_training_resume_skips_consumed_batches(data_dir):
  it = pipeline.train_dataset(_data(data_dir), 2, seed=5).as_numpy_iterator()
  batches = [next(it) for _ in range(3)]
  resumed = next(pipeline.train_dataset(_data(data_dir), 2, seed=5, start_step=2)
                 .as_numpy_iterator())
  for k in resumed:
    np.testing.assert_array_equal(resumed[k], batches[2][k], err_msg=k)


def test_training_batch_contents(data_dir):
  b = next(pipeline.train_dataset(_data(data_dir), 4, seed=0).as_numpy_iterator())
  assert b["images"].shape == (4, 256, 256, 3) and b["images"].dtype == np.uint8
  assert b["segmentation"].shape == (4, 64, 64)
  assert 0 <= b["segmentation"].min() and b["segmentation"].max() <= 32
  valid = b["joint_valid"] > 0
  assert valid.any()
  # Valid joints lie in the 256^3 target space; hands are drawn in the segmentation.
  assert (b["joints"][valid] >= 0).all() and (b["joints"][valid] < 256).all()
  assert (b["segmentation"] > 0).mean() > 0.01


def test_grey_jpeg_decodes_to_three_equal_channels(data_dir):
  for b in pipeline.eval_dataset(_data(data_dir), 4).as_numpy_iterator():
    i = list(b["annotation_id"]).index(680801)  # image29590, stored as a grey JPEG
    img = b["images"][i].astype(int)
    assert img.max() > 0
    np.testing.assert_array_equal(img[..., 0], img[..., 1])
    np.testing.assert_array_equal(img[..., 1], img[..., 2])
