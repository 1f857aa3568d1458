"""InterHand2.6M metrics, official evaluation protocol (paper Sec. 4.1.2; docs/evaluation.md).

The protocol is ``Dataset.evaluate`` of the official code (facebookresearch/InterHand2.6M,
``data/InterHand2.6M/dataset.py``), which A2J-Transformer (``dataset.py``, the same loop minus
MRRPE and handedness) and DFL report with:

1. Back-projection with the GT root depth: crop pixels -> image pixels through the inverse crop
   affine; depth ``d_rel = (z / 256 * 2 - 1) * 400 / 2`` plus the GT camera depth of that hand's
   wrist; then ``pixel2cam`` (``crop_to_camera`` here).
2. Each hand root-aligned separately: prediction on its predicted wrist, GT on its GT wrist.
3. For every joint j with ``joint_valid[j]`` the Euclidean error goes to ``mpjpe_sh[j]`` if the
   frame's hand_type is right/left, else to ``mpjpe_ih[j]``. Wrists (zero error after the
   alignment) are in the lists and in the 42-joint averages.
4. Single = ``mean_j mean(mpjpe_sh[j])``; two = ``mean_j mean(mpjpe_ih[j])``; all =
   ``mean_j mean(mpjpe_sh[j] + mpjpe_ih[j])``: a mean of per-joint means, not a pooled mean.
   The official code fails (``np.stack`` of an empty list) when a joint has no sample; here such
   a joint is left out of the joint average (``per_joint_*`` shows it as None).
5. MRRPE on interacting frames with both wrists valid (see ``OfficialMetrics.update``);
   handedness accuracy ``sigmoid(logits) > 0.5`` on frames with hand_type_valid.

Other tools average differently (mmpose pools all joints, InterWild averages the two lists), so
results carry ``'protocol': 'interhand2.6m-official'``. PCK/AUC over 0-50 mm (paper Figure 4)
are not in the official code: here PCK(t) is the fraction of all valid root-aligned joint errors
(single and two-hand frames pooled, wrists included) that are <= t (+ 1e-6 mm for round-off),
at 51 thresholds 0, 1, .., 50 mm, and AUC is the trapezoid area under it divided by 50 mm.

All functions are NumPy, float64.
"""

import numpy as np

from dfl_jax.conventions import (HAND_OF, HAND_TYPE_IDS, LEFT_WRIST, NUM_JOINTS, RIGHT_WRIST,
                                 ROOT_OF, depth_units_to_mm)

PROTOCOL = "interhand2.6m-official"
PCK_THRESHOLDS_MM = np.linspace(0.0, 50.0, 51)
# An error counts as <= t when it is <= t + PCK_ROUNDOFF_MM, so that float round-off (a
# rigidly translated hand has errors of ~1e-13 mm after root alignment) does not flip PCK(0).
PCK_ROUNDOFF_MM = 1e-6


def crop_to_camera(joints_uvd, affine, focal, princpt, root_depth_mm):
  """2.5D predictions to camera coordinates in mm (official evaluate's back-projection).

  joints_uvd: [..., 42, 3]: x, y in crop pixels, ``z = (d_rel / 200 mm + 1) / 2 * 256`` with
    d_rel relative to that hand's wrist, whatever the input size (``dfl_jax.conventions``);
    affine: [..., 3, 3] (or [..., 2, 3]) image -> crop pixels, inverted here (official
    ``trans_point2d(pt, inv_trans)``); focal, princpt: [..., 2];
    root_depth_mm: [..., 2] camera Z of the right and left wrist (GT in the official protocol).
  Returns [..., 42, 3]: ``Z = d_rel + root``, ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy``.
  """
  uvd = np.asarray(joints_uvd, np.float64)
  affine = np.asarray(affine, np.float64)
  if affine.shape[-2:] == (2, 3):
    bottom = np.broadcast_to([0.0, 0.0, 1.0], affine.shape[:-2] + (1, 3))
    affine = np.concatenate([affine, bottom], axis=-2)
  if affine.shape[-2:] != (3, 3):
    raise ValueError(f"affine must be [..., 3, 3] or [..., 2, 3], got {affine.shape}")
  inverse = np.linalg.inv(affine)
  xy1 = np.concatenate([uvd[..., :2], np.ones_like(uvd[..., :1])], axis=-1)
  image = np.einsum("...ij,...kj->...ki", inverse, xy1)
  image = image[..., :2] / image[..., 2:3]
  d_rel = depth_units_to_mm(uvd[..., 2])
  root = np.asarray(root_depth_mm, np.float64)[..., HAND_OF]
  depth = d_rel + root
  focal = np.asarray(focal, np.float64)[..., None, :]
  princpt = np.asarray(princpt, np.float64)[..., None, :]
  xy = (image - princpt) / focal * depth[..., None]
  return np.concatenate([xy, depth[..., None]], axis=-1)


