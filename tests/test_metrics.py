"""Tests of dfl_jax.evaluation.metrics: hand-computed cases and a loop port of the official evaluate()."""

import numpy as np
import pytest

from dfl_jax.evaluation import metrics
from input_pipeline import geometry

NJ = 42
RIGHT_IDS = np.arange(21)
LEFT_IDS = np.arange(21, 42)


def random_hands(rng, n):
  """[n, 42, 3] camera joints: two hands about 1 m in front of the camera."""
  centre = np.array([0.0, 0.0, 1000.0]) + rng.uniform(-150, 150, (n, 1, 3))
  offset = np.zeros((n, NJ, 3))
  offset[:, LEFT_IDS] += np.array([120.0, 0.0, 30.0])
  return centre + offset + rng.uniform(-60, 60, (n, NJ, 3))


# ---------------------------------------------------------------- loop port of the official code

def official_evaluate(joints_uvd, affine, focal, princpt, gt_cam, joint_valid, hand_type,
                      rel_root_depth, hand_prob, hand_type_valid):
  """facebookresearch/InterHand2.6M data/InterHand2.6M/dataset.py Dataset.evaluate, joint by
  joint (output space = input space 256, bbox_3d_size 400, GT abs_depth), with mrrpe."""
  mpjpe_sh = [[] for _ in range(NJ)]
  mpjpe_ih = [[] for _ in range(NJ)]
  mrrpe, acc, cnt = [], 0, 0
  for n in range(len(joints_uvd)):
    gt = gt_cam[n].copy()
    valid = joint_valid[n]
    fx, fy = focal[n]
    cx, cy = princpt[n]
    inv = np.linalg.inv(affine[n])
    img = joints_uvd[n].copy()
    for j in range(NJ):
      x, y, w = inv @ np.array([img[j, 0], img[j, 1], 1.0])
      img[j, :2] = [x / w, y / w]
    img[:, 2] = (img[:, 2] / 256 * 2 - 1) * (400 / 2)
    abs_right, abs_left = gt[20, 2], gt[41, 2]

    def pixel2cam(p):
      return np.array([(p[0] - cx) / fx * p[2], (p[1] - cy) / fy * p[2], p[2]])

    if hand_type[n] == "interacting" and valid[41] and valid[20]:
      left = img[41].copy()
      left[2] += abs_right + rel_root_depth[n]
      right = img[20].copy()
      right[2] += abs_right
      pred_rel = pixel2cam(left) - pixel2cam(right)
      mrrpe.append(np.sqrt(np.sum((pred_rel - (gt[41] - gt[20])) ** 2)))
    img[RIGHT_IDS, 2] += abs_right
    img[LEFT_IDS, 2] += abs_left
    cam = np.stack([pixel2cam(p) for p in img])
    for ids, root in ((RIGHT_IDS, 20), (LEFT_IDS, 41)):
      cam[ids] = cam[ids] - cam[root]
      gt[ids] = gt[ids] - gt[root]
    for j in range(NJ):
      if valid[j]:
        e = np.sqrt(np.sum((cam[j] - gt[j]) ** 2))
        (mpjpe_sh if hand_type[n] in ("right", "left") else mpjpe_ih)[j].append(e)
    if hand_type_valid[n]:
      p = hand_prob[n]
      acc += int((hand_type[n] == "right" and p[0] > 0.5 and p[1] < 0.5)
                 or (hand_type[n] == "left" and p[0] < 0.5 and p[1] > 0.5)
                 or (hand_type[n] == "interacting" and p[0] > 0.5 and p[1] > 0.5))
      cnt += 1
  return {
      "mpjpe_all": np.mean([np.mean(mpjpe_sh[j] + mpjpe_ih[j]) for j in range(NJ)]),
      "mpjpe_single": np.mean([np.mean(mpjpe_sh[j]) for j in range(NJ)]),
      "mpjpe_two": np.mean([np.mean(mpjpe_ih[j]) for j in range(NJ)]),
      "mrrpe": np.mean(mrrpe),
      "hand_presence_accuracy": acc / cnt,
  }


def forward_25d(gt_cam, affine, focal, princpt):
  """GT camera joints -> image pixels -> crop pixels (affine) -> 2.5D with the wrist depth."""
  img = geometry.camera_to_pixel(gt_cam, focal[:, None], princpt[:, None])
  crop = np.einsum("nij,nkj->nki", affine[:, :2], np.concatenate(
      [img, np.ones_like(img[..., :1])], -1))
  uvd, rel_root = geometry.targets_25d(crop, gt_cam)
  return uvd, rel_root


