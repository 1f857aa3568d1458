"""DFL on your images, folders and videos: JSON and figures per image.

    python -m dfl_jax.predict (--workdir DIR | --checkpoint DIR/checkpoints/STEP) \
        --input IMAGE|FOLDER|VIDEO [--input ...] --out OUT \
        [--bbox x,y,w,h | --bbox boxes.json | --detector_model hand_landmarker.task] \
        [--focal fx,fy [--princpt cx,cy]] [--root_depth_mm 500] [--attention_joints 20,41] \
        [--correct_pose [--template TEMPLATE.json]] [--shapes SHAPES_WORKDIR]

The hands are cropped by the box (xywh, image pixels; one box for every input, or a JSON file
mapping file names to boxes), or by MediaPipe's hand detector when it is installed
(``detector.py``); without either, nothing runs and the message says a box is required.
The crop is training's (``inference.crop_image``); the network runs jitted at a fixed batch
size (``--batch_size``) over all inputs. A folder's files are taken in name order (not
recursively); a video (by extension: .mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .wmv) is read
frame by frame with OpenCV, the box applied to every frame.

Per image (``NAME`` = the file's stem; ``NAME_f000012`` for frame 12 of a video) OUT gets:

  NAME.json              see below
  NAME_overlay.png       2D skeleton over the image, right hand red, left hand blue, the box
                         grey; images larger than --max_display_side are shown downscaled
  NAME_3d.png            3D view of the hands (camera frame)
  NAME_attention_jJJ.png joints-image attention of joint JJ per iteration (--attention_joints)
  NAME_right.ply, NAME_left.ply, NAME_shapes.png
                         with --shapes: each drawn hand's mesh (camera mm) from Im2Hands' K, I
                         and R of a ``python -m dfl_jax.shapes`` workdir, and the meshes over
                         the image (``serving/shapes.py``)

and OUT/summary.json lists what was written and what failed. NAME.json::

  joints_crop_25d   [42, 3] the network's 2.5D output: x, y in input-crop pixels, depth relative
                    to the joint's wrist in 256 units over 400 mm (128 = the wrist's depth)
  joints_image_px   [42, 2] x, y in the image's pixels (the crop's affine inverted)
  joints_rel_mm     [42, 3] 3D in mm relative to the joint's wrist (right 20, left 41), as the
                    evaluation root-aligns
  joints_cam_mm     [42, 3] camera 3D in mm when --focal is given, else null
  hand_presence     {"right": p, "left": p}, probabilities; hands_drawn: those >= threshold
  rel_root_depth_mm left wrist depth minus right wrist depth (the extension head)
  camera            intrinsics "given" or "assumed", focal, princpt, root_depth_mm [right, left]
  box, crop_box, affine_image_to_crop, image_size [W, H], input_size, source, frame, checkpoint
  pose_correction   with --correct_pose: joints_rel_mm and joints_cam_mm (null without --focal)
                    after pose correction (``dfl_jax/pose_correction.py``: the template's bone
                    lengths, every joint angle within its interval, the wrists kept) and the
                    template used; the 3D view then shows the corrected hands
  shapes            with --shapes: joints_refined_cam_mm [42, 3] (K's output), the mesh files,
                    their vertex and face counts and the shapes workdir

3D needs a root depth: the right hand's root (wrist) is put at --root_depth_mm (default 500 mm)
and the left's at that plus rel_root_depth_mm, each joint at its root plus its predicted
relative depth; without --focal a virtual camera is assumed (focal = the longer image side), so
joints_rel_mm is in mm only up to the unknown root depth / focal ratio (``inference.py``).

Bad inputs (a missing, unreadable or non-image file, a box outside the image, an empty folder,
a video that does not open) get one message each on stderr naming the file, and the others are
still processed. Grey images are replicated to RGB, an alpha channel is dropped, and very large
images are cropped before anything is resized. The exit status is 0 when at least one image was
processed, 1 when none was, 2 for a usage error (no box source, bad flags, no checkpoint).
"""

import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Optional

from absl import app, flags, logging
import cv2
import numpy as np

