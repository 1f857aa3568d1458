"""Training and evaluation of DFL: ``train_and_evaluate(config, workdir)`` (``main.py``).

The loop: the workdir contract written first (``dfl_jax.workdir``), the data prepared (the
embedded synthetic set rendered and built on first use), the state created (weight files merged,
``state.py``) or resumed from the latest intact checkpoint, then the data-parallel step
(``step.py``) with evaluation every epoch (``dfl_jax.evaluation.runner``) and checkpoints.

A step whose loss or gradient is NaN or Inf applies no update; the loop stops at the next check
with a message naming the first such step, and the checkpoints written before it stay. A failed
evaluation saves that step's checkpoint before the error stops the run; a termination signal
saves one and stops every host at the same step.
"""

import pathlib
import time

from absl import logging
from clu import metric_writers
import jax
import numpy as np
import tensorflow as tf

from dfl_jax import errors, parallel, workdir as workdir_lib
from dfl_jax.evaluation import runner
from dfl_jax.training import checkpointing, config_check, mixed_precision, workdir_lock
from dfl_jax.training.state import create_optimizer, create_train_state
from dfl_jax.training.step import TRAIN_KEYS, make_train_step
from input_pipeline import pipeline, synthetic_dataset


class TrainingDataError(errors.InputError):
  """The training data cannot be read (a damaged record, an empty split)."""


class DeviceMemoryError(errors.UserError, MemoryError):
  """The step does not fit the device's memory at this batch size."""
  exit_code = errors.FAULT_EXIT


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """The loss or its gradient became NaN or Inf; the last good checkpoint is kept."""


def _num_examples(info, split):
  return int(info.splits[split].num_examples)


def train_and_evaluate(config, workdir: str):
  """Trains for config.train.num_epochs (or num_steps), evaluating each epoch.

  The configuration is checked (``config_check``) and the workdir's lock taken
  (``workdir_lock``) before anything is written; a second run in the same workdir refuses.
  """
  workdir = pathlib.Path(workdir)
  config_check.check(config)
  checkpoints = workdir / workdir_lib.CHECKPOINTS
  resuming = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
  config_check.check_resume_or_initialisation(config, resuming)
  config_check.check_data_dir(config)
  parallel.maybe_initialize_distributed(config)
  config_check.check_devices(config)
  with workdir_lock.hold(workdir):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: pathlib.Path):
  """The run itself, inside the workdir's lock."""
  synthetic_dataset.prepare_data(config, workdir)
  config_check.check_data(config)
  workdir_lib.save_config(config, workdir)
  mesh = parallel.make_mesh()
  writer = metric_writers.create_default_writer(
      str(workdir / "tensorboard"), just_logging=jax.process_index() > 0)

  info = pipeline.dataset_info(config)
  steps_per_epoch = max(1, _num_examples(info, config.data.train_split)
                        // config.train.batch_size)
  num_steps = int(config.train.get("num_steps", 0) or config.train.num_epochs * steps_per_epoch)
  tx = create_optimizer(config, steps_per_epoch)
  ckpt = checkpointing.Checkpointer(workdir / workdir_lib.CHECKPOINTS,
                                    max_to_keep=config.train.get("keep_checkpoints", 3))
  # Resuming: the checkpoint holds every weight, so no backbone or encoder file is read.
  resuming = ckpt.latest_step() is not None
  model, state = create_train_state(config, jax.random.key(config.seed), tx,
                                    weight_files=not resuming)
  replicated = parallel.replicated(mesh)
  state = jax.device_put(state, replicated)

  restored = ckpt.restore_latest(state)
  if restored is None and resuming:  # every checkpoint was damaged: a fresh start after all
    model, state = create_train_state(config, jax.random.key(config.seed), tx)
    state = jax.device_put(state, replicated)
  if restored is not None:
    _, state, _ = restored
    state = jax.device_put(state, replicated)
    logging.info("resumed from step %d", int(state.step))
  start = int(state.step)

  train_iter, eval_ds, _ = pipeline.create_datasets(config, start_step=start)
  train_step = make_train_step(model, tx, config.loss, mesh, config.train.get(
      "loss_scale_period", mixed_precision.DEFAULT_PERIOD))
  predict = runner.make_predict_fn(model, mesh)
  eval_every = int(config.train.get("eval_every_steps", 0) or steps_per_epoch)
  ckpt_every = int(config.train.get("checkpoint_every_steps", 0) or steps_per_epoch)
  log_every = int(config.train.get("log_every_steps", 50))

  def run_eval(step):
    result = runner.evaluate(predict, state, eval_ds.as_numpy_iterator(), mesh)
    result["step"] = step
    scalars = {f"eval/{k}": float(v) for k, v in _numbers(result).items() if k != "step"}
    writer.write_scalars(step, scalars)
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    return result

  try:
    t0, images_seen, last_eval = time.time(), 0, None
    if start == 0 and config.train.get("eval_at_start", False):
      run_eval(0)  # the untrained model's figures, to compare the end of the run with
      t0 = time.time()
    with checkpointing.PreemptionGuard() as guard:
      step = start
      while step < num_steps:
        batch = _next_batch(train_iter, config, step)
        try:
          state, step_metrics = train_step(state, parallel.to_global(batch, mesh, TRAIN_KEYS))
        except Exception as e:  # pylint: disable=broad-except
          _raise_actionable(e, config, step, ckpt)
        step += 1
        ckpt.poll()  # a background save that failed stops the run here, naming its step
        images_seen += config.train.batch_size
        if step % log_every == 0 or step == num_steps:
          _check_finite(state, ckpt)
          scalars = {f"train/{k}": float(v) for k, v in jax.device_get(step_metrics).items()}
          elapsed = time.time() - t0
          rate = images_seen / elapsed
          eta = (num_steps - step) * config.train.batch_size / rate
          writer.write_scalars(step, dict(scalars, **{"train/images_per_s": rate}))
          logging.info("step %d/%d  loss %.4f  %.1f images/s  %.1f min left", step, num_steps,
                       scalars["train/loss"], rate, eta / 60)
        if step % eval_every == 0 or step == num_steps:
          _check_finite(state, ckpt)
          try:
            last_eval = run_eval(step)
          except Exception:  # the step's training is not lost to a failed evaluation
            ckpt.save(step, state, force=True)
            ckpt.wait()
            logging.error("evaluation at step %d failed; checkpoint %d saved", step, step)
            raise
        # Every host must stop at the same step: sync the signal flag (cheap on one host).
        stop = guard.sync() if (jax.process_count() == 1 or step % 10 == 0) else False
        if step % ckpt_every == 0 or step == num_steps or stop:
          _check_finite(state, ckpt)
          ckpt.save(step, state, metrics=_scalar_metrics(last_eval, step), force=stop)
        if stop:
          logging.warning("stopping at step %d on a termination signal; checkpoint saved", step)
          break
    ckpt.wait()
  except BaseException:
    ckpt.abandon()  # a save in flight ends; the error being raised is the one reported
    raise
  ckpt.close()
  writer.flush()
  return state, last_eval


def _scalar_metrics(result, step):
  """The evaluation metrics for the checkpoint, only when they belong to this step."""
  if not result or result.get("step", step) != step:
    return None
  return {k: float(v) for k, v in _numbers(result).items()}


def _numbers(result):
  """The numeric scalars of a metrics dict (no strings, lists, None or booleans)."""
  return {k: v for k, v in result.items()
          if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))}


