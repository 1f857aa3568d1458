"""Hand solids: distances and ray hits against brute force, mesh vs inside test, files."""

import numpy as np
import pytest

from input_pipeline import gestures, hand_model, hand_shape, synthetic_render


def _ball_family(cone, n=4001):
  s = np.linspace(0.0, 1.0, n)
  return cone[None, 0:3] + s[:, None] * (cone[3:6] - cone[0:3]), cone[6] + s * (cone[7] - cone[6])


def test_round_cone_distance_is_the_distance_to_the_union_of_balls():
  rng = np.random.default_rng(0)
  cones = np.array([[0, 0, 0, 30, 5, 3, 10, 6.], [5, 5, 5, 6, 40, 2, 4, 9.]])
  points = rng.normal(0.0, 25.0, (1500, 3))
  d = hand_shape.round_cone_distance(points, cones)
  for n, cone in enumerate(cones):
    centres, radii = _ball_family(cone)
    ref = (np.linalg.norm(points[:, None] - centres[None], axis=-1) - radii).min(1)
    assert ((d[:, n] < 0) == (ref < 0)).all()       # the inside test is exact
    out = ref > 0
    np.testing.assert_allclose(d[out, n], ref[out], atol=1e-3)


def test_triangle_distance_against_dense_samples():
  rng = np.random.default_rng(1)
  tri = np.array([[0, 0, 0, 40, 0, 5, 10, 30, -5, 4.]])
  points = rng.normal(10.0, 20.0, (500, 3))
  u, v = rng.random((2, 20000))
  keep = u + v <= 1
  p0, p1, p2 = tri[0, :3], tri[0, 3:6], tri[0, 6:9]
  samples = p0 + u[keep, None] * (p1 - p0) + v[keep, None] * (p2 - p0)
  ref = np.linalg.norm(points[:, None] - samples[None], axis=-1).min(1) - 4.0
  np.testing.assert_allclose(hand_shape.triangle_distance(points, tri)[:, 0], ref, atol=0.6)


def test_ray_hits_match_the_nearest_ball_of_the_family():
  rng = np.random.default_rng(2)
  dirs = hand_model.normalize(np.c_[rng.normal(0, 0.05, (3000, 2)), np.ones(3000)])
  cone = np.array([10, 5, 500, 30, 40, 520, 10, 6.])
  t, normal = hand_shape._cone_hits(dirs, cone)   # pylint: disable=protected-access
  centres, radii = _ball_family(cone, 2001)
  m = dirs @ centres.T
  h = m * m - (centres * centres).sum(1)[None] + radii[None] ** 2
  ref = np.where(h > 0, m - np.sqrt(np.maximum(h, 0.0)), np.inf).min(1)
  hit = np.isfinite(ref)
  assert (np.isfinite(t) == hit).mean() > 0.998 and hit.sum() > 200
  both = hit & np.isfinite(t)
  np.testing.assert_allclose(t[both], ref[both], atol=0.05)
  points = t[both, None] * dirs[both]
  # Hits lie on the surface and their normals face the camera.
  np.testing.assert_allclose(hand_shape.round_cone_distance(points, cone[None])[:, 0], 0.0,
                             atol=1e-6)
  assert (np.sum(normal[both] * dirs[both], -1) < 0).all()


def test_raycast_depth_lies_on_the_surface_and_sees_the_nearest_primitive():
  solid, _ = hand_shape.hand_solid(gestures.GESTURES["fist"], 1.0)
  solid = solid.transformed(hand_model.rotation(0, 2.5), [0.0, 30.0, 600.0])
  hits = hand_shape.raycast(solid, [1200.0, 1200.0], [160.0, 160.0], (320, 320))
  m = hits.index >= 0
  assert m.sum() > 2000
  np.testing.assert_allclose(hand_shape.signed_distance(solid, hits.point[m]), 0.0, atol=1e-6)
  # Nothing of the solid lies between the camera and the hit: points a little in front are out.
  front = hits.point[m] * (1.0 - 1.0 / np.linalg.norm(hits.point[m], axis=-1, keepdims=True))
  assert (hand_shape.signed_distance(solid, front) > 0).all()


