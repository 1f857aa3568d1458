"""Hands as 3-D solids: primitives, the exact inside test, ray casting, meshes, occupancy samples.

A hand is the union of two kinds of convex primitive (all lengths in mm):

- round cone (a, b, ra, rb): the convex hull of the balls B(a, ra) and B(b, rb), which is also
  the union of the balls B(a + s (b - a), ra + s (rb - ra)) for s in [0, 1]: a phalanx, a
  metacarpal, the thenar bulge, a forearm;
- thick triangle (p0, p1, p2, r): the points within r of the triangle: the palm (a fan of them,
  so the palm need not be flat) and the thumb web.

``signed_distance`` is the minimum over the primitives of each one's signed distance, exact
outside (the distance to a union is the smallest distance to its members) and negative inside,
so ``contains`` (signed distance < 0) is an exact inside test for any 3-D point. The surface as a
mesh comes from marching cubes (scikit-image) on the signed distance sampled on a grid, so it is
as fine as that grid; ``occupancy_samples`` draws query points uniformly in the padded bounding
box and near the surface, as HALO and Im2Hands train their occupancy networks.

Each primitive also carries its part class in the pseudo segmentation's order (1 palm, 2-16 the
phalanges; 0 for what is not the hand, such as a forearm), a palmar reference direction (for
texture: palm side or back) and a material (0 skin, 1 cloth). ``raycast`` renders a list of
solids from a pinhole camera: per pixel the camera depth of the nearest surface, the primitive
it belongs to, the surface normal and the texture coordinate along the primitive.

Per frame the synthetic world writes each hand's primitives (world coordinates) to a small
``.npz`` file (``save``/``load``); meshes and samples are computed from it on the fly.
"""

import dataclasses
import pathlib

import numpy as np
from skimage import measure

from dfl_jax import conventions
from input_pipeline import hand_model

PALM, FOREARM = 1, 0
SKIN, CLOTH = 0, 1


@dataclasses.dataclass
class Solid:
  """A union of primitives. cones [N, 8] (a, b, ra, rb); triangles [M, 10] (p0, p1, p2, r);
  per primitive: *_part [.] int (0..16), *_palmar [., 3] unit vectors, *_material [.] int."""
  cones: np.ndarray
  cone_part: np.ndarray
  cone_palmar: np.ndarray
  cone_material: np.ndarray
  triangles: np.ndarray
  triangle_part: np.ndarray
  triangle_palmar: np.ndarray
  triangle_material: np.ndarray

  FIELDS = ("cones", "cone_part", "cone_palmar", "cone_material", "triangles", "triangle_part",
            "triangle_palmar", "triangle_material")

  def transformed(self, rot, shift):
    """The solid under x -> rot @ x + shift."""
    rot, shift = np.asarray(rot, np.float64), np.asarray(shift, np.float64)
    c, t = self.cones.copy(), self.triangles.copy()
    for k in (0, 3):
      c[:, k:k + 3] = c[:, k:k + 3] @ rot.T + shift
    for k in (0, 3, 6):
      t[:, k:k + 3] = t[:, k:k + 3] @ rot.T + shift
    return dataclasses.replace(self, cones=c, triangles=t,
                               cone_palmar=self.cone_palmar @ rot.T,
                               triangle_palmar=self.triangle_palmar @ rot.T)

  def select(self, cone_mask, triangle_mask):
    out = {}
    for name in self.FIELDS:
      mask = cone_mask if name.startswith("cone") else triangle_mask
      out[name] = getattr(self, name)[np.asarray(mask, bool)]
    return Solid(**out)

  def hand_only(self):
    """The hand without what is not part of it (forearm, sleeve): the shape of the frame."""
    return self.select(self.cone_part > 0, self.triangle_part > 0)

  def boxes(self):
    """[N + M, 2, 3] axis-aligned (lo, hi) boxes of the cones, then the triangles."""
    c, t = self.cones, self.triangles
    lo = np.minimum(c[:, 0:3] - c[:, 6:7], c[:, 3:6] - c[:, 7:8])
    hi = np.maximum(c[:, 0:3] + c[:, 6:7], c[:, 3:6] + c[:, 7:8])
    v = t[:, :9].reshape(-1, 3, 3)
    lo = np.concatenate([lo, v.min(1) - t[:, 9:10]])
    hi = np.concatenate([hi, v.max(1) + t[:, 9:10]])
    return np.stack([lo, hi], 1)

  def bounds(self):
    """(lo [3], hi [3]) of a box that holds the solid."""
    boxes = self.boxes()
    return boxes[:, 0].min(0), boxes[:, 1].max(0)


