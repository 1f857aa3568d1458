"""A trained DFL on users' images: restore, crop by a box, predict batched, decode to 3D.

    net = inference.load_model(workdir="runs/tiny")      # or checkpoint="runs/tiny/checkpoints/20"
    crop = inference.crop_image(image, box_xywh, net.image_size)
    outputs = inference.Predictor(net, batch_size=8)(np.stack([crop.pixels]))
    camera = inference.camera_for(crop.image_wh, focal=None)   # assumed intrinsics
    result = inference.decode(inference.row(outputs, 0), crop, camera, net.image_size)

Geometry is training's (input_pipeline/transforms.py, geometry.py): the box (xywh, image pixels)
is padded to 1:1 about its centre and enlarged 1.25x (``geometry.process_bbox``), then warped
onto the image_size x image_size input with ``geometry.crop_affine`` by cv2.warpAffine (bilinear,
zero outside), as the evaluation pipeline does. Predictions return to the image through the
inverse affine. Of an image larger than CUT_ABOVE pixels a side only the crop's neighbourhood is
warped (OpenCV cannot warp from sources of 32767 pixels a side); nothing is resized before the
crop.

Depth. The network predicts each joint's depth relative to its hand's wrist (256 units over
400 mm) and, as an extension, the left wrist's depth minus the right wrist's
(``rel_root_depth``). The absolute depth of the hands cannot be read from one crop, so 3D needs
a camera and a root depth (``Camera``): the right hand's root is put at ``root_depth_mm``
(default 500 mm, a hand at arm's length) and the left's at ``root_depth_mm + rel_root_depth_mm``;
every joint adds its predicted depth relative to its root and is back-projected with
``metrics.crop_to_camera``, as the evaluation does with the ground-truth root depths. With the
intrinsics given (``focal``, ``princpt``) the camera 3D is reported. Without them a virtual
camera is assumed (focal = the longer image side in pixels, i.e. a 53 degree field of view,
principal point at the image centre) and only the root-relative 3D is reported, marked
``assumed``: its x and y scale with root depth / focal, which a single image does not fix.

The configuration comes from ``WORKDIR/config.json``, which training writes, or from a config
passed in; the checkpoint is restored onto the abstract train state of ``dfl_jax.workdir``, so
nothing is initialised or compiled for it.
"""

import dataclasses
import json
import pathlib
from typing import Any

from absl import flags
import cv2
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from dfl_jax import conventions, workdir as workdir_lib
from dfl_jax.evaluation import metrics
from dfl_jax.network.model import model_for
from dfl_jax.serving import prepared
from input_pipeline import geometry

DEFAULT_ROOT_DEPTH_MM = 500.0
CUT_ABOVE = 8192  # images with a longer side are cut around the crop before the warp
HANDS = conventions.HANDS


@dataclasses.dataclass
class LoadedModel:
  """A restored network: ``model.apply(variables, images)`` with images [B, S, S, 3]."""

  model: Any
  variables: dict
  config: ml_collections.ConfigDict
  step: int
  checkpoint: str

  @property
  def image_size(self) -> int:
    return int(self.config.data.image_size)


@dataclasses.dataclass(frozen=True)
class Crop:
  """The network input cut from one image, and how it maps back."""

  pixels: np.ndarray      # uint8 [S, S, 3] RGB
  box: np.ndarray         # [4] the hand box given, xywh image pixels
  crop_box: np.ndarray    # [4] process_bbox(box): square, 1.25x
  affine: np.ndarray      # [2, 3] image pixels -> crop pixels
  image_wh: tuple         # (width, height) of the image


@dataclasses.dataclass(frozen=True)
class Camera:
  focal: np.ndarray       # [2] fx, fy pixels
  princpt: np.ndarray     # [2] cx, cy pixels
  root_depth_mm: float    # camera Z of the right wrist
  given: bool             # False: the virtual camera of the module docstring


# ------------------------------------------------------------------ loading

def define_run_flags():
  """--workdir, --checkpoint and --config: which trained run to load (``load_model``)."""
  flags.DEFINE_string("workdir", None, "Training workdir: its latest checkpoint and config.json.")
  flags.DEFINE_string("checkpoint", None, "A step folder WORKDIR/checkpoints/STEP.")
  config_flags.DEFINE_config_file("config", None, "Configuration the checkpoint was trained "
                                  "with (default: WORKDIR/config.json).", lock_config=False)