def _next_batch(train_iter, config, step):
  """The next training batch; a failing data pipeline becomes a message naming the data."""
  try:
    return next(train_iter)
  except StopIteration as e:  # the training stream repeats: ending means the data is broken
    raise TrainingDataError(f"the training data in {config.data.data_dir} ended at step {step}; "
                       f"is the '{config.data.train_split}' split empty?") from e
  except tf.errors.OpError as e:
    raise TrainingDataError(
        f"reading the training data in {config.data.data_dir} failed at step {step}: "
        f"{e.message.splitlines()[0] if e.message else e}. Rebuild the dataset with "
        f"`python -m input_pipeline.build` (it checks every image); the last checkpoint is "
        f"kept and training resumes from it.") from e


def _raise_actionable(error, config, step, ckpt):
  """Re-raises a failed step with what to do about it; checkpoints are left as they are."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
    per_device = config.train.batch_size // jax.device_count()
    raise DeviceMemoryError(
        f"the device ran out of memory at step {step} with {per_device} images per device "
        f"(config.train.batch_size={config.train.batch_size} over {jax.device_count()} "
        f"devices). Lower config.train.batch_size or use config.model.dtype='bfloat16'; the "
        f"last checkpoint (step {ckpt.latest_step()}) is kept.") from error
  raise error


def _check_finite(state, ckpt):
  bad = int(jax.device_get(state.first_bad_step))
  if bad >= 0:
    last = ckpt.latest_step()
    raise NonFiniteLossError(
        f"the loss or its gradient became NaN or Inf at step {bad} (no update was applied "
        f"from it on); "
        f"the last good checkpoint is step {last} in {ckpt.directory}. Lower "
        f"config.train.learning_rate or check the data, then resume.")

