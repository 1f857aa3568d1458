"""Tests of dfl_jax.evaluate on the genuine InterHand2.6M fixture frames."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dfl_jax.evaluation import predictions as scoring
from conftest import FIXTURE_ANNOTATION_IDS, ROOT, build_official_tree

NJ = 42


@pytest.fixture
def samples(fixtures):
  return fixtures / "interhand26m_samples"


@pytest.fixture
def records(samples):
  records, skipped = scoring.load_annotations(samples, "test")
  assert not skipped
  return records


def gt_predictions(records):
  return {str(r["annotation_id"]): {"joints_cam_mm": np.asarray(r["joint_cam"], float).tolist()}
          for r in records}


def write_json(path, obj):
  path.write_text(json.dumps(obj))
  return path


def test_fixture_annotations(records):
  kinds = {r["annotation_id"]: r["hand_type"] for r in records}
  assert kinds == {326750: "interacting", 286291: "interacting", 680801: "left",
                   471953: "right"}


def test_official_file_names_are_found_first(fixtures, tmp_path):
  root = build_official_tree(fixtures, tmp_path)
  folder = root / "annotations" / "test"
  files = scoring.find_annotation_files(folder, "test")
  assert [f.name for f in files] == [f"InterHand2.6M_test_{k}.json"
                                     for k in ("data", "camera", "joint_3d")]
  records, _ = scoring.load_annotations(folder, "test")
  assert len(records) == len(FIXTURE_ANNOTATION_IDS)


def test_missing_annotation_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="data.json"):
    scoring.find_annotation_files(tmp_path, "test")


def test_ground_truth_scores_zero(records):
  r = scoring.score_predictions(gt_predictions(records), records)
  assert r["protocol"] == "interhand2.6m-official"
  assert r["mpjpe_single"] == 0.0 and r["mpjpe_two"] == 0.0 and r["mpjpe_all"] == 0.0
  assert r["auc"] == 1.0
  assert (r["num_frames"], r["num_single"], r["num_two"]) == (4, 2, 2)
  assert r["num_valid_joints"] == 42 + 42 + 21 + 21
  assert r["num_missing"] == 0 and r["num_unknown"] == 0


def test_rigid_translation_of_the_right_hand_scores_zero(records):
  predictions = gt_predictions(records)
  for entry in predictions.values():
    joints = np.array(entry["joints_cam_mm"])
    joints[:21] += [30.0, -20.0, 15.0]
    entry["joints_cam_mm"] = joints.tolist()
  r = scoring.score_predictions(predictions, records)
  for key in ("mpjpe_single", "mpjpe_two", "mpjpe_all"):
    assert r[key] == pytest.approx(0.0, abs=1e-9)
  assert r["auc"] == pytest.approx(1.0)


def test_joint_0_moved_by_5_mm(records):
  predictions = gt_predictions(records)
  for entry in predictions.values():
    joints = np.array(entry["joints_cam_mm"])
    joints[0] += [3.0, 0.0, 4.0]
    entry["joints_cam_mm"] = joints.tolist()
  r = scoring.score_predictions(predictions, records)
  # Joint 0 (right thumb tip) is valid in the right frame and in both interacting frames; in
  # the left frame it is invalid and changes nothing. Every joint has samples in both lists.
  assert r["per_joint_mpjpe_single"][0] == pytest.approx(5.0, abs=1e-4)
  assert r["mpjpe_single"] == pytest.approx(5.0 / 42, abs=1e-5)
  assert r["mpjpe_two"] == pytest.approx(5.0 / 42, abs=1e-5)
  assert r["mpjpe_all"] == pytest.approx(5.0 / 42, abs=1e-5)
  # 126 valid joint errors, 3 of them 5 mm.
  np.testing.assert_allclose(r["pck"][:5], [123 / 126] * 5)
  np.testing.assert_allclose(r["pck"][5:], 1.0)


def test_per_joint_means_then_joint_average(records):
  """Joint 21 (left thumb tip) 6 mm off in one interacting frame only: two-hand mean of joint
  21 is 3, pooled mean over its 3 samples (left frame, two interacting) is 2."""
  predictions = gt_predictions(records)
  for entry in predictions.values():
    joints = np.array(entry["joints_cam_mm"])
    joints[0] += [0.0, 5.0, 0.0]
    entry["joints_cam_mm"] = joints.tolist()
  joints = np.array(predictions["326750"]["joints_cam_mm"])
  joints[21] += [0.0, 0.0, 6.0]
  predictions["326750"]["joints_cam_mm"] = joints.tolist()
  r = scoring.score_predictions(predictions, records)
  assert r["mpjpe_single"] == pytest.approx(5.0 / 42, abs=1e-5)
  assert r["mpjpe_two"] == pytest.approx((5.0 + 3.0) / 42, abs=1e-5)
  assert r["mpjpe_all"] == pytest.approx((5.0 + 2.0) / 42, abs=1e-5)


def test_mrrpe_and_hand_presence_from_the_file(records):
  predictions = gt_predictions(records)
  by_id = {str(r["annotation_id"]): r for r in records}
  for aid, entry in predictions.items():
    cam = np.asarray(by_id[aid]["joint_cam"], float)
    entry["rel_root_depth_mm"] = float(cam[41, 2] - cam[20, 2])
    entry["hand_presence"] = {"right": [0.9, 0.1], "left": [0.1, 0.9],
                              "interacting": [0.8, 0.7]}[by_id[aid]["hand_type"]]
  predictions["286291"]["hand_presence"] = [0.2, 0.7]  # wrong
  r = scoring.score_predictions(predictions, records)
  assert r["mrrpe"] == pytest.approx(0.0, abs=1e-3)
  assert r["num_mrrpe"] == 2
  assert r["hand_presence_accuracy"] == pytest.approx(3 / 4)


def test_missing_and_unknown_ids_are_reported(records):
  predictions = gt_predictions(records)
  del predictions["680801"]
  predictions["123"] = predictions["326750"]
  with pytest.warns(scoring.EvaluationWarning) as caught:
    r = scoring.score_predictions(predictions, records)
  text = " ".join(str(w.message) for w in caught)
  assert "680801" in text and "123" in text
  assert r["num_missing"] == 1 and r["missing_ids"] == ["680801"]
  assert r["num_unknown"] == 1 and r["unknown_ids"] == ["123"]
  assert r["num_frames"] == 3 and r["num_scored"] == 3 and r["num_annotations"] == 4


def test_no_matching_id_is_an_error(records):
  with pytest.raises(ValueError, match="no prediction matches"):
    scoring.score_predictions({"1": {"joints_cam_mm": np.zeros((NJ, 3))}}, records)


def test_malformed_json_names_the_file(tmp_path):
  path = tmp_path / "broken.json"
  path.write_text('{"326750": {"joints_cam_mm": [[1, 2, 3]')
  with pytest.raises(scoring.PredictionsFormatError, match="broken.json"):
    scoring.load_predictions(path)


@pytest.mark.parametrize("entry, message", [
    ({"joints_cam_mm": [[0.0, 0.0, 0.0]] * 41}, r"shape \(42, 3\)"),
    ({"joints_cam_mm": [[0.0, 0.0]] * 42}, r"shape \(42, 3\)"),
    ({"joints_cam_mm": "x"}, "numbers"),
    ({"joints": []}, "no 'joints_cam_mm'"),
    ([1, 2], "expected an object"),
    ({"joints_cam_mm": [[0.0, 0.0, 0.0]] * 42, "hand_presence": [2.0, 0.0]}, r"\[0, 1\]"),
    ({"joints_cam_mm": [[0.0, 0.0, 0.0]] * 42, "rel_root_depth_mm": [1, 2]}, "shape"),
])
def test_wrong_entries_name_the_file_and_the_id(tmp_path, entry, message):
  path = write_json(tmp_path / "pred.json", {"326750": entry})
  with pytest.raises(scoring.PredictionsFormatError) as info:
    scoring.load_predictions(path)
  assert "pred.json" in str(info.value) and "'326750'" in str(info.value)
  assert info.match(message)


def test_duplicate_ids_and_wrong_top_level(tmp_path):
  path = tmp_path / "dup.json"
  zeros = json.dumps({"joints_cam_mm": [[0, 0, 0]] * 42})
  path.write_text('{"1": %s, "1": %s}' % (zeros, zeros))
  with pytest.raises(scoring.PredictionsFormatError, match="duplicate"):
    scoring.load_predictions(path)
  with pytest.raises(scoring.PredictionsFormatError, match="keyed by annotation id"):
    scoring.load_predictions(write_json(tmp_path / "list.json", [1]))


def test_load_predictions_round_trip(tmp_path, records):
  predictions = gt_predictions(records)
  predictions["326750"]["hand_presence"] = [1.0, 0.0]
  predictions["326750"]["rel_root_depth_mm"] = [12.5]
  loaded = scoring.load_predictions(write_json(tmp_path / "p.json", predictions))
  assert set(loaded) == set(predictions)
  assert loaded["326750"]["joints_cam_mm"].shape == (NJ, 3)
  assert loaded["326750"]["rel_root_depth_mm"] == 12.5
  assert loaded["471953"]["hand_presence"] is None


def test_evaluate_predictions_file_writes_the_report(tmp_path, samples, records):
  path = write_json(tmp_path / "pred.json", gt_predictions(records))
  r = scoring.evaluate_predictions_file(path, samples, "test", tmp_path / "out")
  saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert saved["mpjpe_all"] == 0.0 and saved["auc"] == 1.0 and r["auc"] == 1.0
  assert (tmp_path / "out" / "pck.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_writes_metrics_and_plot(tmp_path, samples, records):
  # Fixture-style flat names in a copy of the folder; the report lands beside the predictions.
  annotations = tmp_path / "ann"
  annotations.mkdir()
  for kind in ("data", "camera", "joint_3d"):
    shutil.copyfile(samples / f"test_interhand2.6m_{kind}.json",
                    annotations / f"test_interhand2.6m_{kind}.json")
  predictions = gt_predictions(records)
  del predictions["471953"]
  path = write_json(tmp_path / "pred.json", predictions)
  proc = subprocess.run(
      [sys.executable, "-m", "dfl_jax.evaluate", f"--predictions={path}",
       f"--annotations={annotations}", "--split=test"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert "471953" in proc.stderr + proc.stdout  # the missing frame is reported
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert saved["num_missing"] == 1 and saved["mpjpe_two"] == 0.0
  assert (tmp_path / "pck.png").stat().st_size > 1000


@pytest.mark.slow
def test_model_mode_matches_rescoring_its_predictions_file(fixtures, tmp_path):
  """evaluate_model on a checkpoint writes metrics and predictions.json; scoring that file
  against the official annotations gives the same MPJPE (the two modes agree)."""
  import jax  # pylint: disable=import-outside-toplevel
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from dfl_jax.evaluation import model_mode  # pylint: disable=import-outside-toplevel
  from dfl_jax.training import checkpointing  # pylint: disable=import-outside-toplevel
  from dfl_jax.training.state import create_optimizer, create_train_state
  from input_pipeline import dataset_build  # pylint: disable=import-outside-toplevel
  from conftest import build_official_tree  # pylint: disable=import-outside-toplevel
  root = build_official_tree(fixtures, tmp_path / "ih")
  dataset_build.build(root, tmp_path / "tfds", splits=("test",), workers=2)
  config = tiny.get_config()
  config.data.source, config.data.data_dir = "interhand", str(tmp_path / "tfds")
  config.data.image_size, config.train.batch_size = 64, 4
  tx = create_optimizer(config, 1)
  _, state = create_train_state(config, jax.random.key(0), tx)
  ckpt = checkpointing.Checkpointer(tmp_path / "work" / "checkpoints")
  ckpt.save(7, state, force=True)
  ckpt.close()
  result = model_mode.evaluate_model(config, tmp_path / "work", split="test")
  assert result["step"] == 7 and result["num_frames"] == 4
  report = {k: pathlib.Path(v) for k, v in result["report"].items()}
  assert report["pck"].stat().st_size > 1000
  rescored = scoring.evaluate_predictions_file(
      report["predictions"], root / "annotations" / "test", "test", tmp_path / "rescored")
  for key in ("mpjpe_single", "mpjpe_two", "mpjpe_all", "auc"):
    np.testing.assert_allclose(rescored[key], result[key], rtol=1e-4, err_msg=key)
  assert rescored["num_missing"] == 0



@pytest.mark.parametrize("image_size, batch, extra", [(64, 4, 0), (128, 4, 0), (64, 3, 1)])
def test_training_evaluation_decodes_targets_to_zero_error(fixtures, tmp_path, image_size,
                                                          batch, extra):
  """evaluation.runner.evaluate fed the pipeline's own 2.5D targets as predictions scores ~0 mm at any
  input size: depth is in 256 units whatever the crop size (a 128 px run once decoded it with
  the crop size and doubled every relative depth). Batch 3 pads the last batch of the 4 frames
  with all-zero rows, whose singular affine once crashed the evaluation; ``extra`` adds a fully
  masked batch, as a multi-host evaluation pads with. Padding is never computed on: no
  division by its zero focal length (a RuntimeWarning is an error here)."""
  import warnings  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from dfl_jax import parallel  # pylint: disable=import-outside-toplevel
  from dfl_jax.evaluation import runner  # pylint: disable=import-outside-toplevel
  from input_pipeline import dataset_build, pipeline  # pylint: disable=import-outside-toplevel
  from conftest import build_official_tree  # pylint: disable=import-outside-toplevel
  root = build_official_tree(fixtures, tmp_path / "ih")
  dataset_build.build(root, tmp_path / "tfds", splits=("test",), workers=2)
  config = tiny.get_config()
  config.data.source, config.data.data_dir = "interhand", str(tmp_path / "tfds")
  config.data.image_size = image_size
  num_batches = -(-4 // batch) + extra
  batches = list(pipeline.eval_dataset(config.data, batch, split="test",
                                       num_batches=num_batches).as_numpy_iterator())
  assert len(batches) == num_batches
  assert sum(int(b["mask"].sum()) for b in batches) == 4
  mesh = parallel.make_mesh()
  targets = iter([(b["joints"], np.eye(33, dtype=np.float32)[b["segmentation"]])
                  for b in batches])

  def predict(params, batch_stats, images):  # the targets, as a model would return them
    del params, batch_stats
    joints, seg_logits = next(targets)
    return {"joints": jax.device_put(joints, images.sharding),
            "segmentation_logits": jax.device_put(seg_logits, images.sharding)}

  state = type("State", (), {"params": None, "batch_stats": None})
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)
    result = runner.evaluate(predict, state, batches, mesh)
  assert result["num_frames"] == 4
  assert result["mpjpe_all"] < 0.05, result["mpjpe_all"]
  # The labels as logits: every figure perfect, counted on the 4 real frames' pixels only.
  seg_size = image_size // 4
  assert result["seg_num_pixels"] == 4 * seg_size * seg_size
  for key in ("seg_foreground_accuracy", "seg_part_accuracy", "seg_found",
              "seg_side_accuracy", "seg_miou"):
    assert result[key] == 1.0, (key, result[key])
