"""Predictions files scored on InterHand2.6M annotations with the official protocol.

The library behind ``python -m dfl_jax.evaluate --predictions PRED.json --annotations ANN_DIR``
(``cli.py``); docs/evaluation.md states the protocol.

ANN_DIR holds ``InterHand2.6M_{split}_{data,camera,joint_3d}.json`` (the official names; e.g.
``ROOT/annotations/test``); when those are absent, the one file each matching ``*data.json``,
``*camera.json`` and ``*joint_3d.json`` (e.g. the fixtures' ``test_interhand2.6m_*.json``).
The annotations are read with ``input_pipeline.interhand.InterHandReader`` (official joint_cam
and joint_valid with the wrist rule); images are not needed.

Predictions file (see ``load_predictions``): a JSON object keyed by annotation id (string)::

  {"326750": {"joints_cam_mm": [[x, y, z], ... 42 rows],   # camera coordinates, mm
              "hand_presence": [p_right, p_left],            # optional, probabilities in [0, 1]
              "rel_root_depth_mm": 57.8},                    # optional, Z_left - Z_right wrist
   ...}

``joints_cam_mm`` follows the InterHand2.6M joint order (right 0-20, wrist 20; left 21-41, wrist
41) and may be absolute or root-relative: MPJPE and PCK use only per-hand root-aligned errors.
MRRPE is computed the official way (see ``OfficialMetrics.update``) and needs absolute
coordinates back-projected with the GT root depths (``metrics.crop_to_camera``); frames with
root-relative joints are left out of it (``num_mrrpe_skipped``). Values of invalid joints are
not used but must be finite numbers. Annotations without a prediction are reported (warning,
``num_missing``, ``missing_ids``) and the metrics are over the predicted frames only; ids that
are not annotations of the split are reported too (``num_unknown``, ``unknown_ids``).

Protocols (``protocol``, ``protocols.py``; docs/evaluation.md): ``interhand`` (the official one,
the default; ``frame_filter='table4'`` keeps the paper's Table 4 filtered interacting set),
``intaghand`` (IntagHand's; ``gt_joints`` replaces the GT with MANO-fitted joints the user gives,
``images_dir`` enables its brightness filter) and ``interwild`` (InterWild's, on the frames of an
``id_list`` file). ``metrics.json`` names the protocol; ``intaghand`` reports one ``mpjpe``.

``evaluate_predictions_file`` writes ``metrics.json`` (the protocol's result plus the counts
above) and, for ``interhand``, ``pck.png`` (``report.py``) into its ``out_dir`` (default: the
predictions file's folder).
"""

import glob
import json
import os
import pathlib
import warnings

import numpy as np

from dfl_jax import errors, pose_correction
from dfl_jax.conventions import NUM_JOINTS
from dfl_jax.evaluation import metrics as metrics_lib
from dfl_jax.evaluation import protocols
from dfl_jax.evaluation.report import write_report
from input_pipeline import interhand

KINDS = ("data", "camera", "joint_3d")
NUM_IDS_SHOWN = 10


class PredictionsFormatError(errors.InputError):
  """A predictions file that is not valid JSON or not in the documented format."""


class EvaluationWarning(UserWarning):
  """Annotations without a prediction, predictions without an annotation, skipped MRRPE."""


# ---------------------------------------------------------------- inputs

def find_annotation_files(annotations_dir, split: str = "test") -> tuple[pathlib.Path, ...]:
  """(data, camera, joint_3d) JSON paths in ``annotations_dir``: the official
  ``InterHand2.6M_{split}_*.json``, else the single ``*data.json`` etc. (a file name holding
  ``_{split}_`` wins when several match)."""
  folder = pathlib.Path(annotations_dir)
  if not folder.is_dir():
    raise errors.MissingFileError(f"annotations folder not found: {folder}")
  official = [folder / f"InterHand2.6M_{split}_{kind}.json" for kind in KINDS]
  if all(path.is_file() for path in official):
    return tuple(official)
  found = []
  for kind in KINDS:
    matches = sorted(pathlib.Path(p) for p in glob.glob(os.path.join(glob.escape(
        os.fspath(folder)), f"*{kind}.json")))
    if kind == "data":  # *data.json does not match *joint_3d.json, but be explicit.
      matches = [m for m in matches if not m.name.endswith("joint_3d.json")]
    if len(matches) > 1:
      of_split = [m for m in matches if f"_{split}_" in m.name or m.name.startswith(f"{split}_")]
      matches = of_split if of_split else matches
    if len(matches) != 1:
      raise errors.MissingFileError(
          f"{folder}: expected InterHand2.6M_{split}_{kind}.json or exactly one *{kind}.json, "
          f"found {[m.name for m in matches] or 'none'}")
    found.append(matches[0])
  return tuple(found)


