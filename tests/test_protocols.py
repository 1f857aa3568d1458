"""The other protocols (dfl_jax.evaluation.protocols) against independent implementations, on the
genuine fixture frames with perturbed predictions."""

import json

import cv2
import numpy as np
import pytest

from dfl_jax.evaluation import cli, metrics, predictions as scoring, protocols
from conftest import build_official_tree

# IntagHand's per-hand joint order (wrist, then thumb .. pinky base to tip) from InterHand2.6M's
# (tip to base thumb .. pinky, wrist last): written out here, not taken from the module.
INTAG_OF_IH = [20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16]
INTAG_ROOT, INTAG_WRIST = 9, 0


@pytest.fixture
def records(fixtures):
  records, _ = scoring.load_annotations(fixtures / "interhand26m_samples", "test")
  return records


def _perturbed(records, seed=0):
  """Predictions: the GT scaled per hand, shifted and jittered (absolute camera mm)."""
  rng = np.random.default_rng(seed)
  out = {}
  for r in records:
    gt = np.asarray(r["joint_cam"], np.float64)
    pred = gt.copy()
    for hand in (slice(0, 21), slice(21, 42)):
      wrist = pred[hand][20].copy()
      pred[hand] = (pred[hand] - wrist) * rng.uniform(0.8, 1.25) + wrist
    pred += rng.normal(0, 6.0, pred.shape) + rng.normal(0, 30.0, (1, 3))
    out[str(r["annotation_id"])] = {"joints_cam_mm": pred.tolist(),
                                    "rel_root_depth_mm": float(
                                        gt[41, 2] - gt[20, 2] + rng.normal(0, 20))}
  return out


def _intaghand_reference(preds, records):
  """IntagHand's eval loop as its script runs it, per frame and per hand, in its own joint
  order: middle-MCP root, prediction scaled by GT / predicted wrist-to-MCP length, each hand's
  errors pooled over frames and joints, then (left + right) / 2; valid joints only."""
  sums, counts = {"right": 0.0, "left": 0.0}, {"right": 0, "left": 0}
  for r in records:
    if r["hand_type"] != "interacting" or not r["hand_type_valid"]:
      continue
    v = np.asarray(r["joint_valid"])
    if not all(v[o + 11] and v[o + 20] for o in (0, 21)):
      continue
    gt_all = np.asarray(r["joint_cam"], np.float64)
    pr_all = np.asarray(preds[str(r["annotation_id"])]["joints_cam_mm"], np.float64)
    for name, offset in (("right", 0), ("left", 21)):
      idx = [offset + i for i in INTAG_OF_IH]
      g, p, valid = gt_all[idx], pr_all[idx], v[idx]
      s = np.linalg.norm(g[INTAG_ROOT] - g[INTAG_WRIST]) / np.linalg.norm(
          p[INTAG_ROOT] - p[INTAG_WRIST])
      g = g - g[INTAG_ROOT]
      p = (p - p[INTAG_ROOT]) * s
      for j in range(21):
        if valid[j]:
          sums[name] += float(np.sqrt(((p[j] - g[j]) ** 2).sum()))
          counts[name] += 1
  return (sums["left"] / counts["left"] + sums["right"] / counts["right"]) / 2


def test_intaghand_matches_an_independent_implementation(records, tmp_path):
  """Some joints made invalid (the fixture's interacting frames have all 42 valid), unevenly
  between the hands, so that only-valid-joints and (left + right) / 2 are both exercised; a
  frame whose left middle MCP is invalid drops out."""
  records = [dict(r) for r in records]
  inter = [i for i, r in enumerate(records) if r["hand_type"] == "interacting"]
  valid = np.asarray(records[inter[0]]["joint_valid"], np.float64).copy()
  valid[[21, 22, 23, 25, 26, 27, 29]] = 0     # 7 left-hand joints, none the root or the wrist
  records[inter[0]]["joint_valid"] = valid
  preds = _perturbed(records)
  result = scoring.score_predictions(preds, records, protocol="intaghand")
  ref = _intaghand_reference(preds, records)
  assert result["protocol"] == "intaghand"
  assert result["num_scored"] == 2          # the two interacting fixture frames
  assert abs(result["mpjpe"] - ref) < 1e-3, (result["mpjpe"], ref)
  pooled = np.mean([result["mpjpe_left"], result["mpjpe_right"]])
  assert abs(result["mpjpe"] - pooled) < 1e-9
  aligned, gt = protocols.intaghand_align(
      np.stack([preds[str(records[i]["annotation_id"])]["joints_cam_mm"] for i in inter]),
      np.stack([records[i]["joint_cam"] for i in inter]))
  v = np.stack([records[i]["joint_valid"] for i in inter]) > 0
  all_pooled = np.linalg.norm(aligned - gt, axis=-1)[v].mean()
  assert abs(all_pooled - result["mpjpe"]) > 1e-3   # not one mean over all 42 x frames
  invalid_root = np.asarray(records[inter[1]]["joint_valid"], np.float64).copy()
  invalid_root[21 + 11] = 0
  records[inter[1]]["joint_valid"] = invalid_root
  one = scoring.score_predictions(preds, records, protocol="intaghand")
  assert one["num_scored"] == 1
  assert abs(one["mpjpe"] - _intaghand_reference(preds, records)) < 1e-3
  # The scale normalisation matters: the official protocol gives another number.
  official = scoring.score_predictions(preds, records)
  assert abs(official["mpjpe_two"] - result["mpjpe"]) > 0.1


