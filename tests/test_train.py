"""Data parallelism: the device and process layout does not change the result."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

DRIVER = pathlib.Path(__file__).with_name("dp_driver.py")


def _env(devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return env


def _run(devices_per_process, mesh_devices, out, num_processes=1):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, str(DRIVER), "--devices", str(mesh_devices), "--out", str(out),
       "--process_id", str(i), "--num_processes", str(num_processes), "--port", str(port)],
      env=_env(devices_per_process), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(num_processes)]
  for p in procs:
    output, _ = p.communicate(timeout=900)
    assert p.returncode == 0, output.decode()[-3000:]
  return dict(np.load(out))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _assert_same(a, b):
  """Equal up to float reduction order. The tiny model trains its BatchNorm (synchronised over
  the devices), whose statistics are summed in another order on 4 devices: differences of a
  few 1e-6 appear. A wrong gradient scale (docs/jax_notes.md's pitfall) moves the parameters
  by a whole SGD update (~1e-2 here), far outside this tolerance."""
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=5e-5, err_msg=k)


@pytest.mark.slow
def test_data_parallel_results_do_not_depend_on_the_device_layout(tmp_path):
  """1 device, 4 devices, and 2 processes x 2 devices (JAX's distributed runtime on
  localhost) give the same parameters after 3 steps of the same global batch."""
  one = _run(4, 1, tmp_path / "one.npz")
  four = _run(4, 4, tmp_path / "four.npz")
  assert one["moved"] > 5e-3  # the steps changed the parameters far beyond the tolerance
  _assert_same(one, four)
  multi = _run(2, 4, tmp_path / "multi.npz", num_processes=2)
  _assert_same(four, multi)


def _tiny(size=64, batch=4):
  from configs import tiny  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.data.image_size = size
  config.train.batch_size = batch
  return config


def _batch(n, size, nan=False):
  r = np.random.RandomState(0)
  joints = np.concatenate([r.uniform(4, size - 4, (n, 42, 2)),
                           r.uniform(100, 156, (n, 42, 1))], -1).astype(np.float32)
  if nan:
    joints[0, 3] = np.nan  # a VALID joint with a NaN target: the loss is NaN
  return {"images": r.randint(0, 255, (n, size, size, 3)).astype(np.uint8), "joints": joints,
          "joint_valid": np.ones((n, 42), np.float32),
          "segmentation": r.randint(0, 33, (n, size // 4, size // 4)).astype(np.int32),
          "segmentation_valid": np.ones(n, np.float32),
          "hand_presence": np.ones((n, 2), np.float32), "hand_presence_valid": np.ones(n),
          "rel_root_depth": np.full(n, 128.0, np.float32), "rel_root_depth_valid": np.ones(n)}


@pytest.mark.slow
def test_a_nan_loss_applies_no_update_and_stops_naming_the_step(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  import pytest  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from dfl_jax import parallel  # pylint: disable=import-outside-toplevel
  from dfl_jax.training import checkpointing, loop  # pylint: disable=import-outside-toplevel
  from dfl_jax.training.state import create_optimizer, create_train_state
  from dfl_jax.training.step import make_train_step  # pylint: disable=import-outside-toplevel
  config = _tiny()
  mesh = parallel.make_mesh()
  tx = create_optimizer(config, 10)
  model, state = create_train_state(config, jax.random.key(0), tx)
  state = jax.device_put(state, NamedSharding(mesh, P()))
  step = make_train_step(model, tx, config.loss, mesh)
  ckpt = checkpointing.Checkpointer(tmp_path / "ckpt")
  state, _ = step(state, parallel.to_global(_batch(4, 64), mesh))
  ckpt.save(1, state, force=True)
  good = jax.device_get(state.params)
  state, m = step(state, parallel.to_global(_batch(4, 64, nan=True), mesh))  # step index 1
  assert not np.isfinite(float(m["loss"]))
  same = jax.tree.map(lambda a, b: np.array_equal(a, b), good, jax.device_get(state.params))
  assert all(jax.tree.leaves(same))  # no update from the NaN step
  state, _ = step(state, parallel.to_global(_batch(4, 64), mesh))  # later steps still train
  assert int(state.first_bad_step) == 1 and int(state.step) == 3
  with pytest.raises(FloatingPointError, match=r"step 1 .*last good checkpoint is step 1"):
    loop._check_finite(state, ckpt)  # pylint: disable=protected-access
  assert ckpt.latest_step() == 1
  ckpt.close()


def test_paper_config_without_pretrained_weights_stops_unless_from_scratch(tmp_path):
  """configs/dfl.py starts from a pre-trained ResNet50-FPN (Sec. 3.2): without a weight file
  the run stops before anything is rendered or written, saying how to get one."""
  from configs import dfl  # pylint: disable=import-outside-toplevel
  from dfl_jax.training import loop, state  # pylint: disable=import-outside-toplevel
  config = dfl.get_config()
  with pytest.raises(ValueError, match=r"convert_resnet .*backbone_init.*from_scratch=True"):
    loop.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
  for field, value in (("backbone_init", "dir"), ("encoder_init", "f.npz"),
                       ("from_scratch", True)):
    ok = dfl.get_config()
    ok.train[field] = value
    state.check_initialisation(ok)


def test_batch_size_must_divide_by_devices():
  import pytest  # pylint: disable=import-outside-toplevel
  from dfl_jax import parallel  # pylint: disable=import-outside-toplevel
  parallel.check_batch_size(8, num_devices=4)
  with pytest.raises(ValueError, match=r"batch_size=6 .* 4 devices; choose a multiple of 4"):
    parallel.check_batch_size(6, num_devices=4)


@pytest.mark.slow
def test_untrained_evaluation_and_a_failed_evaluation_keep_the_checkpoint(tmp_path, monkeypatch):
  """train.eval_at_start evaluates the untrained model (step 0) before training; an evaluation
  that fails later still leaves that step's checkpoint and stops the run with the error (a
  split whose last batch was padded once crashed the evaluation and lost the checkpoint)."""
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from dfl_jax import workdir  # pylint: disable=import-outside-toplevel
  from dfl_jax.evaluation import runner  # pylint: disable=import-outside-toplevel
  from dfl_jax.training import loop  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.data.synthetic_sizes = "train:8,val:2"
  config.data.image_size, config.train.batch_size, config.data.shuffle_buffer = 64, 4, 8
  config.train.update(num_steps=2, eval_every_steps=2, eval_at_start=True, log_every_steps=1)
  real, calls, results = runner.evaluate, [], []

  def evaluate_then_fail(*args, **kwargs):
    calls.append(len(calls))
    if len(calls) > 1:
      raise RuntimeError("evaluation broke")
    results.append(real(*args, **kwargs))
    return results[-1]

  monkeypatch.setattr(runner, "evaluate", evaluate_then_fail)
  try:
    loop.train_and_evaluate(config, str(tmp_path))
  except RuntimeError as e:
    assert "evaluation broke" in str(e)
  else:
    raise AssertionError("the failed evaluation did not stop the run")
  assert calls == [0, 1]  # step 0 (untrained), then step 2
  # The part segmentation is scored from the device's arg-max: 2 val images of 16 x 16 cells.
  assert results[0]["seg_num_pixels"] == 2 * 16 * 16
  assert 0.0 <= results[0]["seg_part_accuracy"] <= 1.0
  step, state = workdir.restore_run(tmp_path, None, workdir.abstract_train_state(config))
  assert step == 2 and int(state.step) == 2


def test_a_damaged_training_record_stops_naming_the_data_and_the_step():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from dfl_jax import errors  # pylint: disable=import-outside-toplevel
  from dfl_jax.training import loop  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.data.data_dir = "/data/tfds"

  def damaged():
    raise tf.errors.DataLossError(None, None, "corrupted record at 1234")
    yield  # pylint: disable=unreachable

  with pytest.raises(loop.TrainingDataError, match=r"/data/tfds failed at step 7: corrupted "
                                                   r"record at 1234.*input_pipeline.build") as e:
    loop._next_batch(damaged(), config, 7)
  assert isinstance(e.value, errors.UserError)
  with pytest.raises(loop.TrainingDataError, match="ended at step 3"):
    loop._next_batch(iter(()), config, 3)
