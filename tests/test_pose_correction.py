"""Pose correction (dfl_jax/pose_correction.py) against a NumPy reference written from the
cross-domain supplement's Sec. C (its 2-D example of Fig. c, generalised to 3-D), its
invariants (template bone lengths, roots kept, angles within their intervals) and its commands."""

import json
import math

import numpy as np
import pytest

from dfl_jax import conventions, errors, pose_correction as pc
from dfl_jax.evaluation import correction, predictions as scoring
from input_pipeline import hand_model
from conftest import fixtures_dir

# Per finger (thumb..pinky): its joints from the base out, then the wrist (InterHand order).
FINGERS = [[4 * f + 3, 4 * f + 2, 4 * f + 1, 4 * f] for f in range(5)]
WRIST = 20


# ------------------------------------------------------------------ the reference, one joint at a time

def unit(v):
  return v / np.linalg.norm(v)


def rotation_between(a, b):
  """3x3 matrix of the smallest rotation taking unit a to unit b (axis-angle, K matrix)."""
  axis = np.cross(a, b)
  s, c = np.linalg.norm(axis), float(np.dot(a, b))
  if s < 1e-12:
    return np.eye(3)
  k = axis / s
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + s * kx + (1 - c) * kx @ kx


def angular_distance(a, b):
  d = (a - b) % (2 * math.pi)
  return min(d, 2 * math.pi - d)


def clamp(angle, lo, hi):
  if lo <= angle <= hi:
    return angle
  return lo if angular_distance(angle, lo) <= angular_distance(angle, hi) else hi


def first_frames(roots):
  """Rows x (palmar normal), y, z (root bone) per finger from its root bones."""
  normals = [unit(np.cross(roots[i], roots[i + 1])) for i in range(4)]
  xs = [normals[0], normals[1], unit(normals[1] + normals[2]), unit(normals[2] + normals[3]),
        normals[3]]
  frames = []
  for f in range(5):
    z = unit(roots[f])
    x = unit(xs[f] - np.dot(xs[f], z) * z)
    frames.append(np.stack([x, np.cross(z, x), z]))
  return frames


def reference_angles(hand):
  """[5, 3, 2] (flexion, abduction) degrees of a right hand [21, 3]."""
  roots = [hand[FINGERS[f][0]] - hand[WRIST] for f in range(5)]
  out = np.zeros((5, 3, 2))
  for f, frame in enumerate(first_frames(roots)):
    for k in range(1, 4):
      local = frame @ unit(hand[FINGERS[f][k]] - hand[FINGERS[f][k - 1]])
      out[f, k - 1] = math.degrees(math.atan2(local[0], local[2])), math.degrees(
          math.asin(np.clip(local[1], -1, 1)))
      frame = (rotation_between(frame[2], unit(local @ frame)) @ frame.T).T
  return out


def reference_correct(hand, template):
  """Sec. C on a right hand [21, 3]: (1) translate the root onto the predicted root; (2) turn
  each bone, root to leaf, towards the predicted child from the registered parent, with the
  template's length; (3) rectify a joint angle outside its interval before placing the child."""
  lengths = template["bone_lengths_mm"]
  flex, abd = np.radians(template["flexion_deg"]), np.radians(template["abduction_deg"])
  out = hand.copy()
  root = hand[WRIST]                                              # step 1
  roots = [hand[FINGERS[f][0]] - root for f in range(5)]
  for f in range(5):
    out[FINGERS[f][0]] = root + lengths[f, 0] * unit(roots[f])
  for f, frame in enumerate(first_frames(roots)):
    parent = out[FINGERS[f][0]]
    for k in range(1, 4):                                         # steps 2 and 3
      local = frame @ (hand[FINGERS[f][k]] - parent)
      fl = math.atan2(local[0], local[2])
      ab = math.asin(np.clip(local[1] / np.linalg.norm(local), -1, 1))
      fl = clamp(fl, *flex[f, k - 1])
      ab = clamp(ab, *abd[f, k - 1])
      d = frame.T @ np.array([math.cos(ab) * math.sin(fl), math.sin(ab),
                              math.cos(ab) * math.cos(fl)])
      parent = parent + lengths[f, k] * d
      out[FINGERS[f][k]] = parent
      frame = (rotation_between(frame[2], d) @ frame.T).T
  return out


def mirror(hand):
  return hand * np.array([-1.0, 1.0, 1.0])


# ------------------------------------------------------------------ predicted poses

@pytest.fixture(scope="module")
def gt_hands():
  records, _ = scoring.load_annotations(fixtures_dir() / "interhand26m_samples", "test")
  hands = []
  for r in records:
    for left, part in ((False, conventions.RIGHT), (True, conventions.LEFT)):
      if np.all(np.asarray(r["joint_valid"])[part] > 0):
        hands.append((np.asarray(r["joint_cam"], np.float64)[part], left))
  assert len(hands) == 6
  return hands