def random_affines(rng, n):
  """Image -> crop affines with scale, rotation and translation, as augmentation makes."""
  out = np.zeros((n, 3, 3))
  for i in range(n):
    s, a = rng.uniform(0.6, 1.6), rng.uniform(-np.pi / 4, np.pi / 4)
    out[i, :2, :2] = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out[i, :2, 2] = rng.uniform(-200, 100, 2)
    out[i, 2, 2] = 1.0
  return out


# ---------------------------------------------------------------- crop_to_camera

def test_crop_to_camera_inverts_the_forward_projection():
  rng = np.random.default_rng(0)
  n = 6
  gt_cam = random_hands(rng, n)
  focal = rng.uniform(1100, 1300, (n, 2))
  princpt = rng.uniform(150, 260, (n, 2))
  affine = random_affines(rng, n)
  uvd, _ = forward_25d(gt_cam, affine, focal, princpt)
  root = gt_cam[:, [20, 41], 2]
  back = metrics.crop_to_camera(uvd, affine, focal, princpt, root)
  np.testing.assert_allclose(back, gt_cam, atol=1e-3, rtol=0)
  # A [2, 3] affine (geometry.crop_affine, the unaugmented crop) works the same.
  box = np.array([20.0, 40.0, 230.0, 230.0])
  affine_23 = np.broadcast_to(geometry.crop_affine(box), (n, 2, 3))
  uvd, _ = forward_25d(gt_cam, np.concatenate([affine_23, np.broadcast_to(
      [[[0.0, 0.0, 1.0]]], (n, 1, 3))], 1), focal, princpt)
  back = metrics.crop_to_camera(uvd, affine_23, focal, princpt, root)
  np.testing.assert_allclose(back, gt_cam, atol=1e-3, rtol=0)


def test_crop_to_camera_depth_decoding():
  uvd = np.zeros((1, NJ, 3))
  uvd[..., 2] = 128.0          # d_rel 0
  uvd[0, 3, 2] = 256.0         # +200 mm
  uvd[0, 25, 2] = 0.0          # -200 mm
  affine = np.eye(3)[None]
  out = metrics.crop_to_camera(uvd, affine, [[1.0, 1.0]], [[0.0, 0.0]], [[1000.0, 700.0]])
  assert out[0, 0, 2] == 1000.0 and out[0, 3, 2] == 1200.0
  assert out[0, 21, 2] == 700.0 and out[0, 25, 2] == 500.0


# ---------------------------------------------------------------- MPJPE, hand-computed

def hand_made_case():
  """2 single-hand frames (right, left) and 1 interacting frame with known errors.

  Frame 0 (right): right hand valid except joint 3 (garbage prediction); joint 0 off by 3 mm.
  Frame 1 (left): left hand valid; joint 21 off by 4 mm; right-hand joints garbage, invalid.
  Frame 2 (interacting): all valid; each hand translated rigidly; joint 0 off by 4 mm and
  joint 21 off by 5 mm ((3, 4, 0)).
  """
  rng = np.random.default_rng(1)
  gt = random_hands(rng, 3)
  pred = gt.copy()
  valid = np.zeros((3, NJ))
  valid[0, RIGHT_IDS] = 1
  valid[0, 3] = 0
  pred[0, 3] = [1e9, -1e9, 7.0]
  pred[0, LEFT_IDS] = rng.normal(0, 1e4, (21, 3))
  pred[0, 0] += [3.0, 0.0, 0.0]
  valid[1, LEFT_IDS] = 1
  pred[1, RIGHT_IDS] = np.nan
  pred[1, 21] += [0.0, 4.0, 0.0]
  valid[2] = 1
  pred[2, RIGHT_IDS] += [100.0, 0.0, -20.0]
  pred[2, LEFT_IDS] += [0.0, -50.0, 20.0]
  pred[2, 0] += [0.0, 0.0, 4.0]
  pred[2, 21] += [3.0, 4.0, 0.0]
  hand_type = np.array([0, 1, 2])
  return pred, gt, valid, hand_type


