"""The Im2Hands pipeline end to end at the smallest size: every stage, files and metrics."""

import json
import math

import numpy as np
import pytest

from configs import shapes_tiny
from dfl_jax.evaluation import reconstruction
from dfl_jax.training import shapes


def _config():
  config = shapes_tiny.get_config()
  config.dfl.train.num_steps = 2
  config.dfl.train.batch_size = 4
  config.shapes.update(dict(synthetic_sizes="train:16,val:4,test:2", num_uniform=128,
                            num_near=128, grid_resolution=8, candidates=64, num_points=32,
                            mesh_resolution=12, eval_frames=2, eval_points=2000,
                            eval_surface=500, meshes_written=2))
  for section in (config.k, config.i, config.r):
    section.update(dict(epochs=1, batch_size=4))
  config.r.update(dict(num_anchors=8, k=4))
  config.log_every_steps = 1
  return config


@pytest.mark.slow
def test_every_stage_runs_and_writes_its_files(tmp_path):
  work = tmp_path / "shapes"
  metrics = shapes.run(_config(), work)
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