def noisy_predictions(gt_hands, rng, noise_mm):
  """Right-hand frames: the fixture hands (left ones mirrored) and synthetic hands in random
  orientations, with Gaussian noise on every joint."""
  hands = [mirror(h) if left else h for h, left in gt_hands]
  for _ in range(6):
    angles = hand_model.sample_angles(rng)
    rot = hand_model.random_rotation(rng)
    hands.append(hand_model.hand_joints(angles, scale=rng.uniform(0.85, 1.15)) @ rot.T
                 + np.array([0.0, 0.0, 600.0]))
  hands = np.stack(hands)
  return hands + rng.normal(0.0, noise_mm, hands.shape)


@pytest.mark.parametrize("noise_mm", [0.0, 4.0, 25.0])
def test_matches_the_reference(gt_hands, noise_mm):
  rng = np.random.default_rng(int(noise_mm) + 1)
  hands = noisy_predictions(gt_hands, rng, noise_mm)
  template = pc.default_template()
  ours = pc.correct(hands, template)
  for hand, got in zip(hands, ours):
    np.testing.assert_allclose(got, reference_correct(hand, template), atol=1e-8)
    np.testing.assert_allclose(pc.joint_angles(got), reference_angles(got), atol=1e-6)


def test_lengths_roots_and_angles_hold_in_every_frame(gt_hands):
  rng = np.random.default_rng(7)
  template = pc.default_template()
  template["bone_lengths_mm"] = template["bone_lengths_mm"] * 1.07   # not the data's lengths
  right = noisy_predictions(gt_hands, rng, 15.0)
  left = mirror(noisy_predictions(gt_hands, rng, 15.0))
  joints = np.concatenate([right, left], axis=1)                        # [N, 42, 3]
  corrected = pc.correct_two_hands(joints, template)
  lo_f, hi_f = template["flexion_deg"][..., 0], template["flexion_deg"][..., 1]
  lo_a, hi_a = template["abduction_deg"][..., 0], template["abduction_deg"][..., 1]
  rectified = 0
  for before, after in zip(joints, corrected):
    for part, left in ((conventions.RIGHT, False), (conventions.LEFT, True)):
      hand = mirror(after[part]) if left else after[part]
      np.testing.assert_array_equal(after[part][WRIST], before[part][WRIST])   # roots unchanged
      for f in range(5):
        chain = [WRIST] + FINGERS[f]
        lengths = [np.linalg.norm(hand[chain[k + 1]] - hand[chain[k]]) for k in range(4)]
        np.testing.assert_allclose(lengths, template["bone_lengths_mm"][f], rtol=1e-10)
      angles = reference_angles(hand)
      assert np.all(angles[..., 0] >= lo_f - 1e-6) and np.all(angles[..., 0] <= hi_f + 1e-6)
      assert np.all(angles[..., 1] >= lo_a - 1e-6) and np.all(angles[..., 1] <= hi_a + 1e-6)
      raw = reference_angles(mirror(before[part]) if left else before[part])
      rectified += int(np.sum((raw[..., 0] < lo_f) | (raw[..., 0] > hi_f)
                              | (raw[..., 1] < lo_a) | (raw[..., 1] > hi_a)))
  assert rectified > 20   # the noise pushed many angles out: the intervals were enforced


def test_left_hands_are_mirrored_right_hands(gt_hands):
  right = noisy_predictions(gt_hands, np.random.default_rng(3), 10.0)
  joints = np.concatenate([right, mirror(right)], axis=1)
  corrected = pc.correct_two_hands(joints)
  np.testing.assert_allclose(corrected[:, 21:], mirror(corrected[:, :21]), atol=1e-9)


def test_correcting_twice_changes_nothing(gt_hands):
  hands = noisy_predictions(gt_hands, np.random.default_rng(4), 20.0)
  once = pc.correct(hands)
  np.testing.assert_allclose(pc.correct(once), once, atol=1e-8)


def test_genuine_hands_are_inside_the_default_intervals(gt_hands):
  template = pc.default_template()
  for hand, left in gt_hands:
    angles = pc.joint_angles(hand, left=left)
    assert np.all(angles[..., 0] >= template["flexion_deg"][..., 0])
    assert np.all(angles[..., 0] <= template["flexion_deg"][..., 1])
    assert np.all(angles[..., 1] >= template["abduction_deg"][..., 0])
    assert np.all(angles[..., 1] <= template["abduction_deg"][..., 1])
    # With the hand's own bone lengths the correction leaves a feasible hand where it is.
    own = dict(template, bone_lengths_mm=pc.bone_lengths(hand))
    np.testing.assert_allclose(pc.correct(hand, own, left=left), hand, atol=1e-6)