def test_mpjpe_hand_computed():
  pred, gt, valid, hand_type = hand_made_case()
  m = metrics.OfficialMetrics()
  m.update(pred, gt, valid, hand_type)
  r = m.result()
  assert r["protocol"] == "interhand2.6m-official"
  # Single: joint 3 has no sample (left out); 41 joints, means 3 (joint 0), 4 (joint 21).
  assert r["per_joint_mpjpe_single"][3] is None
  assert r["per_joint_mpjpe_single"][0] == pytest.approx(3.0)
  assert r["per_joint_mpjpe_single"][21] == pytest.approx(4.0)
  assert r["per_joint_mpjpe_single"][20] == 0.0 and r["per_joint_mpjpe_single"][41] == 0.0
  assert r["mpjpe_single"] == pytest.approx(7.0 / 41)
  # Two: all 42 joints, means 4 (joint 0) and 5 (joint 21), wrists 0 and counted.
  assert r["mpjpe_two"] == pytest.approx(9.0 / 42)
  # All: joint 0 mean(3, 4) = 3.5, joint 21 mean(4, 5) = 4.5, joint 3 only frame 2 (0).
  assert r["per_joint_mpjpe_all"][0] == pytest.approx(3.5)
  assert r["per_joint_mpjpe_all"][21] == pytest.approx(4.5)
  assert r["mpjpe_all"] == pytest.approx(8.0 / 42)
  assert (r["num_frames"], r["num_single"], r["num_two"]) == (3, 2, 1)
  assert r["num_valid_joints"] == 20 + 21 + 42
  assert r["mrrpe"] is None and r["hand_presence_accuracy"] is None


def test_invalid_joints_change_nothing():
  pred, gt, valid, hand_type = hand_made_case()
  ref = metrics.OfficialMetrics()
  ref.update(pred, gt, valid, hand_type)
  rng = np.random.default_rng(2)
  garbage_pred, garbage_gt = pred.copy(), gt.copy()
  invalid = valid == 0
  garbage_pred[invalid] = rng.normal(0, 1e5, (invalid.sum(), 3))
  garbage_gt[invalid] = 1.0  # the annotation placeholder
  m = metrics.OfficialMetrics()
  m.update(garbage_pred, garbage_gt, valid, hand_type)
  assert m.result() == ref.result()


def test_wrist_rule_applied():
  pred, gt, valid, hand_type = hand_made_case()
  valid2 = valid.copy()
  valid2[2, 41] = 0  # interacting frame, left wrist invalid: the whole left hand goes
  m = metrics.OfficialMetrics()
  m.update(pred, gt, valid2, hand_type)
  r = m.result()
  assert r["per_joint_mpjpe_two"][21] is None
  assert r["mpjpe_two"] == pytest.approx(4.0 / 21)


def test_rigid_translation_per_hand_gives_zero():
  rng = np.random.default_rng(3)
  gt = random_hands(rng, 5)
  pred = gt.copy()
  pred[:, RIGHT_IDS] += rng.normal(0, 100, (5, 1, 3))
  pred[:, LEFT_IDS] += rng.normal(0, 100, (5, 1, 3))
  m = metrics.OfficialMetrics()
  m.update(pred, gt, np.ones((5, NJ)), ["right", "left", "interacting", "interacting", "right"])
  r = m.result()
  assert r["mpjpe_single"] == pytest.approx(0.0, abs=1e-9)
  assert r["mpjpe_two"] == pytest.approx(0.0, abs=1e-9)
  assert r["mpjpe_all"] == pytest.approx(0.0, abs=1e-9)
  assert r["auc"] == pytest.approx(1.0)


def test_mask_zero_rows_are_ignored():
  pred, gt, valid, hand_type = hand_made_case()
  ref = metrics.OfficialMetrics()
  ref.update(pred, gt, valid, hand_type, pred_rel_root_depth_mm=[0.0, 0.0, 3.0],
             presence_logits=[[1, -1], [-1, 1], [1, -1]])
  pad = 2
  m = metrics.OfficialMetrics()
  m.update(np.concatenate([pred, np.full((pad, NJ, 3), np.nan)]),
           np.concatenate([gt, np.zeros((pad, NJ, 3))]),
           np.concatenate([valid, np.ones((pad, NJ))]),
           np.concatenate([hand_type, [2, 0]]),
           mask=[1, 1, 1, 0, 0],
           pred_rel_root_depth_mm=[0.0, 0.0, 3.0, 1e6, np.nan],
           presence_logits=[[1, -1], [-1, 1], [1, -1], [9, 9], [-9, -9]])
  assert m.result() == ref.result()