def load_annotations(annotations_dir, split: str = "test") -> tuple[list[dict], list]:
  """Records of all frames (right, left, interacting) of the split, and the reader's skipped
  ``(annotation_id, reason)`` list."""
  files = find_annotation_files(annotations_dir, split)
  reader = interhand.InterHandReader(*files, files[0].parent, frames="all", split=split,
                                     check_images=False)
  records = reader.read_all()
  return records, list(reader.skipped)


def _no_duplicate_keys(duplicates):
  def hook(pairs):
    seen = {}
    for key, value in pairs:
      if key in seen:
        duplicates.append(key)
      seen[key] = value
    return seen
  return hook


def _entry(value, key, source) -> dict:
  """One validated prediction: joints_cam_mm float64 [42, 3], hand_presence float64 [2] or
  None, rel_root_depth_mm float or None."""
  where = f"{source}: id {key!r}"
  if not isinstance(value, dict):
    raise PredictionsFormatError(f"{where}: expected an object with 'joints_cam_mm', got "
                                 f"{type(value).__name__}")
  if "joints_cam_mm" not in value:
    raise PredictionsFormatError(f"{where}: no 'joints_cam_mm'")

  def numbers(name, shape):
    try:
      array = np.asarray(value[name], dtype=np.float64)
    except (TypeError, ValueError):
      raise PredictionsFormatError(f"{where}: {name} must be numbers of shape {shape}") from None
    if array.shape != shape:
      raise PredictionsFormatError(f"{where}: {name} must have shape {shape}, got "
                                   f"{array.shape}")
    if not np.all(np.isfinite(array)):
      raise PredictionsFormatError(f"{where}: {name} has non-finite values")
    return array

  entry = {"joints_cam_mm": numbers("joints_cam_mm", (NUM_JOINTS, 3)),
           "hand_presence": None, "rel_root_depth_mm": None}
  if value.get("hand_presence") is not None:
    presence = numbers("hand_presence", (2,))
    if np.any((presence < 0) | (presence > 1)):
      raise PredictionsFormatError(f"{where}: hand_presence must be probabilities in [0, 1], "
                                   f"got {presence.tolist()}")
    entry["hand_presence"] = presence
  if value.get("rel_root_depth_mm") is not None:
    if isinstance(value["rel_root_depth_mm"], list) and len(value["rel_root_depth_mm"]) == 1:
      value = dict(value, rel_root_depth_mm=value["rel_root_depth_mm"][0])
    entry["rel_root_depth_mm"] = float(numbers("rel_root_depth_mm", ()))
  return entry


def parse_predictions(raw, source: str = "predictions") -> dict[str, dict]:
  """Validates a predictions object (the JSON's content; see ``load_predictions``); errors name
  ``source`` and the id."""
  if not isinstance(raw, dict):
    raise PredictionsFormatError(f"{source}: expected a JSON object keyed by annotation id, "
                                 f"got {type(raw).__name__}")
  return {str(key): _entry(value, str(key), source) for key, value in raw.items()}


