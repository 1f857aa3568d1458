"""colab/: the notebooks are valid, and quickstart, inference, crossdomain and shapes run top to
bottom (small settings; tests/notebook_runs.py). The quickstart run is the one that trains the
model the inference tests share (``trained_workdir``); the crossdomain run is the cross-domain
system's end-to-end test (render both domains, pre-train, fine-tune, evaluate, DFL from E_R); the
shapes run reconstructs the demo frame's hands from the smallest Im2Hands workdir."""

import ast
import json
import math

import pytest

import notebook_runs

NOTEBOOKS = ("quickstart.ipynb", "inference.ipynb", "interhand26m.ipynb", "crossdomain.ipynb",
             "shapes.ipynb")


def _errors(nb):
  return [o for cell in nb.cells if cell.cell_type == "code"
          for o in cell.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_its_code_parses(name):
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(notebook_runs.NOTEBOOKS / name, as_version=4)
  nbformat.validate(nb)
  code = [c.source for c in nb.cells if c.cell_type == "code"]
  assert code and all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
  for source in code:
    ast.parse(source)
  assert "parameters" in nb.cells[1].metadata.get("tags", [])


def test_quickstart_runs_top_to_bottom(trained_workdir):
  if not notebook_runs.have_nbclient():
    pytest.skip("nbclient/ipykernel not installed (pip install -e '.[test]')")
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(trained_workdir.parent / "quickstart.executed.ipynb", as_version=4)
  assert not _errors(nb)
  config = json.loads((trained_workdir / "config.json").read_text())
  assert config["train"]["num_steps"] == 4 and config["model"]["fpn_features"] == 64
  assert (trained_workdir / "checkpoints" / "4" / "commit_success.txt").exists()
  metrics = json.loads((trained_workdir / "eval" / "val_4" / "metrics.json").read_text())
  assert metrics["num_frames"] == 8 and metrics["mpjpe_all"] > 0
  assert any("image/png" in o.get("data", {}) for o in nb.cells[-1].outputs)


def test_inference_runs_top_to_bottom(trained_workdir, fixtures, tmp_path):
  if not notebook_runs.have_nbclient():
    pytest.skip("nbclient/ipykernel not installed (pip install -e '.[test]')")
  out = tmp_path / "predictions"
  env = {"DFL_NB_WORKDIR": trained_workdir, "DFL_NB_OUT": out, "DFL_NB_JOINT": "41",
         "DFL_NB_IMAGE": fixtures / "inthewild" / "interhand_demo_input.jpg",
         "DFL_NB_BOX": "69,137,165,153"}
  nb = notebook_runs.execute_notebook("inference.ipynb", env,
                                      out_path=tmp_path / "inference.executed.ipynb")
  assert not _errors(nb)
  for suffix in (".json", "_overlay.png", "_3d.png", "_attention_j41.png"):
    assert (out / f"interhand_demo_input{suffix}").exists()
  shown = [o for cell in nb.cells[-3:] for o in cell.get("outputs", [])
           if "image/png" in o.get("data", {})]
  assert len(shown) == 3  # overlay, 3D view, attention


# A few images and steps: the pipeline's every stage, not its numbers.
CROSSDOMAIN_ENV = {"DFL_NB_SOURCE_SIZES": "train:48,test:16", "DFL_NB_TARGET_SIZES": "train:32,test:16",
                   "DFL_NB_PRETRAIN_STEPS": "3", "DFL_NB_FINETUNE_STEPS": "3",
                   "DFL_NB_NUM_LABELS": "16", "DFL_NB_LABEL_SWEEP": "8", "DFL_NB_BATCH_SIZE": "8",
                   "DFL_NB_DFL_STEPS": "2", "DFL_NB_DFL_SIZES": "train:16,val:8,test:8",
                   # Compile-bound (3 steps a stage): XLA's CPU backend without LLVM's
                   # optimisations compiles faster.
                   "XLA_FLAGS": "--xla_backend_optimization_level=0"}


@pytest.mark.slow
def test_crossdomain_runs_top_to_bottom(tmp_path):
  if not notebook_runs.have_nbclient():
    pytest.skip("nbclient/ipykernel not installed (pip install -e '.[test]')")
  work = tmp_path / "cd"
  nb = notebook_runs.execute_notebook("crossdomain.ipynb", dict(CROSSDOMAIN_ENV,
                                                                DFL_NB_WORKDIR=work),
                                      out_path=tmp_path / "crossdomain.executed.ipynb")
  assert not _errors(nb)
  metrics = json.loads((work / "metrics.json").read_text())
  for key in ("epe_mm", "pck_005", "epe_mm_corrected"):
    for when in ("before_finetune", "after_finetune"):
      assert math.isfinite(metrics[key][when]), (key, when)
  assert metrics["epe_mm"]["before_finetune"] != metrics["epe_mm"]["after_finetune"]
  assert set(metrics["by_num_labels"]) == {"0", "8", "16"}
  assert metrics["by_num_labels"]["16"]["num_images"] == 16
  for name in ("attention.png", "epe_vs_labels.png", "encoder_rgb.npz", "pretrain.npz",
               "finetune_8.npz", "finetune_16.npz"):
    assert (work / name).stat().st_size > 1000, name
  # DFL trained from the exported E_R: its run names the encoder file and reached step 2.
  dfl_config = json.loads((work / "dfl" / "config.json").read_text())
  assert dfl_config["train"]["encoder_init"] == str(work / "encoder_rgb.npz")
  assert (work / "dfl" / "checkpoints" / "2" / "commit_success.txt").exists()


def test_shapes_runs_top_to_bottom(trained_workdir, trained_shapes_workdir, fixtures, tmp_path):
  if not notebook_runs.have_nbclient():
    pytest.skip("nbclient/ipykernel not installed (pip install -e '.[test]')")
  out = tmp_path / "out"
  nb = notebook_runs.execute_notebook("shapes.ipynb", {
      "DFL_NB_WORKDIR": trained_workdir, "DFL_NB_SHAPES_WORKDIR": trained_shapes_workdir,
      "DFL_NB_OUT": out, "DFL_FIXTURES": fixtures}, out_path=tmp_path / "shapes.executed.ipynb")
  assert not _errors(nb)
  result = json.loads((out / "interhand_demo_input.json").read_text())
  assert set(result["shapes"]["meshes"]) == {"right", "left"}   # presence_threshold=0
  assert (out / "interhand_demo_input_shapes.png").stat().st_size > 1000
