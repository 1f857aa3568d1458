"""Helpers for the tests of inference and the notebooks: run expensive things once per session.

``shared_once`` runs a function once for the whole pytest run, pytest-xdist workers included
(an flock on a file in the run's common base temp folder), so that the tiny model is trained
once and shared. ``trained_workdir`` trains it by executing colab/quickstart.ipynb with small
settings (the quickstart notebook's own test reads that run), or, where nbclient is not
installed, with main.py.
"""

import contextlib
import fcntl
import os
import pathlib
import subprocess
import sys
import traceback

from conftest import ROOT

NOTEBOOKS = ROOT / "colab"
# Small settings: 4 steps of 8 images, one evaluation (~2 CPU-minutes with the data build).
QUICKSTART_ENV = {"DFL_NB_NUM_STEPS": "4", "DFL_NB_SYNTHETIC_SIZES": "train:32,val:8,test:8",
                  "DFL_NB_BATCH_SIZE": "8"}


def shared_base(tmp_path_factory) -> pathlib.Path:
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_once(tmp_path_factory, name, fn) -> pathlib.Path:
  """Calls fn(folder) once per pytest run; every caller gets the folder, or the first error."""
  base = shared_base(tmp_path_factory)
  folder = base / name
  with open(base / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if (folder / "FAILED").exists():
        raise RuntimeError(f"{name} failed earlier in this run:\n"
                           + (folder / "FAILED").read_text())
      if not (folder / "DONE").exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
          fn(folder)
        except BaseException:
          (folder / "FAILED").write_text(traceback.format_exc())
          raise
        (folder / "DONE").write_text("ok")
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return folder


@contextlib.contextmanager
def environ(values):
  saved = {k: os.environ.get(k) for k in values}
  os.environ.update({k: str(v) for k, v in values.items()})
  try:
    yield
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def execute_notebook(name, env, out_path=None, timeout=900):
  """Executes colab/NAME top to bottom in a python3 kernel of this interpreter, cwd = the
  repository, with ``env`` in its environment; returns the executed notebook (also written to
  ``out_path``). A failing cell raises nbclient's CellExecutionError."""
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                   resources={"metadata": {"path": str(ROOT)}})
  with environ(env):
    try:
      client.execute()
    finally:
      if out_path is not None:
        nbformat.write(nb, out_path)
  return nb


def have_nbclient() -> bool:
  try:
    import ipykernel  # pylint: disable=import-outside-toplevel,unused-import
    import nbclient  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def _train(folder):
  workdir = folder / "workdir"
  if have_nbclient():
    execute_notebook("quickstart.ipynb", dict(QUICKSTART_ENV, DFL_NB_WORKDIR=workdir),
                     out_path=folder / "quickstart.executed.ipynb")
    return
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = subprocess.run(
      [sys.executable, "main.py", "--config=configs/tiny.py", f"--workdir={workdir}",
       f"--config.train.num_steps={QUICKSTART_ENV['DFL_NB_NUM_STEPS']}",
       f"--config.data.synthetic_sizes={QUICKSTART_ENV['DFL_NB_SYNTHETIC_SIZES']}",
       f"--config.train.batch_size={QUICKSTART_ENV['DFL_NB_BATCH_SIZE']}"],
      cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  if run.returncode:
    raise RuntimeError(f"main.py failed ({run.returncode}):\n{run.stderr[-4000:]}")


def trained_workdir(tmp_path_factory) -> pathlib.Path:
  """The workdir of a tiny DFL trained 4 steps on synthetic data (checkpoints, config.json)."""
  return shared_once(tmp_path_factory, "dfl_trained", _train) / "workdir"


def shapes_config(dfl_workdir):
  """configs/shapes_tiny.py at the smallest size, on the DFL run ``dfl_workdir``: K, I and R one
  epoch each on its 32 training frames, 2 validation frames scored."""
  from configs import shapes_tiny  # pylint: disable=import-outside-toplevel
  config = shapes_tiny.get_config()
  config.shapes.update(dict(dfl_workdir=str(dfl_workdir), num_uniform=128, num_near=128,
                            grid_resolution=8, candidates=64, num_points=32,
                            mesh_resolution=12, eval_frames=2, eval_points=2000,
                            eval_surface=500, meshes_written=2))
  for section in (config.k, config.i, config.r):
    section.update(dict(epochs=1, batch_size=4))
  config.r.update(dict(num_anchors=8, k=4))
  config.log_every_steps = 1
  return config


def trained_shapes_workdir(tmp_path_factory, dfl_workdir) -> pathlib.Path:
  """A workdir of ``python -m dfl_jax.shapes`` (every stage) on ``dfl_workdir``'s keypoints."""
  from dfl_jax.training import shapes  # pylint: disable=import-outside-toplevel

  def train(folder):
    shapes.run(shapes_config(dfl_workdir), folder / "workdir")

  return shared_once(tmp_path_factory, "shapes_trained", train) / "workdir"
