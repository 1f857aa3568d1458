"""Occupancy grids, surface points, marching-cubes meshes and mesh files."""

import jax.numpy as jnp
import numpy as np

from dfl_jax.evaluation import reconstruction, shape_metrics


def _ball_probabilities(resolution, lo, hi, centre, radius):
  u = np.asarray(reconstruction.unit_grid(resolution))
  points = lo + u * (hi - lo)
  d = np.linalg.norm(points - centre, axis=-1)
  return points, 1.0 / (1.0 + np.exp((d - radius) / 1.0))   # 0.5 on the sphere


def test_grid_mesh_is_the_ball_and_faces_outwards():
  lo, hi = np.array([-20.0, -20, 580]), np.array([20.0, 20, 620])
  centre, r = np.array([0, 0, 600.0]), 12.0
  _, prob = _ball_probabilities(41, lo, hi, centre, r)
  verts, faces = reconstruction.mesh_from_grid(prob.reshape(41, 41, 41), lo, hi)
  np.testing.assert_allclose(np.linalg.norm(verts - centre, axis=-1), r, atol=0.1)
  rng = np.random.default_rng(0)
  pts = rng.uniform(lo, hi, (3000, 3))
  d = np.linalg.norm(pts - centre, axis=-1)
  far = np.abs(d - r) > 0.5
  inside = shape_metrics.mesh_contains(verts, faces, pts)      # needs outward faces
  np.testing.assert_array_equal(inside[far], (d < r)[far])
  empty = reconstruction.mesh_from_grid(np.zeros((5, 5, 5)), lo, hi)
  assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)


def test_mesh_files_round_trip(tmp_path):
  rng = np.random.default_rng(1)
  verts = rng.normal(size=(30, 3))
  faces = rng.integers(0, 30, (50, 3))
  path = reconstruction.write_ply(tmp_path / "a" / "hand.ply", verts, faces)
  v, f = reconstruction.read_ply(path)
  np.testing.assert_allclose(v, verts.astype(np.float32))
  np.testing.assert_array_equal(f, faces)
  obj = reconstruction.write_obj(tmp_path / "hand.obj", verts, faces).read_text().splitlines()
  assert len(obj) == 80 and obj[30].startswith("f ")
  np.testing.assert_array_equal(np.array(obj[30].split()[1:], int), faces[0] + 1)


def test_hand_grids_and_surface_points():
  rng = np.random.default_rng(2)
  joints = rng.uniform(-60, 60, (1, 42, 3)) + [0, 0, 600]
  grids, lo, hi = reconstruction.hand_grids(jnp.asarray(joints), 8)
  assert grids.shape == (1, 2, 512, 3)
  np.testing.assert_allclose(lo[0, 0], joints[0, :21].min(0) - reconstruction.MARGIN_MM, rtol=1e-6)
  np.testing.assert_allclose(grids[0, 1].max(0), hi[0, 1], rtol=1e-6)
  # A ball's logits on a grid: the surface points lie on the sphere and spread over it.
  lo_b, hi_b, centre, r = np.array([-20.0] * 3), np.array([20.0] * 3), np.zeros(3), 12.0
  points, prob = _ball_probabilities(24, lo_b, hi_b, centre, r)
  logits = np.log(prob) - np.log1p(-prob)
  g = jnp.asarray(np.broadcast_to(points, (1, 2) + points.shape), jnp.float32)
  surf = np.asarray(reconstruction.surface_points(g, jnp.asarray(
      np.broadcast_to(logits, (1, 2) + logits.shape), jnp.float32), 64, 400))
  assert surf.shape == (1, 2, 64, 3)
  dist = np.linalg.norm(surf[0, 0] - centre, axis=-1)
  assert np.all(np.abs(dist - r) < 1.5)                          # within a grid cell
  assert np.all(np.abs(surf[0, 0].mean(0)) < 3.0)                  # spread over the sphere