def root_align(joints):
  """[..., 42, 3] minus each hand's wrist (right on joint 20, left on joint 41)."""
  joints = np.asarray(joints, np.float64)
  return joints - joints[..., ROOT_OF, :]


def joint_errors(pred_cam, gt_cam):
  """[..., 42] Euclidean errors in mm after root-aligning each hand of pred and GT on its own
  wrist (official ``root joint alignment`` then ``mpjpe``). Invalid joints are not masked."""
  with np.errstate(invalid="ignore", over="ignore"):
    return np.linalg.norm(root_align(pred_cam) - root_align(gt_cam), axis=-1)


def pck_curve(errors, thresholds_mm=PCK_THRESHOLDS_MM):
  """Fraction of ``errors`` (mm, any shape) <= each threshold (+ PCK_ROUNDOFF_MM); NaN for no
  error."""
  errors = np.asarray(errors, np.float64).reshape(-1)
  thresholds_mm = np.asarray(thresholds_mm, np.float64)
  if errors.size == 0:
    return np.full(thresholds_mm.shape, np.nan)
  return (errors[None, :] <= thresholds_mm[:, None] + PCK_ROUNDOFF_MM).mean(axis=1)


def auc(pck, thresholds_mm=PCK_THRESHOLDS_MM):
  """Trapezoid area under a PCK curve divided by the threshold range (1 = all errors 0)."""
  pck = np.asarray(pck, np.float64)
  thresholds_mm = np.asarray(thresholds_mm, np.float64)
  widths = np.diff(thresholds_mm)
  area = np.sum(widths * (pck[1:] + pck[:-1]) / 2.0)
  return float(area / (thresholds_mm[-1] - thresholds_mm[0]))


def mrrpe_errors(pred, gt, rel_root_depth_mm, abs_root_depth_mm=None):
  """Per-frame MRRPE (mm) of frames [M, 42, 3] with absolute ``pred`` (see
  ``OfficialMetrics.update``): the predicted left wrist's pixel back-projected at
  ``d_rel_left + Z_right + rel_root_depth_mm``, ``Z`` the wrist depths ``pred`` was
  back-projected with (``abs_root_depth_mm`` [M, 2], default the GT's), against the GT
  ``L - R``."""
  a = (gt[:, [RIGHT_WRIST, LEFT_WRIST], 2] if abs_root_depth_mm is None
       else np.asarray(abs_root_depth_mm, np.float64))
  depth = pred[:, LEFT_WRIST, 2] - a[:, 1] + a[:, 0] + rel_root_depth_mm
  left = pred[:, LEFT_WRIST] * (depth / pred[:, LEFT_WRIST, 2])[:, None]
  return np.linalg.norm((left - pred[:, RIGHT_WRIST]) - (gt[:, LEFT_WRIST] - gt[:, RIGHT_WRIST]),
                        axis=-1)


def hand_type_ids(hand_type):
  """[N] int: 0 right, 1 left, 2 interacting, from ints or the annotation strings."""
  values = np.asarray(hand_type, dtype=object).reshape(-1)
  ids = []
  for h in values:
    if isinstance(h, (str, np.str_)):
      if str(h) not in HAND_TYPE_IDS:
        raise ValueError(f"unknown hand_type {str(h)!r}; expected one of "
                         f"{tuple(HAND_TYPE_IDS)} or 0, 1, 2")
      ids.append(HAND_TYPE_IDS[str(h)])
    else:
      if int(h) not in (0, 1, 2) or int(h) != h:
        raise ValueError(f"hand_type id must be 0 (right), 1 (left) or 2 (interacting), "
                         f"got {h!r}")
      ids.append(int(h))
  return np.array(ids, np.int64).reshape(np.shape(hand_type))


def sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def _none_if_nan(x):
  x = float(x)
  return None if np.isnan(x) else x


