"""A run killed with SIGKILL and resumed ends where an uninterrupted run ends."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # training subprocesses killed and resumed

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 16, 4


def _config_args(data_dir):
  return ["--config=configs/tiny.py", f"--config.data.data_dir={data_dir}",
          "--config.data.image_size=64", "--config.train.batch_size=4",
          f"--config.train.num_steps={STEPS}", f"--config.train.checkpoint_every_steps={EVERY}",
          "--config.train.eval_every_steps=100000", f"--config.train.log_every_steps={EVERY}",
          "--config.data.shuffle_buffer=16"]


def _start(workdir, data_dir):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "main.py", f"--workdir={workdir}"] +
                          _config_args(data_dir), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc):
  out, _ = proc.communicate(timeout=1200)
  assert proc.returncode == 0, out.decode()[-4000:]


def _committed(workdir, step):
  return (pathlib.Path(workdir) / "checkpoints" / str(step) / "commit_success.txt").exists()


def _final_params(workdir, config):
  from dfl_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  return workdir_lib.restore_run(workdir, None, workdir_lib.abstract_train_state(config))


def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path):
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from input_pipeline import synthetic_dataset  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.data.synthetic_sizes = "train:24,val:4"
  data_dir = synthetic_dataset.ensure(config, tmp_path / "data")

  whole = _start(tmp_path / "whole", data_dir)
  _finish(whole)

  killed = _start(tmp_path / "killed", data_dir)
  deadline = time.time() + 900
  while not _committed(tmp_path / "killed", EVERY):
    assert killed.poll() is None and time.time() < deadline, "no checkpoint appeared"
    time.sleep(0.05)
  killed.send_signal(signal.SIGKILL)
  killed.communicate()
  assert killed.returncode == -signal.SIGKILL
  assert not _committed(tmp_path / "killed", STEPS), "killed too late to test a resume"
  _finish(_start(tmp_path / "killed", data_dir))

  config.data.image_size, config.train.batch_size = 64, 4
  step_a, a = _final_params(tmp_path / "whole", config)
  step_b, b = _final_params(tmp_path / "killed", config)
  assert step_a == step_b == STEPS
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
