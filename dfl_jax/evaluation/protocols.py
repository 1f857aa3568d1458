"""The protocols InterHand2.6M numbers are published under, besides the official one.

Published numbers on InterHand2.6M are not comparable across protocols (docs/evaluation.md has
the table). ``metrics.OfficialMetrics`` is the official one (``interhand``: DFL, A2J-Transformer,
InterNet); this module holds the others as pure NumPy functions over ``[N, 42, 3]`` camera-mm
arrays in the InterHand2.6M joint order (right 0-20, left 21-41, per hand tip-to-base thumb,
index, middle, ring, pinky, then the wrist), and the frame selections they come with.

``intaghand`` (IntagHand, CVPR 2022, its ``apps/eval_interhand.py``; followed by RenderIH, DIR,
ACR, EANet with variations):
  frames: interacting, ``hand_type_valid``, both hands present, and the full image's mean over
  all pixels and its 3 colour channels (BGR uint8) at least 10 when the images are given
  (``intaghand_frames``); each hand on its own: prediction and GT minus their middle-finger MCP
  (joint 11 / 32), the prediction scaled by ``|GT MCP - GT wrist| / |pred MCP - pred wrist|``
  (about the root; GT never scaled, no rotation); per hand the errors pooled over frames and
  joints, then ``(left + right) / 2`` (``intaghand_mpjpe``).
  Where this implementation differs from IntagHand's code, by necessity:
  - IntagHand's GT joints are regressed from the NeuralAnnot MANO fits (MANO's joint regressor
    plus five fingertip vertices), not InterHand2.6M's annotated ``joint_3d``. Here the GT is
    ``joint_3d`` unless the user gives MANO-fitted joints (``--gt_joints``: a JSON of annotation
    id -> 42 x 3 camera mm in this joint order), so that no MANO model is needed; the two GTs
    differ by a few mm, so numbers on ``joint_3d`` are close to, not equal to, IntagHand's.
  - "Both hands present" is IntagHand's "both hands have a MANO fit"; here (joint_3d) it is
    "both wrists and both middle MCPs valid", the joints the root and the scale need.
  - Only valid joints count (IntagHand masks nothing: its MANO joints always exist); with
    ``--gt_joints`` every joint of the file counts, as in IntagHand.
  - IntagHand crops the test images around the GT meshes (input only, not the metric).
  The rules are those of IntagHand's code (its paper's wording of the protocol was not
  available to us); its README's result, 8.80 mm (left 8.93, right 8.66), is the figure the
  paper reports as 8.79.

``interwild`` (InterWild, CVPR 2023, ``data/InterHand26M/InterHand26M.py``):
  frames: the human-annotated test subset given as its id list (``aid_human_annot_test.txt``:
  one annotation id per line), valid joints only; each hand aligned on its wrist, no scale;
  per joint slot the mean over the frames of each bucket (single: right or left frames;
  interacting), single = mean of its 42 slot means, interacting likewise, and all = the mean of
  the 84 slot means together (the official "all" pools the buckets per slot instead); MRRPE
  on every frame with both wrists valid (``interwild_mpjpe``).

``table4`` (the paper's Table 4 "filtered IH dataset following the model-based method"):
  IntagHand's frames (``intaghand_frames``) scored with the official protocol (wrist root, no
  GT bone length: "we follow the model-free practice and do not use ground truth bone length
  information during evaluation", Sec. 4.4.1); a frame filter of ``interhand``.
"""

import json

import cv2
import numpy as np

from dfl_jax import errors
from dfl_jax.conventions import LEFT_WRIST, NUM_JOINTS, RIGHT_WRIST
from dfl_jax.evaluation.metrics import hand_type_ids, mrrpe_errors

PROTOCOLS = ("interhand", "intaghand", "interwild", "hic")   # hic: hic.py
FILTERS = ("none", "table4")
HAND_JOINTS = 21
MIDDLE_MCP = 11                      # per hand: middle1 (InterHand2.6M order)
ROOTS = {"right": (MIDDLE_MCP, RIGHT_WRIST), "left": (HAND_JOINTS + MIDDLE_MCP, LEFT_WRIST)}
HANDS = {"right": slice(0, HAND_JOINTS), "left": slice(HAND_JOINTS, NUM_JOINTS)}
BRIGHTNESS_MIN = 10.0                # IntagHand: img.mean() < 10 is skipped (BGR uint8)


