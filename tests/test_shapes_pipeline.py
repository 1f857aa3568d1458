"""The Im2Hands pipeline end to end at the smallest size: every stage, files and metrics, and
``predict --shapes`` on a genuine image."""

import json
import math

import numpy as np
import pytest

import notebook_runs
from dfl_jax import errors
from dfl_jax.evaluation import reconstruction
from dfl_jax.serving import inference, predict, shapes as serving_shapes
from dfl_jax.training import shapes


def _config(dfl_workdir=""):
  return notebook_runs.shapes_config(dfl_workdir)


def test_the_keypoint_network_trains_on_the_shapes_data(tmp_path):
  config = _config()
  cfg, run = shapes.dfl_run(config, tmp_path)
  assert run == tmp_path / "dfl" and cfg.data.source == "synthetic"
  assert cfg.data.synthetic_sizes == config.shapes.synthetic_sizes
  assert cfg.data.image_size == config.shapes.image_size and cfg.data.eval_split == "val"
  k, i, r = shapes.models(config)
  assert (k.image_width, i.hidden, r.num_anchors) == (8, 64, 8)


def test_a_dfl_run_on_real_data_is_refused(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(
      {"data": {"source": "interhand"}, "model": {}, "train": {}}))
  with pytest.raises(errors.ConfigError, match="synthetic-world run"):
    shapes.dfl_run(_config(tmp_path), tmp_path / "w")


def test_every_stage_runs_and_writes_its_files(tmp_path, trained_workdir, trained_shapes_workdir,
                                               fixtures):
  """On the tiny DFL the test session trains (``trained_workdir``: 32 training and 8
  validation frames of the synthetic world), K, I and R one epoch each, two frames scored
  (``trained_shapes_workdir``)."""
  work = trained_shapes_workdir
  metrics = json.loads((work / "metrics.json").read_text())
  for name in ("k.npz", "i.npz", "r.npz", "examples_train.npz", "examples_val.npz",
               "keypoints/train.json", "keypoints/val.json", "metrics.json"):
    assert (work / name).stat().st_size > 100, name
  assert metrics["num_frames"] == 2
  assert 0.0 <= metrics["iou"] <= 1.0
  for key in ("mpjpe_before_k", "mpjpe_after_k"):
    assert math.isfinite(metrics[key]) and metrics[key] > 0, key
  for source in ("gt", "dfl", "dfl+K"):
    for model in ("I", "I+R"):
      row = metrics["table"][source][model]
      assert row["num_hands"] >= 2 and 0.0 <= row["iou"] <= 1.0, (source, model, row)
      if row["num_empty"] < row["num_hands"]:
        assert math.isfinite(row["chamfer_mm"]), (source, model, row)
  assert metrics["meshes"], "no mesh written"
  for path in metrics["meshes"]:
    v, f = reconstruction.read_ply(path)
    assert np.all(np.isfinite(v)) and (len(f) == 0 or f.max() < len(v))
  # evaluate --shapes rescores the workdir into another folder, to the same numbers.
  again = shapes.evaluate_workdir(shapes.load_config(work), work, tmp_path / "rescored")
  assert json.dumps(again["table"]) == json.dumps(metrics["table"])   # (NaN-safe)
  assert (tmp_path / "rescored" / "metrics.json").exists()
  # predict --shapes on a genuine image: a mesh file per drawn hand, in the JSON and on disk,
  # K's refined joints, and the figure.
  net = inference.load_model(workdir=trained_workdir)
  reconstructor = serving_shapes.ShapeReconstructor.load(work)
  out = tmp_path / "predicted"
  report = predict.run([fixtures / "inthewild" / "interhand_demo_input.jpg"], net, out,
                       boxes=predict.parse_boxes("69,137,165,153"), focal=(1200.0, 1200.0),
                       batch_size=1, shapes=reconstructor, echo=False)
  assert report.processed and not report.failed, report.failed
  result = json.loads((out / "interhand_demo_input.json").read_text())
  entry = result["shapes"]
  assert np.asarray(entry["joints_refined_cam_mm"]).shape == (42, 3)
  assert set(entry["meshes"]) == set(result["hands_drawn"])
  for side, mesh in entry["meshes"].items():
    v, f = reconstruction.read_ply(out / mesh["file"])
    assert (len(v), len(f)) == (mesh["vertices"], mesh["faces"]), side
  assert (out / "interhand_demo_input_shapes.png").stat().st_size > 1000