def test_intaghand_is_invariant_to_each_hands_scale_and_position(records):
  preds = _perturbed(records, seed=3)
  moved = {}
  for rid, p in preds.items():
    j = np.asarray(p["joints_cam_mm"])
    j[:21] = j[:21] * 1.7 + 100.0
    j[21:] = j[21:] * 0.6 - 50.0
    moved[rid] = {"joints_cam_mm": j.tolist()}
  a = scoring.score_predictions(preds, records, protocol="intaghand")["mpjpe"]
  b = scoring.score_predictions(moved, records, protocol="intaghand")["mpjpe"]
  assert abs(a - b) < 1e-6


def test_brightness_filter_and_table4(fixtures, tmp_path):
  """IntagHand drops frames whose image mean (BGR, all channels) is below 10; Table 4 scores
  the same frames with the official protocol."""
  root = build_official_tree(fixtures, tmp_path / "ih")
  images = root / "images" / "test"
  records, _ = scoring.load_annotations(root / "annotations" / "test", "test")
  inter = [r for r in records if r["hand_type"] == "interacting"]
  dark = images / inter[0]["file_name"]
  image = cv2.imread(str(dark))
  cv2.imwrite(str(dark), (image * 0 + 9).astype(np.uint8))
  assert protocols.image_brightness(dark) < protocols.BRIGHTNESS_MIN
  preds = _perturbed(records)
  lit = scoring.score_predictions(preds, records, protocol="intaghand")
  filtered = scoring.score_predictions(preds, records, protocol="intaghand", images_dir=images)
  assert (lit["num_scored"], filtered["num_scored"]) == (2, 1)
  assert filtered["num_left_out"]["not_intaghand_frames"] == 3
  keep = [r for r in records if r["annotation_id"] == inter[1]["annotation_id"]]
  assert abs(filtered["mpjpe"] - _intaghand_reference(preds, keep)) < 1e-3
  table4 = scoring.score_predictions(preds, records, frame_filter="table4", images_dir=images)
  official_one = scoring.score_predictions(
      {str(keep[0]["annotation_id"]): preds[str(keep[0]["annotation_id"])]}, keep)
  assert table4["protocol"] == metrics.PROTOCOL and table4["filter"] == "table4"
  assert table4["num_scored"] == 1 and table4["num_single"] == 0
  assert table4["mpjpe_two"] == pytest.approx(official_one["mpjpe_two"], abs=1e-9)
  with pytest.raises(ValueError, match="frame filter of the interhand protocol"):
    scoring.score_predictions(preds, records, protocol="intaghand", frame_filter="table4")


def test_gt_joints_replace_joint_3d(records, tmp_path):
  """MANO-fitted GT joints the user gives: frames without them are left out, all their joints
  count."""
  preds = _perturbed(records)
  inter = [r for r in records if r["hand_type"] == "interacting"]
  fitted = np.asarray(inter[0]["joint_cam"], np.float64) + 2.0 * np.sin(np.arange(126)).reshape(
      42, 3)
  path = tmp_path / "gt.json"
  path.write_text(json.dumps({str(inter[0]["annotation_id"]): fitted.tolist()}))
  result = scoring.score_predictions(preds, records, protocol="intaghand",
                                     gt_joints=scoring.load_gt_joints(path))
  ref_record = dict(inter[0], joint_cam=fitted, joint_valid=np.ones(42))
  assert result["num_scored"] == 1 and result["gt"] == "gt_joints"
  assert abs(result["mpjpe"] - _intaghand_reference(preds, [ref_record])) < 1e-3
  path.write_text(json.dumps({"1": [[0, 0]]}))
  with pytest.raises(scoring.PredictionsFormatError, match="42 x 3"):
    scoring.load_gt_joints(path)


