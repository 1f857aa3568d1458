"""Point-cloud operations of Im2Hands' refinement network R, in JAX with fixed shapes.

- ``farthest_point_sampling``: k of N points, each the farthest from those already chosen (the
  first the farthest from the candidates' mean, so the result does not depend on the order of
  the candidates); candidates with ``valid`` False are never chosen unless fewer than k are
  valid, in which case the last valid choice repeats.
- ``iso_surface_candidates``: the query points of a uniform grid that lie on the 0.5 iso-surface
  of an occupancy: those whose occupancy logit is smallest in magnitude (the supplement,
  S.3.1: "collect the query points that are estimated to be on the surface"; a fixed number,
  so that the step compiles once, instead of a threshold).
- ``knn``: the indices of each query's k nearest points.
"""

import jax
import jax.numpy as jnp


def farthest_point_sampling(points, k: int, valid=None):
  """points [N, 3] -> indices [k] (vmap for batches)."""
  n = points.shape[0]
  valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
  big = jnp.asarray(jnp.finfo(points.dtype).max, points.dtype)
  mean = jnp.sum(jnp.where(valid[:, None], points, 0), 0) / jnp.maximum(jnp.sum(valid), 1)
  d0 = jnp.where(valid, jnp.sum(jnp.square(points - mean), -1), -1.0)
  first = jnp.argmax(d0)

  def body(i, carry):
    chosen, dist, last = carry
    d = jnp.sum(jnp.square(points - points[last]), -1)
    dist = jnp.minimum(dist, d)
    nxt = jnp.argmax(jnp.where(valid, dist, -1.0))
    nxt = jnp.where(dist[nxt] > 0, nxt, last)   # nothing new left: repeat
    return chosen.at[i].set(nxt), dist, nxt

  chosen = jnp.zeros((k,), jnp.int32).at[0].set(first)
  dist = jnp.where(valid, big, -1.0)
  chosen, _, _ = jax.lax.fori_loop(1, k, body, (chosen, dist, first))
  return chosen


def iso_surface_candidates(grid_points, logits, count: int):
  """grid_points [G, 3], logits [G] -> (points [count, 3], logits [count]): the ``count`` grid
  points nearest the 0.5 iso-level (smallest |logit|)."""
  _, idx = jax.lax.top_k(-jnp.abs(logits), count)
  return grid_points[idx], logits[idx]


def knn(queries, points, k: int):
  """queries [Q, 3], points [N, 3] -> indices [Q, k] of the nearest points, nearest first."""
  d = jnp.sum(jnp.square(queries[:, None, :] - points[None, :, :]), -1)
  _, idx = jax.lax.top_k(-d, k)
  return idx