def concatenate(solids):
  return Solid(**{name: np.concatenate([getattr(s, name) for s in solids])
                  for name in Solid.FIELDS})


# ---------------------------------------------------------------------------- building a hand

def hand_solid(angles_deg, scale=1.0, left=False, forearm=None):
  """The solid of one hand in its local frame (``hand_model``), joints on the bones' axes.

  forearm: None, or (length_mm, sleeve) with sleeve None or a sleeve start fraction in [0, 1):
  a round cone from the wrist along the forearm (part 0), its far part in cloth.
  Returns (solid, joints [21, 3]).
  """
  joints, frames = hand_model.kinematics(angles_deg, scale, left)
  s = float(scale)
  radii = hand_model.RADII * s                                  # [5, 4] tip, 3rd, 2nd, base
  cones, parts, palmar, material = [], [], [], []

  def cone(a, b, ra, rb, part, ref, mat=SKIN):
    cones.append(np.concatenate([a, b, [ra, rb]]))
    parts.append(part)
    palmar.append(hand_model.normalize(np.asarray(ref, np.float64)))
    material.append(mat)

  wrist = joints[conventions.NUM_JOINTS_PER_HAND - 1]
  bases = joints[[4 * f + 3 for f in range(5)]]
  across = joints[7] - joints[19]                               # index MCP - pinky MCP
  normal = hand_model.normalize(np.cross(joints[7] - wrist, joints[19] - wrist))
  normal = normal * (-1.0 if left else 1.0)                     # palmar for both sides
  for f in range(5):
    for k in range(3):
      a, b = joints[4 * f + 3 - k], joints[4 * f + 2 - k]
      ra, rb = radii[f, 3 - k], radii[f, 2 - k]
      if k == 2:   # a fingertip joint lies on the skin: the end ball stops short of it
        b = b - 0.8 * rb * hand_model.normalize(b - a)
      cone(a, b, ra, rb, 2 + 3 * f + k, frames[f, k][:, 2])
  # Metacarpals in the palm (index..pinky) and the thenar bulge, from the carpus.
  for f, c in zip(range(1, 5), (0.55, 0.18, -0.18, -0.55)):
    carpal = wrist + 0.3 * c * across + 0.15 * (bases[f] - wrist)
    cone(carpal, bases[f], 10.0 * s, radii[f, 3], PALM, normal)
  radial = wrist + 0.3 * across
  cone(radial + 4.0 * s * normal, bases[0] + 3.0 * s * normal, 11.0 * s, 11.5 * s, PALM, normal)
  triangles, t_parts, t_palmar = [], [], []

  def thick(p0, p1, p2, r, part, ref):
    triangles.append(np.concatenate([p0, p1, p2, [r]]))
    t_parts.append(part)
    t_palmar.append(ref)

  # The palm: a fan from its centre over its outline (ulnar wrist, radial wrist, thumb base,
  # index..pinky MCP), 9 mm thick each side of the joints' surface.
  outline = [wrist - 0.33 * across, wrist + 0.33 * across, bases[0], *bases[1:]]
  centre = np.mean([wrist, *bases[1:]], axis=0)
  for i, p in enumerate(outline):
    q = outline[(i + 1) % len(outline)]
    thick(centre, p, q, 9.0 * s, PALM, normal)
  # The thumb web: thumb base, thumb MCP and index MCP, drawn in towards the thumb base.
  tmcp = joints[2]
  thick(bases[0], bases[0] + 0.8 * (tmcp - bases[0]), bases[0] + 0.8 * (bases[1] - bases[0]),
        4.0 * s, PALM, normal)
  if forearm is not None:
    length, sleeve = forearm
    axis = hand_model.normalize(wrist - (joints[7] + joints[19]) / 2)
    p, q = wrist + 5.0 * s * axis, wrist + (5.0 * s + length) * axis
    cone(p, q, 21.0 * s, 27.0 * s, FOREARM, normal)
    if sleeve is not None:
      start = p + sleeve * (q - p)
      r0 = 21.0 * s + sleeve * 6.0 * s + 2.0
      cone(start, q, r0, 27.0 * s + 2.0, FOREARM, normal, CLOTH)
  n_t = len(triangles)
  solid = Solid(cones=np.array(cones), cone_part=np.array(parts, np.int32),
                cone_palmar=np.array(palmar), cone_material=np.array(material, np.int32),
                triangles=np.array(triangles).reshape(n_t, 10),
                triangle_part=np.array(t_parts, np.int32),
                triangle_palmar=np.array(t_palmar).reshape(n_t, 3),
                triangle_material=np.zeros(n_t, np.int32))
  return solid, joints


