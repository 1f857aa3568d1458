"""Im2Hands' training losses, pure functions over arrays (its supplement, Sec. S.3.2).

- Occupancy loss: binary cross entropy of each hand's occupancy logits at the training queries
  against the exact inside test of that hand's ground-truth shape (HALO's loss), averaged over
  the queries that count (``weights``) and the two hands.
- Penetration loss (R only, weight 0.001): the two hands must not claim the same space. Where
  the supplement gives the weight but not the form, this is
  ``mean_x relu(p_l(x) - 1/2) * relu(p_r(x) - 1/2) * 4``: zero wherever at most one hand holds x
  with probability over 1/2 (so exactly zero for separated hands predicted confidently), and
  growing to 1 where both hands are certain of x; its gradient pushes both occupancies down
  only where they overlap.
"""

import jax
import jax.numpy as jnp
import optax


def occupancy_loss(logits, inside, weights=None):
  """Mean BCE of logits [..., N] against bool/float ``inside`` [..., N] (``weights`` [..., N])."""
  bce = optax.sigmoid_binary_cross_entropy(logits, inside.astype(logits.dtype))
  if weights is None:
    return jnp.mean(bce)
  return jnp.sum(bce * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def penetration_loss(logits_left, logits_right, weights=None):
  """Mean over queries of 4 relu(p_l - 1/2) relu(p_r - 1/2) (the module docstring)."""
  p_l, p_r = jax.nn.sigmoid(logits_left), jax.nn.sigmoid(logits_right)
  both = 4.0 * jax.nn.relu(p_l - 0.5) * jax.nn.relu(p_r - 0.5)
  if weights is None:
    return jnp.mean(both)
  return jnp.sum(both * weights) / jnp.maximum(jnp.sum(weights), 1.0)