def test_batches_accumulate():
  pred, gt, valid, hand_type = hand_made_case()
  whole = metrics.OfficialMetrics()
  whole.update(pred, gt, valid, hand_type)
  split = metrics.OfficialMetrics()
  split.update(pred[:1], gt[:1], valid[:1], hand_type[:1])
  split.update(pred[1:], gt[1:], valid[1:], ["left", "interacting"])
  a, b = whole.result(), split.result()
  for key in ("mpjpe_single", "mpjpe_two", "mpjpe_all", "auc"):
    assert a[key] == pytest.approx(b[key], abs=1e-12)
  assert a["pck"] == b["pck"]


# ---------------------------------------------------------------- PCK / AUC

def test_pck_and_auc_on_constant_errors():
  thresholds = metrics.PCK_THRESHOLDS_MM
  assert len(thresholds) == 51 and thresholds[0] == 0 and thresholds[-1] == 50
  pck = metrics.pck_curve(np.full(100, 10.0))
  np.testing.assert_array_equal(pck, (thresholds >= 10).astype(float))
  # Trapezoids: 0 on [0, 9], half a bin on [9, 10], 1 on [10, 50]: (0.5 + 40) / 50.
  assert metrics.auc(pck) == pytest.approx(40.5 / 50)
  assert metrics.auc(metrics.pck_curve(np.zeros(5))) == 1.0
  assert metrics.auc(metrics.pck_curve(np.full(5, 60.0))) == 0.0


def test_pck_of_the_accumulator_hand_computed():
  pred, gt, valid, hand_type = hand_made_case()
  m = metrics.OfficialMetrics()
  m.update(pred, gt, valid, hand_type)
  r = m.result()
  # 83 valid joint errors: 3, 4, 4, 5 and 79 zeros (wrists included).
  n = 83
  expected = np.array([79 + (t >= 3) + 2 * (t >= 4) + (t >= 5) for t in range(51)]) / n
  np.testing.assert_allclose(r["pck"], expected, rtol=0, atol=1e-15)
  area = 0.5 * (79 / n + 1) + (79 + 79 + 80 + 82) / n + 45  # trapezoid rule, unit steps
  assert r["auc"] == pytest.approx(area / 50)


# ---------------------------------------------------------------- MRRPE

def interacting_frame(left_wrist_on_axis=True):
  rng = np.random.default_rng(4)
  gt = random_hands(rng, 1)
  if left_wrist_on_axis:
    gt[0, LEFT_IDS] += np.array([0.0, 0.0, 1000.0]) - gt[0, 41]
  focal, princpt = np.array([[1200.0, 1180.0]]), np.array([[170.0, 250.0]])
  affine = random_affines(rng, 1)
  uvd, rel_root = forward_25d(gt, affine, focal, princpt)
  return gt, uvd, rel_root, affine, focal, princpt


def test_mrrpe_known_relative_depth_error():
  gt, uvd, rel_root, affine, focal, princpt = interacting_frame()
  pred = metrics.crop_to_camera(uvd, affine, focal, princpt, gt[:, [20, 41], 2])
  m = metrics.OfficialMetrics()
  m.update(pred, gt, np.ones((1, NJ)), [2], pred_rel_root_depth_mm=rel_root)
  assert m.result()["mrrpe"] == pytest.approx(0.0, abs=1e-6)
  # Relative root depth 7 mm too large; the left wrist is on the optical axis, so its
  # back-projection moves 7 mm along Z only.
  m = metrics.OfficialMetrics()
  m.update(pred, gt, np.ones((1, NJ)), [2], pred_rel_root_depth_mm=rel_root + 7.0)
  r = m.result()
  assert r["mrrpe"] == pytest.approx(7.0, abs=1e-6)
  assert r["num_mrrpe"] == 1


def test_mrrpe_uses_the_right_root_depth_for_the_left_hand():
  """Official: left root depth = its predicted d_rel + GT right root depth + predicted relative
  root depth; the left hand's GT root depth is not used."""
  gt, uvd, rel_root, affine, focal, princpt = interacting_frame()
  uvd = uvd.copy()
  uvd[0, 41, 2] += 2.0 / 400 * 256  # left wrist predicted 2 mm deeper than itself
  pred = metrics.crop_to_camera(uvd, affine, focal, princpt, gt[:, [20, 41], 2])
  m = metrics.OfficialMetrics()
  m.update(pred, gt, np.ones((1, NJ)), ["interacting"], pred_rel_root_depth_mm=rel_root)
  assert m.result()["mrrpe"] == pytest.approx(2.0, abs=1e-6)