def _arrays(pred, gt, valid):
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  if pred.ndim != 3 or pred.shape[1:] != (NUM_JOINTS, 3) or gt.shape != pred.shape:
    raise ValueError(f"pred and gt must both be [N, 42, 3], got {pred.shape} and {gt.shape}")
  valid = np.asarray(valid, np.float64).reshape(pred.shape[:2]) > 0
  return pred, gt, valid


def image_brightness(path) -> float:
  """Mean over all pixels and the 3 channels of the image read as BGR uint8 (IntagHand's
  ``cv.imread(path).mean()``); raises naming the file when it cannot be read."""
  image = cv2.imread(str(path), cv2.IMREAD_COLOR)
  if image is None:
    raise errors.MissingFileError(f"image not readable for the brightness filter: {path}")
  return float(image.mean())


def intaghand_frames(hand_type, hand_type_valid, valid, brightness=None) -> np.ndarray:
  """[N] bool: interacting, hand type valid, both hands' wrist and middle MCP valid, and (when
  ``brightness`` [N] is given) ``brightness >= 10``."""
  valid = np.asarray(valid, np.float64) > 0
  keep = (hand_type_ids(hand_type) == 2) & (np.asarray(hand_type_valid, float) > 0)
  for root, wrist in ROOTS.values():
    keep &= valid[:, root] & valid[:, wrist]
  if brightness is not None:
    keep &= np.asarray(brightness, np.float64) >= BRIGHTNESS_MIN
  return keep