# ----------------------------------------------------------------------------- inside test

def round_cone_distance(points, cones):
  """[P, N] signed distance from points [P, 3] to round cones [N, 8] (exact outside)."""
  p = np.asarray(points, np.float64)[:, None, :]
  a, b, r1, r2 = cones[None, :, 0:3], cones[None, :, 3:6], cones[None, :, 6], cones[None, :, 7]
  ba = b - a
  l2 = np.maximum(np.sum(ba * ba, -1), 1e-12)
  rr = r1 - r2
  a2 = l2 - rr * rr
  pa = p - a
  y = np.sum(pa * ba, -1)
  z = y - l2
  x2 = np.sum((pa * l2[..., None] - ba * y[..., None]) ** 2, -1)
  y2, z2 = y * y * l2, z * z * l2
  k = np.sign(rr) * rr * rr * x2
  end_b = np.sign(z) * a2 * z2 > k
  end_a = np.sign(y) * a2 * y2 < k
  d_b = np.sqrt(x2 + z2) / l2 - r2
  d_a = np.sqrt(x2 + y2) / l2 - r1
  d_side = (np.sqrt(np.maximum(x2 * a2 / l2, 0.0)) + y * rr) / l2 - r1
  return np.where(end_b, d_b, np.where(end_a, d_a, d_side))


def triangle_distance(points, triangles):
  """[P, M] signed distance from points [P, 3] to thick triangles [M, 10] (exact)."""
  p = np.asarray(points, np.float64)[:, None, :]
  v = [triangles[None, :, 3 * i:3 * i + 3] for i in range(3)]
  n = np.cross(v[1] - v[0], v[2] - v[0])
  n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
  inside = np.ones(p.shape[:1] + (triangles.shape[0],), bool)
  edge = np.full(inside.shape, np.inf)
  for i in range(3):
    a, b = v[i], v[(i + 1) % 3]
    ab, ap = b - a, p - a
    inside &= np.sum(np.cross(ab, ap) * n, -1) >= 0.0
    t = np.clip(np.sum(ap * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-12), 0.0, 1.0)
    edge = np.minimum(edge, np.linalg.norm(ap - t[..., None] * ab, axis=-1))
  height = np.abs(np.sum((p - v[0]) * n, -1))
  return np.where(inside, height, edge) - triangles[None, :, 9]


def signed_distance(solid, points, cap=None):
  """[P] signed distance of points [P, 3] to the solid: exact outside, negative inside.

  With ``cap`` (mm) a primitive is evaluated only at points inside its bounding box grown by
  ``cap``, and distances beyond ``cap`` read ``cap``: the same zero set and inside test, much
  faster on grids (``mesh``).
  """
  points = np.asarray(points, np.float64).reshape(-1, 3)
  if cap is None:   # every primitive at every point, in chunks
    out = np.full(len(points), np.inf)
    for i in range(0, len(points), 4096):
      p = points[i:i + 4096]
      if len(solid.cones):
        out[i:i + 4096] = round_cone_distance(p, solid.cones).min(1)
      if len(solid.triangles):
        out[i:i + 4096] = np.minimum(out[i:i + 4096],
                                     triangle_distance(p, solid.triangles).min(1))
    return out
  out = np.full(len(points), float(cap))
  for i, box in enumerate(solid.boxes()):
    sel = np.flatnonzero(np.all((points >= box[0] - cap) & (points <= box[1] + cap), axis=1))
    if len(sel):
      out[sel] = np.minimum(out[sel], _primitive_distance(solid, i, points[sel]))
  return out


def _primitive_distance(solid, i, points):
  """[P] signed distance of points [P, 3] to the solid's i-th primitive (cones, then
  triangles, the order of ``Solid.boxes``)."""
  n_cones = len(solid.cones)
  if i < n_cones:
    return round_cone_distance(points, solid.cones[i:i + 1])[:, 0]
  return triangle_distance(points, solid.triangles[i - n_cones:i - n_cones + 1])[:, 0]


