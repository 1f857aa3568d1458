"""HIC (Tzionas et al., IJCV 2016) in the format its users have, and the paper's Table 5 MPJPE.

The paper evaluates generalisation on HIC ("Following [35], 732 images were used", Sec. 4.1.1;
Table 5: InterNet 29.75, DIGIT 20.98, KPT 26.38, A2J-Transformer 23.51, DFL 20.71 mm MPJPE) with
its MPJPE: each hand aligned on its wrist, no scale (Sec. 4.1.2). The files users have are
InterWild's: ``HIC.json`` (COCO style; ``images``: ``id``, ``file_name``, ``width``, ``height``;
``annotations``: ``id``, ``image_id``, ``hand_type`` right | left | interacting,
``right_mano_path`` and ``left_mano_path``, relative to HIC.json's folder, ``null`` where that
hand has no fit) and per hand a ``.ply`` MANO mesh (778 vertices, camera frame, metres). The
camera is fixed: focal (525, 525), principal point (319.5, 239.5) for the 640 x 480 images
(``INTRINSICS``, for ``python -m dfl_jax.predict --focal 525,525 --princpt 319.5,239.5``).

HIC has no 3-D joints: InterWild scores it by meshes. Its joints here are regressed from the GT
meshes as IntagHand regresses MANO joints: MANO's 16-row joint regressor (``J_regressor`` of the
MANO model, which its licence does not let us ship: bring it as a ``[16, 778]`` ``.npy``, e.g.
``np.save('mano_regressor.npy', pickle.load(open('MANO_RIGHT.pkl','rb'), encoding='latin1')
['J_regressor'].toarray())``) applied to the vertices, plus the five fingertip vertices 745
(thumb), 317 (index), 444 (middle), 556 (ring), 673 (pinky); the same regressor for both hands,
as InterWild does. ``MANO_TO_IH`` maps MANO's order (0 wrist, 1-3 index, 4-6 middle, 7-9 pinky,
10-12 ring, 13-15 thumb, base to tip, then the tips) onto InterHand2.6M's per-hand order, so a
predictions file for HIC is the InterHand2.6M format keyed by HIC annotation ids.

Frames: the paper's 732 images are not listed anywhere we could find; every annotation with at
least one mesh is scored, and the figures are reported for interacting frames (both meshes:
``mpjpe_two``, what a two-hand method is compared on), single-hand frames (``mpjpe_single``) and
all (``mpjpe``: every present hand's 21 joints pooled). ``num_two`` says how many interacting
frames the file had (732 would be the paper's set).
"""

import os
import pathlib

import numpy as np
import plyfile

from dfl_jax import errors
from dfl_jax.conventions import LEFT_WRIST, NUM_JOINTS, RIGHT_WRIST
from dfl_jax.evaluation.predictions import load_predictions
from dfl_jax.evaluation.protocols import read_json
from dfl_jax.evaluation.report import write_report

INTRINSICS = {"focal": (525.0, 525.0), "princpt": (319.5, 239.5)}
NUM_VERTICES = 778
FINGERTIP_VERTICES = (745, 317, 444, 556, 673)   # thumb, index, middle, ring, pinky
# MANO joint k (16 regressed, then the 5 tips) -> InterHand2.6M per-hand index.
MANO_TO_IH = (20, 7, 6, 5, 11, 10, 9, 19, 18, 17, 15, 14, 13, 3, 2, 1, 0, 4, 8, 12, 16)
HANDS = (("right", 0, RIGHT_WRIST), ("left", 21, LEFT_WRIST))


def read_ply_vertices(path) -> np.ndarray:
  """[V, 3] float64 vertex positions of a PLY file (ASCII or binary); errors name the file."""
  try:
    data = plyfile.PlyData.read(os.fspath(path))
    vertex = data["vertex"]
    return np.stack([np.asarray(vertex[c], np.float64) for c in ("x", "y", "z")], axis=-1)
  except FileNotFoundError:
    raise errors.MissingFileError(f"HIC mesh not found: {path}") from None
  except (KeyError, ValueError, plyfile.PlyParseError) as e:
    raise errors.InputError(f"{path}: not a PLY mesh with x, y, z vertices ({e})") from e


def load_regressor(path) -> np.ndarray:
  """MANO's joint regressor [16, 778] from a ``.npy`` the user made (module doc)."""
  try:
    regressor = np.load(os.fspath(path), allow_pickle=False)
  except FileNotFoundError:
    raise errors.MissingFileError(f"--mano_regressor file not found: {path}") from None
  except ValueError as e:
    raise errors.InputError(f"{path}: not a .npy array ({e})") from e
  if regressor.shape != (16, NUM_VERTICES):
    raise errors.InputError(f"{path}: MANO's J_regressor must be [16, {NUM_VERTICES}], got "
                     f"{regressor.shape}")
  return regressor.astype(np.float64)


def mesh_joints(vertices, regressor) -> np.ndarray:
  """[21, 3] joints of one hand's mesh [778, 3] in InterHand2.6M's per-hand order."""
  vertices = np.asarray(vertices, np.float64)
  if vertices.shape != (NUM_VERTICES, 3):
    raise errors.InputError(f"a MANO mesh has {NUM_VERTICES} vertices, got {vertices.shape}")
  mano = np.concatenate([regressor @ vertices, vertices[list(FINGERTIP_VERTICES)]], axis=0)
  joints = np.zeros((21, 3))
  joints[list(MANO_TO_IH)] = mano
  return joints


