"""Training and evaluation of DFL: ``train_and_evaluate(config, workdir)``.

Data parallel over every device (and every host): the step is a per-device function under
``jax.shard_map`` inside ``jax.jit`` on a 1-D mesh with axis ``batch`` (what ``jax.pmap`` compiles
to today). Parameters and optimiser state are replicated, the batch is split, the state is
donated. Under shard_map (check_vma) the gradient of a replicated parameter is already the sum
over devices; the losses divide by the GLOBAL number of valid items (``axis_name``), so that sum
is exactly the single-device gradient of the global batch.

Optimiser (paper Sec. 4.2): Adam, lr 1e-4, x0.1 at epochs 24 and 35, 50 epochs, global batch 64.
A step whose loss or gradient is NaN or Inf applies no update; the loop stops at the next check
with a message naming the first such step, and the checkpoints written before it stay.

Mixed precision (``dfl_jax/mixed_precision.py``): parameters and optimiser state are float32
whatever ``config.model.dtype``. With float16 the state carries a dynamic loss scale: a step
with a non-finite gradient (but a finite loss) is skipped and halves the scale instead of
stopping the run.
"""

import os
import pathlib
import time
from typing import Any

from absl import logging
from clu import metric_writers
import ml_collections
import flax
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax

from dfl_jax import checkpointing, losses, metrics, mixed_precision
from dfl_jax import model as model_lib
from dfl_jax.model import init_variables

# Keys of a pipeline batch that the training step reads.
TRAIN_KEYS = ("images", "joints", "joint_valid", "segmentation", "segmentation_valid",
              "hand_presence", "hand_presence_valid", "rel_root_depth", "rel_root_depth_valid")
# Keys of an evaluation batch that the metrics read.
EVAL_KEYS = ("joint_cam", "affine", "focal", "princpt", "joint_valid_ann", "hand_type", "mask",
             "hand_presence_valid")
AXIS = "batch"
DEPTH_RANGE_MM, DEPTH_UNITS = 400.0, 256.0
CONFIG_FILE = "config.json"  # in the workdir; inference and export read it


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 scalar
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array             # uint32 key data, for dropout
  first_bad_step: jax.Array  # int32: first step with a non-finite loss or gradient, or -1
  loss_scale: Any = None     # mixed_precision.LossScale with float16 compute, else None


def create_learning_rate_fn(config, steps_per_epoch: int):
  """Piecewise constant: lr, times ``lr_decay_factor`` at each of ``lr_decay_epochs``."""
  t = config.train
  boundaries = {int(e * steps_per_epoch): t.lr_decay_factor for e in t.lr_decay_epochs}
  return optax.piecewise_constant_schedule(t.learning_rate, boundaries)


def create_optimizer(config, steps_per_epoch: int):
  """Adam (Sec. 4.2) after clipping the global gradient norm at ``train.grad_clip_norm``.

  The paper does not mention clipping; DETR-family trainers, A2J-Transformer's among them
  (which DFL follows), clip at 0.1, and without it our gradient norms reach the thousands.
  """
  adam = optax.adam(create_learning_rate_fn(config, steps_per_epoch))
  clip = config.train.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam


def restore_config(config):
  """A copy of ``config`` for building a state to restore a checkpoint into: BatchNorm's mode
  resolved as training resolved it, and no backbone or encoder file read (the checkpoint holds
  every weight, so a moved or deleted initialisation file does not matter)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.trainable_bn = model_lib.resolve_trainable_bn(
      config.model.get("trainable_bn"), bool(config.get("train", {}).get("backbone_init", "")))
  if "train" in config:
    for key in ("backbone_init", "encoder_init"):
      if key in config.train:
        config.train[key] = ""
  return config


def create_train_state(config, rng, tx):
  """The model and its initial state (identical on every process for the same rng)."""
  init_rng, dropout_rng = jax.random.split(rng)
  model, variables = init_variables(config, init_rng)
  params = variables["params"]
  loss_scale = None
  if mixed_precision.uses_loss_scaling(config.model):
    loss_scale = mixed_precision.init_loss_scale(
        config.train.get("loss_scale_init", mixed_precision.DEFAULT_INITIAL_SCALE))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                     rng=jax.random.key_data(dropout_rng),
                     first_bad_step=jnp.full((), -1, jnp.int32), loss_scale=loss_scale)
  return model, state


def make_mesh():
  """A 1-D mesh over every device of every process."""
  # Auto axes: XLA propagates shardings inside jit (the default of newer JAX, Explicit, would
  # make every reshape of a batch-sharded array in the model name its output sharding).
  return jax.make_mesh((jax.device_count(),), (AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(global_batch: int, num_devices: int | None = None):
  n = num_devices or jax.device_count()
  if global_batch % n:
    raise ValueError(f"config.train.batch_size={global_batch} (the global batch) does not "
                     f"divide by the {n} devices; choose a multiple of {n}")


def to_global(batch, mesh, keys=TRAIN_KEYS):
  """Host-local NumPy batch -> global arrays split over the mesh's batch axis."""
  sharding = NamedSharding(mesh, P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k]))
          for k in keys}


def make_train_step(model, tx, loss_config, mesh,
                    loss_scale_period: int = mixed_precision.DEFAULT_PERIOD):
  """jit(shard_map(per-device step)), the state donated.

  With ``state.loss_scale`` set (float16), the loss is scaled before differentiation and the
  gradients unscaled after; a non-finite gradient skips the update and halves the scale
  (``mixed_precision.update_loss_scale``) without marking the step bad.
  """
  model = model.clone(bn_axis_name=AXIS)  # trainable BatchNorm sees the global batch

  def per_device(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    rng = jax.random.fold_in(rng, jax.lax.axis_index(AXIS))
    scaler = state.loss_scale

    def loss_fn(params):
      out, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                 batch["images"], train=True, rngs={"dropout": rng},
                                 mutable=["batch_stats"])
      loss, terms = losses.total_loss(out, batch, loss_config, axis_name=AXIS)
      scaled = loss if scaler is None else loss * scaler.scale
      return scaled, (loss, terms, updates)

    (_, (loss, terms, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    # Replicated parameters: shard_map has already summed the per-device gradients.
    if scaler is not None:
      grads = mixed_precision.unscale(grads, scaler)
    grad_norm = optax.tree.norm(grads)  # not finite exactly when some gradient is not
    loss = jax.lax.psum(loss, AXIS)
    terms = jax.tree.map(lambda x: jax.lax.psum(x, AXIS), terms)
    batch_stats = updates["batch_stats"]  # global statistics already (SyncBN): replicated
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, param_updates)
    loss_ok, grads_ok = jnp.isfinite(loss), jnp.isfinite(grad_norm)
    ok = loss_ok & grads_ok
    # float16: a non-finite gradient is the loss scaler's business, not a reason to stop.
    bad = ~loss_ok if scaler is not None else ~ok
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1, params=keep(params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(opt_state, state.opt_state),
        first_bad_step=jnp.where((state.first_bad_step < 0) & bad, state.step,
                                 state.first_bad_step))
    step_metrics = dict(terms, grad_norm=grad_norm)
    if scaler is not None:
      new_state = new_state.replace(loss_scale=mixed_precision.update_loss_scale(
          scaler, grads_ok, loss_scale_period))
      step_metrics["loss_scale"] = scaler.scale
    return new_state, step_metrics

  step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()))
  return jax.jit(step, donate_argnums=(0,))


def make_predict_fn(model, mesh):
  def predict(params, batch_stats, images):
    return model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
  out_sharding = NamedSharding(mesh, P(AXIS))
  return jax.jit(predict, out_shardings=out_sharding)