def intaghand_align(pred, gt):
  """Per hand: both minus their middle MCP, the prediction scaled by the GT's over its own
  wrist-to-middle-MCP length. Returns (pred, gt) aligned, [N, 42, 3]."""
  pred, gt = np.array(pred, np.float64), np.array(gt, np.float64)
  for name, (root, wrist) in ROOTS.items():
    hand = HANDS[name]
    p_root, g_root = pred[:, root].copy(), gt[:, root].copy()
    p_len = np.linalg.norm(pred[:, root] - pred[:, wrist], axis=-1)
    g_len = np.linalg.norm(gt[:, root] - gt[:, wrist], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
      scale = np.where(p_len > 0, g_len / p_len, np.nan)
    pred[:, hand] = (pred[:, hand] - p_root[:, None]) * scale[:, None, None]
    gt[:, hand] = gt[:, hand] - g_root[:, None]
  return pred, gt


def intaghand_mpjpe(pred, gt, valid) -> dict:
  """IntagHand's MPJPE (mm) over the frames given (select them with ``intaghand_frames``):
  ``mpjpe`` = (left + right) / 2 of each hand's errors pooled over frames and valid joints.
  A frame whose predicted wrist-to-MCP length is 0 cannot be scaled: ValueError."""
  pred, gt, valid = _arrays(pred, gt, valid)
  aligned, gt = intaghand_align(pred, gt)
  if not np.all(np.isfinite(aligned[valid])):
    bad = np.flatnonzero(~np.all(np.isfinite(aligned) | ~valid[..., None], axis=(1, 2)))
    raise errors.InputError(f"intaghand: frames {bad[:10].tolist()} have a predicted wrist at "
                            "their middle MCP (zero length): the scale is undefined")
  distances = np.linalg.norm(aligned - gt, axis=-1)
  result = {}
  for name, hand in HANDS.items():
    e, v = distances[:, hand], valid[:, hand]
    result[f"mpjpe_{name}"] = float(e[v].mean()) if v.any() else None
  both = [result["mpjpe_left"], result["mpjpe_right"]]
  result["mpjpe"] = None if None in both else (both[0] + both[1]) / 2
  result["num_frames"] = int(pred.shape[0])
  result["num_valid_joints"] = int(valid.sum())
  return result


def interwild_mpjpe(pred, gt, valid, hand_type, pred_rel_root_depth_mm=None) -> dict:
  """InterWild's MPJPE (single / interacting / all, mm) and MRRPE; see the module doc.

  ``pred_rel_root_depth_mm`` [N] (NaN: none) gives the predicted left wrist depth relative to
  the right one, from which MRRPE's predicted relative translation is formed as in
  ``metrics.OfficialMetrics`` (the predicted wrists' pixels back-projected); InterWild predicts
  that translation directly.
  """
  pred, gt, valid = _arrays(pred, gt, valid)
  hand_type = hand_type_ids(hand_type)
  valid = valid.copy()
  for name, wrist in (("right", RIGHT_WRIST), ("left", LEFT_WRIST)):
    valid[:, HANDS[name]] &= valid[:, wrist][:, None]
  aligned_p, aligned_g = pred.copy(), gt.copy()
  for name, wrist in (("right", RIGHT_WRIST), ("left", LEFT_WRIST)):
    aligned_p[:, HANDS[name]] -= pred[:, wrist][:, None]
    aligned_g[:, HANDS[name]] -= gt[:, wrist][:, None]
  errors = np.linalg.norm(aligned_p - aligned_g, axis=-1)

  def slot_means(rows):
    v = valid & rows[:, None]
    counts = v.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(counts > 0, np.where(v, errors, 0).sum(0) / np.maximum(counts, 1), np.nan)

  single = slot_means((hand_type == 0) | (hand_type == 1))
  inter = slot_means(hand_type == 2)

  def mean(x):
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None

  result = {"mpjpe_single": mean(single), "mpjpe_two": mean(inter),
            "mpjpe_all": mean(np.concatenate([single, inter])),
            "num_frames": int(pred.shape[0]), "num_valid_joints": int(valid.sum()),
            "mrrpe": None, "num_mrrpe": 0}
  if pred_rel_root_depth_mm is not None:
    rel = np.asarray(pred_rel_root_depth_mm, np.float64).reshape(-1)
    rows = (valid[:, RIGHT_WRIST] & valid[:, LEFT_WRIST] & np.isfinite(rel)
            & (pred[:, RIGHT_WRIST, 2] > 0) & (pred[:, LEFT_WRIST, 2] > 0))
    if rows.any():
      err = mrrpe_errors(pred[rows], gt[rows], rel[rows])
      result["mrrpe"], result["num_mrrpe"] = float(err.mean()), int(rows.sum())
  return result


def read_json(path, what: str, error=errors.InputError):
  """A user-given JSON file's content; a missing file is a FileNotFoundError naming ``what``
  (the flag) and the path, malformed JSON an ``error`` naming the path."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.MissingFileError(f"{what} file not found: {path}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise error(f"{path}: malformed JSON: {e}") from e


def read_root_depths(path) -> dict[str, np.ndarray]:
  """A RootNet-style results file: the InterHand2.6M release's
  ``rootnet_interhand2.6m_output_{split}.json`` (a list of ``{"annot_id": id, "abs_depth":
  [right_mm, left_mm]}``) or an object of annotation id -> [right_mm, left_mm]. Returns
  id -> float64 [2]; errors name the file and the entry."""
  raw = read_json(path, "--root_depth")
  if isinstance(raw, list):
    try:
      pairs = [(str(int(e["annot_id"])), e["abs_depth"]) for e in raw]
    except (KeyError, TypeError, ValueError) as e:
      raise errors.InputError(f"{path}: expected a list of {{'annot_id', 'abs_depth'}} entries "
                       f"({type(e).__name__}: {e})") from e
  elif isinstance(raw, dict):
    pairs = [(str(k), v) for k, v in raw.items()]
  else:
    raise errors.InputError(f"{path}: expected a list or an object, got {type(raw).__name__}")
  out = {}
  for key, value in pairs:
    depth = np.asarray(value, np.float64) if isinstance(value, list) else None
    if depth is None or depth.shape != (2,) or not np.all(np.isfinite(depth)) or np.any(
        depth <= 0):
      raise errors.InputError(f"{path}: id {key}: abs_depth must be [right_mm, left_mm] > 0, got "
                       f"{value!r}")
    out[key] = depth
  if not out:
    raise errors.InputError(f"{path}: no root depths")
  return out


def read_id_list(path) -> set[str]:
  """Annotation ids, one per line (InterWild's ``aid_human_annot_test.txt``); blank lines are
  skipped, anything else that is not an integer is an error naming the file and line."""
  ids = set()
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, start=1):
      text = line.strip()
      if not text:
        continue
      if not text.lstrip("-").isdigit():
        raise errors.InputError(f"{path}:{n}: not an annotation id: {text!r}")
      ids.add(str(int(text)))
  if not ids:
    raise errors.InputError(f"{path}: no annotation ids")
  return ids


__all__ = [
    "BRIGHTNESS_MIN", "FILTERS", "MIDDLE_MCP", "PROTOCOLS", "image_brightness",
    "intaghand_align", "intaghand_frames", "intaghand_mpjpe", "interwild_mpjpe", "read_id_list",
    "read_json", "read_root_depths",
]
