"""The data-parallel training step: ``jit(shard_map(per-device step))``, the state donated.

Data parallel over every device (and every host) on the 1-D mesh of ``dfl_jax.parallel``:
parameters and optimiser state are replicated, the batch is split, the state is donated. Under
shard_map (check_vma) the gradient of a replicated parameter is already the sum over devices;
the losses divide by the GLOBAL number of valid items (``axis_name``), so that sum is exactly
the single-device gradient of the global batch (docs/jax_notes.md).

A step whose loss or gradient is NaN or Inf applies no update and records itself in
``state.first_bad_step``. With float16 the loss is scaled (``mixed_precision.py``): a step with
a non-finite gradient (but a finite loss) is skipped and halves the scale instead.
"""

import jax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import optax

from dfl_jax.parallel import AXIS
from dfl_jax.training import losses, mixed_precision

# Keys of a pipeline batch that the training step reads.
TRAIN_KEYS = ("images", "joints", "joint_valid", "segmentation", "segmentation_valid",
              "hand_presence", "hand_presence_valid", "rel_root_depth", "rel_root_depth_valid")


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