@pytest.mark.parametrize("resolution", [2.0, 1.5])
def test_the_inside_test_agrees_with_the_mesh(resolution):
  rng = np.random.default_rng(3)
  solid, joints = hand_shape.hand_solid(gestures.gesture_angles("pinch", rng), 1.05)
  verts, faces = hand_shape.mesh(solid, resolution)
  assert np.abs(hand_shape.signed_distance(solid, verts)).max() < resolution
  # Points off the mesh along its normals: inside and outside as the mesh says, beyond one
  # grid cell.
  tri = verts[faces]
  centre = tri.mean(1)
  normal = hand_model.normalize(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
  pick = rng.choice(len(faces), 3000, replace=False)
  c, n = centre[pick], normal[pick]
  outward = np.where(hand_shape.signed_distance(solid, c + n)[:, None] >
                     hand_shape.signed_distance(solid, c - n)[:, None], n, -n)
  step = 1.5 * resolution
  inside = hand_shape.contains(solid, c - step * outward)
  outside = ~hand_shape.contains(solid, c + step * outward)
  assert inside.mean() > 0.99 and outside.mean() > 0.99
  assert hand_shape.contains(solid, joints[:20]).all()   # every joint lies in its hand
  # Enclosed volume from the mesh (divergence theorem) against Monte Carlo with the inside test.
  volume = abs(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()) / 6.0
  lo, hi = solid.bounds()
  pts = lo + rng.random((200000, 3)) * (hi - lo)
  inside = hand_shape.contains(solid, pts)
  mc = inside.mean() * np.prod(hi - lo)
  assert abs(volume - mc) / mc < 0.05
  # The boxed inside test is the all-primitives one, point for point.
  np.testing.assert_array_equal(inside, hand_shape.signed_distance(solid, pts) < 0.0)
  # The grid path of the mesh is the capped distance at the grid's points, bit for bit, and the
  # capped distance is the exact one wherever it is below the cap.
  axes = [np.arange(lo[i] - 3.0, hi[i] + 3.0 + resolution, resolution) for i in range(3)]
  grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
  on_grid = hand_shape.grid_signed_distance(solid, axes, cap=2.0 * resolution).reshape(-1)
  np.testing.assert_array_equal(on_grid,
                                hand_shape.signed_distance(solid, grid, cap=2.0 * resolution))
  exact = hand_shape.signed_distance(solid, grid)
  near = exact < 2.0 * resolution
  assert near.any() and (~near).any()
  np.testing.assert_allclose(on_grid[near], exact[near], rtol=0, atol=1e-9)
  np.testing.assert_array_equal(on_grid[~near], 2.0 * resolution)


def test_occupancy_samples_and_shape_file_round_trip(tmp_path):
  rng = np.random.default_rng(4)
  solid, _ = hand_shape.hand_solid(hand_model.sample_angles(rng), 0.9, left=True)
  points, inside = hand_shape.occupancy_samples(solid, rng, 500, 700, sigma=3.0)
  assert points.shape == (1200, 3) and inside.dtype == bool
  assert 0.02 < inside[:500].mean() < 0.5      # uniform: the hand fills part of its box
  assert 0.3 < inside[500:].mean() < 0.7       # near the surface: about half in
  np.testing.assert_array_equal(inside, hand_shape.contains(solid, points))
  hand_shape.save(tmp_path / "f.npz", {"right": None, "left": solid})
  back = hand_shape.load(tmp_path / "f.npz")
  assert back["right"] is None
  for k in hand_shape.Solid.FIELDS:
    np.testing.assert_array_equal(getattr(back["left"], k), getattr(solid, k))
  (tmp_path / "bad.npz").write_bytes(b"not a file")
  with pytest.raises(ValueError, match="bad.npz"):
    hand_shape.load(tmp_path / "bad.npz")


def test_interactions_are_resolved_without_interpenetration():
  rng = np.random.default_rng(5)
  for _ in range(12):
    world, present, solids, pose = synthetic_render.sample_frame(
        rng, "interacting", 1.0, np.array([0.0, 0.0, 1000.0]), gesture_fraction=1.0)
    assert pose in gestures.INTERACTIONS and present.all()
    r, l = solids["right"], solids["left"]
    assert hand_shape.penetration(r, l) <= synthetic_render.MAX_PENETRATION_MM
    assert hand_shape.penetration(l, r) <= synthetic_render.MAX_PENETRATION_MM
    assert hand_shape.contains(r.hand_only(), world[:20]).all()
    assert hand_shape.contains(l.hand_only(), world[21:41]).all()


def test_gestures_stay_in_the_joint_limits_and_pinches_meet():
  rng = np.random.default_rng(6)
  lo, hi = hand_model.LIMITS_DEG[..., 0], hand_model.LIMITS_DEG[..., 1]
  for name in gestures.GESTURES:
    a = gestures.gesture_angles(name, rng)
    assert (a >= lo).all() and (a <= hi).all()
  j = hand_model.hand_joints(gestures.gesture_angles("pinch", rng))
  assert np.linalg.norm(j[0] - j[4]) < 15.0   # thumb tip near the index tip
