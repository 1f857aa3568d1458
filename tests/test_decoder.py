"""Decoder pieces: scale schedule, Eq. 1-2 initialisation, skeleton graph and SPR locality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfl_jax import conventions
from dfl_jax.network import skeleton
from dfl_jax.network.decoder import InitialAggregation, scale_schedule
from dfl_jax.network.spatial_position_refinement import SkeletonGraphConv


@pytest.mark.parametrize("n, t, expected", [
    (4, 3, (0, [1, 2, 3])),            # paper: T = N - 1, coarse to fine
    (3, 2, (0, [1, 2])),               # Table 3, 2 iterations
    (4, 4, (0, [1, 2, 3, 1])),         # Table 3, 4 iterations: the sweep starts again
    (4, 5, (0, [1, 2, 3, 1, 2])),
])
def test_scale_schedule(n, t, expected):
  assert scale_schedule(n, t) == expected


def test_scale_schedule_single_scale_uses_finest():
  assert scale_schedule(4, 3, multi_scale=False) == (3, [3, 3, 3])


def test_initial_aggregation_matches_eq_1_2():
  r = np.random.RandomState(0)
  f_a = r.randn(2, 10, 6).astype(np.float32)
  f_p = r.randn(2, 10, 4).astype(np.float32)
  m = InitialAggregation("appearance", num_joints=3)
  v = m.init(jax.random.key(0), f_a, f_p)
  j_a, j_p, w = m.apply(v, f_a, f_p)
  q = np.asarray(v["params"]["query_a"])
  logits = np.einsum("jc,bkc->bjk", q, f_a) / np.sqrt(6)  # Eq. 1
  a = np.exp(logits - logits.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  np.testing.assert_allclose(w, a, rtol=1e-5)
  np.testing.assert_allclose(j_a, a @ f_a, rtol=1e-5, atol=1e-6)  # Eq. 2
  np.testing.assert_allclose(j_p, a @ f_p, rtol=1e-5, atol=1e-6)
  # Appearance-only relationships: position features do not move the attention.
  _, _, w2 = m.apply(v, f_a, f_p * 5.0)
  np.testing.assert_allclose(w, w2)


def test_skeleton_graph():
  assert len(conventions.BONES) == 40
  a = skeleton.adjacency()
  np.testing.assert_array_equal(a, a.T)
  assert a[conventions.RIGHT_WRIST, conventions.LEFT_WRIST] == 1
  # Each hand is a tree (20 edges), joined by one wrist-wrist edge: 41 edges over 42 joints.
  assert (a.sum() - 42) / 2 == 41
  # Flip permutation swaps hands and is an involution.
  perm = conventions.FLIP_PERMUTATION
  np.testing.assert_array_equal(perm[perm], np.arange(42))
  assert perm[0] == 21 and perm[41] == 20


def test_graph_conv_is_local_to_the_skeleton():
  """The GCN of SPR mixes only skeleton neighbours: moving a joint changes its neighbours'
  outputs and leaves non-neighbours untouched."""
  m = SkeletonGraphConv(8)
  x = jnp.asarray(np.random.RandomState(0).randn(1, 42, 8), jnp.float32)
  v = m.init(jax.random.key(0), x)
  y0 = m.apply(v, x)
  y1 = m.apply(v, x.at[0, 5].add(3.0))  # index finger joint 5 (neighbours 4, 6)
  changed = np.where(np.abs(np.asarray(y1 - y0)).max(-1)[0] > 1e-6)[0]
  assert set(changed) == {4, 5, 6}


@pytest.mark.parametrize("relation", ["appearance", "position", "both"])
def test_initial_aggregation_with_batch_one_position_features(relation):
  """F^p of batch 1 (the model's, image-independent) equals it repeated for every image."""
  r = np.random.RandomState(1)
  f_a = r.randn(3, 10, 6).astype(np.float32)
  f_p = r.randn(1, 10, 4).astype(np.float32)
  m = InitialAggregation(relation, num_joints=5)
  v = m.init(jax.random.key(0), f_a, f_p)
  got = m.apply(v, f_a, f_p)
  want = m.apply(v, f_a, np.repeat(f_p, 3, axis=0))
  for a, b in zip(got, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
