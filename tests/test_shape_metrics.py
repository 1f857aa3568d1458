"""Im2Hands' shape metrics and losses against shapes with known answers and NumPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import measure

from dfl_jax.evaluation import shape_metrics
from dfl_jax.network import point_cloud
from dfl_jax.training import shape_losses
from input_pipeline import hand_shape


def sphere_mesh(radius, centre=(0.0, 0.0, 0.0), step=0.5):
  """A marching-cubes sphere, vertices in mm."""
  axis = np.arange(-radius - 2, radius + 2 + step, step)
  grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
  sdf = np.linalg.norm(grid, axis=-1) - radius
  verts, faces, _, _ = measure.marching_cubes(sdf, 0.0, spacing=(step,) * 3)
  return verts + axis[0] + np.asarray(centre), faces


def lens_volume(r, d):
  """The intersection of two balls of radius r whose centres are d apart."""
  return 0.0 if d >= 2 * r else math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12.0


def test_iou_of_two_overlapping_balls_is_the_lens_formula():
  r, d, rng = 10.0, 8.0, np.random.default_rng(0)
  a, b = np.zeros(3), np.array([d, 0.0, 0.0])
  lo, hi = shape_metrics.query_box(a - r, a + r, b - r, b + r)
  pts = shape_metrics.uniform_points(lo, hi, 400_000, rng)
  inside_a = np.linalg.norm(pts - a, axis=-1) < r
  inside_b = np.linalg.norm(pts - b, axis=-1) < r
  lens = lens_volume(r, d)
  expected = lens / (2 * (4 / 3) * math.pi * r ** 3 - lens)
  got = shape_metrics.iou(inside_a, inside_b)
  # Monte Carlo: the union fills ~40 % of the box, so the standard error is ~0.001.
  assert abs(got - expected) < 0.006, (got, expected)
  assert shape_metrics.iou(inside_a, inside_a) == 1.0
  assert shape_metrics.iou(inside_a, np.zeros_like(inside_a)) == 0.0


def test_chamfer_matches_brute_force_and_concentric_spheres():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(300, 3)), rng.normal(size=(200, 3)) + 0.3
  d = np.linalg.norm(a[:, None] - b[None], axis=-1)
  reference = 0.5 * (d.min(1).mean() + d.min(0).mean())
  assert shape_metrics.chamfer_l1(a, b) == pytest.approx(reference, rel=1e-12)
  # Concentric spheres of radii 10 and 12 mm: every point is 2 mm from the other surface
  # (dense samples: nearest neighbours a little farther).
  va, fa = sphere_mesh(10.0)
  vb, fb = sphere_mesh(12.0)
  pa = hand_shape.surface_points(va, fa, 20_000, rng)
  pb = hand_shape.surface_points(vb, fb, 20_000, rng)
  assert 2.0 <= shape_metrics.chamfer_l1(pa, pb) < 2.15
  with pytest.raises(ValueError, match="empty"):
    shape_metrics.chamfer_l1(pa, np.zeros((0, 3)))


def test_winding_number_inside_test_of_a_closed_mesh():
  verts, faces = sphere_mesh(10.0, centre=(5.0, -3.0, 2.0), step=1.0)
  rng = np.random.default_rng(2)
  pts = rng.uniform(-10, 20, (1500, 3))
  r = np.linalg.norm(pts - np.array([5.0, -3.0, 2.0]), axis=-1)
  far = np.abs(r - 10.0) > 0.5    # the mesh is within ~0.1 mm of the sphere
  got = shape_metrics.mesh_contains(verts, faces, pts)
  np.testing.assert_array_equal(got[far], (r < 10.0)[far])


def capsule(a, b, radius):
  return hand_shape.Solid(np.array([[*a, *b, radius, radius]], np.float64), np.array([1]),
                          np.zeros((1, 3)), np.array([0]), np.zeros((0, 10)),
                          np.zeros((0,), int), np.zeros((0, 3)), np.array([], int))


def test_a_shifted_capsule_scores_perfectly_after_mid_joint_alignment():
  """A prediction that is the truth moved by t (its joints too) is perfect once aligned, and
  unaligned its IoU is the overlap of the capsule with itself moved by t."""
  gt = capsule((0.0, 0.0, 0.0), (0.0, 60.0, 0.0), 8.0)
  joints = np.zeros((21, 3))
  joints[:, 1] = np.linspace(0.0, 60.0, 21)
  t = np.array([4.0, 0.0, 0.0])
  pred_joints = joints + t
  shift = shape_metrics.alignment_shift(pred_joints, joints)
  np.testing.assert_allclose(shift, -t)
  rng = np.random.default_rng(3)
  lo, hi = shape_metrics.query_box(*gt.bounds(), *(np.array(gt.bounds()) + t))
  pts = shape_metrics.uniform_points(lo, hi, 200_000, rng)
  inside_gt = hand_shape.contains(gt, pts)
  pred_at = lambda x: hand_shape.contains(gt, x - t)        # the predicted (moved) capsule
  assert shape_metrics.iou(pred_at(pts - shift), inside_gt) == 1.0
  # Unaligned: a cylinder of radius 8 moved by 4 across its axis keeps the lens of two discs
  # (area 2 r^2 acos(d / 2r) - d/2 sqrt(4 r^2 - d^2)); the caps change it only a little.
  r, d = 8.0, 4.0
  disc = math.pi * r ** 2
  lens = 2 * r ** 2 * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r ** 2 - d ** 2)
  cylinder_iou = lens / (2 * disc - lens)
  assert abs(shape_metrics.iou(pred_at(pts), inside_gt) - cylinder_iou) < 0.03
  verts, faces = hand_shape.mesh(gt, resolution=1.0)
  inside = lambda x: hand_shape.contains(gt, x)
  moved = lambda x: hand_shape.contains(gt, x - t)
  score = shape_metrics.score_hand(moved, (verts + t, faces), pred_joints, inside,
                                   (verts, faces), joints, rng, 50_000, 10_000)
  assert score["iou"] == 1.0 and not score["empty"]
  assert score["chamfer_mm"] < 0.5          # two samplings of one surface
  unaligned = shape_metrics.score_hand(moved, (verts + t, faces), joints, inside,
                                       (verts, faces), joints, rng, 50_000, 10_000)
  assert unaligned["iou"] < 0.8 and unaligned["chamfer_mm"] > 1.5
  empty = shape_metrics.score_hand(lambda x: np.zeros(len(x), bool),
                                   (np.zeros((0, 3)), np.zeros((0, 3), int)), joints, inside,
                                   (verts, faces), joints, rng, 10_000, 1_000)
  assert empty["empty"] and empty["iou"] == 0.0 and math.isnan(empty["chamfer_mm"])


def _fps_reference(points, k):
  chosen = [int(np.argmax(np.sum((points - points.mean(0)) ** 2, -1)))]
  dist = np.full(len(points), np.inf)
  for _ in range(k - 1):
    dist = np.minimum(dist, np.sum((points - points[chosen[-1]]) ** 2, -1))
    chosen.append(int(np.argmax(dist)))
  return np.array(chosen)


def test_farthest_point_sampling_knn_and_iso_surface_against_numpy():
  rng = np.random.default_rng(4)
  pts = rng.normal(size=(500, 3)).astype(np.float32)
  got = np.asarray(jax.jit(point_cloud.farthest_point_sampling, static_argnums=1)(pts, 32))
  np.testing.assert_array_equal(got, _fps_reference(pts.astype(np.float64), 32))
  assert len(set(got.tolist())) == 32
  # Invalid candidates are never chosen; with fewer valid than k the last choice repeats.
  valid = np.zeros(500, bool)
  valid[:10] = True
  few = np.asarray(point_cloud.farthest_point_sampling(jnp.asarray(pts), 16, jnp.asarray(valid)))
  assert set(few.tolist()) == set(range(10)) and np.all(few[10:] == few[9])
  q = rng.normal(size=(20, 3)).astype(np.float32)
  idx = np.asarray(point_cloud.knn(jnp.asarray(q), jnp.asarray(pts), 5))
  d = np.linalg.norm(q[:, None] - pts[None], axis=-1)
  np.testing.assert_array_equal(idx, np.argsort(d, axis=1)[:, :5])
  logits = jnp.asarray(rng.normal(size=500).astype(np.float32))
  sel, sel_logits = point_cloud.iso_surface_candidates(jnp.asarray(pts), logits, 50)
  threshold = np.sort(np.abs(np.asarray(logits)))[49]
  assert np.all(np.abs(np.asarray(sel_logits)) <= threshold)
  np.testing.assert_array_equal(np.asarray(sel), pts[np.argsort(np.abs(np.asarray(logits)))[:50]])


def test_penetration_loss_is_zero_apart_and_positive_overlapping():
  x = jnp.linspace(-30.0, 30.0, 601)
  # Signed-distance-like logits of two 1-D "hands" (inside where positive), 10 mm apart.
  left = lambda c: 2.0 * (5.0 - jnp.abs(x - c))
  right = lambda c: 2.0 * (5.0 - jnp.abs(x - c))
  apart = shape_losses.penetration_loss(left(-10.0), right(10.0))
  assert float(apart) == 0.0
  overlap = shape_losses.penetration_loss(left(-2.0), right(2.0))
  assert float(overlap) > 0.0
  deeper = shape_losses.penetration_loss(left(-1.0), right(1.0))
  assert float(deeper) > float(overlap)
  p = 1 / (1 + np.exp(-np.asarray(left(-2.0)))), 1 / (1 + np.exp(-np.asarray(right(2.0))))
  reference = np.mean(4 * np.maximum(p[0] - 0.5, 0) * np.maximum(p[1] - 0.5, 0))
  assert float(overlap) == pytest.approx(reference, rel=1e-5)