def _interwild_reference(preds, records, ids):
  """InterWild's evaluate/print_eval_result: per joint slot lists per bucket, wrist-aligned."""
  sh = [[] for _ in range(42)]
  ih = [[] for _ in range(42)]
  mrrpe = []
  for r in records:
    if str(r["annotation_id"]) not in ids:
      continue
    gt = np.asarray(r["joint_cam"], np.float64)
    pr = np.asarray(preds[str(r["annotation_id"])]["joints_cam_mm"], np.float64)
    v = np.asarray(r["joint_valid"], bool)
    for lo, w in ((0, 20), (21, 41)):
      v[lo:lo + 21] &= v[w]
    if v[20] and v[41]:
      rel = preds[str(r["annotation_id"])]["rel_root_depth_mm"]
      z_left = pr[41, 2] - gt[41, 2] + gt[20, 2] + rel
      left = pr[41] * z_left / pr[41, 2]
      mrrpe.append(np.linalg.norm((left - pr[20]) - (gt[41] - gt[20])))
    for lo, w in ((0, 20), (21, 41)):
      g = gt[lo:lo + 21] - gt[w]
      p = pr[lo:lo + 21] - pr[w]
      for j in range(21):
        if v[lo + j]:
          (ih if r["hand_type"] == "interacting" else sh)[lo + j].append(
              np.linalg.norm(p[j] - g[j]))
  means_sh = [np.mean(x) for x in sh if x]
  means_ih = [np.mean(x) for x in ih if x]
  return np.mean(means_sh), np.mean(means_ih), np.mean(means_sh + means_ih), np.mean(mrrpe)


def test_interwild_matches_an_independent_implementation(records, tmp_path):
  preds = _perturbed(records, seed=1)
  ids = [str(r["annotation_id"]) for r in records][1:]   # a subset: 3 of the 4 frames
  id_file = tmp_path / "aid_human_annot_test.txt"
  id_file.write_text("\n".join(ids) + "\n\n")
  result = scoring.score_predictions(preds, records, protocol="interwild", id_list=id_file)
  single, two, total, mrrpe = _interwild_reference(preds, records, set(ids))
  assert result["protocol"] == "interwild" and result["num_scored"] == 3
  assert result["mpjpe_single"] == pytest.approx(single, abs=1e-6)
  assert result["mpjpe_two"] == pytest.approx(two, abs=1e-6)
  assert result["mpjpe_all"] == pytest.approx(total, abs=1e-6)
  assert result["mrrpe"] == pytest.approx(mrrpe, abs=1e-6)
  id_file.write_text("326750\nimage2017\n")
  with pytest.raises(ValueError, match=r"aid_human_annot_test.txt:2"):
    scoring.score_predictions(preds, records, protocol="interwild", id_list=id_file)
  with pytest.raises(ValueError, match="needs --id_list"):
    scoring.score_predictions(preds, records, protocol="interwild")


def test_root_depths_equal_to_the_gt_change_nothing(records, tmp_path):
  """A RootNet-style file (the release's list format) holding the GT depths gives the GT-depth
  figures; a file missing a frame is an error naming it."""
  preds = _perturbed(records, seed=2)
  entries = [{"annot_id": int(r["annotation_id"]),
              "abs_depth": [float(r["joint_cam"][20][2]), float(r["joint_cam"][41][2])]}
             for r in records]
  path = tmp_path / "rootnet_interhand2.6m_output_test.json"
  path.write_text(json.dumps(entries))
  depths = protocols.read_root_depths(path)
  a = scoring.score_predictions(preds, records)
  b = scoring.score_predictions(preds, records, root_depths=depths)
  assert b["root_depth"] == "given" and a["mrrpe"] == pytest.approx(b["mrrpe"], abs=1e-9)
  del depths[str(records[0]["annotation_id"])]
  with pytest.raises(ValueError, match=str(records[0]["annotation_id"])):
    scoring.score_predictions(preds, records, root_depths=depths)
  path.write_text(json.dumps([{"annot_id": 1, "abs_depth": [0, 500]}]))
  with pytest.raises(ValueError, match="abs_depth must be"):
    protocols.read_root_depths(path)


def test_cli_names_the_protocol(records, tmp_path, capsys):
  preds = _perturbed(records)
  path = tmp_path / "pred.json"
  path.write_text(json.dumps(preds))
  folder = records[0]["image_path"].rsplit("/", 1)[0]
  from absl import flags  # pylint: disable=import-outside-toplevel
  if "protocol" not in flags.FLAGS:
    cli.define_flags()
  flags.FLAGS(["evaluate", f"--predictions={path}", f"--annotations={folder}",
               "--protocol=intaghand", f"--out={tmp_path / 'out'}"])
  try:
    cli.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
  out = capsys.readouterr().out
  assert "protocol: intaghand" in out and "MPJPE" in out
  assert not (tmp_path / "out" / "pck.png").exists()
  saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert saved["protocol"] == "intaghand" and saved["mpjpe"] > 0
