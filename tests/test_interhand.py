"""InterHand2.6M reader and coordinate helpers, on the 4 genuine fixture frames and tmp copies.

The fixture JSON is only ever copied into tmp_path and corrupted there.
"""

import json
import pathlib
import shutil
import warnings

import cv2
import numpy as np
import pytest

from dfl_jax import conventions
from input_pipeline import geometry, interhand

from conftest import build_official_tree

SAMPLES = "interhand26m_samples"
KINDS = ("data", "camera", "joint_3d")
# The 4 annotations: id -> (file, hand_type).
FRAMES = {326750: ("image69148.jpg", "interacting"), 286291: ("image44669.jpg", "interacting"),
          680801: ("image29590.jpg", "left"), 471953: ("image2017.jpg", "right")}
ATOL = 1e-3


# ---------------------------------------------------------------- helpers

def sample_dir(fixtures) -> pathlib.Path:
  return fixtures / SAMPLES


def fixture_reader(fixtures, **kwargs):
  d = sample_dir(fixtures)
  return interhand.InterHandReader(*(d / f"test_interhand2.6m_{k}.json" for k in KINDS), d,
                                   **kwargs)


def read(reader):
  """(records, warning messages) of one pass over the reader."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    records = reader.read_all()
  messages = [str(w.message) for w in caught if issubclass(w.category,
                                                          interhand.InterHandDataWarning)]
  return records, messages


def load(path):
  with open(path) as f:
    return json.load(f)


def dump(obj, path):
  with open(path, "w") as f:
    json.dump(obj, f)


class FlatCopy:
  """A tmp copy of the fixture folder (flat layout) whose JSON can be edited."""

  def __init__(self, fixtures, tmp_path):
    self.dir = tmp_path / "flat"
    self.dir.mkdir()
    for p in sample_dir(fixtures).iterdir():
      shutil.copyfile(p, self.dir / p.name)  # contents only: the fixtures are read-only
    self.paths = {k: self.dir / f"test_interhand2.6m_{k}.json" for k in KINDS}

  def edit(self, kind, fn):
    obj = load(self.paths[kind])
    fn(obj)
    dump(obj, self.paths[kind])

  def annotation(self, data, aid):
    return next(a for a in data["annotations"] if a["id"] == aid)

  def reader(self, **kwargs):
    return interhand.InterHandReader(*(self.paths[k] for k in KINDS), self.dir, **kwargs)


@pytest.fixture
def flat(fixtures, tmp_path):
  return FlatCopy(fixtures, tmp_path)


@pytest.fixture
def anchors(fixtures):
  return {a["file"]: a for a in load(sample_dir(fixtures) / "derived_anchors.json")}


def assert_skipped(flat, reader, aid, reason_part, file=None):
  """aid is skipped with a warning naming the file, the annotation and the reason; the other
  three records still come out."""
  records, messages = read(reader)
  assert sorted(r["annotation_id"] for r in records) == sorted(set(FRAMES) - {aid})
  assert [s[0] for s in reader.skipped] == [aid]
  assert reason_part in reader.skipped[0][1]
  named = [m for m in messages if f"annotation {aid}" in m]
  assert len(named) == 1, messages
  assert str(flat.paths["data"]) in named[0]
  assert reason_part in named[0]
  if file is not None:
    assert str(file) in named[0]
  return records


# ---------------------------------------------------------------- genuine frames

def test_record_contract(fixtures):
  records, messages = read(fixture_reader(fixtures))
  assert not messages
  assert len(records) == 4
  ints = ("annotation_id", "image_id", "image_width", "image_height", "capture", "subject",
          "frame_idx")
  strs = ("file_name", "image_path", "depth_path", "parts_path", "seq_name", "camera",
          "hand_type")
  arrays = {"bbox": (4,), "crop_box": (4,), "joint_world": (42, 3), "joint_cam": (42, 3),
            "joint_img": (42, 2), "joint_valid": (42,), "focal": (2,), "princpt": (2,),
            "campos": (3,), "camrot": (3, 3)}
  for r in records:
    assert set(r) == set(ints) | set(strs) | set(arrays) | {"hand_type_valid"}
    assert r["depth_path"] == r["parts_path"] == ""   # real data has neither
    for k in ints:
      assert type(r[k]) is int, k
    for k in strs:
      assert type(r[k]) is str, k
    for k, shape in arrays.items():
      assert r[k].dtype == np.float32 and r[k].shape == shape, k
    assert r["hand_type_valid"].dtype == np.float32 and r["hand_type_valid"] == 1.0
    assert pathlib.Path(r["image_path"]).is_absolute()
    assert pathlib.Path(r["image_path"]).is_file()
    assert (r["file_name"], r["hand_type"]) == FRAMES[r["annotation_id"]]
    assert set(np.unique(r["joint_valid"])) <= {0.0, 1.0}


def test_records_match_derived_anchors(fixtures, anchors):
  records, _ = read(fixture_reader(fixtures))
  for r in records:
    a = anchors[r["file_name"]]
    assert r["hand_type"] == a["hand_type"]
    assert (r["capture"], r["camera"], r["frame_idx"]) == (a["capture"], a["camera"],
                                                           a["frame_idx"])
    assert [r["image_width"], r["image_height"]] == a["img_wh"]
    assert r["joint_valid"].sum() == a["n_valid_2d"]
    np.testing.assert_allclose(r["bbox"], a["bbox_xywh_ann"], atol=ATOL)
    np.testing.assert_allclose(r["crop_box"], a["bbox_xywh_square_x1.25"], atol=ATOL)
    np.testing.assert_allclose(r["joint_cam"][20], a["root_cam_mm"]["right"], atol=ATOL)
    np.testing.assert_allclose(r["joint_cam"][41], a["root_cam_mm"]["left"], atol=ATOL)

    # 256^3 targets: the 1.25x square crop resized to 256.
    in_crop = geometry.image_to_crop(r["joint_img"], r["crop_box"], 256)
    uvd, rel_root_depth = geometry.targets_25d(in_crop, r["joint_cam"])
    np.testing.assert_allclose(rel_root_depth, a["rel_root_depth_left_minus_right_mm"],
                               atol=ATOL)
    t = a["a2j_256"]
    np.testing.assert_allclose(uvd[20], t["target_xyz_root_right"], atol=ATOL)
    np.testing.assert_allclose(uvd[0], t["target_xyz_joint0"], atol=ATOL)
    valid = (r["joint_valid"] > 0) & geometry.in_target_range(uvd, 256)
    assert valid.sum() == t["valid_after_range_check"]
    # Each hand's wrist sits in the middle of the depth range.
    np.testing.assert_allclose(uvd[[20, 41], 2], 128.0, atol=1e-6)


def test_projections_land_in_image_and_on_bbox(fixtures):
  records, _ = read(fixture_reader(fixtures))
  for r in records:
    valid = r["joint_valid"] > 0
    uv = r["joint_img"][valid]
    assert np.all(uv >= 0) and np.all(uv[:, 0] < r["image_width"])
    assert np.all(uv[:, 1] < r["image_height"])
    assert np.all(r["joint_cam"][valid, 2] > 0)
    np.testing.assert_allclose(geometry.tight_bbox(r["joint_img"], r["joint_valid"], 1.2),
                               r["bbox"], atol=ATOL)
    # And the official convention X_cam = R (X_world - campos), written out.
    expected = np.einsum("ij,nj->ni", r["camrot"].astype(np.float64),
                         r["joint_world"].astype(np.float64) - r["campos"])
    np.testing.assert_allclose(r["joint_cam"], expected, rtol=1e-5, atol=1e-3)
    image = interhand.load_image(r["image_path"])
    assert image.dtype == np.uint8
    assert image.shape == (r["image_height"], r["image_width"], 3)


def test_absent_hand_is_invalid(fixtures):
  """The single-hand frames mark the absent hand invalid; its wrist has the [1, 1, 1]
  placeholder (a few of its joints carry real, but invalid, coordinates)."""
  records = {r["annotation_id"]: r for r in read(fixture_reader(fixtures))[0]}
  right_only, left_only = records[471953], records[680801]
  assert right_only["joint_valid"][:21].all() and not right_only["joint_valid"][21:].any()
  assert left_only["joint_valid"][21:].all() and not left_only["joint_valid"][:21].any()
  np.testing.assert_array_equal(right_only["joint_world"][41], 1.0)
  np.testing.assert_array_equal(left_only["joint_world"][20], 1.0)


def test_wrist_rule(flat):
  """A joint marked valid in data.json is invalid when its hand's wrist is not (official
  loader: "if root is not valid -> root-relative 3D pose is also not valid")."""
  def mark(d):
    flat.annotation(d, 471953)["joint_valid"][33] = [1]   # left joint, left wrist invalid
    flat.annotation(d, 326750)["joint_valid"][20] = [0]   # right wrist of an interacting frame
  flat.edit("data", mark)
  reader = flat.reader()
  records, messages = read(reader)
  assert not messages and not reader.skipped and not reader.invalidated
  records = {r["annotation_id"]: r for r in records}
  assert records[471953]["joint_valid"][33] == 0 and records[471953]["joint_valid"].sum() == 21
  assert not records[326750]["joint_valid"][:21].any()
  assert records[326750]["joint_valid"][21:].all()


@pytest.mark.parametrize("frames, expected", [
    ("single", {680801, 471953}), ("interacting", {326750, 286291}), ("all", set(FRAMES))])
def test_frames_selection(fixtures, frames, expected):
  records, _ = read(fixture_reader(fixtures, frames=frames))
  assert {r["annotation_id"] for r in records} == expected


def test_bad_arguments(fixtures):
  with pytest.raises(ValueError, match="frames"):
    fixture_reader(fixtures, frames="both")
  with pytest.raises(ValueError, match="annotation"):
    fixture_reader(fixtures, annotation="HM")


# ---------------------------------------------------------------- official layout, H/M subsets



def test_from_root_official_layout(fixtures, tmp_path):
  root = build_official_tree(fixtures, tmp_path / "InterHand2.6M")
  reader = interhand.InterHandReader.from_root(root, "test")
  assert reader.data_json == str(root / "annotations/test/InterHand2.6M_test_data.json")
  records, messages = read(reader)
  assert not messages and len(records) == 4
  flat = {r["annotation_id"]: r for r in read(fixture_reader(fixtures))[0]}
  for r in records:
    assert r["file_name"].startswith(f"Capture{r['capture']}/")
    assert pathlib.Path(r["image_path"]) == (root / "images/test" / r["file_name"]).absolute()
    assert pathlib.Path(r["image_path"]).is_file()
    for k in ("joint_cam", "joint_img", "joint_valid", "crop_box"):
      np.testing.assert_array_equal(r[k], flat[r["annotation_id"]][k])
  single = interhand.InterHandReader.from_root(root, "test", frames="single").read_all()
  assert {r["annotation_id"] for r in single} == {680801, 471953}


def test_annotation_subsets(fixtures, tmp_path):
  human, machine = {326750, 471953}, {286291, 680801}
  root = build_official_tree(fixtures, tmp_path / "v0", folders_and_ids={
      "human_annot": human, "machine_annot": machine, "all": human | machine})

  def ids(annotation, **kwargs):
    reader = interhand.InterHandReader.from_root(root, "test", annotation=annotation, **kwargs)
    assert reader.annotation == annotation
    return {r["annotation_id"] for r in read(reader)[0]}

  assert ids("H") == human
  assert ids("M") == machine
  assert ids("H+M") == human | machine
  assert ids("H", frames="interacting") == {326750}
  assert ids("M", frames="single") == {680801}
  assert interhand.annotation_dir(root, "test", "H+M") == root / "annotations/all"

  # A v1.0 split folder is what H+M means when it exists.
  build_official_tree(fixtures, root, folders_and_ids={"test": {326750}})
  assert interhand.annotation_dir(root, "test") == root / "annotations/test"
  assert ids("H+M") == {326750}


def test_annotation_subset_fallbacks_and_errors(fixtures, tmp_path):
  # v1.0 only: H and M cannot be selected, and the message says why.
  v1 = build_official_tree(fixtures, tmp_path / "v1")
  with pytest.raises(FileNotFoundError, match="no per-frame H/M marker"):
    interhand.InterHandReader.from_root(v1, "test", annotation="H")
  with pytest.raises(FileNotFoundError, match="machine_annot"):
    interhand.InterHandReader.from_root(v1, "test", annotation="M")
  with pytest.raises(FileNotFoundError, match="'val'"):
    interhand.InterHandReader.from_root(v1, "val")
  with pytest.raises(ValueError, match="split"):
    interhand.annotation_dir(v1, "training")
  # v0.0 val is machine-annotated only: H+M is its machine_annot.
  v0 = build_official_tree(fixtures, tmp_path / "v0", split="val",
                           folders_and_ids={"machine_annot": set(FRAMES)})
  assert interhand.annotation_dir(v0, "val", "H+M") == v0 / "annotations/machine_annot"
  assert len(interhand.InterHandReader.from_root(v0, "val").read_all()) == 4


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kind", KINDS)
def test_malformed_json_raises_naming_the_file(flat, kind):
  text = flat.paths[kind].read_text()
  flat.paths[kind].write_text(text[: len(text) // 2])
  with pytest.raises(interhand.InterHandFormatError, match="malformed JSON") as e:
    flat.reader()
  assert str(flat.paths[kind]) in str(e.value)


def test_wrong_top_level_structure_raises_naming_the_file(flat):
  dump({"images": []}, flat.paths["data"])
  with pytest.raises(interhand.InterHandFormatError) as e:
    flat.reader()
  assert str(flat.paths["data"]) in str(e.value)
  with pytest.raises(FileNotFoundError, match="nowhere.json"):
    interhand.InterHandReader(flat.dir / "nowhere.json", flat.paths["camera"],
                              flat.paths["joint_3d"], flat.dir)


@pytest.mark.parametrize("key", ["bbox", "joint_valid", "hand_type", "image_id"])
def test_missing_key_skips_the_record(flat, key):
  flat.edit("data", lambda d: flat.annotation(d, 286291).pop(key))
  assert_skipped(flat, flat.reader(), 286291, "missing keys")


def test_missing_image_key_skips_the_record(flat):
  def drop(d):
    next(i for i in d["images"] if i["id"] == 680801).pop("camera")
  flat.edit("data", drop)
  assert_skipped(flat, flat.reader(), 680801, "missing keys")


def test_missing_subject_is_minus_one(flat):
  flat.edit("data", lambda d: d["images"][0].pop("subject"))
  records, messages = read(flat.reader())
  assert not messages
  assert {r["annotation_id"]: r["subject"] for r in records}[326750] == -1


@pytest.mark.parametrize("bbox", [[10.0, 20.0, 0.0, 30.0], [10.0, 20.0, 30.0, 0.0],
                                  [10.0, 20.0, -5.0, 30.0]])
def test_zero_area_bbox_skips_the_record(flat, bbox):
  flat.edit("data", lambda d: flat.annotation(d, 471953).update(bbox=bbox))
  assert_skipped(flat, flat.reader(), 471953, "zero-area bbox")


@pytest.mark.parametrize("bbox", [[10.0, None, 20.0, 30.0], [1.0, 2.0, 3.0], "box"])
def test_malformed_bbox_skips_the_record(flat, bbox):
  flat.edit("data", lambda d: flat.annotation(d, 471953).update(bbox=bbox))
  assert_skipped(flat, flat.reader(), 471953, "bbox")


def test_unknown_hand_type_skips_the_record(flat):
  flat.edit("data", lambda d: flat.annotation(d, 326750).update(hand_type="both"))
  assert_skipped(flat, flat.reader(), 326750, "unknown hand_type: 'both'")
  # Skipped whichever frames are selected.
  reader = flat.reader(frames="single")
  records, _ = read(reader)
  assert {r["annotation_id"] for r in records} == {680801, 471953}
  assert reader.skipped[0][0] == 326750


def test_missing_camera_skips_the_record(flat):
  flat.edit("camera", lambda c: c["2"]["campos"].pop("400012"))
  assert_skipped(flat, flat.reader(), 286291, "missing camera", file=flat.paths["camera"])


def test_missing_capture_in_camera_file_skips_the_record(flat):
  flat.edit("camera", lambda c: c.pop("7"))
  assert_skipped(flat, flat.reader(), 680801, "missing camera", file=flat.paths["camera"])


def test_non_finite_camera_skips_the_record(flat):
  flat.edit("camera", lambda c: c["4"]["focal"].update({"410028": [None, 1200.0]}))
  assert_skipped(flat, flat.reader(), 471953, "non-finite camera", file=flat.paths["camera"])


def test_missing_joint_3d_entry_skips_the_record(flat):
  flat.edit("joint_3d", lambda j: j["4"].pop("2017"))
  assert_skipped(flat, flat.reader(), 471953, "missing joint_3d",
                 file=flat.paths["joint_3d"])


def test_missing_image_file_skips_the_record(flat):
  (flat.dir / "image69148.jpg").unlink()
  records = assert_skipped(flat, flat.reader(), 326750, "image file not found",
                           file=flat.dir / "image69148.jpg")
  for r in records:
    assert interhand.load_image(r["image_path"]).shape[2] == 3
  # Without the check the record comes out and decoding names the file.
  records, _ = read(flat.reader(check_images=False))
  missing = next(r for r in records if r["annotation_id"] == 326750)
  with pytest.raises(FileNotFoundError, match="image69148.jpg"):
    interhand.load_image(missing["image_path"])


@pytest.mark.parametrize("placeholder", [float("nan"), None])
def test_nan_on_a_valid_joint_makes_only_that_joint_invalid(flat, placeholder):
  flat.edit("joint_3d",
            lambda j: j["3"]["69148"]["world_coord"][5].__setitem__(1, placeholder))
  reader = flat.reader()
  records, messages = read(reader)
  assert len(records) == 4 and not reader.skipped
  r = next(r for r in records if r["annotation_id"] == 326750)
  expected = np.ones(42, np.float32)
  expected[5] = 0.0
  np.testing.assert_array_equal(r["joint_valid"], expected)
  for k in ("joint_world", "joint_cam", "joint_img"):
    assert np.all(np.isfinite(r[k])), k
  assert reader.invalidated == [(326750, (5,), "NaN/inf coordinates")]
  assert len(messages) == 1
  assert str(flat.paths["data"]) in messages[0] and "annotation 326750" in messages[0]
  assert "NaN" in messages[0]


def test_nan_on_a_wrist_invalidates_its_hand(flat):
  flat.edit("joint_3d",
            lambda j: j["3"]["69148"]["world_coord"][20].__setitem__(2, float("nan")))
  reader = flat.reader()
  records, messages = read(reader)
  assert len(records) == 4 and not reader.skipped
  r = next(r for r in records if r["annotation_id"] == 326750)
  assert not r["joint_valid"][:21].any() and r["joint_valid"][21:].all()
  assert reader.invalidated == [(326750, (20,), "NaN/inf coordinates")]
  assert any("annotation 326750" in m for m in messages)


def test_nan_on_an_invalid_joint_is_fine(flat):
  flat.edit("joint_3d", lambda j: j["7"]["29590"]["world_coord"][3].__setitem__(
      0, float("nan")))
  reader = flat.reader()
  records, messages = read(reader)
  assert not messages and not reader.skipped and not reader.invalidated
  r = next(r for r in records if r["annotation_id"] == 680801)
  assert r["joint_valid"].sum() == 21
  assert np.all(np.isfinite(r["joint_img"]))


def test_placeholder_on_a_valid_joint_makes_it_invalid(flat):
  flat.edit("joint_3d", lambda j: j["2"]["44669"]["world_coord"].__setitem__(7, [1, 1, 1]))
  reader = flat.reader()
  records, messages = read(reader)
  r = next(r for r in records if r["annotation_id"] == 286291)
  assert r["joint_valid"].sum() == 41 and r["joint_valid"][7] == 0
  assert reader.invalidated[0][:2] == (286291, (7,))
  assert "placeholder" in messages[0]


def test_skipped_list_is_rebuilt_on_each_pass(flat):
  flat.edit("data", lambda d: flat.annotation(d, 326750).update(hand_type="?"))
  reader = flat.reader()
  for _ in range(2):
    assert len(read(reader)[0]) == 3
    assert len(reader.skipped) == 1
  assert reader.skip_counts() == {"unknown hand_type": 1}


# ---------------------------------------------------------------- images

def test_load_image_grey_jpeg_becomes_rgb(tmp_path):
  grey = (np.arange(48 * 32) % 251).astype(np.uint8).reshape(48, 32)
  path = tmp_path / "grey.jpg"
  assert cv2.imwrite(str(path), grey)
  image = interhand.load_image(path)
  assert image.dtype == np.uint8 and image.shape == (48, 32, 3)
  np.testing.assert_array_equal(image[..., 0], image[..., 1])
  np.testing.assert_array_equal(image[..., 1], image[..., 2])


def test_load_image_is_rgb(tmp_path):
  bgr = np.zeros((16, 16, 3), np.uint8)
  bgr[..., 2] = 255  # red in OpenCV's BGR order
  path = tmp_path / "red.png"
  assert cv2.imwrite(str(path), bgr)
  image = interhand.load_image(path)
  assert image[0, 0].tolist() == [255, 0, 0]


def test_load_image_truncated_jpeg_names_the_file(fixtures, tmp_path):
  data = (sample_dir(fixtures) / "image2017.jpg").read_bytes()
  path = tmp_path / "truncated.jpg"
  path.write_bytes(data[: len(data) * 2 // 3])
  with pytest.raises(interhand.InterHandFormatError, match="truncated") as e:
    interhand.load_image(path)
  assert str(path) in str(e.value)
  # The other images still load.
  assert interhand.load_image(sample_dir(fixtures) / "image69148.jpg").shape == (512, 334, 3)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8garbage\xff\xd9"])
def test_load_image_corrupt_names_the_file(tmp_path, content):
  path = tmp_path / "corrupt.jpg"
  path.write_bytes(content)
  with pytest.raises(interhand.InterHandFormatError) as e:
    interhand.load_image(path)
  assert str(path) in str(e.value)


# ---------------------------------------------------------------- geometry

def test_process_bbox_pads_to_square_then_enlarges():
  np.testing.assert_allclose(geometry.process_bbox([0, 0, 10, 20]), [-7.5, -2.5, 25, 25])
  np.testing.assert_allclose(geometry.process_bbox([0, 0, 20, 10]), [-2.5, -7.5, 25, 25])
  np.testing.assert_allclose(geometry.process_bbox([0, 0, 20, 10], aspect=2.0, scale=1.0),
                             [0, 0, 20, 10])


def test_pixel_crop_round_trip():
  rng = np.random.default_rng(0)
  for _ in range(20):
    box = np.concatenate([rng.uniform(-100, 300, 2), rng.uniform(20, 400, 2)])
    points = rng.uniform(-500, 1000, (42, 2))
    for size in (256, (192, 256)):
      in_crop = geometry.image_to_crop(points, box, size)
      np.testing.assert_allclose(geometry.crop_to_image(in_crop, box, size), points, atol=1e-3)
      affine = geometry.crop_affine(box, size)
      homogeneous = np.concatenate([points, np.ones((42, 1))], -1)
      np.testing.assert_allclose(homogeneous @ affine.T, in_crop, atol=1e-6)
  # Box corners go to the input's corners, float32 round trip within 1e-3 px.
  box = np.float32([10.436, 120.625, 231.322, 231.322])
  corners = np.float32([[box[0], box[1]], [box[0] + box[2], box[1] + box[3]]])
  np.testing.assert_allclose(geometry.image_to_crop(corners, box), [[0, 0], [256, 256]],
                             atol=1e-4)
  pts = np.float32(rng.uniform(0, 512, (42, 2)))
  back = geometry.crop_to_image(geometry.image_to_crop(pts, box).astype(np.float32), box)
  np.testing.assert_allclose(back, pts, atol=1e-3)


def test_crop_affine_matches_cv2_warp():
  """The affine is the one cv2.warpAffine needs to cut the crop out of the image."""
  image = np.zeros((200, 300, 3), np.uint8)
  image[50:60, 100:110] = 255
  box = [80.0, 30.0, 64.0, 64.0]
  crop = cv2.warpAffine(image, geometry.crop_affine(box, 128), (128, 128))
  ys, xs = np.nonzero(crop[..., 0] > 127)
  centre = geometry.image_to_crop([104.5, 54.5], box, 128)
  np.testing.assert_allclose([xs.mean(), ys.mean()], centre, atol=1.0)


def test_camera_pixel_round_trip():
  rng = np.random.default_rng(1)
  cam = np.concatenate([rng.uniform(-300, 300, (5, 42, 2)), rng.uniform(300, 2000, (5, 42, 1))],
                       -1)
  focal, princpt = np.array([1261.5, 1261.7]), np.array([155.8, 258.8])
  uv = geometry.camera_to_pixel(cam, focal, princpt)
  back = geometry.pixel_to_camera(uv, cam[..., 2], focal, princpt)
  np.testing.assert_allclose(back, cam, rtol=1e-6)


def test_world_camera_round_trip(fixtures):
  r = read(fixture_reader(fixtures))[0][0]
  cam = geometry.world_to_camera(r["joint_world"], r["camrot"], r["campos"])
  world = cam @ r["camrot"].astype(np.float64) + r["campos"]  # R orthonormal: R^-1 = R^T
  np.testing.assert_allclose(world, r["joint_world"], atol=1e-2)


def test_targets_25d_depth_scale():
  cam = np.zeros((42, 3))
  cam[:21, 2] = 1000.0
  cam[21:, 2] = 1100.0
  cam[3, 2] = 1200.0    # +200 mm: the top of the range
  cam[25, 2] = 900.0    # -200 mm from the left wrist: the bottom
  uvd, rel = geometry.targets_25d(np.zeros((42, 2)), cam)
  assert uvd[3, 2] == 256.0 and uvd[25, 2] == 0.0 and uvd[0, 2] == 128.0
  assert rel == 100.0
  in_range = geometry.in_target_range(uvd, 256)
  assert not in_range[3] and in_range[25] and in_range[0]
  # The depth range is 256 units whatever the crop size (a 128 crop keeps every depth valid).
  assert geometry.in_target_range(uvd, 128)[25] and not geometry.in_target_range(uvd, 128)[3]
  # Decoding is the exact inverse of encoding (dfl_jax.conventions), NumPy and TF alike.
  rel_mm = cam[:, 2] - cam[conventions.ROOT_OF, 2]
  np.testing.assert_allclose(conventions.depth_units_to_mm(uvd[:, 2]), rel_mm, atol=1e-9)
  tf = pytest.importorskip("tensorflow")
  encoded = conventions.depth_mm_to_units(tf.constant(rel_mm, tf.float32)).numpy()
  np.testing.assert_allclose(encoded, uvd[:, 2], atol=1e-4)