def load_hic(hic_json, regressor) -> list[dict]:
  """Records of ``HIC.json``: annotation_id, image_id, file_name, hand_type, joint_cam [42, 3]
  mm (zeros for a hand without a mesh) and joint_valid [42] (1 where the hand has one)."""
  hic_json = pathlib.Path(hic_json)
  db = read_json(hic_json, "--hic")
  try:
    images = {int(im["id"]): im for im in db["images"]}
    annotations = db["annotations"]
  except (KeyError, TypeError) as e:
    raise errors.InputError(
        f"{hic_json}: expected COCO-style 'images' and 'annotations' ({e})") from e
  records = []
  for ann in annotations:
    try:
      aid, image_id, hand_type = int(ann["id"]), int(ann["image_id"]), str(ann["hand_type"])
    except (KeyError, TypeError, ValueError) as e:
      raise errors.InputError(f"{hic_json}: annotation {ann.get('id', '?')}: {e}") from e
    if hand_type not in ("right", "left", "interacting"):
      raise errors.InputError(f"{hic_json}: annotation {aid}: unknown hand_type {hand_type!r}")
    joints, valid = np.zeros((NUM_JOINTS, 3)), np.zeros(NUM_JOINTS)
    for name, offset, _ in HANDS:
      rel = ann.get(f"{name}_mano_path")
      if rel:
        vertices = read_ply_vertices(hic_json.parent / rel) * 1000.0  # m -> mm
        joints[offset:offset + 21] = mesh_joints(vertices, regressor)
        valid[offset:offset + 21] = 1
    if not valid.any():
      continue
    records.append({"annotation_id": aid, "image_id": image_id,
                    "file_name": images.get(image_id, {}).get("file_name"),
                    "hand_type": hand_type, "joint_cam": joints, "joint_valid": valid})
  if not records:
    raise errors.InputError(f"{hic_json}: no annotation has a mesh")
  return records


def hic_mpjpe(pred, gt, valid, hand_type) -> dict:
  """The paper's MPJPE on HIC (mm): each hand minus its wrist, no scale; the mean over every
  present hand's joints of interacting frames (``mpjpe_two``), of single-hand frames
  (``mpjpe_single``) and of all (``mpjpe``)."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  valid = np.asarray(valid, np.float64) > 0
  errors = np.zeros(valid.shape)
  for _, offset, wrist in HANDS:
    hand = slice(offset, offset + 21)
    errors[:, hand] = np.linalg.norm((pred[:, hand] - pred[:, wrist:wrist + 1])
                                     - (gt[:, hand] - gt[:, wrist:wrist + 1]), axis=-1)
  two = np.asarray(hand_type) == "interacting"

  def mean(rows):
    v = valid & rows[:, None]
    return float(errors[v].mean()) if v.any() else None

  return {"protocol": "hic", "mpjpe": mean(np.ones(len(two), bool)), "mpjpe_two": mean(two),
          "mpjpe_single": mean(~two), "num_frames": int(len(two)), "num_two": int(two.sum()),
          "num_single": int((~two).sum())}


def evaluate_hic_predictions(predictions_path, hic_json, regressor_path, out_dir=None) -> dict:
  """Scores a predictions file (InterHand2.6M format keyed by HIC annotation ids) on HIC and
  writes ``metrics.json`` (default: beside the predictions). Annotations without a prediction
  are counted (``num_missing``) and left out."""
  predictions_path = pathlib.Path(predictions_path)
  records = load_hic(hic_json, load_regressor(regressor_path))
  preds = load_predictions(predictions_path)
  scored = [r for r in records if str(r["annotation_id"]) in preds]
  if not scored:
    raise errors.InputError(f"{predictions_path}: no prediction has an annotation id of {hic_json} "
                     f"(first ids there: {[r['annotation_id'] for r in records[:5]]})")
  result = hic_mpjpe(np.stack([preds[str(r["annotation_id"])]["joints_cam_mm"] for r in scored]),
                     np.stack([r["joint_cam"] for r in scored]),
                     np.stack([r["joint_valid"] for r in scored]),
                     [r["hand_type"] for r in scored])
  result.update(num_annotations=len(records), num_scored=len(scored),
                num_missing=len(records) - len(scored),
                missing_ids=[r["annotation_id"] for r in records
                             if str(r["annotation_id"]) not in preds][:10],
                hic_json=os.fspath(pathlib.Path(hic_json).resolve()),
                predictions_file=os.fspath(predictions_path.resolve()))
  out_dir = predictions_path.resolve().parent if out_dir is None else pathlib.Path(out_dir)
  result["report"] = {k: os.fspath(v) for k, v in write_report(result, out_dir).items()}
  return result


__all__ = ["FINGERTIP_VERTICES", "evaluate_hic_predictions", "INTRINSICS", "MANO_TO_IH", "hic_mpjpe", "load_hic",
           "load_regressor", "mesh_joints", "read_ply_vertices"]
