"""Tests of dfl_jax.training.losses (paper Sec. 3.4, Eq. 6-11) against plain NumPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfl_jax.training import losses

RTOL = 1e-5
NJ = 42
NC = 33


# ---------------------------------------------------------------- NumPy references (loops)

def np_smooth_l1(x, tau):
  x = float(x)
  return 0.5 * x * x / tau if abs(x) < tau else abs(x) - 0.5 * tau


def np_joint_25d(pred, target, valid, alpha=0.5, beta=1.0, tau_uv=1.0, tau_d=3.0):
  uv, d, n = 0.0, 0.0, 0
  for b in range(pred.shape[0]):
    for j in range(pred.shape[1]):
      if valid[b, j] > 0:
        n += 1
        for k in range(2):
          uv += np_smooth_l1(pred[b, j, k] - target[b, j, k], tau_uv)
        d += np_smooth_l1(pred[b, j, 2] - target[b, j, 2], tau_d)
  n = max(n, 1)
  return alpha * uv / (2 * n) + beta * d / n


def np_joint_2d(pred_it, target, valid, tau=1.0):
  total = 0.0
  for t in range(pred_it.shape[1]):
    total += np_joint_25d(pred_it[:, t], target, valid, alpha=1.0, beta=0.0, tau_uv=tau)
  return total


def np_softmax(v):
  e = np.exp(v - v.max())
  return e / e.sum()


def np_focal(logits, labels, valid, gamma=2.0):
  b_, h_, w_, c_ = logits.shape
  tot, n = 0.0, 0
  for b in range(b_):
    if valid[b] <= 0:
      continue
    n += 1
    s = 0.0
    for y in range(h_):
      for x in range(w_):
        p = np_softmax(logits[b, y, x].astype(np.float64))
        for j in range(c_):
          t = 1.0 if labels[b, y, x] == j else 0.0
          s += t * (1.0 - p[j]) ** gamma * math.log(p[j])
    tot += -s / (h_ * w_)
  return tot / max(n, 1)


def np_cross_entropy(logits, labels, valid):
  b_, h_, w_, _ = logits.shape
  tot, n = 0.0, 0
  for b in range(b_):
    if valid[b] <= 0:
      continue
    n += 1
    s = 0.0
    for y in range(h_):
      for x in range(w_):
        v = logits[b, y, x].astype(np.float64)
        lse = v.max() + math.log(np.exp(v - v.max()).sum())
        s += lse - v[labels[b, y, x]]
    tot += s / (h_ * w_)
  return tot / max(n, 1)


def np_dice(logits, labels, valid, eps=1.0):
  b_, h_, w_, c_ = logits.shape
  tot, n = 0.0, 0
  for b in range(b_):
    if valid[b] <= 0:
      continue
    n += 1
    ratio = 0.0
    for j in range(c_):
      inter, st, sp = 0.0, 0.0, 0.0
      for y in range(h_):
        for x in range(w_):
          p = np_softmax(logits[b, y, x].astype(np.float64))[j]
          t = 1.0 if labels[b, y, x] == j else 0.0
          inter += t * p
          st += t
          sp += p
      ratio += (2 * inter + eps) / (st + sp + eps)
    tot += 1.0 - ratio / c_
  return tot / max(n, 1)


def np_presence(logits, target, valid):
  tot, n = 0.0, 0
  for b in range(logits.shape[0]):
    if valid[b] <= 0:
      continue
    n += 1
    for k in range(2):
      z, y = float(logits[b, k]), float(target[b, k])
      p = 1.0 / (1.0 + math.exp(-z))
      tot += -(y * math.log(p) + (1 - y) * math.log(1 - p))
  return tot / (2 * max(n, 1))


def np_root_depth(pred, target, valid):
  tot, n = 0.0, 0
  for b in range(pred.shape[0]):
    if valid[b] > 0:
      n += 1
      tot += abs(float(pred[b]) - float(target[b]))
  return tot / max(n, 1)


# ---------------------------------------------------------------- helpers

def random_joints(rng, b=3):
  target = rng.uniform(0, 256, size=(b, NJ, 3)).astype(np.float32)
  pred = (target + rng.normal(0, 3, size=target.shape)).astype(np.float32)
  valid = (rng.uniform(size=(b, NJ)) > 0.3).astype(np.float32)
  return pred, target, valid


def random_seg(rng, b=2, h=4, w=5, c=NC):
  logits = rng.normal(0, 2, size=(b, h, w, c)).astype(np.float32)
  labels = rng.integers(0, c, size=(b, h, w)).astype(np.int32)
  return logits, labels


def assert_close(a, b, rtol=RTOL, atol=1e-6):
  np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                             rtol=rtol, atol=atol)


# ---------------------------------------------------------------- smooth L1 and joints

def test_smooth_l1_both_branches():
  x = jnp.array([0.5, -0.5, 2.0, -2.0, 0.0, 1.0])
  # |x| < tau: 0.5 * 0.25 / 1 = 0.125; else |x| - 0.5 = 1.5; at |x| = tau the linear branch.
  assert_close(losses.smooth_l1(x, 1.0), [0.125, 0.125, 1.5, 1.5, 0.0, 0.5])
  assert_close(losses.smooth_l1(jnp.array([1.0, 4.0]), 3.0), [1.0 / 6.0, 2.5])


def test_joint_loss_25d_hand_computed():
  target = np.full((1, NJ, 3), 1e6, np.float32)
  pred = np.full((1, NJ, 3), -1e6, np.float32)
  valid = np.zeros((1, NJ), np.float32)
  valid[0, :2] = 1
  target[0, :2] = 10.0
  pred[0, 0] = target[0, 0] + np.array([0.5, 2.0, 1.0])
  pred[0, 1] = target[0, 1] + np.array([0.0, 0.0, 4.0])
  # uv: (0.125 + 1.5 + 0 + 0) / (2 * 2) = 0.40625, times alpha 0.5 = 0.203125
  # d: (0.5 * 1 / 3 + (4 - 1.5)) / 2 = 4/3
  expected = 0.203125 + 4.0 / 3.0
  assert_close(losses.joint_loss_25d(pred, target, valid), expected)
  assert_close(np_joint_25d(pred, target, valid), expected)


def test_joint_loss_25d_random_matches_numpy():
  rng = np.random.default_rng(0)
  for _ in range(3):
    pred, target, valid = random_joints(rng)
    assert_close(losses.joint_loss_25d(pred, target, valid), np_joint_25d(pred, target, valid))
    kw = dict(alpha=0.7, beta=0.3, tau_uv=2.0, tau_d=5.0)
    assert_close(losses.joint_loss_25d(pred, target, valid, **kw),
                 np_joint_25d(pred, target, valid, **kw))


def test_joint_loss_2d_matches_numpy_and_sums_iterations():
  rng = np.random.default_rng(1)
  _, target, valid = random_joints(rng)
  pred_it = (target[:, None] + rng.normal(0, 2, size=(3, 4, NJ, 3))).astype(np.float32)
  got = losses.joint_loss_2d(pred_it, target, valid)
  assert_close(got, np_joint_2d(pred_it, target, valid))
  per_it = [losses.joint_loss_2d(pred_it[:, t:t + 1], target, valid) for t in range(4)]
  assert_close(got, sum(float(v) for v in per_it))
  # Depth is not supervised.
  pred_z = pred_it.copy()
  pred_z[..., 2] += 100.0
  assert_close(losses.joint_loss_2d(pred_z, target, valid), got)
  assert_close(losses.joint_loss_2d(pred_it, target, valid, tau=3.0),
               np_joint_2d(pred_it, target, valid, tau=3.0))
  # The other reading of "each iteration" (config.loss.intermediate_reduction='mean').
  assert_close(losses.joint_loss_2d(pred_it, target, valid, reduction="mean"),
               np_joint_2d(pred_it, target, valid) / 4)
  with pytest.raises(ValueError, match="intermediate_reduction"):
    losses.joint_loss_2d(pred_it, target, valid, reduction="max")


def test_joint_loss_2d_zero_iterations():
  rng = np.random.default_rng(2)
  _, target, valid = random_joints(rng)
  pred_it = np.zeros((3, 0, NJ, 3), np.float32)
  assert float(losses.joint_loss_2d(pred_it, target, valid)) == 0.0


@pytest.mark.parametrize("poison", [1e6, np.nan, np.inf])
def test_invalid_joints_change_neither_loss_nor_grad(poison):
  rng = np.random.default_rng(3)
  pred, target, valid = random_joints(rng)
  pred_it = (target[:, None] + rng.normal(0, 2, size=(3, 2, NJ, 3))).astype(np.float32)
  inv = valid == 0
  assert inv.any()
  target_p, pred_p, pred_it_p = target.copy(), pred.copy(), pred_it.copy()
  target_p[inv] = poison
  pred_p[inv] = poison
  pred_it_p[np.broadcast_to(inv[:, None], pred_it.shape[:3])] = poison

  def f25(p, t):
    return losses.joint_loss_25d(p, t, valid)

  def f2(p, t):
    return losses.joint_loss_2d(p, t, valid)

  for f, p, pp in [(f25, pred, pred_p), (f2, pred_it, pred_it_p)]:
    v, g = jax.value_and_grad(f)(p, target)
    vp, gp = jax.value_and_grad(f)(pp, target_p)
    assert np.isfinite(float(vp))
    assert_close(vp, v, rtol=0, atol=0)
    assert np.all(np.isfinite(np.asarray(gp)))
    np.testing.assert_array_equal(np.asarray(gp), np.asarray(g))
    g = np.asarray(gp)
    inv_b = inv if g.ndim == 3 else np.broadcast_to(inv[:, None], g.shape[:3])
    assert np.all(g[inv_b] == 0.0)
    assert np.any(g[~inv_b] != 0.0)


def test_all_joints_invalid_gives_zero_and_finite_grad():
  rng = np.random.default_rng(4)
  pred, target, _ = random_joints(rng)
  valid = np.zeros(pred.shape[:2], np.float32)
  target[:] = np.nan
  v, g = jax.value_and_grad(losses.joint_loss_25d)(pred, target, valid)
  assert float(v) == 0.0
  assert np.all(np.asarray(g) == 0.0)
  pred_it = pred[:, None].repeat(2, axis=1)
  v, g = jax.value_and_grad(losses.joint_loss_2d)(pred_it, target, valid)
  assert float(v) == 0.0
  assert np.all(np.asarray(g) == 0.0)


def test_bfloat16_predictions():
  rng = np.random.default_rng(5)
  pred, target, valid = random_joints(rng)
  pred_bf = jnp.asarray(pred, jnp.bfloat16)
  got = losses.joint_loss_25d(pred_bf, target, valid)
  assert got.dtype == jnp.float32
  ref = np_joint_25d(np.asarray(pred_bf.astype(jnp.float32)), target, valid)
  assert_close(got, ref)


# ---------------------------------------------------------------- segmentation

def test_focal_matches_numpy():
  rng = np.random.default_rng(6)
  logits, labels = random_seg(rng, b=3)
  valid = np.array([1, 0, 1], np.float32)
  for gamma in (2.0, 1.0, 0.5):
    assert_close(losses.focal_loss(logits, labels, valid, gamma=gamma),
                 np_focal(logits, labels, valid, gamma=gamma))


def test_focal_gamma0_is_cross_entropy():
  rng = np.random.default_rng(7)
  logits, labels = random_seg(rng)
  valid = np.ones(2, np.float32)
  ce = np_cross_entropy(logits, labels, valid)
  assert_close(losses.focal_loss(logits, labels, valid, gamma=0.0), ce)
  assert_close(np_focal(logits, labels, valid, gamma=0.0), ce)
  # gamma > 0 down-weights every pixel.
  assert float(losses.focal_loss(logits, labels, valid, gamma=2.0)) < ce


def test_focal_hand_computed():
  # One pixel, two classes, logits (0, 0): p = 0.5; focal = -(0.5)^2 * log(0.5) = 0.25 log 2.
  logits = np.zeros((1, 1, 1, 2), np.float32)
  labels = np.zeros((1, 1, 1), np.int32)
  assert_close(losses.focal_loss(logits, labels, np.ones(1)), 0.25 * math.log(2.0))


def test_focal_grad_finite_at_certain_prediction():
  logits = np.full((1, 2, 2, NC), -100.0, np.float32)
  logits[..., 0] = 100.0
  labels = np.zeros((1, 2, 2), np.int32)
  for gamma in (0.0, 0.5, 2.0):
    v, g = jax.value_and_grad(losses.focal_loss)(logits, labels, np.ones(1), gamma)
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))


def test_dice_matches_numpy():
  rng = np.random.default_rng(8)
  logits, labels = random_seg(rng, b=3)
  valid = np.array([1, 1, 0], np.float32)
  for eps in (1.0, 1e-3):
    assert_close(losses.soft_dice_loss(logits, labels, valid, eps=eps),
                 np_dice(logits, labels, valid, eps=eps))


def test_dice_hand_computed():
  # One pixel, two classes, uniform p: class 0 (true) (2*0.5+1)/(1+0.5+1) = 0.8,
  # class 1 (0+1)/(0+0.5+1) = 2/3; loss = 1 - (0.8 + 2/3)/2.
  logits = np.zeros((1, 1, 1, 2), np.float32)
  labels = np.zeros((1, 1, 1), np.int32)
  assert_close(losses.soft_dice_loss(logits, labels, np.ones(1)), 1 - (0.8 + 2 / 3) / 2)


def test_dice_perfect_prediction_tends_to_zero():
  rng = np.random.default_rng(9)
  _, labels = random_seg(rng, h=8, w=8)
  onehot = np.eye(NC, dtype=np.float32)[labels]
  prev = None
  for scale in (1.0, 10.0, 100.0):
    v = float(losses.soft_dice_loss(scale * onehot, labels, np.ones(2), eps=1.0))
    if prev is not None:
      assert v < prev
    prev = v
  assert prev < 1e-6


def test_segmentation_invalid_image_removed():
  rng = np.random.default_rng(10)
  logits, labels = random_seg(rng, b=3)
  valid = np.array([1, 0, 1], np.float32)
  keep = np.array([0, 2])
  for fn in (losses.focal_loss, losses.soft_dice_loss):
    full = fn(logits, labels, valid)
    assert_close(full, fn(logits[keep], labels[keep], np.ones(2)))
    # Garbage in the invalid image (placeholder labels, other logits) changes nothing.
    lg, lb = logits.copy(), labels.copy()
    lg[1] = 50.0 * rng.normal(size=lg[1].shape)
    lb[1] = 255
    assert_close(fn(lg, lb, valid), full)
    g = jax.grad(fn)(lg, lb, valid)
    assert np.all(np.asarray(g)[1] == 0.0)
  for fn in (losses.focal_loss, losses.soft_dice_loss):
    v, g = jax.value_and_grad(fn)(logits, labels, np.zeros(3))
    assert float(v) == 0.0 and np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------- extension heads

def test_hand_presence_matches_numpy():
  rng = np.random.default_rng(11)
  logits = rng.normal(0, 3, size=(4, 2)).astype(np.float32)
  target = rng.integers(0, 2, size=(4, 2)).astype(np.float32)
  valid = np.array([1, 0, 1, 1], np.float32)
  assert_close(losses.hand_presence_loss(logits, target, valid),
               np_presence(logits, target, valid))
  assert_close(losses.hand_presence_loss(np.zeros((1, 2)), np.ones((1, 2)), np.ones(1)),
               math.log(2.0))
  target_p = target.copy()
  target_p[1] = np.nan
  assert_close(losses.hand_presence_loss(logits, target_p, valid),
               np_presence(logits, target, valid))
  g = jax.grad(losses.hand_presence_loss)(logits, target_p, valid)
  assert np.all(np.asarray(g)[1] == 0.0) and np.all(np.isfinite(np.asarray(g)))


def test_root_depth_matches_numpy():
  rng = np.random.default_rng(12)
  pred = rng.normal(0, 50, size=5).astype(np.float32)
  target = rng.normal(0, 50, size=5).astype(np.float32)
  valid = np.array([1, 1, 0, 1, 0], np.float32)
  ref = np_root_depth(pred, target, valid)
  assert_close(losses.root_depth_loss(pred, target, valid), ref)
  target_p = target.copy()
  target_p[valid == 0] = np.nan
  assert_close(losses.root_depth_loss(pred, target_p, valid), ref)
  g = jax.grad(losses.root_depth_loss)(pred, target_p, valid)
  assert np.all(np.asarray(g)[valid == 0] == 0.0)
  assert float(losses.root_depth_loss(pred, target, np.zeros(5))) == 0.0


# ---------------------------------------------------------------- total loss

def make_batch(rng, b=2, t=3, h=4, w=4):
  pred, target, valid = random_joints(rng, b)
  seg_logits, seg_labels = random_seg(rng, b, h, w)
  preds = {
      "joints": pred,
      "joints_iterations": (target[:, None] + rng.normal(0, 2, (b, t, NJ, 3))).astype(np.float32),
      "segmentation_logits": seg_logits,
      "hand_presence_logits": rng.normal(size=(b, 2)).astype(np.float32),
      "rel_root_depth": rng.normal(0, 30, size=b).astype(np.float32),
  }
  batch = {
      "joints": target,
      "joint_valid": valid,
      "segmentation": seg_labels,
      "segmentation_valid": np.array([1.0] + [0.0] * (b - 1), np.float32),
      "hand_presence": rng.integers(0, 2, size=(b, 2)).astype(np.float32),
      "hand_presence_valid": np.ones(b, np.float32),
      "rel_root_depth": rng.normal(0, 30, size=b).astype(np.float32),
      "rel_root_depth_valid": np.array([0.0] + [1.0] * (b - 1), np.float32),
  }
  return preds, batch


def test_total_loss_is_eq11_weighted_sum():
  rng = np.random.default_rng(13)
  p, b = make_batch(rng)
  loss, terms = losses.total_loss(p, b)
  l25 = np_joint_25d(p["joints"], b["joints"], b["joint_valid"])
  l2 = np_joint_2d(p["joints_iterations"], b["joints"], b["joint_valid"])
  foc = np_focal(p["segmentation_logits"], b["segmentation"], b["segmentation_valid"])
  dice = np_dice(p["segmentation_logits"], b["segmentation"], b["segmentation_valid"])
  pres = np_presence(p["hand_presence_logits"], b["hand_presence"], b["hand_presence_valid"])
  root = np_root_depth(p["rel_root_depth"], b["rel_root_depth"], b["rel_root_depth_valid"])
  expected = l25 + 3.0 * l2 + 1.0 * (foc + dice) + 1.0 * pres + 0.25 * root
  assert_close(loss, expected)
  assert_close(terms["loss"], expected)
  for k, v in [("loss_25d", l25), ("loss_2d", l2), ("loss_focal", foc), ("loss_dice", dice),
               ("loss_presence", pres), ("loss_root_depth", root)]:
    assert_close(terms[k], v)
  # And against the module's own functions.
  fn_sum = (losses.joint_loss_25d(p["joints"], b["joints"], b["joint_valid"])
            + 3 * losses.joint_loss_2d(p["joints_iterations"], b["joints"], b["joint_valid"])
            + losses.focal_loss(p["segmentation_logits"], b["segmentation"],
                                b["segmentation_valid"])
            + losses.soft_dice_loss(p["segmentation_logits"], b["segmentation"],
                                    b["segmentation_valid"])
            + losses.hand_presence_loss(p["hand_presence_logits"], b["hand_presence"],
                                        b["hand_presence_valid"])
            + 0.25 * losses.root_depth_loss(p["rel_root_depth"], b["rel_root_depth"],
                                            b["rel_root_depth_valid"]))
  assert_close(loss, fn_sum)


def test_total_loss_skips_absent_predictions_and_defaults_valid():
  rng = np.random.default_rng(14)
  p, b = make_batch(rng)
  only = {"joints": p["joints"]}
  loss, terms = losses.total_loss(only, b)
  assert set(terms) == {"loss_25d", "loss"}
  assert_close(loss, np_joint_25d(p["joints"], b["joints"], b["joint_valid"]))
  # No batch entries at all for the absent heads, and no joint_valid: all valid.
  loss, terms = losses.total_loss(only, {"joints": b["joints"]})
  assert_close(loss, np_joint_25d(p["joints"], b["joints"], np.ones_like(b["joint_valid"])))
  # T = 0 iterations contributes 0.
  p0 = {"joints": p["joints"], "joints_iterations": np.zeros((2, 0, NJ, 3), np.float32)}
  loss0, terms0 = losses.total_loss(p0, b)
  assert float(terms0["loss_2d"]) == 0.0
  assert_close(loss0, np_joint_25d(p["joints"], b["joints"], b["joint_valid"]))
  # Missing segmentation_valid means all images count.
  b2 = dict(b)
  del b2["segmentation_valid"]
  ps = {"joints": p["joints"], "segmentation_logits": p["segmentation_logits"]}
  _, ts = losses.total_loss(ps, b2)
  assert_close(ts["loss_focal"],
               np_focal(p["segmentation_logits"], b["segmentation"], np.ones(2)))


def test_total_loss_config_overrides():
  rng = np.random.default_rng(15)
  p, b = make_batch(rng)
  base, terms = losses.total_loss(p, b)
  loss, _ = losses.total_loss(p, b, {"lambda_2d": 0.0, "lambda_seg": 2.0})
  expected = (terms["loss_25d"] + 2.0 * (terms["loss_focal"] + terms["loss_dice"])
              + terms["loss_presence"] + 0.25 * terms["loss_root_depth"])
  assert_close(loss, expected)
  # Attribute access (ConfigDict-like) works too, and unset keys fall back to the defaults.
  class Cfg:
    alpha = 1.0
    tau_d = 1.0
  _, tc = losses.total_loss({"joints": p["joints"]}, b, Cfg())
  assert_close(tc["loss_25d"], np_joint_25d(p["joints"], b["joints"], b["joint_valid"],
                                            alpha=1.0, tau_d=1.0))
  ml_collections = pytest.importorskip("ml_collections")
  cfg = ml_collections.ConfigDict(dict(losses.DEFAULT_LOSS_CONFIG))
  cfg.presence_weight = 0.0
  loss_cd, _ = losses.total_loss(p, b, cfg)
  assert_close(loss_cd, base - terms["loss_presence"])


def test_total_loss_jit_and_grad_with_poisoned_invalid_joints():
  rng = np.random.default_rng(16)
  p, b = make_batch(rng)
  fn = jax.jit(lambda p, b: losses.total_loss(p, b, {"lambda_2d": 3.0}))
  loss, terms = fn(p, b)
  ref, _ = losses.total_loss(p, b)
  assert_close(loss, ref)
  assert set(terms) == {"loss_25d", "loss_2d", "loss_focal", "loss_dice", "loss_presence",
                        "loss_root_depth", "loss"}
  grad_fn = jax.jit(jax.grad(lambda p, b: losses.total_loss(p, b)[0]))
  g = grad_fn(p, b)
  bp = dict(b)
  joints = b["joints"].copy()
  joints[b["joint_valid"] == 0] = np.nan
  bp["joints"] = joints
  gp = grad_fn(p, bp)
  for k in g:
    np.testing.assert_array_equal(np.asarray(gp[k]), np.asarray(g[k]))
  assert np.all(np.asarray(gp["joints"])[b["joint_valid"] == 0] == 0.0)
  # bfloat16 predictions under jit.
  pb = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), p)
  lb, _ = fn(pb, b)
  assert lb.dtype == jnp.float32 and np.isfinite(float(lb))
