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

``evaluate_predictions_file`` writes ``metrics.json`` (``OfficialMetrics.result()`` plus the
counts above) and ``pck.png`` (``report.py``) into its ``out_dir`` (default: the predictions
file's folder).
"""

import glob
import json
import os
import pathlib
import warnings

import numpy as np

from dfl_jax.conventions import NUM_JOINTS
from dfl_jax.evaluation import metrics as metrics_lib
from dfl_jax.evaluation.report import write_report
from input_pipeline import interhand

KINDS = ("data", "camera", "joint_3d")
NUM_IDS_SHOWN = 10


class PredictionsFormatError(ValueError):
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
    raise FileNotFoundError(f"annotations folder not found: {folder}")
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
      raise FileNotFoundError(
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
    raise FileNotFoundError(f"predictions file not found: {path}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise PredictionsFormatError(f"{path}: malformed JSON: {e}") from e
  if duplicates:
    raise PredictionsFormatError(f"{path}: duplicate keys {sorted(set(duplicates))[:10]}")
  return parse_predictions(raw, path)


# ---------------------------------------------------------------- scoring

def score_predictions(predictions: dict, records: list[dict]) -> dict:
  """Official-protocol metrics of ``predictions`` (``load_predictions``' dict, or its raw JSON
  content) against reader ``records``. Frames without a prediction are reported, not scored."""
  predictions = parse_predictions(predictions)
  by_id = {str(r["annotation_id"]): r for r in records}
  scored = [rid for rid in by_id if rid in predictions]
  missing = [rid for rid in by_id if rid not in predictions]
  unknown = [pid for pid in predictions if pid not in by_id]
  if not scored:
    raise ValueError(f"no prediction matches an annotation id ({len(predictions)} predictions, "
                     f"{len(by_id)} annotations; first prediction ids: "
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

  logits = None
  if any(p["hand_presence"] is not None for p, _ in rows):
    has = np.array([p["hand_presence"] is not None for p, _ in rows])
    probs = np.stack([p["hand_presence"] if p["hand_presence"] is not None else [0.5, 0.5]
                      for p, _ in rows])
    with np.errstate(divide="ignore"):
      logits = np.log(probs) - np.log1p(-probs)  # +-inf for 1 and 0: sigmoid gives them back
    type_valid = type_valid * has  # frames without a presence prediction are not counted
  rel_root = None
  if any(p["rel_root_depth_mm"] is not None for p, _ in rows):
    rel_root = np.array([np.nan if p["rel_root_depth_mm"] is None else p["rel_root_depth_mm"]
                         for p, _ in rows])

  accumulator = metrics_lib.OfficialMetrics()
  accumulator.update(pred, gt, valid, hand_type, pred_rel_root_depth_mm=rel_root,
                     presence_logits=logits, hand_type_valid=type_valid)
  result = accumulator.result()
  if result["num_mrrpe_skipped"]:
    warnings.warn(f"{result['num_mrrpe_skipped']} interacting frames with rel_root_depth_mm have "
                  f"non-positive wrist depths (root-relative joints_cam_mm?): left out of MRRPE, "
                  f"which needs absolute coordinates", EvaluationWarning, stacklevel=2)
  result.update({
      "num_annotations": len(by_id),
      "num_predictions": len(predictions),
      "num_scored": len(scored),
      "num_missing": len(missing),
      "missing_ids": missing[:NUM_IDS_SHOWN],
      "num_unknown": len(unknown),
      "unknown_ids": unknown[:NUM_IDS_SHOWN],
  })
  return result


def evaluate_predictions_file(predictions_path, annotations_dir, split: str = "test",
                              out_dir=None) -> dict:
  """Loads, scores and writes the report (``out_dir`` default: the predictions' folder)."""
  predictions_path = pathlib.Path(predictions_path)
  records, skipped = load_annotations(annotations_dir, split)
  predictions = load_predictions(predictions_path)
  result = score_predictions(predictions, records)
  result.update({
      "split": split,
      "predictions_file": os.fspath(predictions_path.resolve()),
      "annotations_dir": os.fspath(pathlib.Path(annotations_dir).resolve()),
      "num_annotations_skipped": len(skipped),
  })
  out_dir = predictions_path.resolve().parent if out_dir is None else pathlib.Path(out_dir)
  result["report"] = {k: os.fspath(v) for k, v in write_report(result, out_dir).items()}
  return result
