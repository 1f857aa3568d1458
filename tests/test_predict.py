"""Tests of inference on users' images: crop geometry, decoding, bad inputs, the predict CLI.

The end-to-end tests run ``python -m dfl_jax.predict`` once (shared by the xdist workers) on the
InterHand2.6M demo frame with its box, next to a folder of awkward inputs, with a tiny DFL
trained briefly on synthetic data (``trained_workdir``).
"""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from dfl_jax import conventions, pose_correction
from dfl_jax.serving import detector, inference, predict, visualize
from input_pipeline import geometry, interhand
import notebook_runs

DEMO_BOX = [69, 137, 165, 153]
LARGE_WH = (9000, 6000)  # above inference.CUT_ABOVE


@pytest.fixture
def demo_path(fixtures):
  return fixtures / "inthewild" / "interhand_demo_input.jpg"


# ------------------------------------------------------------------ geometry, no model

def test_crop_is_the_training_pipelines(demo_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from input_pipeline import transforms  # pylint: disable=import-outside-toplevel
  image = interhand.load_image(demo_path)
  for size, box in ((128, DEMO_BOX), (256, DEMO_BOX), (128, [-60, 400, 200, 150])):
    crop = inference.crop_image(image, box, size)
    matrix = transforms.crop_affine(tf.constant(geometry.process_bbox(box), tf.float32), size)
    expected = transforms.warp_image(tf.constant(image), matrix, size).numpy()
    np.testing.assert_allclose(crop.affine, matrix.numpy()[:2], atol=1e-4)
    # The matrices differ in float32 rounding only, and OpenCV's fixed-point bilinear rounds
    # differently from TensorFlow's float one (OpenCV 5 more often than 4): a grey level at
    # most, on under 1% of the pixels. Half a pixel of shift would move most pixels by more.
    difference = np.abs(crop.pixels.astype(int) - expected)
    assert difference.max() <= 1 and np.mean(difference > 0) < 1e-2


def test_very_large_images_are_cut_around_the_crop(demo_path):
  image = interhand.load_image(demo_path)
  large = np.zeros((inference.CUT_ABOVE // 2, inference.CUT_ABOVE + 10, 3), np.uint8)
  large[:image.shape[0], :image.shape[1]] = image
  for box in (DEMO_BOX, [-60, 400, 200, 150]):
    crop, reference = (inference.crop_image(x, box, 128).pixels for x in (large, image))
    difference = np.abs(crop.astype(int) - reference)
    assert difference.max() <= 1 and np.mean(difference > 0) < 1e-2


def test_boxes_outside_the_image_or_empty_are_refused():
  image = np.zeros((100, 80, 3), np.uint8)
  with pytest.raises(ValueError, match=r"box \[100, 10, 20, 20\] lies outside the 80x100"):
    inference.crop_image(image, [100, 10, 20, 20], 64)
  with pytest.raises(ValueError, match="w, h > 0"):
    inference.crop_image(image, [10, 10, 0, 20], 64)
  assert inference.crop_image(image, [70, -10, 30, 30], 64).pixels.shape == (64, 64, 3)


def _decode_case(image_size):
  """A two-hand pose seen by a known camera, encoded as the network's outputs."""
  rng = np.random.default_rng(0)
  focal, princpt = np.array([900.0, 880.0]), np.array([300.0, 260.0])
  cam = np.concatenate([rng.normal([-40, 10, 650], 30, (21, 3)),
                        rng.normal([50, 0, 690], 30, (21, 3))])
  image_xy = geometry.camera_to_pixel(cam, focal, princpt)
  box = geometry.tight_bbox(image_xy, np.ones(42))
  crop = inference.crop_image(np.zeros((520, 600, 3), np.uint8), box, image_size)
  xy = geometry.image_to_crop(image_xy, crop.crop_box, image_size)
  wrist_z = np.where(np.arange(42) < 21, cam[20, 2], cam[41, 2])
  z = (cam[:, 2] - wrist_z) / 200.0 * 128.0 + 128.0  # transforms.depth_target: 256 units
  rel_root = (cam[41, 2] - cam[20, 2]) / 200.0 * 128.0 + 128.0
  out = {"joints": np.concatenate([xy, z[:, None]], axis=1), "rel_root_depth": rel_root,
         "hand_presence_logits": np.array([2.0, -1.0])}
  return out, crop, cam, image_xy, focal, princpt


@pytest.mark.parametrize("image_size", [128, 256])
def test_decode_recovers_the_camera_pose(image_size):
  out, crop, cam, image_xy, focal, princpt = _decode_case(image_size)
  camera = inference.camera_for(crop.image_wh, focal, princpt, root_depth_mm=cam[20, 2])
  result = inference.decode(out, crop, camera, image_size)
  np.testing.assert_allclose(result["joints_image_px"], image_xy, atol=1e-6)
  np.testing.assert_allclose(result["joints_cam_mm"], cam, atol=1e-6)
  rel = cam - cam[[20] * 21 + [41] * 21]
  np.testing.assert_allclose(result["joints_rel_mm"], rel, atol=1e-6)
  assert result["rel_root_depth_mm"] == pytest.approx(cam[41, 2] - cam[20, 2])
  assert result["hand_presence"]["right"] == pytest.approx(1 / (1 + np.exp(-2.0)))
  assert result["camera"]["intrinsics"] == "given"
  json.dumps({k: v for k, v in result.items() if not k.startswith("_")})


def test_decode_without_intrinsics_reports_only_root_relative_3d():
  out, crop, cam, _, _, _ = _decode_case(128)
  camera = inference.camera_for(crop.image_wh)
  assert not camera.given and camera.focal.tolist() == [600.0, 600.0]
  result = inference.decode(out, crop, camera, 128)
  assert result["joints_cam_mm"] is None and result["camera"]["intrinsics"] == "assumed"
  rel = np.asarray(result["joints_rel_mm"])
  assert np.all(rel[[20, 41]] == 0.0)
  # Depths relative to the wrist do not depend on the camera.
  np.testing.assert_allclose(rel[:, 2], cam[:, 2] - cam[[20] * 21 + [41] * 21, 2], atol=1e-6)


def test_flags_are_parsed_with_messages_naming_them(tmp_path):
  assert predict.parse_boxes("69,137,165,153").tolist() == DEMO_BOX
  for bad in ("1,2,3", "a,b,c,d"):
    with pytest.raises(ValueError, match="--bbox"):
      predict.parse_boxes(bad)
  with pytest.raises(ValueError, match="positive"):
    predict.parse_boxes("1,2,-3,4")
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps({"a.jpg": DEMO_BOX}))
  assert predict.parse_boxes(str(boxes))["a.jpg"].tolist() == DEMO_BOX
  with pytest.raises(ValueError, match="--focal"):
    predict.parse_numbers("1200", 2, "focal")
  with pytest.raises(ValueError, match="--princpt needs --focal"):
    inference.camera_for((100, 100), princpt=[50, 50])


@pytest.mark.slow
def test_without_a_box_or_detector_a_box_is_required(tmp_path, demo_path):
  with pytest.raises(detector.DetectorUnavailable, match="--bbox x,y,w,h"):
    detector.create(None)
  with pytest.raises(detector.DetectorUnavailable, match="missing.task not found"):
    detector.create(str(tmp_path / "missing.task"))
  try:
    import mediapipe  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    fake = tmp_path / "hand_landmarker.task"
    fake.write_bytes(b"not a model")
    with pytest.raises(detector.DetectorUnavailable, match="mediapipe is not installed"):
      detector.create(str(fake))
  # The command line stops before loading any model (no workdir needed) with that message.
  run = subprocess.run([sys.executable, "-m", "dfl_jax.predict", f"--workdir={tmp_path}",
                        f"--input={demo_path}", f"--out={tmp_path / 'out'}"],
                       cwd=ROOT, capture_output=True, text=True, check=False)
  assert run.returncode == 2
  assert "no --bbox given and no hand detector" in run.stderr
  assert "--bbox x,y,w,h" in run.stderr


# ------------------------------------------------------------------ end to end

def _make_inputs(folder, demo_path):
  """A folder of awkward inputs around the demo frame (334x512)."""
  src = cv2.imread(str(demo_path))
  d = folder / "inputs"
  d.mkdir()
  (folder / "empty").mkdir()
  cv2.imwrite(str(d / "grey.png"), cv2.cvtColor(src, cv2.COLOR_BGR2GRAY))
  rgba = cv2.cvtColor(src, cv2.COLOR_BGR2BGRA)
  rgba[..., 3] = 100
  cv2.imwrite(str(d / "rgba.png"), rgba)
  large = np.zeros(LARGE_WH[::-1] + (3,), np.uint8)  # the demo frame in its top-left corner
  large[:src.shape[0], :src.shape[1]] = src
  cv2.imwrite(str(d / "large.png"), large)
  cv2.imwrite(str(d / "small.png"), np.full((100, 100, 3), 90, np.uint8))
  (d / "notes.txt").write_text("not an image")
  data = demo_path.read_bytes()
  (d / "truncated.jpg").write_bytes(data[:len(data) // 2])
  writer = cv2.VideoWriter(str(d / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5,
                           (src.shape[1], src.shape[0]))
  for _ in range(3):
    writer.write(src)
  writer.release()


@pytest.fixture
def predicted(trained_workdir, demo_path, tmp_path_factory):
  """Folder with inputs/, out/ and the CLI's stdout, stderr and return code (once per run)."""
  def run(folder):
    _make_inputs(folder, demo_path)
    cmd = [sys.executable, "-m", "dfl_jax.predict", f"--workdir={trained_workdir}",
           f"--input={demo_path}", f"--input={folder / 'inputs'}",
           f"--input={folder / 'empty'}", f"--input={folder / 'missing.jpg'}",
           "--bbox=69,137,165,153", "--focal=1200,1200", "--attention_joints=20,41",
           "--presence_threshold=0", "--batch_size=4", "--correct_pose",
           f"--out={folder / 'out'}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    for name in ("stdout", "stderr", "returncode"):
      (folder / name).write_text(str(getattr(result, name)))
  return notebook_runs.shared_once(tmp_path_factory, "predict_run", run)


def _load(folder, name):
  return json.loads((folder / "out" / f"{name}.json").read_text())


def test_predict_end_to_end_on_the_demo_image(predicted, demo_path):
  assert (predicted / "returncode").read_text() == "0", (predicted / "stderr").read_text()
  out = predicted / "out"
  for suffix in (".json", "_overlay.png", "_3d.png", "_attention_j20.png",
                 "_attention_j41.png"):
    assert (out / f"interhand_demo_input{suffix}").stat().st_size > 0
  r = _load(predicted, "interhand_demo_input")
  assert r["box"] == DEMO_BOX and r["image_size"] == [334, 512]
  assert np.asarray(r["joints_crop_25d"]).shape == (42, 3)
  xy = np.asarray(r["joints_image_px"])
  assert xy.shape == (42, 2)
  assert np.all((xy >= 0) & (xy < [334, 512])), "joints outside the image"
  np.testing.assert_allclose(geometry.crop_to_image(np.asarray(r["joints_crop_25d"])[:, :2],
                                                    r["crop_box"], r["input_size"]), xy)
  cam = np.asarray(r["joints_cam_mm"])
  assert r["camera"]["intrinsics"] == "given" and r["camera"]["focal"] == [1200.0, 1200.0]
  # Each hand's root is at --root_depth_mm (right) and that plus rel_root_depth_mm (left);
  # every joint, the wrist included, adds its predicted depth relative to the root.
  d_rel = (np.asarray(r["joints_crop_25d"])[:, 2] / 128.0 - 1.0) * 200.0
  np.testing.assert_allclose(cam[:21, 2], 500.0 + d_rel[:21], atol=1e-6)
  np.testing.assert_allclose(cam[21:, 2], 500.0 + r["rel_root_depth_mm"] + d_rel[21:], atol=1e-6)
  np.testing.assert_allclose(r["joints_rel_mm"],
                             cam - cam[[20] * 21 + [41] * 21], atol=1e-6)
  assert set(r["hand_presence"]) == {"right", "left"}
  assert all(0.0 <= p <= 1.0 for p in r["hand_presence"].values())
  assert r["hands_drawn"] == ["right", "left"]
  # --correct_pose: the template's bone lengths, the wrists where the network put them.
  fixed = np.asarray(r["pose_correction"]["joints_cam_mm"])
  np.testing.assert_allclose(fixed[[20, 41]], cam[[20, 41]], atol=1e-9)
  lengths = pose_correction.default_template()["bone_lengths_mm"]
  np.testing.assert_allclose(pose_correction.bone_lengths(fixed[21:]), lengths, rtol=1e-9)
  np.testing.assert_allclose(r["pose_correction"]["joints_rel_mm"],
                             fixed - fixed[[20] * 21 + [41] * 21], atol=1e-6)


def _distance_to_segment(points, a, b):
  ab = b - a
  t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
  return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def test_overlay_matches_the_json(predicted, demo_path):
  r = _load(predicted, "interhand_demo_input")
  image = interhand.load_image(demo_path)
  overlay = cv2.cvtColor(cv2.imread(str(predicted / "out" / "interhand_demo_input_overlay.png")),
                         cv2.COLOR_BGR2RGB)
  assert overlay.shape == image.shape
  xy = np.asarray(r["joints_image_px"])
  colours = {tuple(c) for c in visualize.HAND_COLOURS.values()}
  # Every joint is a disc of its hand's colour (or of the other hand's, drawn over it).
  for x, y in xy:
    assert tuple(overlay[int(round(y)), int(round(x))]) in colours
  # Every changed pixel belongs to a bone, a joint or the box outline of the JSON.
  changed = np.argwhere(np.any(overlay != image, axis=-1))[:, ::-1].astype(np.float64)
  thickness, radius = visualize.stroke(max(DEMO_BOX[2:]))
  reach = np.full(len(changed), np.inf)
  for child, parent in conventions.BONES:
    reach = np.minimum(reach, _distance_to_segment(changed, xy[child], xy[parent]))
  x, y, w, h = DEMO_BOX
  corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
  box = np.min([_distance_to_segment(changed, corners[i], corners[(i + 1) % 4])
                for i in range(4)], axis=0)
  assert np.all((reach <= radius + thickness + 1.5) | (box <= 1.5))


def test_bad_inputs_are_named_and_the_others_processed(predicted):
  stderr = (predicted / "stderr").read_text()
  expected = {"notes.txt": "cannot decode image", "truncated.jpg": "truncated JPEG",
              "small.png": "box [69, 137, 165, 153] lies outside the 100x100 image",
              "empty": "empty folder", "missing.jpg": "no such file or folder"}
  lines = [line for line in stderr.splitlines() if line.startswith("predict: ")]
  for name, why in expected.items():
    assert any(name in line and why in line for line in lines), (name, stderr[-3000:])
  summary = json.loads((predicted / "out" / "summary.json").read_text())
  assert sorted(f["source"].rsplit("/", 1)[-1] for f in summary["failed"]) == sorted(expected)
  written = sorted(p["json"] for p in summary["processed"])
  assert written == sorted(["interhand_demo_input.json", "grey.json", "rgba.json", "large.json",
                            "clip_f000000.json", "clip_f000001.json", "clip_f000002.json"])


def test_grey_rgba_very_large_and_video_inputs(predicted):
  demo = _load(predicted, "interhand_demo_input")
  # RGBA (alpha dropped) and the 9000x6000 canvas give the demo's crop (the canvas's to a
  # grey level, as it is cut first), hence its prediction.
  for name, atol in (("rgba", 1e-3), ("large", 0.05)):
    r = _load(predicted, name)
    np.testing.assert_allclose(r["joints_crop_25d"], demo["joints_crop_25d"], atol=atol)
    np.testing.assert_allclose(r["joints_image_px"], demo["joints_image_px"], atol=atol)
  large = _load(predicted, "large")
  assert large["image_size"] == list(LARGE_WH) and large["overlay_scale"] < 1.0
  overlay = cv2.imread(str(predicted / "out" / "large_overlay.png"))
  assert max(overlay.shape[:2]) == 2048
  grey = _load(predicted, "grey")
  assert np.asarray(grey["joints_crop_25d"]).shape == (42, 3)
  frames = [_load(predicted, f"clip_f{i:06d}") for i in range(3)]
  assert [f["frame"] for f in frames] == [0, 1, 2]
  assert all(f["source"].endswith("clip.avi") for f in frames)