def load_predictions(path) -> dict[str, dict]:
  """Reads a predictions file: a JSON object keyed by annotation id (string) ->
  ``{"joints_cam_mm": [[x, y, z]] * 42, "hand_presence": [p_right, p_left] (optional,
  probabilities in [0, 1]), "rel_root_depth_mm": Z_left_wrist - Z_right_wrist (optional)}``,
  camera coordinates in mm, absolute or root-relative. Other keys are ignored.

  Returns ``{id: {"joints_cam_mm": float64 [42, 3], "hand_presence": float64 [2] | None,
  "rel_root_depth_mm": float | None}}``. Raises FileNotFoundError, or PredictionsFormatError
  naming the file (and the id) for malformed JSON, duplicate ids, a wrong shape or a value out
  of range.
  """
  path = os.fspath(path)
  duplicates = []
  try:
    with open(path, "rb") as f:
      raw = json.loads(f.read(), object_pairs_hook=_no_duplicate_keys(duplicates))
  except FileNotFoundError:
    raise errors.MissingFileError(f"predictions file not found: {path}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise PredictionsFormatError(f"{path}: malformed JSON: {e}") from e
  if duplicates:
    raise PredictionsFormatError(f"{path}: duplicate keys {sorted(set(duplicates))[:10]}")
  return parse_predictions(raw, path)


def correct_poses(predictions: dict, template=None) -> dict:
  """A copy of validated ``predictions`` whose ``joints_cam_mm`` are pose-corrected
  (``dfl_jax.pose_correction``: template bone lengths, joint angles within their intervals, the
  wrists kept); ``template`` None is the default one."""
  if not predictions:
    return {}
  keys = sorted(predictions)
  corrected = pose_correction.correct_two_hands(
      np.stack([predictions[k]["joints_cam_mm"] for k in keys]), template)
  return {k: dict(predictions[k], joints_cam_mm=corrected[i]) for i, k in enumerate(keys)}


# ---------------------------------------------------------------- scoring

def load_gt_joints(path) -> dict[str, np.ndarray]:
  """User-given GT joints (e.g. regressed from the NeuralAnnot MANO fits): a JSON object of
  annotation id -> 42 x 3 camera mm in the InterHand2.6M joint order; errors name the file."""
  raw = protocols.read_json(path, "--gt_joints", PredictionsFormatError)
  if not isinstance(raw, dict) or not raw:
    raise PredictionsFormatError(f"{path}: expected a JSON object of annotation id -> 42 x 3")
  out = {}
  for key, value in raw.items():
    array = np.asarray(value, np.float64) if isinstance(value, list) else None
    if array is None or array.shape != (NUM_JOINTS, 3) or not np.all(np.isfinite(array)):
      raise PredictionsFormatError(f"{path}: id {key!r} must be 42 x 3 finite numbers")
    out[str(key)] = array
  return out


def select_records(records: list[dict], protocol: str = "interhand", frame_filter: str = "none",
                   id_list=None, images_dir=None) -> tuple[list[dict], dict]:
  """The records a protocol scores, and what was left out (counts by reason)."""
  if protocol not in protocols.PROTOCOLS or protocol == "hic":
    raise errors.InputError(f"--protocol must be one of {protocols.PROTOCOLS} (hic: hic.py, on "
                     f"HIC's own files), got {protocol!r} for InterHand2.6M annotations")
  if frame_filter not in protocols.FILTERS:
    raise errors.InputError(f"--filter must be one of {protocols.FILTERS}, got {frame_filter!r}")
  if frame_filter != "none" and protocol != "interhand":
    raise errors.InputError(f"--filter={frame_filter} is a frame filter of the interhand protocol; "
                     f"{protocol} has its own frames")
  dropped = {}
  if protocol == "interwild":
    if id_list is None:
      raise errors.InputError("--protocol=interwild needs --id_list (InterWild's "
                       "aid_human_annot_test.txt: the human-annotated test subset)")
    ids = protocols.read_id_list(id_list) if not isinstance(id_list, (set, frozenset)) else id_list
    kept = [r for r in records if str(r["annotation_id"]) in ids]
    dropped["not_in_id_list"] = len(records) - len(kept)
    return kept, dropped
  if protocol == "intaghand" or frame_filter == "table4":
    keep = protocols.intaghand_frames(
        [r["hand_type"] for r in records], [float(r["hand_type_valid"]) for r in records],
        np.stack([np.asarray(r["joint_valid"], np.float64) for r in records]) if records
        else np.zeros((0, NUM_JOINTS)))
    kept = [r for r, k in zip(records, keep) if k]
    if images_dir is not None:  # the images of the candidate frames only
      kept = [r for r in kept if protocols.image_brightness(
          pathlib.Path(images_dir) / r["file_name"]) >= protocols.BRIGHTNESS_MIN]
    dropped["not_intaghand_frames"] = len(records) - len(kept)
    return kept, dropped
  return list(records), dropped


def score_predictions(predictions: dict, records: list[dict], protocol: str = "interhand",
                      frame_filter: str = "none", id_list=None, images_dir=None,
                      gt_joints=None, root_depths=None) -> dict:
  """``protocol``'s metrics of ``predictions`` (``load_predictions``' dict, or its raw JSON
  content) against reader ``records`` (module doc). Frames without a prediction are reported,
  not scored. ``gt_joints`` (``load_gt_joints``; intaghand only) replaces the GT of the frames
  it has, all their joints valid; frames it lacks are left out, as IntagHand leaves out frames
  without MANO fits. ``root_depths`` (``protocols.read_root_depths``; interhand) are the wrist
  depths the file's joints were back-projected with, when not the GT's (RootNet): MRRPE uses
  them (``OfficialMetrics.update``)."""
  predictions = parse_predictions(predictions)
  if root_depths is not None and (protocol != "interhand"):
    raise errors.InputError(f"--root_depth is for --protocol=interhand (its MRRPE); {protocol} "
                            "uses the GT root depths")
  records, dropped = select_records(records, protocol, frame_filter, id_list, images_dir)
  if gt_joints is not None:
    if protocol != "intaghand":
      raise errors.InputError("--gt_joints replaces the GT of the intaghand protocol only")
    with_gt = [dict(r, joint_cam=gt_joints[str(r["annotation_id"])],
                    joint_valid=np.ones(NUM_JOINTS)) for r in records
               if str(r["annotation_id"]) in gt_joints]
    dropped["without_gt_joints"] = len(records) - len(with_gt)
    records = with_gt
  by_id = {str(r["annotation_id"]): r for r in records}
  scored = [rid for rid in by_id if rid in predictions]
  missing = [rid for rid in by_id if rid not in predictions]
  # Under a selection, predictions of the frames it leaves out are expected, not unknown.
  unknown = ([pid for pid in predictions if pid not in by_id]
             if protocol == "interhand" and frame_filter == "none" else [])
  if not scored:
    raise errors.InputError(f"no prediction matches an annotation id that {protocol} scores "
                     f"({len(predictions)} predictions, {len(by_id)} annotations after "
                     f"selection {dropped}; first prediction ids: "
                     f"{list(predictions)[:NUM_IDS_SHOWN]})")
  if missing:
    warnings.warn(f"{len(missing)} of {len(by_id)} annotations have no prediction (first: "
                  f"{missing[:NUM_IDS_SHOWN]}); the metrics are over the {len(scored)} "
                  f"predicted frames", EvaluationWarning, stacklevel=2)
  if unknown:
    warnings.warn(f"{len(unknown)} predictions have an id that is not an annotation of these "
                  f"files (first: {unknown[:NUM_IDS_SHOWN]}); ignored", EvaluationWarning,
                  stacklevel=2)

  rows = [(predictions[rid], by_id[rid]) for rid in scored]
  pred = np.stack([p["joints_cam_mm"] for p, _ in rows])
  gt = np.stack([np.asarray(r["joint_cam"], np.float64) for _, r in rows])
  valid = np.stack([np.asarray(r["joint_valid"], np.float64) for _, r in rows])
  hand_type = [r["hand_type"] for _, r in rows]
  type_valid = np.array([float(r["hand_type_valid"]) for _, r in rows])
  rel_root = None
  if any(p["rel_root_depth_mm"] is not None for p, _ in rows):
    rel_root = np.array([np.nan if p["rel_root_depth_mm"] is None else p["rel_root_depth_mm"]
                         for p, _ in rows])
  counts = {
      "num_annotations": len(by_id),
      "num_predictions": len(predictions),
      "num_scored": len(scored),
      "num_missing": len(missing),
      "missing_ids": missing[:NUM_IDS_SHOWN],
      "num_unknown": len(unknown),
      "unknown_ids": unknown[:NUM_IDS_SHOWN],
      "num_left_out": dropped,
  }
  if protocol == "intaghand":
    result = protocols.intaghand_mpjpe(pred, gt, valid)
    result["gt"] = "gt_joints" if gt_joints is not None else "joint_3d"
    result["brightness_filter"] = images_dir is not None
    return {"protocol": "intaghand", **result, **counts}
  if protocol == "interwild":
    result = protocols.interwild_mpjpe(pred, gt, valid, hand_type, rel_root)
    return {"protocol": "interwild", **result, **counts}

  logits = None
  if any(p["hand_presence"] is not None for p, _ in rows):
    has = np.array([p["hand_presence"] is not None for p, _ in rows])
    probs = np.stack([p["hand_presence"] if p["hand_presence"] is not None else [0.5, 0.5]
                      for p, _ in rows])
    with np.errstate(divide="ignore"):
      logits = np.log(probs) - np.log1p(-probs)  # +-inf for 1 and 0: sigmoid gives them back
    type_valid = type_valid * has  # frames without a presence prediction are not counted

  abs_depth = None
  if root_depths is not None:
    absent = [rid for rid in scored if rid not in root_depths]
    if absent:
      raise errors.InputError(f"--root_depth has no depth for annotation ids "
                              f"{absent[:NUM_IDS_SHOWN]} ({len(absent)} scored frames)")
    abs_depth = np.stack([root_depths[rid] for rid in scored])
  accumulator = metrics_lib.OfficialMetrics()
  accumulator.update(pred, gt, valid, hand_type, pred_rel_root_depth_mm=rel_root,
                     presence_logits=logits, hand_type_valid=type_valid,
                     abs_root_depth_mm=abs_depth)
  result = accumulator.result()
  if result["num_mrrpe_skipped"]:
    warnings.warn(f"{result['num_mrrpe_skipped']} interacting frames with rel_root_depth_mm have "
                  f"non-positive wrist depths (root-relative joints_cam_mm?): left out of MRRPE, "
                  f"which needs absolute coordinates", EvaluationWarning, stacklevel=2)
  result.update(counts, filter=frame_filter,
                root_depth="gt" if root_depths is None else "given")
  if frame_filter == "table4":
    result["brightness_filter"] = images_dir is not None
  return result


def evaluate_predictions_file(predictions_path, annotations_dir, split: str = "test",
                              out_dir=None, protocol: str = "interhand",
                              frame_filter: str = "none", id_list=None, images_dir=None,
                              gt_joints=None, root_depth=None, correct_pose=False,
                              template=None) -> dict:
  """Loads, scores under ``protocol`` and writes the report (``out_dir`` default: the
  predictions' folder); ``gt_joints`` and ``root_depth`` are paths (``load_gt_joints``,
  ``protocols.read_root_depths``). ``correct_pose`` scores the pose-corrected joints
  (``correct_poses``; ``template`` a path, None the default template)."""
  predictions_path = pathlib.Path(predictions_path)
  records, skipped = load_annotations(annotations_dir, split)
  predictions = load_predictions(predictions_path)
  if correct_pose:
    predictions = correct_poses(
        predictions, pose_correction.load_template(template) if template else None)
  result = score_predictions(predictions, records, protocol, frame_filter, id_list, images_dir,
                             load_gt_joints(gt_joints) if gt_joints else None,
                             protocols.read_root_depths(root_depth) if root_depth else None)
  result.update({
      "split": split,
      "predictions_file": os.fspath(predictions_path.resolve()),
      "annotations_dir": os.fspath(pathlib.Path(annotations_dir).resolve()),
      "num_annotations_skipped": len(skipped),
      "pose_correction": (os.fspath(template) if template else "default template")
                         if correct_pose else None,
  })
  out_dir = predictions_path.resolve().parent if out_dir is None else pathlib.Path(out_dir)
  result["report"] = {k: os.fspath(v) for k, v in write_report(result, out_dir).items()}
  return result
