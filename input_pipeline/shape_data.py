"""Im2Hands' examples from the synthetic world: the crop, the keypoints and each hand's shape.

An example is one annotation of a synthetic InterHand2.6M tree (``input_pipeline.synthetic``
writes the hands' solids beside the images, ``shapes/{split}/Capture{c}/frame{i}.npz``):

- ``image`` [S, S, 3] uint8: the evaluation crop of DFL's pipeline (``crop_box`` onto S pixels,
  no augmentation), so that DFL's keypoints and these crops agree;
- ``joints`` [42, 3] camera mm and ``joint_valid`` [42];
- ``focal``, ``princpt`` [2]: the crop's own pinhole camera (the crop is a scale and a shift of
  the image: focal * s, (princpt - box corner) * s), which I's attention and R's feature cloud
  project with;
- ``points`` [2, N, 3] camera mm and ``inside`` [2, N]: each hand's occupancy training queries,
  right then left (``hand_shape.occupancy_samples``: uniform in the padded box and near the
  surface, labelled by the exact inside test), the hand without its forearm, as HALO trains;
- ``hand_valid`` [2]: the hand is in the frame (its solid exists and its wrist is annotated).

``build`` writes a split as one compressed ``.npz`` (derived, cached arrays: rebuilding them from
the raw tree costs the marching cubes of each hand, a fraction of a second), ``load`` reads it;
``solids_in_camera`` gives the evaluation its ground-truth shapes.
"""

import pathlib

import cv2
import numpy as np

from dfl_jax import conventions, errors
from input_pipeline import geometry, hand_shape, interhand, synthetic_render

# The near-surface queries start on a marching-cubes mesh of this resolution and move by
# N(0, 5 mm) per axis, so a 3 mm mesh (8x fewer grid points than the 1.5 mm default, about 0.1 s
# a hand) changes their spread, not their labels, which come from the exact inside test.
SAMPLE_RESOLUTION_MM = 3.0
KEYS = ("image", "joints", "joint_valid", "focal", "princpt", "points", "inside", "hand_valid",
        "annotation_id")


def crop_camera(focal, princpt, crop_box, size: int):
  """(focal, princpt) in crop pixels of the crop of ``crop_box`` (xywh) resized to ``size``."""
  x, y, w, h = np.asarray(crop_box, np.float64)
  s = np.array([size / w, size / h])
  return np.asarray(focal, np.float64) * s, (np.asarray(princpt, np.float64) - [x, y]) * s


def solids_in_camera(record, root, split):
  """{'right': Solid or None, 'left': ...} of a record's frame in its camera's coordinates (mm),
  without forearms."""
  path = synthetic_render.shape_path(root, split, record["capture"], record["frame_idx"])
  if not path.is_file():
    raise errors.MissingFileError(f"{path}: no hand shape file for annotation "
                                  f"{record['annotation_id']} (render the data with shapes: "
                                  "python -m input_pipeline.synthetic)")
  rot = np.asarray(record["camrot"], np.float64)
  shift = -rot @ np.asarray(record["campos"], np.float64)      # X_cam = R (X - campos)
  out = {}
  for side, solid in hand_shape.load(path).items():
    out[side] = None if solid is None else solid.hand_only().transformed(rot, shift)
  return out


def example(record, root, split, size: int, rng, num_uniform=1024, num_near=1024,
            resolution_mm=SAMPLE_RESOLUTION_MM):
  """The arrays of one annotation record (``interhand.InterHandReader``'s)."""
  solids = solids_in_camera(record, root, split)
  image = interhand.load_image(record["image_path"])
  affine = geometry.crop_affine(record["crop_box"], size)
  crop = cv2.warpAffine(image, affine.astype(np.float32), (size, size), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  focal, princpt = crop_camera(record["focal"], record["princpt"], record["crop_box"], size)
  n = num_uniform + num_near
  points = np.zeros((2, n, 3), np.float32)
  inside = np.zeros((2, n), bool)
  valid = np.asarray(record["joint_valid"], np.float32).reshape(conventions.NUM_JOINTS)
  hand_valid = np.zeros(2, np.float32)
  for h, side in enumerate(conventions.HANDS):
    solid = solids[side]
    if solid is None or valid[conventions.WRISTS[h]] <= 0:
      continue
    p, i = hand_shape.occupancy_samples(solid, rng, num_uniform, num_near,
                                        resolution=resolution_mm)
    points[h], inside[h], hand_valid[h] = p, i, 1.0
  return {"image": crop, "joints": np.asarray(record["joint_cam"], np.float32),
          "joint_valid": valid, "focal": focal.astype(np.float32),
          "princpt": princpt.astype(np.float32), "points": points, "inside": inside,
          "hand_valid": hand_valid, "annotation_id": np.int64(record["annotation_id"])}


def records(root, split):
  """The annotation records of a split of a synthetic tree."""
  return list(interhand.InterHandReader.from_root(root, split))


def build(root, split, out_path, size: int, seed: int = 0, limit: int | None = None,
          num_uniform: int = 1024, num_near: int = 1024,
          resolution_mm: float = SAMPLE_RESOLUTION_MM):
  """Writes the split's examples (the first ``limit``) to ``out_path`` (.npz); returns it."""
  rng = np.random.default_rng(seed)
  rows = [example(r, root, split, size, rng, num_uniform, num_near, resolution_mm)
          for r in records(root, split)[:limit]]
  if not rows:
    raise errors.InputError(f"{root} ({split}): no annotation to build shape examples from")
  out_path = pathlib.Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_path.with_name(out_path.name + ".tmp")
  with open(tmp, "wb") as f:
    np.savez_compressed(f, **{k: np.stack([r[k] for r in rows]) for k in KEYS})
  tmp.replace(out_path)
  return out_path


def load(path):
  """The arrays ``build`` wrote, each with a leading example axis."""
  try:
    with np.load(path) as z:
      return {k: z[k] for k in KEYS}
  except (OSError, KeyError, ValueError) as e:
    raise errors.InputError(f"{path}: not a shape examples file ({e})") from None
