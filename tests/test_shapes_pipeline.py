"""The Im2Hands pipeline end to end at the smallest size: every stage, files and metrics."""

import json
import math

import numpy as np
import pytest

from configs import shapes_tiny
from dfl_jax import errors
from dfl_jax.evaluation import reconstruction
from dfl_jax.training import shapes


def _config(dfl_workdir=""):
  config = shapes_tiny.get_config()
  config.shapes.update(dict(dfl_workdir=str(dfl_workdir), num_uniform=128,
                            num_near=128, grid_resolution=8, candidates=64, num_points=32,
                            mesh_resolution=12, eval_frames=2, eval_points=2000,
                            eval_surface=500, meshes_written=2))
  for section in (config.k, config.i, config.r):
    section.update(dict(epochs=1, batch_size=4))
  config.r.update(dict(num_anchors=8, k=4))
  config.log_every_steps = 1
  return config


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


def test_every_stage_runs_and_writes_its_files(tmp_path, trained_workdir):
  """On the tiny DFL the test session trains (``trained_workdir``: 32 training and 8
  validation frames of the synthetic world), K, I and R one epoch each, two frames scored."""
  work = tmp_path / "shapes"
  metrics = shapes.run(_config(trained_workdir), work)
  for name in ("k.npz", "i.npz", "r.npz", "examples_train.npz", "examples_val.npz",
               "keypoints/train.json", "keypoints/val.json", "metrics.json"):
    assert (work / name).stat().st_size > 100, name
  assert json.loads((work / "metrics.json").read_text())["num_frames"] == 2
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