from dfl_jax import conventions, errors, pose_correction
from dfl_jax.evaluation import reconstruction
from dfl_jax.serving import detector as detector_lib, inference, shapes as shapes_lib, visualize
from input_pipeline import interhand

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
FORMAT = "dfl-jax-predict/1"


@dataclasses.dataclass
class Report:
  """What ``run`` wrote and what failed (source, message)."""

  processed: list = dataclasses.field(default_factory=list)
  failed: list = dataclasses.field(default_factory=list)
  echo: bool = True

  def fail(self, source, message):
    self.failed.append({"source": str(source), "error": str(message)})
    if self.echo:
      print(f"predict: {source}: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Pending:
  name: str
  source: str
  frame: Optional[int]
  crop: object
  camera: object
  display: np.ndarray
  display_scale: float
  shape_crop: object = None


# ------------------------------------------------------------------ parsing

def parse_numbers(text, count: int, flag: str):
  """'1,2,3,4' -> float64 [count]; ValueError naming the flag otherwise."""
  try:
    values = np.array([float(v) for v in str(text).replace(" ", "").split(",")], np.float64)
  except ValueError:
    values = np.zeros(0)
  if values.shape != (count,) or not np.all(np.isfinite(values)):
    raise ValueError(f"--{flag} {text!r}: expected {count} comma-separated numbers")
  return values


def parse_boxes(text):
  """--bbox: 'x,y,w,h' (one box for every input) or a JSON file {file name: [x, y, w, h]}."""
  if text is None or text == "":
    return None
  if str(text).lower().endswith(".json"):
    try:
      with open(text, encoding="utf-8") as f:
        data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"--bbox {text}: cannot read the boxes file ({e})") from e
    if not isinstance(data, dict):
      raise ValueError(f"--bbox {text}: expected a JSON object {{file name: [x, y, w, h]}}")
    return {str(k): parse_numbers(",".join(map(str, v)) if isinstance(v, list) else v, 4,
                                  f"bbox {text}: {k}") for k, v in data.items()}
  box = parse_numbers(text, 4, "bbox")
  if box[2] <= 0 or box[3] <= 0:
    raise ValueError(f"--bbox {text}: width and height must be positive")
  return box


def _box_for(boxes, path, image, detector):
  """The box of one image: the JSON entry, the one --bbox, or the detector's."""
  if isinstance(boxes, dict):
    for key in (path.name, str(path), path.stem):
      if key in boxes:
        return boxes[key]
    if detector is None:
      raise ValueError(f"no box for {path.name} in the --bbox file")
  elif boxes is not None:
    return boxes
  box = detector(image)
  if box is None:
    raise ValueError("the hand detector found no hand; give its box with --bbox x,y,w,h")
  return box


# ------------------------------------------------------------------ inputs

def _files(inputs, report):
  for raw in inputs:
    path = pathlib.Path(raw)
    if path.is_dir():
      files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
      if not files:
        report.fail(raw, "empty folder: no files to predict on")
      yield from files
    elif path.is_file():
      yield path
    else:
      report.fail(raw, "no such file or folder")


def _frames(path, report, frame_step, max_frames):
  """(frame index, RGB frame) of a video."""
  capture = cv2.VideoCapture(os.fspath(path))
  if not capture.isOpened():
    report.fail(path, "cannot open the video (unknown codec or not a video)")
    return
  index = taken = 0
  try:
    while True:
      ok, frame = capture.read()
      if not ok:
        break
      if index % frame_step == 0:
        yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        taken += 1
        if max_frames and taken >= max_frames:
          break
      index += 1
  finally:
    capture.release()
  if index == 0 and taken == 0:
    report.fail(path, "no frame could be read from the video")


def _images(inputs, report, frame_step=1, max_frames=0):
  """(path, frame or None, RGB uint8 image) of every input; failures go to the report."""
  for path in _files(inputs, report):
    if path.suffix.lower() in VIDEO_EXTENSIONS:
      for index, frame in _frames(path, report, frame_step, max_frames):
        yield path, index, frame
      continue
    try:
      image = interhand.load_image(path)
    except (OSError, ValueError, cv2.error) as e:
      report.fail(path, _clean(e, path))
      continue
    yield path, None, image