def local_rows(x):
  """This process's rows of a global array split over the batch axis, in order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards], axis=0)


def depth_units_to_mm(z):
  return (np.asarray(z) / DEPTH_UNITS * 2.0 - 1.0) * (DEPTH_RANGE_MM / 2.0)


def evaluate(predict, state, eval_batches, mesh, predictions=None):
  """Official InterHand2.6M metrics (GT box and GT root depth) over the evaluation split.

  Depth is decoded from the model's 256-unit range whatever the input size (the targets of
  ``input_pipeline.transforms.depth_target`` are in those units).

  With a dict as ``predictions``, it is filled in the predictions-file format of
  ``dfl_jax.evaluate`` (annotation id -> joints_cam_mm, hand_presence, rel_root_depth_mm).
  """
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  acc = metrics.OfficialMetrics()
  for batch in eval_batches:
    images = to_global(batch, mesh, keys=("images",))["images"]
    out = predict(state.params, state.batch_stats, images)
    rows = {k: batch[k] for k in EVAL_KEYS + ("annotation_id",)}
    rows.update({f"pred_{k}": local_rows(v) for k, v in out.items()
                 if k in ("joints", "rel_root_depth", "hand_presence_logits")})
    if jax.process_count() > 1:
      rows = {k: multihost_utils.process_allgather(np.asarray(v), tiled=True)
              for k, v in rows.items()}
    # Only real rows: the padding (mask 0, all zeros) of a split that does not fill its last
    # batch, or of a multi-host evaluation's extra batches, has a singular affine and a zero
    # focal length, and is not scored.
    real = np.asarray(rows["mask"]) > 0
    if not real.any():
      continue
    rows = {k: np.asarray(v)[real] for k, v in rows.items()}
    gt_cam = rows["joint_cam"]
    root_depth = gt_cam[:, [20, 41], 2]
    pred_cam = metrics.crop_to_camera(rows["pred_joints"], rows["affine"], rows["focal"],
                                      rows["princpt"], root_depth, depth_units=DEPTH_UNITS)
    rel_root = (depth_units_to_mm(rows["pred_rel_root_depth"])
                if "pred_rel_root_depth" in rows else None)
    presence = rows.get("pred_hand_presence_logits")
    acc.update(pred_cam, gt_cam, rows["joint_valid_ann"], rows["hand_type"],
               pred_rel_root_depth_mm=rel_root, presence_logits=presence,
               hand_type_valid=rows["hand_presence_valid"])
    if predictions is not None:
      for i in range(len(pred_cam)):
        entry = {"joints_cam_mm": pred_cam[i].tolist()}
        if presence is not None:
          entry["hand_presence"] = (1.0 / (1.0 + np.exp(-presence[i]))).tolist()
        if rel_root is not None:
          entry["rel_root_depth_mm"] = float(rel_root[i])
        predictions[str(int(rows["annotation_id"][i]))] = entry
  return acc.result()


def _num_examples(info, split):
  return int(info.splits[split].num_examples)


def prepare_data(config, workdir):
  """Points ``config.data.data_dir`` at a built dataset, generating the synthetic one if asked."""
  if config.data.source == "synthetic" and not config.data.data_dir:
    from input_pipeline import synthetic_dataset  # pylint: disable=import-outside-toplevel
    with config.unlocked():
      config.data.data_dir = str(synthetic_dataset.ensure(config, pathlib.Path(workdir)))
  elif config.data.source not in ("interhand", "synthetic"):
    raise ValueError(f"config.data.source must be 'interhand' or 'synthetic', got "
                     f"{config.data.source!r}")
  if not config.data.data_dir:
    raise ValueError("config.data.data_dir is empty: build InterHand2.6M with "
                     "`python -m input_pipeline.build --source ROOT --data_dir DIR` and pass "
                     "--config.data.data_dir=DIR, or use --config.data.source=synthetic")


def save_config(config, workdir):
  """Writes the run's configuration to WORKDIR/config.json (process 0) for inference/export."""
  if jax.process_index() == 0:
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    (pathlib.Path(workdir) / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")


def maybe_initialize_distributed(config):
  """jax.distributed.initialize() when config.distributed.enabled or DFL_DISTRIBUTED=1."""
  d = config.get("distributed", {})
  if not (d.get("enabled", False) or os.environ.get("DFL_DISTRIBUTED") == "1"):
    return
  kwargs = {k: d.get(k) for k in ("coordinator_address", "num_processes", "process_id")
            if d.get(k) not in (None, "", -1)}
  jax.distributed.initialize(**kwargs)


def train_and_evaluate(config, workdir: str):
  """Trains for config.train.num_epochs (or num_steps), evaluating each epoch."""
  import input_pipeline  # pylint: disable=import-outside-toplevel
  maybe_initialize_distributed(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  prepare_data(config, workdir)
  save_config(config, workdir)
  check_batch_size(config.train.batch_size)
  mesh = make_mesh()
  writer = metric_writers.create_default_writer(
      str(workdir / "tensorboard"), just_logging=jax.process_index() > 0)

  info = input_pipeline.dataset_info(config)
  steps_per_epoch = max(1, _num_examples(info, config.data.train_split)
                        // config.train.batch_size)
  num_steps = int(config.train.get("num_steps", 0) or config.train.num_epochs * steps_per_epoch)
  tx = create_optimizer(config, steps_per_epoch)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints",
                                    max_to_keep=config.train.get("keep_checkpoints", 3))
  # Resuming: the checkpoint holds every weight, so no backbone or encoder file is read.
  resuming = ckpt.latest_step() is not None
  model, state = create_train_state(restore_config(config) if resuming else config,
                                    jax.random.key(config.seed), tx)
  replicated = NamedSharding(mesh, P())
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

  train_iter, eval_ds, _ = input_pipeline.create_datasets(config, start_step=start)
  train_step = make_train_step(model, tx, config.loss, mesh, config.train.get(
      "loss_scale_period", mixed_precision.DEFAULT_PERIOD))
  predict = make_predict_fn(model, mesh)
  eval_every = int(config.train.get("eval_every_steps", 0) or steps_per_epoch)
  ckpt_every = int(config.train.get("checkpoint_every_steps", 0) or steps_per_epoch)
  log_every = int(config.train.get("log_every_steps", 50))

  def run_eval(step):
    result = evaluate(predict, state, eval_ds.as_numpy_iterator(), mesh)
    result["step"] = step
    scalars = {f"eval/{k}": float(v) for k, v in _numbers(result).items() if k != "step"}
    writer.write_scalars(step, scalars)
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    return result

  t0, images_seen, last_eval = time.time(), 0, None
  if start == 0 and config.train.get("eval_at_start", False):
    run_eval(0)  # the untrained model's figures, to compare the end of the run with
    t0 = time.time()
  with checkpointing.PreemptionGuard() as guard:
    step = start
    while step < num_steps:
      batch = _next_batch(train_iter, config, step)
      try:
        state, step_metrics = train_step(state, to_global(batch, mesh))
      except Exception as e:  # pylint: disable=broad-except
        _raise_actionable(e, config, step, ckpt)
      step += 1
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
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    return next(train_iter)
  except StopIteration as e:  # the training stream repeats: ending means the data is broken
    raise RuntimeError(f"the training data in {config.data.data_dir} ended at step {step}; "
                       f"is the '{config.data.train_split}' split empty?") from e
  except tf.errors.OpError as e:
    raise RuntimeError(
        f"reading the training data in {config.data.data_dir} failed at step {step}: "
        f"{e.message.splitlines()[0] if e.message else e}. Rebuild the dataset with "
        f"`python -m input_pipeline.build` (it checks every image); the last checkpoint is "
        f"kept and training resumes from it.") from e


def _raise_actionable(error, config, step, ckpt):
  """Re-raises a failed step with what to do about it; checkpoints are left as they are."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
    per_device = config.train.batch_size // jax.device_count()
    raise MemoryError(
        f"the device ran out of memory at step {step} with {per_device} images per device "
        f"(config.train.batch_size={config.train.batch_size} over {jax.device_count()} "
        f"devices). Lower config.train.batch_size or use config.model.dtype='bfloat16'; the "
        f"last checkpoint (step {ckpt.latest_step()}) is kept.") from error
  raise error


def _check_finite(state, ckpt):
  bad = int(jax.device_get(state.first_bad_step))
  if bad >= 0:
    last = ckpt.latest_step()
    raise FloatingPointError(
        f"the loss or its gradient became NaN or Inf at step {bad} (no update was applied "
        f"from it on); "
        f"the last good checkpoint is step {last} in {ckpt.directory}. Lower "
        f"config.train.learning_rate or check the data, then resume.")

