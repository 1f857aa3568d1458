"""TFDS builder for InterHand2.6M in its official layout (one example per annotation).

Each example keeps the original JPEG bytes, the PNG bytes of the depth map and exact part
labels where the data has them (the synthetic world; b'' for real InterHand2.6M), the annotation
(boxes, 2D/3D joints, validity, hand type) and the camera, so that every crop and augmentation
happens in the tf.data pipeline.

The images come from the user's copy (``manual_dir`` = the InterHand2.6M root). Building has two
passes so that an interrupted build resumes where it stopped:

1. ``stage``: the official-format reader lists the annotations; the images are read and decoded
   strictly (a corrupt, truncated or missing image is counted, reported and skipped), in
   parallel, and written in chunks of ``CHUNK_SIZE`` records to ``<data_dir>/staging/...``.
   A chunk is written to a temporary name and renamed when complete; a rerun skips chunks that
   exist.
2. ``download_and_prepare``: this GeneratorBasedBuilder streams the staged chunks into TFDS's
   sharded TFRecords. The staging folder is removed afterwards unless asked to keep it.

``python -m input_pipeline.build`` runs both.
"""

import dataclasses
import json
import os
import pathlib
from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

HAND_TYPES = ("right", "left", "interacting")
ANNOTATIONS = {"H": "h", "M": "m", "H+M": "hm"}
CHUNK_SIZE = 1024

# name -> (dtype, shape) of the numeric fields of a record (the reader's contract).
ARRAY_FIELDS = {
    "bbox": (np.float32, (4,)), "crop_box": (np.float32, (4,)),
    "joint_world": (np.float32, (42, 3)), "joint_cam": (np.float32, (42, 3)),
    "joint_img": (np.float32, (42, 2)), "joint_valid": (np.float32, (42,)),
    "focal": (np.float32, (2,)), "princpt": (np.float32, (2,)),
    "campos": (np.float32, (3,)), "camrot": (np.float32, (3, 3)),
}
INT_FIELDS = ("annotation_id", "image_id", "image_width", "image_height", "capture", "subject",
              "frame_idx")
TEXT_FIELDS = ("file_name", "seq_name", "camera", "hand_type")
# PNG bytes, b'' when the data has none: uint16 depth (mm) and uint8 part labels (0..32).
PNG_FIELDS = {"depth": np.uint16, "parts": np.uint8}
BYTES_FIELDS = tuple(PNG_FIELDS)
FLOAT_FIELDS = ("hand_type_valid",)


@dataclasses.dataclass
class InterHandConfig(tfds.core.BuilderConfig):
  annotation: str = "H+M"


class InterHand26M(tfds.core.GeneratorBasedBuilder):
  """InterHand2.6M v1.0 (5 fps) from the user's copy of the official release."""

  name = "interhand26m"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Official v1.0 layout; one example per annotation.",
                   "1.1.0": "Depth and exact part label PNGs where the data has them."}
  BUILDER_CONFIGS = [
      InterHandConfig(name=v, annotation=k, description=f"{k} annotations")
      for k, v in ANNOTATIONS.items()
  ]
  DEFAULT_CONFIG_NAME = "hm"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Obtain InterHand2.6M v1.0 (5 fps) yourself and pass its root as manual_dir, i.e. the folder
  holding annotations/{train,val,test}/InterHand2.6M_{split}_{data,camera,joint_3d}.json and
  images/{split}/Capture*/<seq>/cam*/image*.jpg. Use `python -m input_pipeline.build`.
  """

  def __init__(self, *, splits=("train", "val", "test"), staging_dir=None, **kwargs):
    self._splits = tuple(splits)
    self._staging_dir = staging_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    features = {
        "image": f.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "hand_type": f.ClassLabel(names=HAND_TYPES),
        "hand_type_valid": np.float32,
    }
    features.update({k: np.int64 for k in INT_FIELDS})
    features.update({k: f.Text() for k in TEXT_FIELDS if k != "hand_type"})
    features.update({k: f.Tensor(shape=s, dtype=d) for k, (d, s) in ARRAY_FIELDS.items()})
    features.update({k: f.Tensor(shape=(), dtype=tf.string) for k in BYTES_FIELDS})
    return self.dataset_info_from_configs(
        features=f.FeaturesDict(features),
        homepage="https://mks0601.github.io/InterHand2.6M/",
        citation="Moon et al., InterHand2.6M, ECCV 2020.",
    )

  def _split_generators(self, dl_manager):
    if not self._staging_dir:
      raise ValueError("InterHand26M is prepared by `python -m input_pipeline.build`, which "
                       "stages the images first (staging_dir)")
    staging = pathlib.Path(self._staging_dir)
    splits = {}
    for split in self._splits:
      if not (staging / split / "DONE").exists():
        raise FileNotFoundError(f"split {split!r} is not staged in {staging / split}; run "
                                f"`python -m input_pipeline.build` (it stages, then prepares)")
      splits[split] = self._generate_examples(staging / split)
    return splits

  def _generate_examples(self, split_dir) -> Iterator:
    for chunk in sorted(pathlib.Path(split_dir).glob("chunk-*.tfrecord")):
      for raw in tf.data.TFRecordDataset(str(chunk)).as_numpy_iterator():
        record = decode_staged(raw)
        yield record["annotation_id"], to_tfds_example(record)


def to_tfds_example(record):
  import io  # pylint: disable=import-outside-toplevel
  example = {"image": io.BytesIO(record["image"]), "hand_type": record["hand_type"],
             "hand_type_valid": np.float32(record["hand_type_valid"])}
  example.update({k: int(record[k]) for k in INT_FIELDS})
  example.update({k: record[k] for k in TEXT_FIELDS if k != "hand_type"})
  example.update({k: record.get(k, b"") for k in BYTES_FIELDS})
  example.update({k: np.asarray(record[k], d).reshape(s) for k, (d, s) in ARRAY_FIELDS.items()})
  return example


def encode_staged(record, image_bytes: bytes, extra=None) -> bytes:
  """A reader record plus its JPEG bytes (and ``extra`` {'depth', 'parts'} PNG bytes) as a
  serialized tf.train.Example (staging format)."""
  feat = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes]))}
  for k in BYTES_FIELDS:
    value = (extra or {}).get(k, b"")
    feat[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  for k in INT_FIELDS:
    feat[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(record[k])]))
  for k in TEXT_FIELDS:
    feat[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(record[k]).encode()]))
  for k in FLOAT_FIELDS:
    feat[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(record[k])]))
  for k, (d, s) in ARRAY_FIELDS.items():
    v = np.asarray(record[k], d).reshape(-1)
    feat[k] = tf.train.Feature(float_list=tf.train.FloatList(value=v.tolist()))
  return tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString()


def decode_staged(raw: bytes):
  f = tf.train.Example.FromString(raw).features.feature
  record = {"image": f["image"].bytes_list.value[0]}
  record.update({k: f[k].bytes_list.value[0] if k in f else b"" for k in BYTES_FIELDS})
  record.update({k: int(f[k].int64_list.value[0]) for k in INT_FIELDS})
  record.update({k: f[k].bytes_list.value[0].decode() for k in TEXT_FIELDS})
  record.update({k: float(f[k].float_list.value[0]) for k in FLOAT_FIELDS})
  record.update({k: np.asarray(f[k].float_list.value, d).reshape(s)
                 for k, (d, s) in ARRAY_FIELDS.items()})
  return record


def write_json(path, obj):
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as fh:
    json.dump(obj, fh, indent=1)
  os.replace(tmp, path)