def test_a_finger_bent_past_its_limit_is_brought_to_the_limit():
  # Fig. c in 3-D: an index PIP bent 170 degrees (its interval ends near 125) is rectified to
  # the interval's end; the bones before it stay where the prediction put them.
  angles = np.zeros((5, 4))
  angles[1, 2] = 170.0
  hand = hand_model.hand_joints(angles)
  template = pc.default_template()
  template["bone_lengths_mm"] = pc.bone_lengths(hand)
  corrected = pc.correct(hand, template)
  got = pc.joint_angles(corrected)
  assert pc.joint_angles(hand)[1, 1, 0] > template["flexion_deg"][1, 1, 1] + 30
  assert got[1, 1, 0] == pytest.approx(template["flexion_deg"][1, 1, 1], abs=1e-6)
  keep = [i for i in range(21) if i not in (4, 5)]   # the index tip and DIP move
  np.testing.assert_allclose(corrected[keep], hand[keep], atol=1e-6)


# ------------------------------------------------------------------ templates and commands

def test_template_round_trip_and_bad_templates_named(tmp_path):
  path = tmp_path / "template.json"
  pc.save_template(pc.default_template(), path)
  loaded = pc.load_template(path)
  for key in ("bone_lengths_mm", "flexion_deg", "abduction_deg"):
    np.testing.assert_allclose(loaded[key], pc.default_template()[key])
  bad = json.loads(path.read_text())
  bad["flexion_deg"] = bad["flexion_deg"][:4]
  (tmp_path / "bad.json").write_text(json.dumps(bad))
  with pytest.raises(errors.InputError, match=r"bad\.json.*flexion_deg.*\(5, 3, 2\)"):
    pc.load_template(tmp_path / "bad.json")
  with pytest.raises(errors.MissingFileError, match="nothere.json"):
    pc.load_template(tmp_path / "nothere.json")


def test_fit_template_recovers_lengths_and_covers_its_data(gt_hands):
  hands = np.stack([mirror(h) if left else h for h, left in gt_hands])
  template = pc.fit_template(hands, percentiles=(0, 100))
  np.testing.assert_allclose(template["bone_lengths_mm"], pc.bone_lengths(hands).mean(0))
  angles = pc.joint_angles(hands)
  assert np.all(angles[..., 0] >= template["flexion_deg"][..., 0] - 1e-9)
  assert np.all(angles[..., 1] <= template["abduction_deg"][..., 1] + 1e-9)
  np.testing.assert_allclose(np.min(angles[..., 0], 0), template["flexion_deg"][..., 0])


def test_correct_pose_command_keeps_the_format(fixtures, tmp_path):
  samples = fixtures / "interhand26m_samples"
  records, _ = scoring.load_annotations(samples, "test")
  rng = np.random.default_rng(0)
  raw = {str(r["annotation_id"]): {
      "joints_cam_mm": (np.asarray(r["joint_cam"]) + rng.normal(0, 8, (42, 3))).tolist(),
      "hand_presence": [1.0, 0.5], "extra": "kept"} for r in records}
  src = tmp_path / "pred.json"
  src.write_text(json.dumps(raw))
  out = tmp_path / "corrected.json"
  assert correction.main(["--predictions", str(src), "--out", str(out)]) == 0
  written = json.loads(out.read_text())
  assert set(written) == set(raw) and written["326750"]["extra"] == "kept"
  loaded = scoring.load_predictions(out)                      # still the evaluate format
  template = pc.default_template()
  for key, entry in loaded.items():
    joints = entry["joints_cam_mm"]
    np.testing.assert_allclose(pc.bone_lengths(joints[:21]), template["bone_lengths_mm"])
    np.testing.assert_allclose(joints[[20, 41]], np.asarray(raw[key]["joints_cam_mm"])[[20, 41]])
  # evaluate --correct_pose scores the same corrected joints.
  plain = scoring.evaluate_predictions_file(out, samples, "test", tmp_path / "a")
  fixed = scoring.evaluate_predictions_file(src, samples, "test", tmp_path / "b",
                                            correct_pose=True)
  assert fixed["mpjpe_all"] == pytest.approx(plain["mpjpe_all"], abs=1e-9)
  assert fixed["pose_correction"] == "default template"
  # A template fitted on annotations, and written back.
  fitted = tmp_path / "fitted.json"
  assert correction.main(["--fit_template", str(samples), "--split", "test",
                          "--out", str(fitted)]) == 0
  assert "6 hands" in pc.load_template(fitted)["source"]
  assert correction.main(["--predictions", str(src), "--out", str(out),
                          "--template", str(fitted)]) == 0


def test_correct_pose_command_names_bad_input(tmp_path, capsys):
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(SystemExit) as exit_info:
    errors.call(correction.main, ["--predictions", str(tmp_path / "bad.json"),
                                  "--out", str(tmp_path / "o.json")])
  assert exit_info.value.code == 2
  assert "bad.json" in capsys.readouterr().err
  assert not (tmp_path / "o.json").exists()
