"""Shared test set-up: CPU JAX, the fixtures folder, small model configurations."""

import json
import os
import pathlib
import shutil

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fixtures_dir() -> pathlib.Path:
  """Genuine InterHand2.6M samples: $DFL_FIXTURES, default ../shared/fixtures."""
  return pathlib.Path(os.environ.get("DFL_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture
def fixtures():
  path = fixtures_dir()
  if not path.is_dir():
    raise FileNotFoundError(f"fixtures folder {path} not found; set DFL_FIXTURES")
  return path


def compilation_cache_env(path):
  """Environment variables that point JAX's persistent compilation cache at ``path`` and cache
  every executable: training subprocesses that compile the same steps skip XLA after the first
  (the same executables, so the same bits)."""
  return {"JAX_COMPILATION_CACHE_DIR": str(path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="session")
def shared_compilation_cache(tmp_path_factory):
  """One compilation cache folder for the whole run, shared by the pytest-xdist workers (the
  parent of the per-worker temporary folders): the tiny training's subprocesses in
  test_faults.py and test_user_errors.py compile its train step once between them."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  path = base / "jax_compilation_cache"
  path.mkdir(exist_ok=True)
  return path


def tiny_model_config(**overrides):
  """configs/tiny.py's model, with overrides."""
  from configs import tiny
  cfg = tiny.get_config().model
  cfg.update(overrides)
  return cfg


FIXTURE_ANNOTATION_IDS = (326750, 286291, 680801, 471953)


def official_file_name(image):
  return (f"Capture{image['capture']}/{image['seq_name']}/cam{image['camera']}/"
          f"{image['file_name']}")


def build_official_tree(fixtures, root, split="test", folders_and_ids=None):
  """Writes ROOT/annotations/<folder>/InterHand2.6M_{split}_*.json (each folder holding the
  given annotation ids) and ROOT/images/{split}/Capture*/<seq>/cam*/image*.jpg."""
  src = fixtures / "interhand26m_samples"
  with open(src / "test_interhand2.6m_data.json") as f:
    data = json.load(f)
  for image in data["images"]:
    target = root / "images" / split / official_file_name(image)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / image["file_name"], target)
    image["file_name"] = official_file_name(image)
  for folder, ids in (folders_and_ids or {split: set(FIXTURE_ANNOTATION_IDS)}).items():
    out = root / "annotations" / folder
    out.mkdir(parents=True, exist_ok=True)
    subset = dict(data, annotations=[a for a in data["annotations"] if a["id"] in ids])
    with open(out / f"InterHand2.6M_{split}_data.json", "w") as f:
      json.dump(subset, f)
    for kind in ("camera", "joint_3d"):
      shutil.copyfile(src / f"test_interhand2.6m_{kind}.json",
                  out / f"InterHand2.6M_{split}_{kind}.json")
  return root


def pytest_collection_modifyitems(config, items):
  """Tests that use ``trained_workdir`` (a notebook run that trains the tiny model) are slow:
  ``make test-fast`` (``-m "not slow"``) leaves them out, ``make test`` runs everything."""
  del config
  for item in items:
    if {"trained_workdir", "trained_shapes_workdir"} & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """A tiny DFL trained briefly on synthetic data, once per run for all workers
  (tests/notebook_runs.py: by executing colab/quickstart.ipynb)."""
  import notebook_runs  # pylint: disable=import-outside-toplevel
  return notebook_runs.trained_workdir(tmp_path_factory)


@pytest.fixture(scope="session")
def trained_shapes_workdir(tmp_path_factory, trained_workdir):
  """Im2Hands' pipeline (every stage, the smallest size) on ``trained_workdir``'s keypoints,
  once per run for all workers (tests/notebook_runs.py)."""
  import notebook_runs  # pylint: disable=import-outside-toplevel
  return notebook_runs.trained_shapes_workdir(tmp_path_factory, trained_workdir)
