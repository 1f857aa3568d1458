"""Reader of InterHand2.6M v1.0 in its official layout and JSON schema (issue: data).

Official layout (https://mks0601.github.io/InterHand2.6M/)::

  ROOT/annotations/{train,val,test}/InterHand2.6M_{split}_{data,camera,joint_3d}.json
  ROOT/images/{split}/Capture*/<seq>/cam*/image*.jpg   # data.json file_name, relative

``InterHandReader(data_json, camera_json, joint_3d_json, image_dir)`` reads any three files
(the test fixtures are named ``test_interhand2.6m_*.json`` with the images beside them);
``InterHandReader.from_root(root, split, annotation=...)`` finds them in the official layout.

Per annotation it yields a plain dict (the record contract the TFDS builder and the tf.data
pipeline use), computed as the official loader does (facebookresearch/InterHand2.6M,
``data/InterHand2.6M/dataset.py``, ``Dataset.__init__``):

- ``joint_cam = R @ (joint_world - campos)``; ``joint_img`` its pinhole projection;
- ``joint_valid`` from data.json, each hand multiplied by its wrist's validity (right wrist 20,
  left wrist 41): "if root is not valid -> root-relative 3D pose is also not valid";
- ``crop_box = process_bbox(bbox)``: pad to 1:1 about the centre, enlarge 1.25x.

Record fields: annotation_id, image_id, file_name (as in the JSON), image_path (absolute),
depth_path and parts_path (the synthetic world's ``ROOT/{depth,parts}/{split}/<file_name with
.png>`` when such a file exists beside the official layout, else ''),
image_width, image_height, capture, subject (-1 if absent), seq_name, camera, frame_idx,
hand_type ('right' | 'left' | 'interacting'), hand_type_valid float32, bbox float32[4] (xywh
as in the JSON), crop_box float32[4] (xywh), joint_world float32[42, 3] mm, joint_cam
float32[42, 3] mm, joint_img float32[42, 2] px, joint_valid float32[42], focal float32[2],
princpt float32[2], campos float32[3], camrot float32[3, 3].

Annotation source (H = human, M = machine). The v1.0 JSON carries no per-frame H/M marker (the
fixture frames, genuine v1.0, have none). The author merged the subsets in v1.0: "As many people
got confused between all/machine_annot/human_annot and train/test/val, I've decided to provide
only all split ... all json files are `all` split" (facebookresearch/InterHand2.6M issue #68).
The subsets exist only as folders of the v0.0 release, which the official loader of that time
reads through ``annot_subset`` in (all, human_annot, machine_annot)
(``osp.join(annot_path, annot_subset, 'InterHand2.6M_' + mode + '_data.json')``; README:
"`all`: Combination of the human and machine annotation. `Train (H+M)` in the paper"), and
which mmpose's InterHand2.6M annotation archive also uses (open-mmlab/mmpose,
docs/en/tasks/3d_hand_keypoint.md; whether its files are v0.0 or v1.0 is not stated there). So
``from_root`` selects by folder:

- 'H+M' (default): everything in the split's files: ``annotations/{split}/`` (v1.0), else
  ``annotations/all/``, else the one of ``human_annot``/``machine_annot`` that has the split
  (v0.0 val is machine-annotated only);
- 'H': ``annotations/human_annot/InterHand2.6M_{split}_*.json``;
- 'M': ``annotations/machine_annot/InterHand2.6M_{split}_*.json``.

Bad input. A JSON file that cannot be parsed, or lacks its top-level structure, raises
``InterHandFormatError`` naming the file. A record with missing keys, a malformed or zero-area
bbox, an unknown hand_type, no camera or joint_3d entry, non-finite camera parameters or an
image file that does not exist is skipped: an ``InterHandDataWarning`` names the JSON file, the
annotation id and the reason, and ``reader.skipped`` lists ``(annotation_id, reason)``. A valid
joint with NaN/inf or placeholder ([1, 1, 1]) world coordinates, or a non-positive camera depth,
is made invalid instead (warned, listed in ``reader.invalidated``); if it is a wrist, its hand
goes with it by the wrist rule. Invalid joints keep their placeholder coordinates, except that
non-finite values become 0. Both lists are rebuilt on every pass over the reader. Decoding
(grey or truncated JPEGs) is left to ``load_image``, which the builder calls.
"""

import collections
import json
import os
import pathlib
import warnings
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from dfl_jax import conventions, errors
from input_pipeline import geometry

