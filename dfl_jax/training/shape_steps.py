"""Im2Hands' optimisers and jitted training steps for K, I and R (its supplement, S.3.2).

- I and R: Adam, learning rate 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 1e-5 (torch's
  Adam weight decay: an L2 term added to the gradient, ``optax.add_decayed_weights`` before
  Adam), the rate x0.2 every 5,000 steps; batch 8, 10 epochs.
- K: Adam 1e-4, x0.3 every 5,000 steps; batch 32, 30 epochs. K's loss, which the supplement
  does not give, is the mean distance between the refined and the true joints over valid joints
  (MPJPE, the number K is meant to lower).
- I's loss: the occupancy loss of both hands (``shape_losses.occupancy_loss``) over the queries
  of the hands present; R's: its refined occupancy loss + 0.001 x the penetration loss over the
  same queries of both hands (each hand's queries scored under both hands' refined occupancy).

Steps are pure functions of (state, batch, key) under ``jax.jit`` with the state donated; the
state is a flax ``TrainState`` whose ``params`` are the trained network's and whose extra
``frozen`` holds what it reads but does not train (BatchNorm statistics).
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from dfl_jax.evaluation import reconstruction
from dfl_jax.network import keypoint_refinement
from dfl_jax.training import shape_losses

PENETRATION_WEIGHT = 0.001


def optimizer(learning_rate: float, decay_factor: float, decay_every: int,
              weight_decay: float = 0.0):
  """Adam with a staircase decay of the rate by ``decay_factor`` every ``decay_every`` steps."""
  schedule = optax.exponential_decay(learning_rate, decay_every, decay_factor, staircase=True)
  parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
  return optax.chain(*parts, optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
                     optax.scale_by_learning_rate(schedule))


@flax.struct.dataclass
class State:
  step: jnp.ndarray
  params: Any
  frozen: Any
  opt_state: Any
  tx: Any = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, variables, tx):
    params = variables["params"]
    frozen = {k: v for k, v in variables.items() if k != "params"}
    return cls(jnp.zeros((), jnp.int32), params, frozen, tx.init(params), tx)

  def variables(self):
    return dict(self.frozen, params=self.params)

  def apply(self, grads):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)


def keypoint_loss(refined, truth, valid):
  """Mean joint distance (mm) over valid joints."""
  err = jnp.sqrt(jnp.sum(jnp.square(refined - truth), -1) + 1e-12)   # finite gradient at 0
  return jnp.sum(err * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def initial_loss(logits, batch):
  """I's occupancy loss over the hands present."""
  weights = jnp.broadcast_to(batch["hand_valid"][..., None], logits.shape)
  return shape_losses.occupancy_loss(logits, batch["inside"], weights)


def make_keypoint_step(model):
  """jit(state, batch, key) -> (state, metrics): K on batch['keypoints'] (DFL's, mm)."""

  def step(state, batch, key):
    def loss_fn(params):
      refined = model.apply(dict(state.frozen, params=params), batch["image"],
                            batch["keypoints"], train=True, rngs={"dropout": key})
      return keypoint_loss(refined, batch["joints"], batch["joint_valid"])

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    before = keypoint_loss(batch["keypoints"], batch["joints"], batch["joint_valid"])
    return state.apply(grads), {"loss": loss, "mpjpe_input": before}

  return jax.jit(step, donate_argnums=0)


def make_initial_step(model):
  """jit(state, batch, key) -> (state, metrics): I on its occupancy samples."""

  def step(state, batch, key):
    def loss_fn(params):
      out = model.apply(dict(state.frozen, params=params), batch["image"], batch["keypoints"],
                        batch["focal"], batch["princpt"], batch["points"], train=True,
                        rngs={"dropout": key})
      return initial_loss(out["logits"], batch), out["logits"]

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    w = jnp.broadcast_to(batch["hand_valid"][..., None], logits.shape)
    accuracy = jnp.sum(((logits > 0) == batch["inside"]) * w) / jnp.maximum(jnp.sum(w), 1.0)
    return state.apply(grads), {"loss": loss, "accuracy": accuracy}

  return jax.jit(step, donate_argnums=0)


def refinement_loss(logits_by_hand, batch):
  """R's loss: occupancy of each hand's own queries + 0.001 x penetration.

  ``logits_by_hand`` [B, 2 (hand), 2 (query set), N]: hand h's refined logits at the queries
  of hand q; the occupancy loss reads the diagonal, the penetration loss every query under both
  hands, in frames with both hands (queries of an absent hand do not count).
  """
  own = jnp.stack([logits_by_hand[:, 0, 0], logits_by_hand[:, 1, 1]], 1)
  occupancy = initial_loss(own, batch)
  both = batch["hand_valid"][:, 0] * batch["hand_valid"][:, 1]       # two hands to collide
  weights = jnp.broadcast_to(both[:, None, None] * batch["hand_valid"][:, :, None], own.shape)
  penetration = shape_losses.penetration_loss(logits_by_hand[:, 0], logits_by_hand[:, 1],
                                              weights)
  return occupancy + PENETRATION_WEIGHT * penetration, {"occupancy": occupancy,
                                                        "penetration": penetration}


def initial_shapes(i_model, i_variables, batch, resolution: int, num_points: int,
                   candidates: int):
  """What R reads from a frozen I: (surface [B, 2, P, 3], I's logits [B, 2, 2N] at
  ``refinement_queries(batch)``).

  The surface points come from I's logits on each hand's grid (``reconstruction``). I is
  frozen and run without dropout, so these are fixed per example: the pipeline computes them
  once for the whole training split (``training/shapes.py``) and R's steps read them."""
  args = (batch["image"], batch["keypoints"], batch["focal"], batch["princpt"])
  grids, _, _ = reconstruction.hand_grids(batch["keypoints"], resolution)
  grid_logits = i_model.apply(i_variables, *args, grids)["logits"]
  surface = reconstruction.surface_points(grids, grid_logits, num_points, candidates)
  init = i_model.apply(i_variables, *args, refinement_queries(batch))["logits"]
  return jax.lax.stop_gradient((surface, init))


def refinement_queries(batch):
  """[B, 2, 2N, 3]: every hand's training queries, both sets, for both hands (the penetration
  loss scores each hand's queries under the other hand too)."""
  both = jnp.concatenate([batch["points"][:, 0], batch["points"][:, 1]], 1)   # [B, 2N, 3]
  return jnp.stack([both, both], 1)


def make_refinement_step(r_model):
  """jit(state, batch, key) -> (state, metrics): R on I's frozen initial shapes, which the
  batch carries (``surface``, ``init_logits``: ``initial_shapes``)."""

  def step(state, batch, key):
    init_logits = batch["init_logits"]
    init = jax.nn.sigmoid(init_logits)
    centre = keypoint_refinement.keypoint_centre(batch["keypoints"])[:, 0]
    n = batch["points"].shape[2]

    def loss_fn(params):
      logits = r_model.apply(dict(state.frozen, params=params), batch["image"], batch["focal"],
                             batch["princpt"], batch["surface"], centre,
                             refinement_queries(batch), init, train=True,
                             rngs={"dropout": key})
      by_hand = logits.reshape(logits.shape[0], 2, 2, n)
      return refinement_loss(by_hand, batch)

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    own = jnp.stack([init_logits[:, 0, :n], init_logits[:, 1, n:]], 1)
    return state.apply(grads), dict(parts, loss=loss, initial_occupancy=initial_loss(own, batch))

  return jax.jit(step, donate_argnums=0)
