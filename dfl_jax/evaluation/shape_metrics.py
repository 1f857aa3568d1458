"""Two-hand shape metrics of Im2Hands (its supplement, Sec. S.4.1): mean IoU and Chamfer L1.

Each hand is scored on its own, after mid-joint alignment: the predicted shape is translated
by the ground truth's middle-finger MCP minus the predicted one (joint 11 of a hand in
InterHand2.6M order), so that the scores measure the shape and not the hand's placement, which
MPJPE and MRRPE already measure. The two numbers, per hand and frame, then averaged:

- IoU: |inside(pred) and inside(gt)| / |inside(pred) or inside(gt)| over ``num_points`` query
  points uniform in the union of the two shapes' bounding boxes (padded by 5 %). This is the
  volumetric IoU of occupancy networks (Occupancy Networks, HALO, Im2Hands); a predicted
  "inside" is an occupancy probability of at least 0.5.
- Chamfer L1: 0.5 (mean over predicted surface points of the distance to the nearest ground
  truth surface point + the same the other way round), ``num_surface`` points sampled uniformly
  over each mesh's area; distances are Euclidean, in mm (the "Chamfer-L1" of Occupancy
  Networks, which HALO and Im2Hands report).

Ground truth inside tests come either from the synthetic world's exact solids
(``hand_shape.contains``) or, for meshes a user brings (MANO, say), from the generalised winding
number (``mesh_contains``: inside where the mesh winds once around the point), which needs a
closed mesh and no particular vertex order beyond consistent outward-facing triangles.
"""

import numpy as np
from scipy import spatial

from input_pipeline import hand_shape

MID_JOINT = 11   # a hand's middle-finger MCP (base) joint, InterHand2.6M order
BOX_PADDING = 0.05


def mid_joint(joints_hand):
  """[..., 21, 3] -> [..., 3]: the hand's alignment point."""
  return np.asarray(joints_hand)[..., MID_JOINT, :]


def alignment_shift(pred_joints_hand, gt_joints_hand):
  """The translation [3] that moves the predicted hand's mid joint onto the ground truth's."""
  return mid_joint(gt_joints_hand) - mid_joint(pred_joints_hand)


def iou(pred_inside, gt_inside):
  """Intersection over union of two boolean occupancies over the same points (1 if both empty)."""
  p, g = np.asarray(pred_inside, bool), np.asarray(gt_inside, bool)
  union = np.count_nonzero(p | g)
  return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def chamfer_l1(points_a, points_b):
  """0.5 (mean_a min_b |a - b| + mean_b min_a |b - a|), Euclidean distances."""
  a, b = np.asarray(points_a, np.float64), np.asarray(points_b, np.float64)
  if not len(a) or not len(b):
    raise ValueError(f"Chamfer distance of an empty point set ({len(a)} and {len(b)} points)")
  d_ab, _ = spatial.cKDTree(b).query(a)
  d_ba, _ = spatial.cKDTree(a).query(b)
  return 0.5 * (float(np.mean(d_ab)) + float(np.mean(d_ba)))


def query_box(*point_sets, padding=BOX_PADDING):
  """(lo, hi) [3]: the bounding box of all the points, grown by ``padding`` of its size."""
  pts = np.concatenate([np.asarray(p, np.float64).reshape(-1, 3) for p in point_sets])
  lo, hi = pts.min(0), pts.max(0)
  grow = padding * (hi - lo)
  return lo - grow, hi + grow


def uniform_points(lo, hi, n, rng):
  return lo + rng.random((n, 3)) * (hi - lo)


def score_hand(pred_inside, pred_mesh, pred_joints, gt_inside, gt_mesh, gt_joints, rng,
               num_points: int = 100_000, num_surface: int = 30_000):
  """{iou, chamfer_mm, empty} of one hand after mid-joint alignment.

  ``pred_inside`` / ``gt_inside``: functions of points [N, 3] (mm, each in its own placement)
  -> [N] bool; ``*_mesh``: (vertices [V, 3], faces [F, 3]); ``*_joints``: the hand's [21, 3].
  A prediction without a surface (``empty``) scores its IoU and a NaN Chamfer distance.
  ``iou_queries`` and ``score_at`` are its two halves, for a caller that asks the network
  about several hands' points at once.
  """
  points, shift = iou_queries(pred_mesh, pred_joints, gt_mesh, gt_joints, rng, num_points)
  return score_at(pred_inside(points - shift), gt_inside(points), pred_mesh, gt_mesh, shift,
                  rng, num_surface)


def iou_queries(pred_mesh, pred_joints, gt_mesh, gt_joints, rng, num_points: int):
  """(points [N, 3], shift [3]): the IoU's query points, uniform in the union of the ground
  truth's and the aligned prediction's boxes (ground truth placement: the prediction is asked
  at ``points - shift``), and the alignment ``shift``."""
  shift = alignment_shift(pred_joints, gt_joints)
  boxes = [np.asarray(gt_mesh[0], np.float64)]
  if len(pred_mesh[1]):
    boxes.append(np.asarray(pred_mesh[0], np.float64) + shift)
  lo, hi = query_box(*boxes)
  return uniform_points(lo, hi, num_points, rng), shift


def score_at(pred_inside, gt_inside, pred_mesh, gt_mesh, shift, rng, num_surface: int = 30_000):
  """``score_hand`` from the two insides [N] bool at ``iou_queries``' points."""
  pv, pf = np.asarray(pred_mesh[0], np.float64) + shift, np.asarray(pred_mesh[1])
  gv, gf = np.asarray(gt_mesh[0], np.float64), np.asarray(gt_mesh[1])
  empty = len(pf) == 0
  result = {"iou": iou(pred_inside, gt_inside), "empty": empty, "chamfer_mm": float("nan")}
  if not empty:
    result["chamfer_mm"] = chamfer_l1(hand_shape.surface_points(pv, pf, num_surface, rng),
                                      hand_shape.surface_points(gv, gf, num_surface, rng))
  return result


def mesh_contains(vertices, faces, points, chunk=4096):
  """[N] bool: inside a closed triangle mesh, by the generalised winding number (Jacobson et
  al. 2013): the solid angles of the triangles seen from the point sum to 4 pi inside, 0
  outside (Van Oosterom and Strackee's formula per triangle)."""
  tri = np.asarray(vertices, np.float64)[np.asarray(faces)]            # [F, 3, 3]
  pts = np.asarray(points, np.float64)
  out = np.empty(len(pts), bool)
  for s in range(0, len(pts), chunk):
    r = tri[None] - pts[s:s + chunk, None, None]                      # [n, F, 3, 3]
    n = np.linalg.norm(r, axis=-1)
    a, b, c = r[:, :, 0], r[:, :, 1], r[:, :, 2]
    det = np.einsum("nfi,nfi->nf", a, np.cross(b, c))
    la, lb, lc = n[..., 0], n[..., 1], n[..., 2]
    den = (la * lb * lc + np.einsum("nfi,nfi->nf", a, b) * lc
           + np.einsum("nfi,nfi->nf", b, c) * la + np.einsum("nfi,nfi->nf", c, a) * lb)
    winding = np.sum(2.0 * np.arctan2(det, den), axis=1) / (4.0 * np.pi)
    out[s:s + chunk] = winding > 0.5
  return out