NUM_JOINTS = conventions.NUM_JOINTS
ROOT_JOINT_IDX = dict(zip(conventions.HANDS, conventions.WRISTS))
JOINT_TYPE = conventions.HAND_SLICES
HAND_TYPES = ("right", "left", "interacting")
ANNOTATIONS = ("H", "M", "H+M")
FRAMES = {"single": ("right", "left"), "interacting": ("interacting",),
          "all": HAND_TYPES}
SPLITS = ("train", "val", "test")
# v0.0 / mmpose folders of the annotation subsets (see the module docstring).
SUBSET_FOLDERS = {"H": "human_annot", "M": "machine_annot", "H+M": "all"}
ANNOTATION_KEYS = ("id", "image_id", "bbox", "joint_valid", "hand_type", "hand_type_valid")
IMAGE_KEYS = ("file_name", "width", "height", "capture", "seq_name", "camera", "frame_idx")
CAMERA_KEYS = ("campos", "camrot", "focal", "princpt")
# world_coord of a joint that was not annotated (the fixture frames have it on invalid joints).
PLACEHOLDER = 1.0


def companion_path(root, split, file_name, kind):
  """``root/kind/split/<file_name with .png>``: the synthetic world's depth or parts PNG of an
  image (kind 'depth' or 'parts'), beside the official layout."""
  return pathlib.Path(root) / kind / split / (os.path.splitext(file_name)[0] + ".png")


class InterHandFormatError(errors.InputError):
  """A file that cannot be read at all (malformed JSON, wrong top-level structure, bad image)."""


class InterHandDataWarning(UserWarning):
  """A record skipped, or a joint made invalid, because of bad input."""


class _Skip(Exception):
  """Internal: the record at hand is skipped for the reason given."""