def _clean(error, path):
  """The message without a repeated file name."""
  text = str(error)
  prefix = f"{os.fspath(path)}: "
  return text[len(prefix):] if text.startswith(prefix) else text


def _unique(name, used):
  candidate, n = name, 2
  while candidate in used:
    candidate, n = f"{name}_{n}", n + 1
  used.add(candidate)
  return candidate


def display_copy(image, max_side: int):
  """(image downscaled so its longer side is at most max_side, scale factor)."""
  height, width = image.shape[:2]
  scale = min(1.0, float(max_side) / max(height, width))
  if scale >= 1.0:
    return image, 1.0
  size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
  return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


# ------------------------------------------------------------------ running

def run(inputs, net, out_dir, boxes=None, detector=None, focal=None, princpt=None,
        root_depth_mm=None, batch_size=8, attention_joints=(), presence_threshold=0.5,
        max_display_side=2048, frame_step=1, max_frames=0, figures=True,
        echo=True, correct_pose=False, template=None, shapes=None) -> Report:
  """Predicts on every image of ``inputs`` (files, folders, videos) and writes OUT (see above).

  net: ``inference.load_model(...)``; boxes: ``parse_boxes``' result; detector: callable
  image -> box or None (``detector.py``). ``correct_pose`` adds the pose-corrected joints
  (``template``: a template dict, None the default); ``shapes`` a
  ``shapes_lib.ShapeReconstructor`` adds each hand's mesh. Returns the Report (also
  OUT/summary.json).
  """
  if boxes is None and detector is None:
    raise ValueError("give boxes or a detector (see detector.NO_BOX)")
  for j in attention_joints:
    if not 0 <= int(j) < conventions.NUM_JOINTS:
      raise ValueError(f"--attention_joints: joint {j} is not in 0..41")
  root_depth_mm = inference.DEFAULT_ROOT_DEPTH_MM if root_depth_mm is None else root_depth_mm
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  report = Report(echo=echo)
  predictor = inference.Predictor(net, batch_size, attention=bool(attention_joints))
  pending, used = [], set()
  context = dict(net=net, out_dir=out_dir, attention_joints=[int(j) for j in attention_joints],
                 presence_threshold=presence_threshold, figures=figures, report=report,
                 correction=(pose_correction.check_template(
                     template or pose_correction.default_template()) if correct_pose else None),
                 shapes=shapes)
  start = time.time()
  for path, frame, image in _images(inputs, report, max(1, frame_step), max_frames):
    label = f"{path} frame {frame}" if frame is not None else str(path)
    try:
      box = _box_for(boxes, path, image, detector)
      crop = inference.crop_image(image, box, net.image_size)
      shape_crop = (inference.crop_image(image, box, shapes.image_size)
                    if shapes is not None else None)
      camera = inference.camera_for(crop.image_wh, focal, princpt, root_depth_mm)
      display, scale = display_copy(image, max_display_side)
    except (ValueError, cv2.error) as e:
      report.fail(label, e)
      continue
    name = path.stem if frame is None else f"{path.stem}_f{frame:06d}"
    pending.append(_Pending(_unique(name, used), str(path), frame, crop, camera, display,
                            scale, shape_crop))
    del image
    if len(pending) == batch_size:
      _flush(pending, predictor, **context)
      pending = []
  if pending:
    _flush(pending, predictor, **context)
  summary = {"format": FORMAT, "checkpoint": net.checkpoint, "step": net.step,
             "processed": report.processed, "failed": report.failed,
             "seconds": round(time.time() - start, 2)}
  with open(out_dir / "summary.json", "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  return report


def _corrected(result, cam_view, template):
  """The ``pose_correction`` entry of NAME.json and the corrected 3D view."""
  view = pose_correction.correct_two_hands(cam_view, template)
  entry = {"joints_rel_mm": (view - view[conventions.ROOT_OF]).tolist(),
           "joints_cam_mm": None, "template": template.get("source", "given")}
  if result.get("joints_cam_mm") is not None:   # the same joints as cam_view (decode's)
    entry["joints_cam_mm"] = view.tolist()
  return entry, view


def _shapes(shapes, p, cam_view, hands, out_dir, files, figures):
  """The ``shapes`` entry of NAME.json; writes the meshes (and the figure) into ``files``."""
  rec = shapes.reconstruct(p.shape_crop, p.camera, cam_view, hands)
  entry = {"joints_refined_cam_mm": rec["joints_refined_cam_mm"].tolist(), "meshes": {},
           "workdir": str(shapes.workdir)}
  for side, (verts, faces) in rec["meshes"].items():
    files[f"mesh_{side}"] = reconstruction.write_ply(
        out_dir / f"{p.name}_{side}.ply", verts, faces)
    entry["meshes"][side] = {"file": files[f"mesh_{side}"].name, "vertices": len(verts),
                             "faces": len(faces)}
  if figures:
    files["shapes"] = out_dir / f"{p.name}_shapes.png"
    visualize.write_rgb(files["shapes"], shapes_lib.draw_meshes(
        p.display, rec["meshes"], p.camera.focal, p.camera.princpt, p.display_scale))
  return entry


def _flush(pending, predictor, net, out_dir, attention_joints, presence_threshold, figures,
           report, correction=None, shapes=None):
  outputs = predictor(np.stack([p.crop.pixels for p in pending]))
  for i, p in enumerate(pending):
    label = f"{p.source} frame {p.frame}" if p.frame is not None else p.source
    try:
      out = inference.row(outputs, i)
      result = inference.decode(out, p.crop, p.camera, net.image_size)
      cam_view = result.pop("_cam_view_mm")
      if correction is not None:
        result["pose_correction"], cam_view = _corrected(result, cam_view, correction)
      presence = result["hand_presence"]
      hands = [h for h in inference.HANDS
               if presence is None or presence[h] >= presence_threshold]
      files = {"json": out_dir / f"{p.name}.json"}
      result = dict({"format": FORMAT, "source": p.source, "frame": p.frame,
                     "checkpoint": net.checkpoint, "step": net.step}, **result,
                    hands_drawn=hands, overlay_scale=p.display_scale)
      if figures:
        files["overlay"] = out_dir / f"{p.name}_overlay.png"
        s = p.display_scale
        xy = (np.asarray(result["joints_image_px"]) + 0.5) * s - 0.5
        box = (np.asarray(p.crop.box) * s).tolist()
        visualize.write_rgb(files["overlay"], visualize.draw_skeleton(p.display, xy, hands, box))
        files["view3d"] = out_dir / f"{p.name}_3d.png"
        title = f"{p.name} (camera {result['camera']['intrinsics']})"
        visualize.save(visualize.plot_3d(cam_view, hands, title), files["view3d"])
        for j in attention_joints:
          files[f"attention_j{j:02d}"] = out_dir / f"{p.name}_attention_j{j:02d}.png"
          figure = visualize.attention_figure(p.crop.pixels, out["attention"], j,
                                              joint_xy=np.asarray(out["joints"])[j, :2])
          visualize.save(figure, files[f"attention_j{j:02d}"])
      if shapes is not None:
        result["shapes"] = _shapes(shapes, p, cam_view, hands, out_dir, files, figures)
      result["files"] = {k: v.name for k, v in files.items()}
      with open(files["json"], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    except (OSError, ValueError) as e:
      report.fail(label, f"writing the results failed: {e}")
      continue
    report.processed.append({"source": p.source, "frame": p.frame, "json": files["json"].name})
    if report.echo:
      print(f"predict: {label} -> {files['json']}", flush=True)


# ------------------------------------------------------------------ command line

def define_flags():
  inference.define_run_flags()
  flags.DEFINE_multi_string("input", None, "Image, folder or video; repeat for several.")
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_string("bbox", None, "Hand box x,y,w,h in image pixels (both hands), or a JSON "
                      "file {file name: [x, y, w, h]}.")
  flags.DEFINE_string("detector_model", None, "MediaPipe hand_landmarker.task (needs "
                      "pip install 'dfl-jax[detector]'); used when there is no --bbox.")
  flags.DEFINE_string("focal", None, "Camera focal length fx,fy in pixels.")
  flags.DEFINE_string("princpt", None, "Principal point cx,cy (default: the image centre).")
  flags.DEFINE_float("root_depth_mm", 500.0, "Camera depth of the right wrist, mm.")
  flags.DEFINE_list("attention_joints", [], "Joints (0-41) whose attention figures to write.")
  flags.DEFINE_integer("batch_size", 8, "Crops per network call.")
  flags.DEFINE_float("presence_threshold", 0.5, "Hands drawn when their presence >= this.")
  flags.DEFINE_integer("max_display_side", 2048, "Overlays of larger images are downscaled.")
  flags.DEFINE_integer("frame_step", 1, "Videos: every n-th frame.")
  flags.DEFINE_integer("max_frames", 0, "Videos: at most this many frames each (0: all).")
  flags.DEFINE_bool("figures", True, "Write the PNG figures (JSON only when false).")
  flags.DEFINE_bool("correct_pose", False, "Add the pose-corrected 3D joints (template bone "
                    "lengths, joint-angle intervals; dfl_jax/pose_correction.py).")
  flags.DEFINE_string("template", None, "--correct_pose: template JSON (default: built in).")
  flags.DEFINE_string("shapes", None, "A workdir of python -m dfl_jax.shapes: also write each "
                      "hand's mesh (Im2Hands' K, I, R) and NAME_shapes.png.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax's and TFDS's INFO chatter
  if not FLAGS.input or not FLAGS.out:
    raise app.UsageError("give --input (image, folder or video) and --out")
  if bool(FLAGS.workdir) == bool(FLAGS.checkpoint):
    raise app.UsageError("give exactly one of --workdir and --checkpoint")
  try:
    boxes = parse_boxes(FLAGS.bbox)
    focal = parse_numbers(FLAGS.focal, 2, "focal") if FLAGS.focal else None
    princpt = parse_numbers(FLAGS.princpt, 2, "princpt") if FLAGS.princpt else None
    attention = [int(j) for j in FLAGS.attention_joints]
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if princpt is not None and focal is None:
    raise app.UsageError("--princpt needs --focal")
  if FLAGS.template and not FLAGS.correct_pose:
    raise app.UsageError("--template is used by --correct_pose only")
  template = pose_correction.load_template(FLAGS.template) if FLAGS.template else None
  detector = None
  if boxes is None or (isinstance(boxes, dict) and FLAGS.detector_model):
    try:
      detector = detector_lib.create(FLAGS.detector_model)
    except detector_lib.DetectorUnavailable as e:
      raise errors.ConfigError(str(e)) from None
  net = inference.load_model(FLAGS.workdir, FLAGS.checkpoint, FLAGS.config)  # errors name it
  shapes = shapes_lib.ShapeReconstructor.load(FLAGS.shapes) if FLAGS.shapes else None
  try:
    report = run(FLAGS.input, net, FLAGS.out, boxes=boxes, detector=detector, focal=focal,
                 princpt=princpt, root_depth_mm=FLAGS.root_depth_mm,
                 batch_size=FLAGS.batch_size, attention_joints=attention,
                 presence_threshold=FLAGS.presence_threshold,
                 max_display_side=FLAGS.max_display_side, frame_step=FLAGS.frame_step,
                 max_frames=FLAGS.max_frames, figures=FLAGS.figures,
                 correct_pose=FLAGS.correct_pose, template=template, shapes=shapes)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(f"predict: {len(report.processed)} image(s) processed, {len(report.failed)} "
        f"failed; results in {FLAGS.out}")
  return 0 if report.processed else 1


def command():
  """Console script ``dfl-predict`` and ``python -m dfl_jax.predict``."""
  define_flags()
  errors.run(main)