def grid_signed_distance(solid, axes, cap):
  """``signed_distance(solid, grid, cap)`` on the grid of three increasing coordinate axes
  (``meshgrid(*axes, indexing='ij')``), shaped [len(x), len(y), len(z)].

  A primitive's grown box holds a block of the grid, found from the axes alone, so no
  primitive scans the whole grid; the points, their order and the distances are
  ``signed_distance``'s, and so is the result.
  """
  axes = [np.asarray(a, np.float64) for a in axes]
  out = np.full(tuple(len(a) for a in axes), float(cap))
  for i, box in enumerate(solid.boxes()):
    block = []
    for a, lo, hi in zip(axes, box[0] - cap, box[1] + cap):
      idx = np.flatnonzero((a >= lo) & (a <= hi))
      block.append(slice(idx[0], idx[-1] + 1) if len(idx) else slice(0, 0))
    sub = np.stack(np.meshgrid(*[a[b] for a, b in zip(axes, block)], indexing="ij"), -1)
    if sub.size:
      d = _primitive_distance(solid, i, sub.reshape(-1, 3)).reshape(sub.shape[:3])
      out[tuple(block)] = np.minimum(out[tuple(block)], d)
  return out


def contains(solid, points):
  """Exact inside test: [P] bool, True where a point lies inside the solid.

  Each primitive is tested only at the points in its bounding box (``signed_distance``'s
  ``cap``): a point inside the solid is inside some primitive and so inside that primitive's
  box, where its distance is the exact one; the answer is the all-primitives test's.
  """
  return signed_distance(solid, points, cap=1.0) < 0.0


def skeleton_balls(solid, per_primitive=6):
  """(centres [K, 3], radii [K]): balls inside the solid along each primitive's core."""
  s = np.linspace(0.0, 1.0, per_primitive)
  c = solid.cones
  centres = [c[:, None, 0:3] + s[None, :, None] * (c[:, None, 3:6] - c[:, None, 0:3])]
  radii = [c[:, None, 6] + s[None] * (c[:, None, 7] - c[:, None, 6])]
  t = solid.triangles
  if len(t):
    w = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3], [.5, .5, 0],
                  [0, .5, .5], [.5, 0, .5]])
    pts = np.einsum("kj,mjd->mkd", w, t[:, :9].reshape(-1, 3, 3))
    centres.append(pts)
    radii.append(np.repeat(t[:, 9:10], len(w), 1))
  return (np.concatenate([x.reshape(-1, 3) for x in centres]),
          np.concatenate([x.reshape(-1) for x in radii]))


def penetration(solid_a, solid_b):
  """How deep (mm) ``solid_a`` reaches into ``solid_b``, from the inside test on a's balls."""
  centres, radii = skeleton_balls(solid_a)
  return float(np.max(radii - signed_distance(solid_b, centres), initial=0.0))


# --------------------------------------------------------------------------------- surfaces

def mesh(solid, resolution=1.5, padding=3.0):
  """(vertices [V, 3] mm, faces [F, 3]) of the solid's surface by marching cubes.

  The signed distance is sampled every ``resolution`` mm over the bounding box grown by
  ``padding`` mm; the surface is within about ``resolution`` of the true one.
  """
  lo, hi = solid.bounds()
  lo, hi = lo - padding, hi + padding
  axes = [np.arange(lo[i], hi[i] + resolution, resolution) for i in range(3)]
  sdf = grid_signed_distance(solid, axes, cap=2.0 * resolution)
  verts, faces, _, _ = measure.marching_cubes(sdf, level=0.0, spacing=(resolution,) * 3)
  return verts + lo, faces


def surface_points(vertices, faces, n, rng):
  """[n, 3] points uniformly distributed over a triangle mesh's area."""
  tri = vertices[faces]
  area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
  which = rng.choice(len(faces), n, p=area / area.sum())
  u, v = rng.random((2, n))
  flip = u + v > 1.0
  u, v = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - v, v)
  t = tri[which]
  return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