class OfficialMetrics:
  """Accumulates the official InterHand2.6M evaluate() over batches; ``result()`` reports.

  Keeps per-joint sums and counts for single-hand (right/left) and interacting frames, counts
  of errors under each PCK threshold, MRRPE and handedness sums, so memory does not grow with
  the number of frames.
  """

  def __init__(self, thresholds_mm=PCK_THRESHOLDS_MM):
    self.thresholds_mm = np.asarray(thresholds_mm, np.float64)
    self.sum_single = np.zeros(NUM_JOINTS)
    self.count_single = np.zeros(NUM_JOINTS, np.int64)
    self.sum_two = np.zeros(NUM_JOINTS)
    self.count_two = np.zeros(NUM_JOINTS, np.int64)
    self.pck_hits = np.zeros(len(self.thresholds_mm), np.int64)
    self.num_errors = 0
    self.mrrpe_sum = 0.0
    self.mrrpe_count = 0
    self.mrrpe_skipped = 0
    self.hand_correct = 0
    self.hand_count = 0
    self.num_frames = 0
    self.num_single = 0
    self.num_two = 0

  def update(self, pred_cam, gt_cam, joint_valid, hand_type, mask=None,
             pred_rel_root_depth_mm=None, presence_logits=None, hand_type_valid=None,
             abs_root_depth_mm=None):
    """Adds a batch of N frames.

    pred_cam, gt_cam: [N, 42, 3] camera mm (pred back-projected as ``crop_to_camera`` does, or
      root-relative when no MRRPE is wanted); joint_valid: [N, 42] (the wrist rule is applied
      again here: a hand whose wrist is invalid counts nowhere); hand_type: [N] ints (0 right,
      1 left, 2 interacting) or strings; mask: [N], rows with 0 (padding) are ignored.
    pred_rel_root_depth_mm: [N] predicted ``Z_left_wrist - Z_right_wrist`` (NaN: none for that
      frame). MRRPE follows the official evaluate: on interacting frames with both wrists valid,
      the predicted right root is the predicted right wrist back-projected at its predicted
      depth relative to the GT right root depth; the predicted left root is the predicted left
      wrist's pixel back-projected at depth ``d_rel_left_wrist + Z_gt_right + pred_rel_root``
      (the left hand's GT root depth is NOT used); MRRPE = ``|(L - R)_pred - (L - R)_gt|``.
      Since ``pixel2cam`` is linear in Z along a pixel's ray, with ``pred_cam`` back-projected
      with the GT root depths this is ``R = pred_cam[20]`` and
      ``L = pred_cam[41] * Z' / pred_cam[41, 2]`` with
      ``Z' = pred_cam[41, 2] - gt_cam[41, 2] + gt_cam[20, 2] + pred_rel_root``. It needs
      absolute predictions: frames whose predicted wrist depths are not positive are skipped
      (counted in ``num_mrrpe_skipped``).
    abs_root_depth_mm: [N, 2] (right, left) wrist depths ``pred_cam`` was back-projected with,
      when not the GT's: a RootNet-style estimate (the official ``trans_test='rootnet'``); the
      MRRPE construction above then uses them in place of ``gt_cam[20, 2]``, ``gt_cam[41, 2]``.
    presence_logits: [N, 2] logits of right and left hand presence; the official handedness
      accuracy: ``sigmoid > 0.5`` must match the GT hand type exactly (right: [1, 0], left:
      [0, 1], interacting: [1, 1]), counted on frames with hand_type_valid ([N], default 1).
    """
    pred = np.asarray(pred_cam, np.float64)
    gt = np.asarray(gt_cam, np.float64)
    if pred.ndim != 3 or pred.shape[1:] != (NUM_JOINTS, 3) or gt.shape != pred.shape:
      raise ValueError(f"pred_cam and gt_cam must both be [N, 42, 3], got {pred.shape} and "
                       f"{gt.shape}")
    n = pred.shape[0]
    valid = np.asarray(joint_valid, np.float64).reshape(n, NUM_JOINTS) > 0
    hand = hand_type_ids(hand_type).reshape(n)
    keep = np.ones(n, bool) if mask is None else np.asarray(mask).reshape(n) > 0
    # Official loader: "if root is not valid -> root-relative 3D pose is also not valid".
    valid = valid & valid[:, ROOT_OF] & keep[:, None]
    single = (hand == 0) | (hand == 1)
    two = hand == 2

    errors = joint_errors(pred, gt)
    in_single = valid & single[:, None]
    in_two = valid & two[:, None]
    self.sum_single += np.where(in_single, errors, 0.0).sum(axis=0)
    self.count_single += in_single.sum(axis=0)
    self.sum_two += np.where(in_two, errors, 0.0).sum(axis=0)
    self.count_two += in_two.sum(axis=0)
    pooled = errors[valid]
    self.pck_hits += (pooled[None, :] <= self.thresholds_mm[:, None] + PCK_ROUNDOFF_MM).sum(
        axis=1)
    self.num_errors += pooled.size

    self.num_frames += int(keep.sum())
    self.num_single += int((keep & single).sum())
    self.num_two += int((keep & two).sum())

    if pred_rel_root_depth_mm is not None:
      rel = np.asarray(pred_rel_root_depth_mm, np.float64).reshape(n)
      rows = keep & two & valid[:, RIGHT_WRIST] & valid[:, LEFT_WRIST] & np.isfinite(rel)
      absolute = (pred[:, RIGHT_WRIST, 2] > 0) & (pred[:, LEFT_WRIST, 2] > 0)
      self.mrrpe_skipped += int((rows & ~absolute).sum())
      rows &= absolute
      if np.any(rows):
        err = mrrpe_errors(pred[rows], gt[rows], rel[rows], None if abs_root_depth_mm is None
                           else np.asarray(abs_root_depth_mm, np.float64).reshape(n, 2)[rows])
        self.mrrpe_sum += float(err.sum())
        self.mrrpe_count += int(rows.sum())

    if presence_logits is not None:
      prob = sigmoid(np.asarray(presence_logits, np.float64).reshape(n, 2))
      type_valid = (np.ones(n, bool) if hand_type_valid is None
                    else np.asarray(hand_type_valid, np.float64).reshape(n) > 0)
      rows = keep & type_valid
      p_right, p_left = prob[:, 0], prob[:, 1]
      correct = (((hand == 0) & (p_right > 0.5) & (p_left < 0.5))
                 | ((hand == 1) & (p_right < 0.5) & (p_left > 0.5))
                 | ((hand == 2) & (p_right > 0.5) & (p_left > 0.5)))
      self.hand_correct += int((correct & rows).sum())
      self.hand_count += int(rows.sum())

  def result(self) -> dict:
    """JSON-ready dict (None where a metric has no sample). Keys: protocol, mpjpe_single,
    mpjpe_two, mpjpe_all (mm), per_joint_mpjpe_{single,two,all} (42 entries, None for a joint
    with no sample, which is left out of the joint average), pck, pck_thresholds_mm, auc,
    mrrpe, num_mrrpe, num_mrrpe_skipped, hand_presence_accuracy, num_hand_presence, num_frames,
    num_single, num_two, num_valid_joints."""

    def per_joint(total, count):
      with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(count > 0, total / np.maximum(count, 1), np.nan)
      mean = float(np.mean(means[count > 0])) if np.any(count > 0) else np.nan
      return [_none_if_nan(m) for m in means], _none_if_nan(mean)

    joints_single, single = per_joint(self.sum_single, self.count_single)
    joints_two, two = per_joint(self.sum_two, self.count_two)
    joints_all, total = per_joint(self.sum_single + self.sum_two,
                                  self.count_single + self.count_two)
    if self.num_errors:
      pck = self.pck_hits / self.num_errors
      area = auc(pck, self.thresholds_mm)
    else:
      pck, area = np.full(len(self.thresholds_mm), np.nan), np.nan
    return {
        "protocol": PROTOCOL,
        "mpjpe_single": single,
        "mpjpe_two": two,
        "mpjpe_all": total,
        "per_joint_mpjpe_single": joints_single,
        "per_joint_mpjpe_two": joints_two,
        "per_joint_mpjpe_all": joints_all,
        "pck": [_none_if_nan(p) for p in pck],
        "pck_thresholds_mm": self.thresholds_mm.tolist(),
        "auc": _none_if_nan(area),
        "mrrpe": self.mrrpe_sum / self.mrrpe_count if self.mrrpe_count else None,
        "num_mrrpe": self.mrrpe_count,
        "num_mrrpe_skipped": self.mrrpe_skipped,
        "hand_presence_accuracy": (self.hand_correct / self.hand_count if self.hand_count
                                   else None),
        "num_hand_presence": self.hand_count,
        "num_frames": self.num_frames,
        "num_single": self.num_single,
        "num_two": self.num_two,
        "num_valid_joints": self.num_errors,
    }


__all__ = [
    "HAND_TYPE_IDS", "OfficialMetrics", "PCK_THRESHOLDS_MM", "PROTOCOL", "auc",
    "crop_to_camera", "hand_type_ids", "joint_errors", "mrrpe_errors", "pck_curve", "root_align",
    "sigmoid",
]
