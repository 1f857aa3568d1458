"""HIC (dfl_jax.evaluation.hic) on HIC-format files made here: InterWild's HIC.json, PLY meshes
(ASCII and binary), a regressor of MANO's shape; the MPJPE against a per-hand loop."""

import json

import numpy as np
import plyfile
import pytest

from dfl_jax.evaluation import cli, hic

# MANO joint names in MANO's order (16 regressed, then the tips) and InterHand2.6M's per-hand
# names: the mapping is checked by name, not by the module's table.
MANO_NAMES = ["wrist", "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1",
              "pinky2", "pinky3", "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3",
              "thumb4", "index4", "middle4", "ring4", "pinky4"]
IH_NAMES = [f"{f}{k}" for f in ("thumb", "index", "middle", "ring", "pinky")
            for k in (4, 3, 2, 1)] + ["wrist"]


def test_mano_to_interhand_mapping_by_name():
  assert [IH_NAMES[i] for i in hic.MANO_TO_IH] == MANO_NAMES


def _write_ply(path, vertices, binary):
  v = np.array([tuple(x) for x in vertices], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
  plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex")], text=not binary).write(str(path))


@pytest.fixture
def hic_files(tmp_path):
  rng = np.random.default_rng(0)
  regressor = rng.uniform(0, 1, (16, 778)) * (rng.uniform(size=(16, 778)) > 0.97)
  regressor /= regressor.sum(1, keepdims=True)
  np.save(tmp_path / "mano_regressor.npy", regressor)
  (tmp_path / "meshes").mkdir()
  annotations, meshes = [], {}
  kinds = [("interacting", True, True), ("interacting", True, True), ("right", True, False),
           ("left", False, True), ("interacting", True, True)]
  for aid, (kind, right, left) in enumerate(kinds, start=10):
    ann = {"id": aid, "image_id": aid, "hand_type": kind, "right_mano_path": None,
           "left_mano_path": None}
    for name, present in (("right", right), ("left", left)):
      if present:
        vertices = rng.normal(0, 0.04, (778, 3)) + [0, 0, 0.6]   # metres, in front of the camera
        rel = f"meshes/{aid}_{name}.ply"
        _write_ply(tmp_path / rel, vertices, binary=(aid % 2 == 0))
        ann[f"{name}_mano_path"] = rel
        meshes[(aid, name)] = vertices.astype(np.float32).astype(np.float64) * 1000.0
    annotations.append(ann)
  db = {"images": [{"id": a["id"], "file_name": f"{a['id']:04d}.jpg", "width": 640,
                    "height": 480} for a in annotations], "annotations": annotations}
  (tmp_path / "HIC.json").write_text(json.dumps(db))
  return tmp_path, regressor, meshes, kinds


def _gt_joints(vertices, regressor):
  """Joints by name, then in InterHand2.6M order."""
  by_name = dict(zip(MANO_NAMES[:16], regressor @ vertices))
  for name, v in zip(("thumb4", "index4", "middle4", "ring4", "pinky4"),
                     (745, 317, 444, 556, 673)):
    by_name[name] = vertices[v]
  return np.stack([by_name[n] for n in IH_NAMES])


def test_hic_mpjpe_matches_a_per_hand_loop(hic_files, tmp_path, capsys):
  root, regressor, meshes, kinds = hic_files
  rng = np.random.default_rng(1)
  preds, errors = {}, {"two": [], "single": []}
  for aid, (kind, right, left) in enumerate(kinds, start=10):
    joints = np.zeros((42, 3))
    for name, offset, present in (("right", 0, right), ("left", 21, left)):
      if not present:
        continue
      gt = _gt_joints(meshes[(aid, name)], regressor)
      pred = gt + rng.normal(0, 5, gt.shape) + rng.normal(0, 40, 3)
      joints[offset:offset + 21] = pred
      for j in range(21):
        errors["two" if kind == "interacting" else "single"].append(np.linalg.norm(
            (pred[j] - pred[20]) - (gt[j] - gt[20])))
    if aid != 14:    # one interacting frame without a prediction
      preds[str(aid)] = {"joints_cam_mm": joints.tolist()}
  del errors["two"][-42:]
  (root / "pred.json").write_text(json.dumps(preds))
  result = hic.evaluate_hic_predictions(root / "pred.json", root / "HIC.json",
                                        root / "mano_regressor.npy", out_dir=tmp_path / "out")
  assert result["protocol"] == "hic" and result["num_missing"] == 1
  assert (result["num_two"], result["num_single"]) == (2, 2)
  assert result["mpjpe_two"] == pytest.approx(np.mean(errors["two"]), abs=1e-4)
  assert result["mpjpe_single"] == pytest.approx(np.mean(errors["single"]), abs=1e-4)
  assert result["mpjpe"] == pytest.approx(np.mean(errors["two"] + errors["single"]), abs=1e-4)
  assert json.loads((tmp_path / "out" / "metrics.json").read_text())["protocol"] == "hic"

  from absl import flags  # pylint: disable=import-outside-toplevel
  if "protocol" not in flags.FLAGS:
    cli.define_flags()
  flags.FLAGS(["evaluate", f"--predictions={root / 'pred.json'}", "--protocol=hic",
               f"--hic={root / 'HIC.json'}", f"--mano_regressor={root / 'mano_regressor.npy'}",
               f"--out={tmp_path / 'cli'}"])
  try:
    cli.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
  assert "protocol: hic" in capsys.readouterr().out


def test_bad_hic_files_are_named(hic_files):
  root, _, _, _ = hic_files
  np.save(root / "bad.npy", np.zeros((21, 778)))
  with pytest.raises(ValueError, match=r"bad.npy: MANO's J_regressor must be \[16, 778\]"):
    hic.load_regressor(root / "bad.npy")
  (root / "meshes" / "10_right.ply").unlink()
  with pytest.raises(FileNotFoundError, match="10_right.ply"):
    hic.load_hic(root / "HIC.json", hic.load_regressor(root / "mano_regressor.npy"))
  (root / "meshes" / "12_right.ply").write_text("not a ply")
  with pytest.raises(ValueError, match="12_right.ply"):
    hic.read_ply_vertices(root / "meshes" / "12_right.ply")
