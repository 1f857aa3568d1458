"""The TFDS builder and the build command: round trip, resume, bad images."""

import json
import pathlib

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipeline import dataset_build, interhand, tfds_builder

from conftest import build_official_tree


def _read_back(data_dir, split="test"):
  builder = tfds_builder.InterHand26M(config="hm", data_dir=str(data_dir))
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return {int(ex["annotation_id"]): ex for ex in tfds.as_numpy(ds)}


def test_builder_output_read_back_equals_input(fixtures, tmp_path):
  root = build_official_tree(fixtures, tmp_path / "ih")
  reports = dataset_build.build(root, tmp_path / "tfds", splits=("test",), workers=2)
  assert reports["test"]["written"] == 4 and not reports["test"]["skipped"]
  assert not (tmp_path / "tfds" / "staging").exists()  # removed after preparing
  back = _read_back(tmp_path / "tfds")
  records = {r["annotation_id"]: r for r in interhand.InterHandReader.from_root(root, "test")}
  assert set(back) == set(records)
  for aid, rec in records.items():
    ex = back[aid]
    assert ex["image"] == pathlib.Path(rec["image_path"]).read_bytes()  # original JPEG bytes
    for key in tfds_builder.ARRAY_FIELDS:
      np.testing.assert_array_equal(ex[key], rec[key], err_msg=key)
    for key in tfds_builder.INT_FIELDS:
      assert int(ex[key]) == rec[key], key
    assert ex["file_name"].decode() == rec["file_name"]
    assert tfds_builder.HAND_TYPES[ex["hand_type"]] == rec["hand_type"]
  report = json.loads((pathlib.Path(_builder_dir(tmp_path / "tfds")) /
                       "build_report.json").read_text())
  assert report["test"]["written"] == 4


def _builder_dir(data_dir):
  return tfds_builder.InterHand26M(config="hm", data_dir=str(data_dir)).data_dir


def test_bad_images_are_counted_reported_and_skipped(fixtures, tmp_path):
  root = build_official_tree(fixtures, tmp_path / "ih")
  images = sorted((root / "images" / "test").rglob("*.jpg"))
  truncated, corrupt, missing = images[0], images[1], images[2]
  data = truncated.read_bytes()
  truncated.write_bytes(data[: len(data) // 2])
  corrupt.write_bytes(b"\xff\xd8" + b"\x00" * 500 + b"\xff\xd9")
  missing.unlink()
  reports = dataset_build.build(root, tmp_path / "tfds", splits=("test",), workers=2)
  reasons = " | ".join(s["reason"] for s in reports["test"]["skipped"])
  assert reports["test"]["written"] == 1 and len(reports["test"]["skipped"]) == 3
  assert "truncated" in reasons and "corrupt" in reasons and "not found" in reasons
  assert truncated.name in reasons and corrupt.name in reasons and missing.name in reasons
  assert all(isinstance(s["annotation_id"], int) for s in reports["test"]["skipped"])
  assert len(_read_back(tmp_path / "tfds")) == 1  # the good image is still there


class _Interrupted(Exception):
  pass


class _InterruptingReader:
  """Yields the records of a reader, then fails after ``after`` of them."""

  def __init__(self, reader, after):
    self.reader, self.after = reader, after
    self.data_json, self.num_annotations, self.skipped = reader.data_json, 4, []

  def __iter__(self):
    for i, rec in enumerate(self.reader):
      if i == self.after:
        raise _Interrupted()
      yield rec


def test_interrupted_staging_resumes(fixtures, tmp_path):
  root = build_official_tree(fixtures, tmp_path / "ih")
  reader = interhand.InterHandReader.from_root(root, "test")
  split_dir = tmp_path / "staging" / "test"
  with pytest.raises(_Interrupted):
    dataset_build.stage_split(_InterruptingReader(reader, after=3), split_dir, workers=1, chunk_size=2)
  first = split_dir / "chunk-000000.tfrecord"
  assert first.exists() and not (split_dir / "chunk-000001.json").exists()
  stamp = first.stat().st_mtime_ns
  result = dataset_build.stage_split(reader, split_dir, workers=1, chunk_size=2)
  assert first.stat().st_mtime_ns == stamp  # the complete chunk was not redone
  assert result["written"] == 4 and (split_dir / "DONE").exists()
  builder = tfds_builder.InterHand26M(config="hm", data_dir=str(tmp_path / "tfds"),
                                      splits=("test",), staging_dir=tmp_path / "staging")
  builder.download_and_prepare()
  assert len(_read_back(tmp_path / "tfds")) == 4


def test_read_checked_jpeg_messages_name_the_file(tmp_path):
  good = tmp_path / "good.jpg"
  cv2.imwrite(str(good), np.zeros((10, 12, 3), np.uint8))
  assert dataset_build.read_checked_jpeg(good, 12, 10) == good.read_bytes()
  with pytest.raises(ValueError, match="good.jpg.*10x12|good.jpg: image is 12x10"):
    dataset_build.read_checked_jpeg(good, 10, 12)
  text = tmp_path / "notes.jpg"
  text.write_text("hello")
  with pytest.raises(ValueError, match="notes.jpg: not a JPEG"):
    dataset_build.read_checked_jpeg(text)