def load_json(path) -> Any:
  """json.load with an error naming the file when it is not valid JSON."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      return json.loads(f.read())
  except FileNotFoundError:
    raise errors.MissingFileError(f"InterHand2.6M annotation file not found: {path}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InterHandFormatError(f"{path}: malformed JSON: {e}") from e


def load_image(path) -> np.ndarray:
  """Decodes an image file into uint8 [H, W, 3] RGB (grey images become three equal channels).

  Raises FileNotFoundError for a missing file and InterHandFormatError, naming the file, for an
  empty, corrupt or truncated one. cv2 decodes a truncated JPEG without an error (the missing
  rows come out grey), so a JPEG must also end with its end-of-image marker FF D9.
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise errors.MissingFileError(f"image file not found: {path}") from None
  if not data:
    raise InterHandFormatError(f"{path}: empty image file")
  if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9"):
    raise InterHandFormatError(f"{path}: truncated JPEG (no end-of-image marker FF D9)")
  # As the official load_img: IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION, then BGR -> RGB.
  image = cv2.imdecode(np.frombuffer(data, np.uint8),
                       cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  if image is None:
    raise InterHandFormatError(f"{path}: cannot decode image (corrupt or not an image)")
  if image.ndim == 2:
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
  else:
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  return np.ascontiguousarray(image, dtype=np.uint8)


def annotation_dir(root, split: str, annotation: str = "H+M") -> pathlib.Path:
  """The folder holding ``InterHand2.6M_{split}_*.json`` for an annotation subset (see the
  module docstring for the rules)."""
  if split not in SPLITS:
    raise errors.ConfigError(f"split must be one of {SPLITS}, got {split!r}")
  if annotation not in ANNOTATIONS:
    raise errors.ConfigError(f"annotation must be one of {ANNOTATIONS}, got {annotation!r}")
  annotations = pathlib.Path(root) / "annotations"

  def has_split(folder):
    return (folder / f"InterHand2.6M_{split}_data.json").is_file()

  if annotation == "H+M":
    candidates = [annotations / split, annotations / "all"]
    for folder in candidates:
      if has_split(folder):
        return folder
    subsets = [annotations / SUBSET_FOLDERS[a] for a in ("H", "M")]
    present = [folder for folder in subsets if has_split(folder)]
    if len(present) == 1:
      return present[0]
    raise errors.MissingFileError(
        f"no H+M annotations of split {split!r} under {annotations}: looked for "
        f"InterHand2.6M_{split}_data.json in {split}/ (v1.0) and all/ (v0.0)"
        + (" (human_annot/ and machine_annot/ both exist, but no all/ to merge them)"
           if present else ""))
  folder = annotations / SUBSET_FOLDERS[annotation]
  if not has_split(folder):
    raise errors.MissingFileError(
        f"no {annotation} annotations of split {split!r}: {folder} has no "
        f"InterHand2.6M_{split}_data.json. InterHand2.6M v1.0 has no per-frame H/M marker; the "
        f"H and M subsets come as the human_annot/ and machine_annot/ folders of the v0.0 "
        f"release (or of mmpose's InterHand2.6M annotation archive)")
  return folder


class InterHandReader:
  """Iterates over the annotations of one set of InterHand2.6M JSON files as record dicts.

  data_json, camera_json, joint_3d_json: the three files of one split (official schema);
  image_dir: the folder ``file_name`` is relative to (``ROOT/images/{split}`` officially);
  frames: 'single' (hand_type right or left), 'interacting' or 'all';
  annotation: the H/M subset these files hold, a label here ('H', 'M' or 'H+M'; from_root
  selects the files by it);
  check_images: skip records whose image file does not exist.

  Records outside the selected frames are checked for their keys and hand_type only.
  """

  def __init__(self, data_json, camera_json, joint_3d_json, image_dir, *, frames: str = "all",
               annotation: str = "H+M", split: str | None = None, check_images: bool = True):
    if frames not in FRAMES:
      raise errors.ConfigError(f"frames must be one of {tuple(FRAMES)}, got {frames!r}")
    if annotation not in ANNOTATIONS:
      raise errors.ConfigError(f"annotation must be one of {ANNOTATIONS}, got {annotation!r}")
    self.data_json = os.fspath(data_json)
    self.camera_json = os.fspath(camera_json)
    self.joint_3d_json = os.fspath(joint_3d_json)
    self.image_dir = os.path.abspath(os.fspath(image_dir))
    self.frames = frames
    self.annotation = annotation
    self.split = split
    self.check_images = check_images
    self.skipped: list[tuple[Any, str]] = []
    self.invalidated: list[tuple[Any, tuple[int, ...], str]] = []

    data = load_json(self.data_json)
    if (not isinstance(data, dict) or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)):
      raise InterHandFormatError(
          f"{self.data_json}: not an InterHand2.6M data file (expected a dict with lists "
          f"'images' and 'annotations')")
    self._annotations = data["annotations"]
    self._images = {}
    for n, image in enumerate(data["images"]):
      try:
        self._images[int(image["id"])] = image
      except (TypeError, ValueError, KeyError):
        warnings.warn(f"{self.data_json}: images[{n}] has no integer 'id'; ignored "
                      f"(annotations referring to it are skipped)", InterHandDataWarning,
                      stacklevel=2)
    self._cameras = load_json(self.camera_json)
    if not isinstance(self._cameras, dict):
      raise InterHandFormatError(f"{self.camera_json}: not an InterHand2.6M camera file "
                                 f"(expected a dict keyed by capture id)")
    self._joints = load_json(self.joint_3d_json)
    if not isinstance(self._joints, dict):
      raise InterHandFormatError(f"{self.joint_3d_json}: not an InterHand2.6M joint_3d file "
                                 f"(expected a dict keyed by capture id)")

  @classmethod
  def from_root(cls, root, split: str, annotation: str = "H+M", **kwargs) -> "InterHandReader":
    """The reader of ``split`` in the official layout under ``root`` (see annotation_dir)."""
    folder = annotation_dir(root, split, annotation)
    files = [folder / f"InterHand2.6M_{split}_{kind}.json"
             for kind in ("data", "camera", "joint_3d")]
    image_dir = pathlib.Path(root) / "images" / split
    return cls(*files, image_dir, annotation=annotation, split=split, **kwargs)

  @property
  def num_annotations(self) -> int:
    """Annotations in data.json, before any selection or skipping."""
    return len(self._annotations)

  def __iter__(self) -> Iterator[dict]:
    return self.records()

  def records(self) -> Iterator[dict]:
    """Yields the records of the selected frames in data.json order; refills skipped and
    invalidated."""
    self.skipped = []
    self.invalidated = []
    for n, ann in enumerate(self._annotations):
      aid = ann.get("id") if isinstance(ann, dict) else None
      try:
        record = self._record(n, ann)
      except _Skip as e:
        self._skip(n, aid, str(e))
        continue
      if record is not None:
        yield record

  def read_all(self) -> list[dict]:
    """All selected records as a list (small files only)."""
    return list(self.records())

  def skip_counts(self) -> collections.Counter:
    """How many records were skipped for each reason (the reason up to its first colon)."""
    return collections.Counter(reason.split(":")[0] for _, reason in self.skipped)

  # ---------------------------------------------------------------- internals

  def _name(self, n, aid):
    return f"annotation {aid}" if aid is not None else f"annotations[{n}] (no id)"

  def _skip(self, n, aid, reason):
    self.skipped.append((aid, reason))
    warnings.warn(f"{self.data_json}: {self._name(n, aid)}: skipped: {reason}",
                  InterHandDataWarning, stacklevel=3)

  def _invalidate(self, n, aid, joints, reason):
    joints = tuple(int(j) for j in joints)
    self.invalidated.append((aid, joints, reason))
    warnings.warn(f"{self.data_json}: {self._name(n, aid)}: joints {list(joints)} made "
                  f"invalid: {reason}", InterHandDataWarning, stacklevel=4)

  def _record(self, n, ann):
    if not isinstance(ann, dict):
      raise _Skip(f"malformed annotation: not a dict but {type(ann).__name__}")
    missing = [k for k in ANNOTATION_KEYS if k not in ann]
    if missing:
      raise _Skip(f"missing keys: {missing}")
    try:
      aid, image_id = int(ann["id"]), int(ann["image_id"])
    except (TypeError, ValueError):
      raise _Skip(f"malformed id: id {ann['id']!r}, image_id {ann['image_id']!r}") from None
    hand_type = ann["hand_type"]
    if hand_type not in HAND_TYPES:
      raise _Skip(f"unknown hand_type: {hand_type!r} (expected one of {HAND_TYPES})")
    if hand_type not in FRAMES[self.frames]:
      return None

    image = self._images.get(image_id)
    if image is None:
      raise _Skip(f"image_id not found: {image_id} is not in 'images'")
    missing = [k for k in IMAGE_KEYS if k not in image]
    if missing:
      raise _Skip(f"missing keys: image {image_id} lacks {missing}")
    try:
      width, height = int(image["width"]), int(image["height"])
      capture, frame_idx = int(image["capture"]), int(image["frame_idx"])
      subject = int(image.get("subject", -1))
    except (TypeError, ValueError) as e:
      raise _Skip(f"malformed image entry: {e}") from None
    if width <= 0 or height <= 0:
      raise _Skip(f"malformed image entry: size {width}x{height}")
    camera = str(image["camera"])
    file_name = str(image["file_name"])

    bbox = _float_array(ann["bbox"], (4,), "bbox")
    if not np.all(np.isfinite(bbox)):
      raise _Skip(f"non-finite bbox: {bbox.tolist()}")
    if bbox[2] <= 0 or bbox[3] <= 0:
      raise _Skip(f"zero-area bbox: {bbox.tolist()} (xywh)")
    joint_valid = _float_array(ann["joint_valid"], (NUM_JOINTS,), "joint_valid")
    if not np.all(np.isfinite(joint_valid)):
      raise _Skip("malformed joint_valid: non-finite entries")
    joint_valid = (joint_valid > 0).astype(np.float64)
    try:
      hand_type_valid = float(ann["hand_type_valid"])
    except (TypeError, ValueError):
      raise _Skip(f"malformed hand_type_valid: {ann['hand_type_valid']!r}") from None

    cam = self._camera(capture, camera)
    joint_world = self._joint_world(capture, frame_idx)

    image_path = os.path.join(self.image_dir, file_name)
    if self.check_images and not os.path.isfile(image_path):
      raise _Skip(f"image file not found: {image_path}")

    # As the official Dataset.__init__: world -> camera -> pixels.
    joint_cam = geometry.world_to_camera(joint_world, cam["camrot"], cam["campos"])
    joint_img = geometry.camera_to_pixel(joint_cam, cam["focal"], cam["princpt"])
    finite = (np.all(np.isfinite(joint_world), -1) & np.all(np.isfinite(joint_cam), -1)
              & np.all(np.isfinite(joint_img), -1))
    checks = (
        ("NaN/inf coordinates", ~finite),
        ("placeholder coordinates [1, 1, 1]", np.all(joint_world == PLACEHOLDER, -1)),
        ("non-positive camera depth", finite & (joint_cam[:, 2] <= 0)),
    )
    for reason, bad in checks:
      bad = bad & (joint_valid > 0)
      if np.any(bad):
        self._invalidate(n, aid, np.flatnonzero(bad), reason)
        joint_valid[bad] = 0.0
    # "if root is not valid -> root-relative 3D pose is also not valid" (official loader).
    for hand in ("right", "left"):
      joint_valid[JOINT_TYPE[hand]] *= joint_valid[ROOT_JOINT_IDX[hand]]
    for array in (joint_world, joint_cam, joint_img):
      array[~np.isfinite(array)] = 0.0

    f32 = np.float32
    return {
        "annotation_id": aid,
        "image_id": image_id,
        "file_name": file_name,
        "image_path": image_path,
        "depth_path": self._companion(file_name, "depth"),
        "parts_path": self._companion(file_name, "parts"),
        "image_width": width,
        "image_height": height,
        "capture": capture,
        "subject": subject,
        "seq_name": str(image["seq_name"]),
        "camera": camera,
        "frame_idx": frame_idx,
        "hand_type": hand_type,
        "hand_type_valid": f32(hand_type_valid),
        "bbox": bbox.astype(f32),
        "crop_box": geometry.process_bbox(bbox).astype(f32),
        "joint_world": joint_world.astype(f32),
        "joint_cam": joint_cam.astype(f32),
        "joint_img": joint_img.astype(f32),
        "joint_valid": joint_valid.astype(f32),
        "focal": cam["focal"].astype(f32),
        "princpt": cam["princpt"].astype(f32),
        "campos": cam["campos"].astype(f32),
        "camrot": cam["camrot"].astype(f32),
    }

  def _companion(self, file_name, kind):
    """ROOT/kind/split/<file_name with .png> if image_dir is ROOT/images/split and it exists."""
    images = pathlib.Path(self.image_dir)
    if images.parent.name != "images":
      return ""
    path = companion_path(images.parent.parent, images.name, file_name, kind)
    return str(path) if path.is_file() else ""

  def _camera(self, capture, camera):
    """The camera of (capture, camera) as float64 arrays; cameras[capture][key][camera]."""
    per_capture = self._cameras.get(str(capture))
    if not isinstance(per_capture, dict):
      raise _Skip(f"missing camera: capture {capture} not in {self.camera_json}")
    shapes = {"campos": (3,), "camrot": (3, 3), "focal": (2,), "princpt": (2,)}
    cam = {}
    for key in CAMERA_KEYS:
      values = per_capture.get(key)
      if not isinstance(values, dict) or camera not in values:
        raise _Skip(f"missing camera: no {key} of capture {capture} camera {camera} in "
                    f"{self.camera_json}")
      cam[key] = _float_array(values[camera], shapes[key], f"camera {key}")
    if not all(np.all(np.isfinite(v)) for v in cam.values()):
      raise _Skip(f"non-finite camera parameters: capture {capture} camera {camera} in "
                  f"{self.camera_json}")
    return cam

  def _joint_world(self, capture, frame_idx):
    """joints[capture][frame_idx]['world_coord'] as float64 [42, 3]."""
    per_capture = self._joints.get(str(capture))
    entry = per_capture.get(str(frame_idx)) if isinstance(per_capture, dict) else None
    if not isinstance(entry, dict) or "world_coord" not in entry:
      raise _Skip(f"missing joint_3d: no world_coord of capture {capture} frame {frame_idx} "
                  f"in {self.joint_3d_json}")
    return _float_array(entry["world_coord"], (NUM_JOINTS, 3), "joint_3d world_coord").copy()


def _float_array(value, shape, what) -> np.ndarray:
  """float64 array of ``shape``; as many values in another nesting (joint_valid's [[1], [0],
  ...]) are reshaped, null becomes NaN; anything else skips the record."""
  try:
    array = np.array(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise _Skip(f"malformed {what}: not an array of numbers") from None
  if array.size != int(np.prod(shape)):
    raise _Skip(f"malformed {what}: {array.size} values, expected shape {shape}")
  return array.reshape(shape)


def read_records(data_json, camera_json, joint_3d_json, image_dir, **kwargs) -> list[dict]:
  """Convenience: all records of the given files (see InterHandReader)."""
  return InterHandReader(data_json, camera_json, joint_3d_json, image_dir, **kwargs).read_all()


__all__ = [
    "ANNOTATIONS", "FRAMES", "HAND_TYPES", "InterHandDataWarning", "InterHandFormatError",
    "InterHandReader", "ROOT_JOINT_IDX", "annotation_dir", "load_image", "load_json",
    "read_records",
]
