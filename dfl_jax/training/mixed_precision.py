"""Mixed precision: the compute dtype comes from ``config.model.dtype``, the weights stay float32.

Policy (``config.model.dtype`` = 'float32' | 'bfloat16' | 'float16'):
  * Parameters, optimiser state and BatchNorm statistics are float32 (Flax's ``param_dtype``
    default): the "master weights" the optimiser updates.
  * Convolutions, Dense layers and attention products run in the compute dtype.
  * In float32 whatever the compute dtype: attention and segmentation softmaxes (their logits are
    cast first), BatchNorm, GroupNorm and LayerNorm statistics, the 2.5D coordinate heads, the
    extension heads, the losses. Every model output is float32.

bfloat16 (TPU, Ampere and newer) has float32's exponent range and needs nothing more.
float16 (Volta and Turing: their tensor cores have no bfloat16) has a 5-bit exponent: small
gradients underflow to 0 unless the loss is scaled up before differentiation. Dynamic loss
scaling, as in mixed-precision training since Micikevicius et al. (2018):

  * multiply the loss by ``scale`` and divide the gradients by it (in float32);
  * if any gradient is not finite, skip the update and halve ``scale``;
  * after ``period`` finite steps in a row, double it.

The train step (``dfl_jax/training/step.py``) keeps a ``LossScale`` in its state when the model is
float16, and does the above with these pure functions.
"""

import flax
import jax
import jax.numpy as jnp

DEFAULT_INITIAL_SCALE = 2.0**15
DEFAULT_PERIOD = 2000


@flax.struct.dataclass
class LossScale:
  scale: jax.Array       # float32 scalar: the factor the loss is multiplied by
  good_steps: jax.Array  # int32 scalar: finite steps since the scale last changed


def init_loss_scale(initial: float = DEFAULT_INITIAL_SCALE) -> LossScale:
  return LossScale(scale=jnp.asarray(initial, jnp.float32),
                   good_steps=jnp.zeros((), jnp.int32))


def uses_loss_scaling(model_config) -> bool:
  """Dynamic loss scaling is on exactly for float16 compute."""
  return model_config.get("dtype", "float32") == "float16"


def all_finite(tree) -> jax.Array:
  """True when every element of every leaf is finite (a boolean scalar)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.asarray(True)
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).all()


def unscale(grads, loss_scale: LossScale):
  """Gradients of the scaled loss -> gradients of the loss (float32 division)."""
  inv = 1.0 / loss_scale.scale
  return jax.tree.map(lambda g: (g.astype(jnp.float32) * inv).astype(g.dtype), grads)


def update_loss_scale(loss_scale: LossScale, finite, period: int = DEFAULT_PERIOD,
                      factor: float = 2.0, min_scale: float = 1.0,
                      max_scale: float = 2.0**24) -> LossScale:
  """The next scale: halved on a non-finite step, doubled after ``period`` finite ones."""
  grown = loss_scale.good_steps + 1 >= period
  scale = jnp.where(finite,
                    jnp.where(grown, loss_scale.scale * factor, loss_scale.scale),
                    loss_scale.scale / factor)
  good = jnp.where(finite & ~grown, loss_scale.good_steps + 1, 0)
  return LossScale(scale=jnp.clip(scale, min_scale, max_scale).astype(jnp.float32),
                   good_steps=good.astype(jnp.int32))
