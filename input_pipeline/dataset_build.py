"""Builds the InterHand2.6M TFDS dataset from the user's copy of the official release.

    python -m input_pipeline.build --source INTERHAND_ROOT --data_dir DIR \
        [--split train,val,test] [--annotation H|M|H+M] [--workers 8] [--keep_staging]

Shows progress; a corrupt, truncated or missing image is counted, reported (file and annotation
id) and skipped, never fatal; an interrupted build resumes from its last complete chunk when run
again with the same arguments. Build every split you need in one command: TFDS prepares a
dataset version once.
"""

import concurrent.futures
import itertools
import json
import pathlib
import shutil
import sys
import time

from absl import app, flags, logging
import cv2
import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import interhand, tfds_builder

from dfl_jax import errors


def read_checked_jpeg(path, width=None, height=None) -> bytes:
  """The file's bytes, after a strict decode; raises ValueError naming the file otherwise."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"{path}: image file missing")
  data = path.read_bytes()
  if len(data) < 4 or data[:2] != b"\xff\xd8":
    raise ValueError(f"{path}: not a JPEG file")
  if b"\xff\xd9" not in data[-64:]:
    raise ValueError(f"{path}: truncated JPEG (no end-of-image marker)")
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if image is None:
    raise ValueError(f"{path}: corrupt JPEG (cannot be decoded)")
  if width and height and image.shape[:2] != (height, width):
    raise ValueError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, "
                     f"annotation says {width}x{height}")
  return data


def read_checked_png(path, kind, width, height) -> bytes:
  """The bytes of a depth (uint16) or parts (uint8) PNG after a strict decode; ValueError
  naming the file otherwise."""
  path = pathlib.Path(path)
  data = path.read_bytes() if path.is_file() else b""
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
  if image is None:
    raise ValueError(f"{path}: {kind} PNG missing or corrupt")
  if image.dtype != tfds_builder.PNG_FIELDS[kind] or image.ndim != 2:
    raise ValueError(f"{path}: {kind} PNG is {image.dtype} with shape {image.shape}, expected "
                     f"one channel of {np.dtype(tfds_builder.PNG_FIELDS[kind]).name}")
  if image.shape != (height, width):
    raise ValueError(f"{path}: {kind} map is {image.shape[1]}x{image.shape[0]}, annotation says "
                     f"{width}x{height}")
  if kind == "parts" and image.max() > 32:
    raise ValueError(f"{path}: part label {image.max()} outside 0..32")
  return data


class Progress:
  """One line of progress on stderr, at most once a second."""

  def __init__(self, label, total):
    self.label, self.total, self.start, self.last = label, total, time.time(), 0.0

  def update(self, done, skipped, final=False):
    now = time.time()
    if not final and now - self.last < 1.0:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-6)
    left = (self.total - done) / rate if rate > 0 else 0.0
    sys.stderr.write(f"\r{self.label}: {done}/{self.total} records, {skipped} skipped, "
                     f"{rate:.0f}/s, {left / 60:.1f} min left   ")
    if final:
      sys.stderr.write("\n")
    sys.stderr.flush()


def stage_split(reader, split_dir, workers=8, chunk_size=tfds_builder.CHUNK_SIZE, label=""):
  """Writes the records of ``reader`` with their checked JPEG bytes in chunks; resumable.

  Returns a report {'records', 'written', 'skipped': [{'annotation_id', 'file', 'reason'}]}.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  split_dir = pathlib.Path(split_dir)
  split_dir.mkdir(parents=True, exist_ok=True)
  progress = Progress(label or split_dir.name, reader.num_annotations)
  records = iter(reader)  # streamed: chunk boundaries depend only on the files
  skipped, written, done, index = [], 0, 0, 0
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    while True:
      chunk = list(itertools.islice(records, chunk_size))
      if not chunk:
        break
      name = split_dir / f"chunk-{index:06d}"
      index += 1
      if (name.with_suffix(".json")).exists():  # complete from an earlier run
        report = json.loads(name.with_suffix(".json").read_text())
      else:
        def check(rec):
          try:
            data = read_checked_jpeg(rec["image_path"], rec["image_width"], rec["image_height"])
            extra = {k: read_checked_png(rec[f"{k}_path"], k, rec["image_width"],
                                         rec["image_height"])
                     for k in tfds_builder.PNG_FIELDS if rec.get(f"{k}_path")}
            return rec, (data, extra), None
          except ValueError as e:
            return rec, None, str(e)
        report = {"written": 0, "skipped": []}
        tmp = f"{name}.tfrecord.tmp"
        with tf.io.TFRecordWriter(tmp) as writer:
          for rec, data, error in pool.map(check, chunk):
            if error is None:
              writer.write(tfds_builder.encode_staged(rec, *data))
              report["written"] += 1
            else:
              logging.warning("skipping annotation %s: %s", rec["annotation_id"], error)
              report["skipped"].append(dict(annotation_id=rec["annotation_id"],
                                            file=rec["image_path"], reason=error))
        pathlib.Path(tmp).rename(name.with_suffix(".tfrecord"))
        tfds_builder.write_json(name.with_suffix(".json"), report)  # marks the chunk complete
      written += report["written"]
      skipped += report["skipped"]
      done += len(chunk)
      progress.update(done, len(skipped))
  skipped = [dict(annotation_id=a, file=str(reader.data_json), reason=r)
             for a, r in reader.skipped] + skipped
  progress.update(done, len(skipped), final=True)
  result = {"records": done, "written": written, "skipped": skipped}
  tfds_builder.write_json(split_dir / "DONE", result)
  return result


