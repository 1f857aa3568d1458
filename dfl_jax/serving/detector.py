"""Optional hand detector for ``dfl_jax.predict``: MediaPipe's HandLandmarker, boxes only.

    pip install 'dfl-jax[detector]'       # mediapipe
    python -m dfl_jax.predict ... --detector_model hand_landmarker.task

MediaPipe's model file is not shipped or downloaded here: get ``hand_landmarker.task`` from
MediaPipe's model page and pass its path. The detector finds up to two hands; the box given to
DFL is the tight box of all their landmarks enlarged 1.2x (``geometry.tight_bbox``, the rule of
InterHand2.6M's annotation boxes), so two interacting hands share one crop as in training.
"""

import os

import numpy as np

from input_pipeline import geometry

NO_BOX = ("no --bbox given and no hand detector available: {why}. Give the hand box as "
          "--bbox x,y,w,h (image pixels), or install the detector (pip install "
          "'dfl-jax[detector]') and pass --detector_model PATH to MediaPipe's "
          "hand_landmarker.task")


class DetectorUnavailable(RuntimeError):
  """No detector can be made; the message says why and that a box is required."""


class MediaPipeHands:
  """``detector(image) -> box xywh or None`` for uint8 RGB [H, W, 3] images."""

  def __init__(self, model_path, max_hands: int = 2, min_confidence: float = 0.3):
    try:
      import mediapipe as mp  # pylint: disable=import-outside-toplevel
      from mediapipe.tasks.python import BaseOptions  # pylint: disable=import-outside-toplevel
      from mediapipe.tasks.python import vision  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise DetectorUnavailable(NO_BOX.format(why=f"mediapipe is not installed ({e})")) from e
    self._mp = mp
    options = vision.HandLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=os.fspath(model_path)), num_hands=max_hands,
        min_hand_detection_confidence=min_confidence, running_mode=vision.RunningMode.IMAGE)
    try:
      self._landmarker = vision.HandLandmarker.create_from_options(options)
    except Exception as e:  # pylint: disable=broad-except
      raise DetectorUnavailable(NO_BOX.format(
          why=f"MediaPipe could not load --detector_model {model_path} ({e})")) from e

  def __call__(self, image):
    image = np.ascontiguousarray(image, np.uint8)
    height, width = image.shape[:2]
    result = self._landmarker.detect(
        self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image))
    points = [(p.x * width, p.y * height) for hand in result.hand_landmarks for p in hand]
    if not points:
      return None
    points = np.asarray(points, np.float64)
    return geometry.tight_bbox(points, np.ones(len(points)), scale=1.2)

  def close(self):
    self._landmarker.close()


def create(model_path):
  """A ``MediaPipeHands`` for ``model_path``; DetectorUnavailable (with the box message) when
  there is no path, no such file or no mediapipe."""
  if not model_path:
    raise DetectorUnavailable(NO_BOX.format(why="no --detector_model"))
  if not os.path.isfile(model_path):
    raise DetectorUnavailable(NO_BOX.format(why=f"--detector_model {model_path} not found"))
  return MediaPipeHands(model_path)
