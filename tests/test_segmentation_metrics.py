"""Part segmentation figures (dfl_jax.evaluation.segmentation) against a per-pixel loop."""

import numpy as np
import pytest

from dfl_jax.evaluation.segmentation import SegmentationMetrics


def _reference(pred, gt):
  """The module doc's definitions, one pixel at a time."""
  n = fg = part = found = either = side = 0
  inter, union = np.zeros(33), np.zeros(33)
  for p, g in zip(pred.ravel(), gt.ravel()):
    n += 1
    fg += (p > 0) == (g > 0)
    if g > 0:
      part += p == g
      if p > 0:
        found += 1
        either += (p - 1) % 16 == (g - 1) % 16
        side += (p - 1) // 16 == (g - 1) // 16
    for c in range(33):
      inter[c] += (p == c) and (g == c)
      union[c] += (p == c) or (g == c)
  hand = int((gt > 0).sum())
  present = union > 0
  return {"seg_foreground_accuracy": fg / n, "seg_part_accuracy": part / hand,
          "seg_found": found / hand, "seg_part_either_side": either / found,
          "seg_side_accuracy": side / found,
          "seg_miou": float(np.mean(inter[present] / union[present])), "seg_num_pixels": n}


def test_figures_match_a_per_pixel_loop_whatever_the_batching():
  rng = np.random.default_rng(0)
  gt = rng.integers(0, 33, size=(6, 5, 7))
  gt[:, :2] = 0                                   # some background
  logits = rng.normal(size=(6, 5, 7, 33)).astype(np.float32)
  # Half the pixels predicted right, a quarter with the right part on the other hand.
  flat = logits.reshape(-1, 33)
  g = gt.ravel()
  rows = np.arange(g.size)
  flat[rows[::2], g[::2]] += 10.0
  mirrored = np.where(g > 0, (g - 1 + 16) % 32 + 1, 0)
  flat[rows[1::4], mirrored[1::4]] += 20.0
  valid = np.array([1, 1, 0, 1, 1, 1])
  whole = SegmentationMetrics()
  whole.update(logits, gt, valid)
  parts = SegmentationMetrics()
  for lo, hi in ((0, 1), (1, 4), (4, 6)):
    parts.update(logits[lo:hi], gt[lo:hi], valid[lo:hi])
  keep = valid > 0
  expected = _reference(logits[keep].argmax(-1), gt[keep])
  for result in (whole.result(), parts.result()):
    assert result.keys() == expected.keys()
    for key, value in expected.items():
      assert result[key] == pytest.approx(value, abs=1e-12), key


def test_perfect_and_mirrored_predictions():
  gt = np.array([[[0, 1, 5], [17, 21, 32]]])
  seg = SegmentationMetrics()
  seg.update(np.eye(33)[gt], gt)
  r = seg.result()
  assert r["seg_part_accuracy"] == r["seg_side_accuracy"] == r["seg_miou"] == 1.0
  mirrored = np.where(gt > 0, (gt - 1 + 16) % 32 + 1, 0)
  seg = SegmentationMetrics()
  seg.update(np.eye(33)[mirrored], gt)
  r = seg.result()
  assert r["seg_foreground_accuracy"] == 1.0 and r["seg_found"] == 1.0
  assert r["seg_part_either_side"] == 1.0
  assert r["seg_part_accuracy"] == 0.0 and r["seg_side_accuracy"] == 0.0


def test_nothing_counted_and_bad_input():
  seg = SegmentationMetrics()
  seg.update(np.zeros((2, 3, 3, 33)), np.zeros((2, 3, 3), int), valid=[0, 0])
  r = seg.result()
  assert r["seg_num_pixels"] == 0 and r["seg_part_accuracy"] is None and r["seg_miou"] is None
  with pytest.raises(ValueError, match="do not match the predictions"):
    seg.update(np.zeros((2, 3, 3, 33)), np.zeros((2, 3, 4), int))
  with pytest.raises(ValueError, match=r"\[0, 33\)"):
    seg.update(np.zeros((1, 1, 1, 33)), np.full((1, 1, 1), 33))
  with pytest.raises(ValueError, match="33"):
    seg.update(np.zeros((1, 1, 1, 5)), np.zeros((1, 1, 1), int))