def occupancy_samples(solid, rng, num_uniform=2048, num_near=2048, sigma=5.0, padding=0.1,
                      resolution=1.5):
  """Occupancy training queries: (points [N, 3] mm, inside [N] bool).

  ``num_uniform`` points uniform in the bounding box grown by ``padding`` of its size on each
  side, and ``num_near`` surface points (area-uniform on the mesh) moved by N(0, sigma^2) per
  axis, the two kinds HALO and Im2Hands train on; labels from the exact inside test.
  """
  lo, hi = solid.bounds()
  size = hi - lo
  lo, hi = lo - padding * size, hi + padding * size
  uniform = lo + rng.random((num_uniform, 3)) * (hi - lo)
  verts, faces = mesh(solid, resolution)
  near = surface_points(verts, faces, num_near, rng) + rng.normal(0.0, sigma, (num_near, 3))
  points = np.concatenate([uniform, near])
  return points, contains(solid, points)


# ------------------------------------------------------------------------------ per-frame file

def save(path, solids):
  """Writes the hands of a frame ({'right': Solid or None, 'left': ...}) to ``path`` (.npz)."""
  arrays = {}
  for side in conventions.HANDS:
    solid = solids.get(side)
    arrays[f"{side}_present"] = np.array(solid is not None)
    if solid is not None:
      arrays.update({f"{side}_{k}": getattr(solid, k) for k in Solid.FIELDS})
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays)


def load(path):
  """{'right': Solid or None, 'left': Solid or None} from a file written by ``save``."""
  try:
    with np.load(path) as z:
      out = {}
      for side in conventions.HANDS:
        present = bool(z[f"{side}_present"])
        out[side] = Solid(**{k: z[f"{side}_{k}"] for k in Solid.FIELDS}) if present else None
      return out
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"{path}: not a hand shape file ({e})") from None


# --------------------------------------------------------------------------------- ray casting

def _cone_hits(dirs, cone):
  """Nearest hit (t [R], normal [R, 3]) of rays from the origin along unit dirs [R, 3]."""
  pa, pb, ra, rb = cone[0:3], cone[3:6], cone[6], cone[7]
  ba, oa, ob = pb - pa, -pa, -pb
  rr = ra - rb
  m0, m1, m5 = ba @ ba, ba @ oa, oa @ oa
  m2, m3, m6 = dirs @ ba, dirs @ oa, dirs @ ob
  t = np.full(len(dirs), np.inf)
  normal = np.zeros((len(dirs), 3))
  d2 = m0 - rr * rr
  if d2 > 1e-9:   # the body: the cone tangent to both balls
    k2 = d2 - m2 * m2
    k1 = d2 * m3 - m1 * m2 + m2 * rr * ra
    k0 = d2 * m5 - m1 * m1 + m1 * rr * ra * 2.0 - m0 * ra * ra
    h = k1 * k1 - k0 * k2
    with np.errstate(invalid="ignore", divide="ignore"):
      tb = (-np.sqrt(np.maximum(h, 0.0)) - k1) / k2
    y = m1 - ra * rr + tb * m2
    body = (h >= 0.0) & (y > 0.0) & (y < d2) & (tb > 0.0)
    t = np.where(body, tb, t)
    x = tb[:, None] * dirs
    nb = d2 * (x - pa) - ba * y[:, None]
    normal = np.where(body[:, None], nb, normal)
  for centre, r, mm in ((pa, ra, m3), (pb, rb, m6)):   # the end balls
    hh = mm * mm - (centre @ centre) + r * r
    ts = -mm - np.sqrt(np.maximum(hh, 0.0))
    use = (hh > 0.0) & (ts > 0.0) & (ts < t)
    t = np.where(use, ts, t)
    normal = np.where(use[:, None], ts[:, None] * dirs - centre, normal)
  norm = np.linalg.norm(normal, axis=-1, keepdims=True)
  return t, normal / np.maximum(norm, 1e-12)


def _face_hits(dirs, tri):
  """Nearest hit (t [R], normal [R, 3]) on the two flat faces of a thick triangle."""
  v = tri[:9].reshape(3, 3)
  n = np.cross(v[1] - v[0], v[2] - v[0])
  n = n / max(np.linalg.norm(n), 1e-12)
  dn = dirs @ n
  t = np.full(len(dirs), np.inf)
  normal = np.zeros((len(dirs), 3))
  for sign in (1.0, -1.0):
    offset = sign * tri[9] * n
    with np.errstate(divide="ignore", invalid="ignore"):
      tf = ((v[0] + offset) @ n) / dn
    x = tf[:, None] * dirs - offset
    inside = (tf > 0.0) & (tf < t) & (sign * dn < 0.0)
    for i in range(3):
      a, b = v[i], v[(i + 1) % 3]
      inside &= (np.cross(b - a, x - a) @ n) >= 0.0
    t = np.where(inside, tf, t)
    normal = np.where(inside[:, None], sign * n, normal)
  return t, normal


