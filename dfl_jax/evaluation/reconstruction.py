"""Occupancy on a grid, surface points for R, meshes by marching cubes, and mesh files.

Im2Hands' supplement (S.3.1, S.4.1): "we evaluate the occupancy probabilities at uniformly
sampled query points in 3D space" both to collect R's surface points and to extract the final
meshes with Marching Cubes. Here the uniform points are a grid over each hand's box: the box of
its 21 keypoints grown by ``margin`` mm on every side (a hand's flesh lies within about 15 mm of
its joints; 25 mm leaves room), ``resolution`` points a side.

- ``hand_grids``: the grids [B, 2, G, 3] of both hands of a batch of keypoints (camera mm);
- ``surface_points``: from a hand's grid logits, the ``candidates`` grid points nearest the 0.5
  level, then farthest point sampling to ``num_points`` (``point_cloud``), all in one jit;
- ``mesh_from_grid``: scikit-image's marching cubes of the grid's probabilities at 0.5, the
  vertices in camera mm (an empty mesh when the occupancy never crosses 0.5);
- ``write_ply`` / ``write_obj``: one mesh per file (binary little-endian PLY, or OBJ text).
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from skimage import measure

from dfl_jax.conventions import LEFT, RIGHT
from dfl_jax.network import point_cloud

MARGIN_MM = 25.0


def hand_boxes(joints, margin=MARGIN_MM):
  """[B, 42, 3] -> (lo [B, 2, 3], hi [B, 2, 3]) per hand (right, left)."""
  hands = jnp.stack([joints[:, RIGHT], joints[:, LEFT]], 1)
  return hands.min(2) - margin, hands.max(2) + margin


def unit_grid(resolution: int):
  """[resolution^3, 3] points in [0, 1]^3, x slowest (marching cubes' (i, j, k) order)."""
  t = jnp.linspace(0.0, 1.0, resolution)
  return jnp.stack(jnp.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)


def hand_grids(joints, resolution: int, margin=MARGIN_MM):
  """(grids [B, 2, G, 3] mm, lo [B, 2, 3], hi [B, 2, 3]) with G = resolution^3."""
  lo, hi = hand_boxes(joints, margin)
  u = unit_grid(resolution)
  return lo[:, :, None] + u * (hi - lo)[:, :, None], lo, hi


def surface_points(grids, logits, num_points: int, candidates: int):
  """grids [B, 2, G, 3], logits [B, 2, G] -> [B, 2, num_points, 3]: points on I's surface."""
  def one(grid, logit):
    pts, _ = point_cloud.iso_surface_candidates(grid, logit, candidates)
    return pts[point_cloud.farthest_point_sampling(pts, num_points)]
  return jax.vmap(jax.vmap(one))(grids, logits)


def mesh_from_grid(probabilities, lo, hi, level=0.5):
  """probabilities [r, r, r] on the grid over (lo, hi) -> (vertices [V, 3] mm, faces [F, 3])."""
  p = np.asarray(probabilities, np.float64)
  lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
  if not (p.min() < level < p.max()):
    return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
  spacing = (hi - lo) / (np.array(p.shape) - 1)
  verts, faces, _, _ = measure.marching_cubes(p, level, spacing=tuple(spacing))
  # Marching cubes orients faces towards increasing values; inside is high here, so the
  # winding is flipped to face outwards.
  return verts + lo, faces[:, ::-1].astype(np.int64)


def write_ply(path, vertices, faces):
  """Binary little-endian PLY with float32 vertices and int32 triangles."""
  v = np.asarray(vertices, "<f4")
  f = np.asarray(faces, "<i4")
  header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\n"
            "property float x\nproperty float y\nproperty float z\n"
            f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
  rows = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
  rows["n"], rows["i"] = 3, f
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "wb") as out:
    out.write(header.encode("ascii"))
    out.write(v.tobytes())
    out.write(rows.tobytes())
  return path


def read_ply(path):
  """(vertices, faces) of a file ``write_ply`` wrote (triangles only)."""
  data = pathlib.Path(path).read_bytes()
  end = data.index(b"end_header\n") + len(b"end_header\n")
  header = data[:end].decode("ascii").split("\n")
  nv = int(next(x for x in header if x.startswith("element vertex")).split()[-1])
  nf = int(next(x for x in header if x.startswith("element face")).split()[-1])
  v = np.frombuffer(data, "<f4", nv * 3, end).reshape(nv, 3)
  rows = np.frombuffer(data, [("n", "u1"), ("i", "<i4", (3,))], nf, end + nv * 12)
  if nf and not np.all(rows["n"] == 3):
    raise ValueError(f"{path}: only triangle meshes are read")
  return v.astype(np.float64), rows["i"].astype(np.int64)


def write_obj(path, vertices, faces):
  """OBJ text: ``v x y z`` rows then ``f a b c`` rows (1-based)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", encoding="ascii") as out:
    out.writelines(f"v {x:.4f} {y:.4f} {z:.4f}\n" for x, y, z in np.asarray(vertices))
    out.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in np.asarray(faces))
  return path
