"""Fault injection: SIGKILL at random moments (inside saves too) and a full disk lose nothing.

Every trial kills a tiny training with SIGKILL, resumes it to the end in the same workdir, and
compares every leaf of the final state with an uninterrupted run's, bit for bit. The full-disk
tests run in a small tmpfs in a private mount namespace (``unshare``); where neither root nor
user namespaces allow one they are skipped, saying why.
"""

import ast
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from configs import tiny
from conftest import compilation_cache_env
from dfl_jax import workdir as workdir_lib
from input_pipeline import synthetic_dataset

pytestmark = pytest.mark.slow  # training subprocesses killed and resumed

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 8, 2
TRIALS = 3
TMP_MARK = ".orbax-checkpoint-tmp"


def _config_args(data_dir, keep=3):
  return ["--config=configs/tiny.py", f"--config.data.data_dir={data_dir}",
          "--config.data.image_size=64", "--config.train.batch_size=4",
          f"--config.train.num_steps={STEPS}", f"--config.train.checkpoint_every_steps={EVERY}",
          "--config.train.eval_every_steps=100000", f"--config.train.log_every_steps={EVERY}",
          "--config.train.eval_at_start=False", f"--config.train.keep_checkpoints={keep}",
          "--config.data.shuffle_buffer=16"]


def _env(cache):
  # One persistent compilation cache for every run (conftest.shared_compilation_cache): the
  # runs after the first skip XLA's compilation (the same executables, so the same bits).
  return dict(os.environ, JAX_PLATFORMS="cpu", **compilation_cache_env(cache))


def _start(workdir, data_dir, cache):
  return subprocess.Popen([sys.executable, "main.py", f"--workdir={workdir}"] +
                          _config_args(data_dir), cwd=ROOT, env=_env(cache),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True)


def _finish(proc):
  out, _ = proc.communicate(timeout=1200)
  text = out.decode(errors="replace")
  assert proc.returncode == 0, text[-4000:]
  return text


def _committed(workdir):
  folder = pathlib.Path(workdir) / "checkpoints"
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir()
                if p.name.isdigit() and (p / "commit_success.txt").exists())


def _saving(workdir):
  folder = pathlib.Path(workdir) / "checkpoints"
  return folder.is_dir() and any(TMP_MARK in p.name for p in folder.iterdir())


def _final_state(workdir):
  config = workdir_lib.restore_config(workdir_lib.load_config(workdir=workdir))
  return workdir_lib.restore_run(workdir, None, workdir_lib.abstract_train_state(config))


def _assert_bit_identical(a, b):
  (step_a, a), (step_b, b) = a, b
  assert step_a == step_b == STEPS
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _data(tmp_path):
  config = tiny.get_config()
  config.data.synthetic_sizes = "train:24,val:4"
  return synthetic_dataset.ensure(config, tmp_path / "data")


def _kill_when(proc, workdir, moment, delay):
  """Waits for ``moment`` ('started': the lock is taken; 'committed': a checkpoint is committed;
  'saving': a save is being written), then ``delay`` seconds, then SIGKILL. Returns whether the
  kill found the process alive."""
  lock = pathlib.Path(workdir) / "run.lock"
  ready = {"started": lock.exists, "committed": lambda: bool(_committed(workdir)),
           "saving": lambda: _saving(workdir)}[moment]
  while not ready():
    if proc.poll() is not None:
      return False
    time.sleep(0.002)
  time.sleep(delay)
  if proc.poll() is not None:
    return False
  os.killpg(proc.pid, signal.SIGKILL)
  proc.communicate()
  return proc.returncode == -signal.SIGKILL


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path,
                                                                shared_compilation_cache):
  data_dir, cache = _data(tmp_path), shared_compilation_cache
  _finish(_start(tmp_path / "whole", data_dir, cache))
  whole = _final_state(tmp_path / "whole")

  rng = random.Random(15)
  # Two kills inside a save (either may land after the save's commit), one at a random moment
  # after the first commit; the SIGTERM run below covers the start of a run.
  moments = [("saving", 0.0), ("saving", 0.0), ("committed", rng.uniform(0, 3))]
  assert len(moments) >= TRIALS
  partial_saves_left = 0
  for trial, (moment, delay) in enumerate(moments):
    workdir = tmp_path / f"trial{trial}"
    killed = False
    for attempt in range(3):  # a delay past the end of the run: the same moment, no delay
      proc = _start(workdir, data_dir, cache)
      killed = _kill_when(proc, workdir, moment, delay if attempt == 0 else 0.0)
      if killed or proc.poll() is None:
        break
      shutil.rmtree(workdir)
    assert killed, f"trial {trial}: the run ended before the kill ({moment})"
    assert STEPS not in _committed(workdir), f"trial {trial}: killed after the end"
    partial_saves_left += _saving(workdir)
    out = _finish(_start(workdir, data_dir, cache))
    assert "stale lock" in out  # the killed run's lock was taken over
    _assert_bit_identical(_final_state(workdir), whole)
  assert partial_saves_left >= 1, "no trial was killed inside a save"

  # SIGTERM: a checkpoint at the step it arrived, exit 0, then the same end.
  workdir = tmp_path / "sigterm"
  proc = _start(workdir, data_dir, cache)
  while not _committed(workdir):
    assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
    time.sleep(0.002)
  os.killpg(proc.pid, signal.SIGTERM)
  out = _finish(proc)
  stopped = _committed(workdir)[-1]
  if stopped < STEPS:  # (a run that ends before the signal lands has nothing to show)
    assert f"stopping at step {stopped} on a termination signal" in out, out[-3000:]
    out = _finish(_start(workdir, data_dir, cache))
    assert "stale lock" not in out  # a stopped run releases its lock
  _assert_bit_identical(_final_state(workdir), whole)