@dataclasses.dataclass
class RayHits:
  """Per pixel of an [h, w] image: depth [h, w] (camera z mm, 0 none), index [h, w] into the
  scene's primitives (-1 none; cones first, then triangles), normal [h, w, 3] (camera frame),
  point [h, w, 3] (camera frame mm), axial [h, w] (position along a cone's axis, 0 at a, 1 at b;
  for triangles 0)."""
  depth: np.ndarray
  index: np.ndarray
  normal: np.ndarray
  point: np.ndarray
  axial: np.ndarray


def _screen_box(points, radius, focal, princpt, size):
  """Pixel box (x0, x1, y0, y1) holding spheres (points [K, 3], radius [K]) or None."""
  z = points[:, 2] - radius
  if np.any(z <= 1.0):
    return 0, size[0], 0, size[1]
  uv = points[:, :2] / points[:, 2:] * focal + princpt
  r = radius / z * focal.max() * 1.05 + 2.0
  x0, y0 = np.floor((uv - r[:, None]).min(0)).astype(int)
  x1, y1 = np.ceil((uv + r[:, None]).max(0)).astype(int) + 1
  x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size[0]), min(y1, size[1])
  if x0 >= x1 or y0 >= y1:
    return None
  return x0, x1, y0, y1


def raycast(solid, focal, princpt, size):
  """Renders a solid given in camera coordinates (mm) with a pinhole camera; ``RayHits``.

  size = (width, height). Rays go through pixel centres (integer coordinates); each primitive
  is tested only on the pixels of its projected bounding box, the nearest hit wins.
  """
  w, h = size
  focal, princpt = np.asarray(focal, np.float64), np.asarray(princpt, np.float64)
  ys, xs = np.mgrid[0:h, 0:w]
  dirs = np.stack([(xs - princpt[0]) / focal[0], (ys - princpt[1]) / focal[1],
                   np.ones((h, w))], -1)
  dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
  best = np.full((h, w), np.inf)
  index = np.full((h, w), -1, np.int32)
  normal = np.zeros((h, w, 3))
  n_cones = len(solid.cones)
  jobs = [(i, solid.cones[i], _cone_hits,
           np.stack([solid.cones[i, 0:3], solid.cones[i, 3:6]]), solid.cones[i, 6:8])
          for i in range(n_cones)]
  for j, tri in enumerate(solid.triangles):
    pts = tri[:9].reshape(3, 3)
    jobs.append((n_cones + j, tri, _face_hits, pts, np.full(3, tri[9])))
    for e in range(3):   # the rounded rim: a cylinder with ball ends along each edge
      a, b = pts[e], pts[(e + 1) % 3]
      jobs.append((n_cones + j, np.concatenate([a, b, [tri[9], tri[9]]]), _cone_hits,
                   np.stack([a, b]), np.full(2, tri[9])))
  for i, params, hit, pts, radius in jobs:
    box = _screen_box(pts, radius, focal, princpt, size)
    if box is None:
      continue
    x0, x1, y0, y1 = box
    d = dirs[y0:y1, x0:x1].reshape(-1, 3)
    t, nrm = hit(d, params)
    t = t.reshape(y1 - y0, x1 - x0)
    win = t < best[y0:y1, x0:x1]
    if not win.any():
      continue
    best[y0:y1, x0:x1] = np.where(win, t, best[y0:y1, x0:x1])
    index[y0:y1, x0:x1] = np.where(win, i, index[y0:y1, x0:x1])
    normal[y0:y1, x0:x1] = np.where(win[..., None], nrm.reshape(y1 - y0, x1 - x0, 3),
                                    normal[y0:y1, x0:x1])
  hit_any = index >= 0
  point = np.where(hit_any, best, 0.0)[..., None] * dirs
  depth = point[..., 2]
  axial = np.zeros((h, w))
  on_cone = hit_any & (index < n_cones)
  if on_cone.any():
    c = solid.cones[index[on_cone]]
    ba = c[:, 3:6] - c[:, 0:3]
    axial[on_cone] = (np.sum((point[on_cone] - c[:, 0:3]) * ba, -1) /
                      np.maximum(np.sum(ba * ba, -1), 1e-12))
  return RayHits(depth=depth, index=index, normal=normal, point=point, axial=axial)