def load_model(workdir=None, checkpoint=None, config=None) -> LoadedModel:
  """Restores the latest checkpoint of WORKDIR/checkpoints or the step folder ``checkpoint``.

  ``config`` defaults to the run's config.json (``dfl_jax.workdir.restore``).
  """
  run = workdir_lib.restore(workdir, checkpoint, config)
  variables = {"params": run.state.params, "batch_stats": run.state.batch_stats}
  return LoadedModel(model_for(run.config), variables, run.config, run.step, run.checkpoint)


# ------------------------------------------------------------------ crop

def crop_image(image, box, image_size: int) -> Crop:
  """Training's crop of ``image`` (uint8 [H, W, 3] RGB) around ``box`` (xywh pixels).

  Raises ValueError when the box is degenerate or lies entirely outside the image.
  """
  image = np.asarray(image)
  height, width = image.shape[:2]
  box = np.asarray(box, np.float64)
  if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"box {box.tolist()} is not x,y,w,h with w, h > 0")
  if box[0] >= width or box[1] >= height or box[0] + box[2] <= 0 or box[1] + box[3] <= 0:
    raise ValueError(f"box {_fmt(box)} lies outside the {width}x{height} image")
  crop_box = geometry.process_bbox(box)
  affine = geometry.crop_affine(crop_box, image_size)
  local, x0, y0, x1, y1 = affine, 0, 0, width, height
  if max(width, height) > CUT_ABOVE:
    # Warp only the crop's neighbourhood (+2 px for bilinear): OpenCV's warp refuses sources
    # of 32767 pixels a side. The shifted matrix may move a few values by one grey level.
    x0 = int(np.clip(np.floor(crop_box[0]) - 2, 0, width))
    y0 = int(np.clip(np.floor(crop_box[1]) - 2, 0, height))
    x1 = int(np.clip(np.ceil(crop_box[0] + crop_box[2]) + 2, 0, width))
    y1 = int(np.clip(np.ceil(crop_box[1] + crop_box[3]) + 2, 0, height))
    local = affine.copy()
    local[:, 2] += affine[:, :2] @ [x0, y0]
  # As transforms.warp_image (training): bilinear, zero outside.
  pixels = cv2.warpAffine(np.ascontiguousarray(image[y0:y1, x0:x1]),
                          local.astype(np.float32), (image_size, image_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return Crop(pixels, box, crop_box, affine, (width, height))


def _fmt(values):
  return "[" + ", ".join(f"{v:g}" for v in np.asarray(values, np.float64)) + "]"


# ------------------------------------------------------------------ predict

class Predictor:
  """The network jitted once at a fixed batch size; any number of crops, padded per batch.

  ``attention=True`` also returns the attention maps (model.py's ``return_attention``).
  """

  def __init__(self, net: LoadedModel, batch_size: int = 8, attention: bool = False):
    self.net, self.batch_size, self.attention = net, int(batch_size), attention
    # Weights cast and laid out once for this batch shape (prepared.py), not on every call.
    example = jnp.zeros((self.batch_size, net.image_size, net.image_size, 3), jnp.uint8)
    self._apply, self._variables = prepared.compile_inference(
        prepared.predict_fn(net.model, attention), net.variables, example)

  def __call__(self, crops) -> dict:
    """crops uint8 [N, S, S, 3] -> the model's outputs as NumPy, [N, ...] each."""
    crops = np.asarray(crops)
    n, b = len(crops), self.batch_size
    if n == 0:
      raise ValueError("no crops to predict on")
    size = self.net.image_size
    if crops.dtype != np.uint8 or crops.shape[1:] != (size, size, 3):
      raise ValueError(f"Predictor takes uint8 crops [N, {size}, {size}, 3] (crop_image makes "
                       f"them), got {crops.dtype} {list(crops.shape)}")
    parts = []
    for start in range(0, n, b):
      chunk = crops[start:start + b]
      pad = b - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out = jax.device_get(self._apply(self._variables, jnp.asarray(chunk)))
      parts.append(jax.tree.map(lambda x, k=b - pad: np.asarray(x)[:k], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)


def row(outputs: dict, i: int) -> dict:
  """Example ``i`` of batched outputs (attention included)."""
  return jax.tree.map(lambda x: x[i], outputs)


# ------------------------------------------------------------------ decode

def camera_for(image_wh, focal=None, princpt=None,
               root_depth_mm: float = DEFAULT_ROOT_DEPTH_MM) -> Camera:
  """The given intrinsics, or the virtual camera of the module docstring.

  ``princpt`` without ``focal`` is an error; ``focal`` alone puts the principal point at the
  image centre.
  """
  width, height = image_wh
  if princpt is not None and focal is None:
    raise ValueError("--princpt needs --focal")
  if not np.isfinite(root_depth_mm) or root_depth_mm <= 0:
    raise ValueError(f"root depth must be positive mm, got {root_depth_mm}")
  centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
  if focal is None:
    return Camera(np.array([max(width, height)] * 2, np.float64), centre,
                  float(root_depth_mm), False)
  focal = np.asarray(focal, np.float64)
  if focal.shape != (2,) or np.any(focal <= 0):
    raise ValueError(f"focal must be fx,fy > 0, got {focal.tolist()}")
  princpt = centre if princpt is None else np.asarray(princpt, np.float64)
  return Camera(focal, princpt, float(root_depth_mm), True)


def decode(out: dict, crop: Crop, camera: Camera, image_size: int) -> dict:
  """One example's outputs -> JSON-ready dict (see ``predict``'s module docstring).

  ``joints_image_px`` [42, 2]; ``joints_rel_mm`` [42, 3] (each hand minus its wrist);
  ``joints_cam_mm`` [42, 3] only when ``camera.given``; ``_cam_view_mm`` (NumPy, always, for the
  3D view; not for the JSON) is the camera 3D under the given or the assumed camera.
  """
  uvd = np.asarray(out["joints"], np.float64)                  # [42, 3]
  image_xy = geometry.crop_to_image(uvd[:, :2], crop.crop_box, image_size)
  rel_root_mm = (float(conventions.depth_units_to_mm(np.asarray(out["rel_root_depth"])))
                 if "rel_root_depth" in out else 0.0)
  roots = np.array([camera.root_depth_mm, camera.root_depth_mm + rel_root_mm])
  cam = metrics.crop_to_camera(uvd, crop.affine, camera.focal, camera.princpt, roots)
  rel = metrics.root_align(cam)
  result = {
      "image_size": list(crop.image_wh),
      "box": crop.box.tolist(),
      "crop_box": crop.crop_box.tolist(),
      "affine_image_to_crop": crop.affine.tolist(),
      "input_size": int(image_size),
      "joints_crop_25d": uvd.tolist(),
      "joints_image_px": image_xy.tolist(),
      "joints_rel_mm": rel.tolist(),
      "joints_cam_mm": cam.tolist() if camera.given else None,
      "rel_root_depth_mm": rel_root_mm if "rel_root_depth" in out else None,
      "hand_presence": None,
      "camera": {
          "intrinsics": "given" if camera.given else "assumed",
          "focal": camera.focal.tolist(), "princpt": camera.princpt.tolist(),
          "root_depth_mm": [float(r) for r in roots],
      },
  }
  if "hand_presence_logits" in out:
    p = metrics.sigmoid(out["hand_presence_logits"])
    result["hand_presence"] = {"right": float(p[0]), "left": float(p[1])}
  result["_cam_view_mm"] = cam  # for the 3D figure; dropped before writing
  return result


def synthetic_example(workdir, split: str = "val", index: int = 0):
  """(image path, box xywh) of a synthetic image rendered into ``workdir`` by training."""
  root = pathlib.Path(workdir) / "synthetic" / "raw"
  data = json.loads((root / "annotations" / split / f"InterHand2.6M_{split}_data.json")
                    .read_text(encoding="utf-8"))
  annotation = data["annotations"][index]
  image = next(im for im in data["images"] if im["id"] == annotation["image_id"])
  return root / "images" / split / image["file_name"], list(annotation["bbox"])