def test_mrrpe_only_on_interacting_frames_with_both_wrists_and_absolute_joints():
  gt, uvd, rel_root, affine, focal, princpt = interacting_frame()
  pred = metrics.crop_to_camera(uvd, affine, focal, princpt, gt[:, [20, 41], 2])
  valid = np.ones((1, NJ))
  for hand_type, valid_row, rel in (([0], valid, rel_root + 5), ([2], valid * 0, rel_root + 5),
                                    ([2], valid, [np.nan])):
    m = metrics.OfficialMetrics()
    m.update(pred, gt, valid_row, hand_type, pred_rel_root_depth_mm=rel)
    assert m.result()["mrrpe"] is None
  m = metrics.OfficialMetrics()
  m.update(metrics.root_align(pred), gt, valid, [2], pred_rel_root_depth_mm=rel_root)
  assert m.result()["mrrpe"] is None and m.result()["num_mrrpe_skipped"] == 1


# ---------------------------------------------------------------- hand presence

def test_hand_presence_accuracy():
  rng = np.random.default_rng(5)
  gt = random_hands(rng, 5)
  logits = np.array([[2.0, -2.0],    # right, correct
                     [-1.0, 3.0],    # left, correct
                     [1.0, -1.0],    # interacting, wrong
                     [-5.0, 5.0],    # right, wrong but hand_type_valid 0: not counted
                     [0.0, 4.0]])    # left: sigmoid(0) = 0.5 is not < 0.5: wrong
  m = metrics.OfficialMetrics()
  m.update(gt, gt, np.ones((5, NJ)), ["right", "left", "interacting", "right", "left"],
           presence_logits=logits, hand_type_valid=[1, 1, 1, 0, 1])
  r = m.result()
  assert r["hand_presence_accuracy"] == pytest.approx(2 / 4)
  assert r["num_hand_presence"] == 4


def test_hand_type_strings_and_ids_agree_and_unknown_rejected():
  np.testing.assert_array_equal(metrics.hand_type_ids(["right", "left", "interacting"]),
                                [0, 1, 2])
  np.testing.assert_array_equal(metrics.hand_type_ids(np.array([2, 0])), [2, 0])
  with pytest.raises(ValueError, match="unknown hand_type"):
    metrics.hand_type_ids(["both"])
  with pytest.raises(ValueError):
    metrics.hand_type_ids([3])


# ---------------------------------------------------------------- against the official loop

def test_matches_a_loop_port_of_the_official_evaluate():
  rng = np.random.default_rng(6)
  n = 12
  gt = random_hands(rng, n)
  focal = rng.uniform(1100, 1300, (n, 2))
  princpt = rng.uniform(150, 260, (n, 2))
  affine = random_affines(rng, n)
  uvd, rel_root = forward_25d(gt, affine, focal, princpt)
  uvd = uvd + rng.normal(0, 3, uvd.shape)
  rel_pred = rel_root + rng.normal(0, 20, n)
  hand_type = np.array(["right", "left", "interacting"] * 4)
  valid = np.ones((n, NJ))
  valid[hand_type == "right", 21:] = 0
  valid[hand_type == "left", :21] = 0
  dropped = rng.uniform(size=(n, NJ)) < 0.1
  dropped[:, [20, 41]] = False  # wrists kept: the wrist rule is tested elsewhere
  valid[dropped] = 0
  # The official code needs a sample of every joint in both lists (np.stack of a list).
  assert valid[hand_type != "interacting"].any(0).all()
  assert valid[hand_type == "interacting"].any(0).all()
  probs = rng.uniform(size=(n, 2))
  type_valid = (rng.uniform(size=n) > 0.2).astype(float)
  ref = official_evaluate(uvd, affine, focal, princpt, gt, valid, hand_type, rel_pred, probs,
                          type_valid)

  pred = metrics.crop_to_camera(uvd, affine, focal, princpt, gt[:, [20, 41], 2])
  m = metrics.OfficialMetrics()
  m.update(pred, gt, valid, hand_type, pred_rel_root_depth_mm=rel_pred,
           presence_logits=np.log(probs) - np.log1p(-probs), hand_type_valid=type_valid)
  r = m.result()
  for key, value in ref.items():
    assert r[key] == pytest.approx(value, rel=1e-9), key