def build(source, data_dir, splits=("train", "val", "test"), annotation="H+M", workers=8,
          keep_staging=False):
  """Stages every split, then prepares the TFDS dataset. Returns {split: report}."""
  config_name = tfds_builder.ANNOTATIONS[annotation]
  staging = pathlib.Path(data_dir) / "staging" / config_name
  reports = {}
  for split in splits:
    reader = interhand.InterHandReader.from_root(source, split, annotation=annotation)
    reports[split] = stage_split(reader, staging / split, workers, label=f"staging {split}")
    n_bad = len(reports[split]["skipped"])
    print(f"{split}: {reports[split]['written']} examples, {n_bad} skipped"
          + (f" (first: {reports[split]['skipped'][0]})" if n_bad else ""))
  builder = tfds_builder.InterHand26M(config=config_name, data_dir=data_dir, splits=splits,
                                      staging_dir=staging)
  existing = set(builder.info.splits.keys()) if builder.is_prepared() else None
  if existing is not None and not set(splits) <= existing:
    raise RuntimeError(f"{builder.data_dir} already holds splits {sorted(existing)}; build "
                       f"every split in one command or use another --data_dir")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(source)))
  tfds_builder.write_json(pathlib.Path(builder.data_dir) / "build_report.json", reports)
  if not keep_staging:
    shutil.rmtree(staging, ignore_errors=True)
    try:
      staging.parent.rmdir()  # <data_dir>/staging, when no other configuration is staged
    except OSError:
      pass
  print(f"dataset ready: {builder.data_dir}")
  return reports


def define_flags():
  flags.DEFINE_string("source", None, "InterHand2.6M root (annotations/ and images/).")
  flags.DEFINE_string("data_dir", None, "TFDS data directory to write.")
  flags.DEFINE_list("split", ["train", "val", "test"], "Splits to build.")
  flags.DEFINE_enum("annotation", "H+M", ["H", "M", "H+M"], "Annotation source.")
  flags.DEFINE_integer("workers", 8, "Threads reading and checking images.")
  flags.DEFINE_bool("keep_staging", False, "Keep the staged chunks after preparing.")


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if not FLAGS.source or not FLAGS.data_dir:
    raise app.UsageError("--source and --data_dir are required")
  build(FLAGS.source, FLAGS.data_dir, FLAGS.split, FLAGS.annotation, FLAGS.workers,
        FLAGS.keep_staging)


def command():
  """Console script ``dfl-build`` and ``python -m input_pipeline.build``."""
  define_flags()
  errors.run(main)