# --- a full disk ---


def _tmpfs_runner():
  """The command prefix that runs a shell script with a private tmpfs mount, or a skip reason."""
  unshare = shutil.which("unshare")
  if unshare is None:
    return None, "no `unshare` on this machine (util-linux) to mount a private tmpfs"
  prefix = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-rm"]
  probe = subprocess.run(prefix + ["sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                         capture_output=True, text=True, check=False)
  if probe.returncode:
    return None, (f"cannot mount a tmpfs in a private mount namespace here (not root, and "
                  f"user namespaces refused: {probe.stderr.strip()[:200]})")
  return prefix, None


def _in_tmpfs(script, size_mb, mount, env):
  prefix, why = _tmpfs_runner()
  if prefix is None:
    pytest.skip(why)
  mount.mkdir(parents=True, exist_ok=True)
  body = f"mount -t tmpfs -o size={size_mb}m tmpfs {mount} || exit 99\n" + script
  return subprocess.run(prefix + ["sh", "-c", body], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=1200, check=False)


def test_a_full_disk_stops_the_training_at_the_save_and_keeps_every_checkpoint(
    tmp_path, shared_compilation_cache):
  """A 40 MB disk holds two 16 MB checkpoints: the third save is refused before writing, in one
  line; the committed steps survive, nothing partial is left, and the run resumes elsewhere."""
  data_dir, cache = _data(tmp_path), shared_compilation_cache
  mount, kept = tmp_path / "disk", tmp_path / "kept"
  command = " ".join([sys.executable, "main.py", f"--workdir={mount / 'run'}"]
                     + _config_args(data_dir, keep=2))
  proc = _in_tmpfs(textwrap.dedent(f"""
      {command}
      rc=$?
      cp -a {mount / 'run'} {kept}
      exit $rc
      """), 40, mount, _env(cache))
  assert proc.returncode != 99, proc.stderr
  out = proc.stdout + proc.stderr
  assert proc.returncode == 3, out[-4000:]
  assert "Traceback" not in out and "Event loop is closed" not in out, out[-4000:]
  error = [x for x in out.splitlines() if x.startswith("error: ")]
  assert len(error) == 1, out[-4000:]
  assert "checkpoint step 6" in error[0] and "[2, 4] are kept" in error[0], error[0]
  assert _committed(kept) == [2, 4]
  assert not _saving(kept)
  assert not (kept / "run.lock").exists()
  _finish(subprocess.Popen([sys.executable, "main.py", f"--workdir={kept}"]
                           + _config_args(data_dir, keep=2), cwd=ROOT, env=_env(cache),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  assert _committed(kept)[-1] == STEPS


def test_a_save_failing_in_the_background_is_named_and_cleaned_up(tmp_path):
  """With the free-space check off, the disk fills while orbax writes: poll() (the loop calls
  it every step) raises DiskFullError naming the step, removes the partial folder and keeps
  the committed steps, which still restore."""
  mount = tmp_path / "disk"
  script = textwrap.dedent(f"""
      import os, sys, jax, jax.numpy as jnp, numpy as np
      from dfl_jax.training import checkpointing
      state = {{"w": jnp.arange(1_500_000, dtype=jnp.float32)}}  # 6 MB
      ckpt = checkpointing.Checkpointer("{mount}/ckpt", max_to_keep=None)
      ckpt.space_check = False
      try:
        for step in range(1, 10):
          ckpt.save(step, jax.tree.map(lambda x: x + step, state))
          ckpt.poll()
        raise SystemExit("the disk never filled")
      except checkpointing.DiskFullError as e:
        print("ERROR", e)
      ckpt.abandon()
      left = sorted(os.listdir("{mount}/ckpt"))
      print("LEFT", left)
      again = checkpointing.Checkpointer("{mount}/ckpt")
      last = again.latest_step()
      step, restored, _ = again.restore_latest(state)
      np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(state["w"]) + last)
      print("RESTORED", step)
      """)
  (tmp_path / "fill.py").write_text(script)
  proc = _in_tmpfs(f"{sys.executable} {tmp_path / 'fill.py'}\n", 20, mount,
                   dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  lines = proc.stdout.splitlines()
  error = next(x for x in lines if x.startswith("ERROR"))
  left = next(x for x in lines if x.startswith("LEFT"))
  restored = next(x for x in lines if x.startswith("RESTORED"))
  assert "the disk is full" in error and "partial save was removed" in error, error
  failed = int(error.split("checkpoint step ")[1].split()[0])
  assert TMP_MARK not in left, left
  assert int(restored.split()[1]) == failed - 1
  assert str(failed) not in ast.literal_eval(left.split(" ", 1)[1])
