"""Training losses (paper Sec. 3.4, Eq. 6-11), pure jnp functions over dicts of arrays.

Conventions shared by every function here:
- Predictions are cast to float32 first (bfloat16 model outputs are accepted).
- Masking is done with ``jnp.where`` on the difference (or on the per-item loss) BEFORE any
  nonlinearity, never by multiplying with the mask: invalid joints carry placeholder targets
  (huge values, even NaN), and ``0 * nan`` or ``0 * inf`` would leak into the loss and its
  gradient. With ``where`` an invalid item changes neither the loss nor the gradient, and the
  gradient at an invalid item is exactly 0.
- Normalisation is by the number of valid items in the whole (per-device) batch,
  ``sum / max(n_valid, 1)``: an all-invalid batch gives a loss of 0 and a finite gradient.
  Under data parallelism each device normalises by its own count.
- Everything is jit-able; hyper-parameters (tau, gamma, weights, ...) are static Python numbers.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

# Paper Sec. 3.4: alpha, beta, tau1, tau2 of Eq. 6/7; intermediate L_2D with tau1 = 1; lambda1,
# lambda2 of Eq. 11; focal gamma of Eq. 8; dice epsilon of Eq. 9 (value not given in the paper,
# 1.0 chosen). presence_weight and root_depth_weight weight the extension heads (not in the paper).
DEFAULT_LOSS_CONFIG = {
    "alpha": 0.5,
    "beta": 1.0,
    "tau_uv": 1.0,
    "tau_d": 3.0,
    "tau_2d": 1.0,
    "lambda_2d": 3.0,
    "intermediate_reduction": "sum",
    "lambda_seg": 1.0,
    "focal_gamma": 2.0,
    "dice_eps": 1.0,
    "presence_weight": 1.0,
    "root_depth_weight": 0.25,
}


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


def _mask(valid):
  """Boolean mask from a {0,1} (bool, int or float) validity array."""
  return jnp.asarray(valid) > 0


def _safe_count(mask, axis_name=None):
  """Number of valid items, summed over the devices of ``axis_name`` when given (no gradient)."""
  count = jnp.sum(mask.astype(jnp.float32))
  if axis_name is not None:
    count = jax.lax.psum(jax.lax.stop_gradient(count), axis_name)
  return jnp.maximum(count, 1.0)


def smooth_l1(x, tau):
  """Elementwise smooth L1 (Eq. 7), torch's ``smooth_l1_loss`` with ``beta=tau`` (tau > 0)."""
  x = _f32(x)
  ax = jnp.abs(x)
  return jnp.where(ax < tau, 0.5 * x * x / tau, ax - 0.5 * tau)


def joint_loss_25d(pred, target, valid, alpha=0.5, beta=1.0, tau_uv=1.0, tau_d=3.0, axis_name=None):
  """L_2.5D (Eq. 6/7) on [B,42,3] joints in the 2.5D space, masked by valid [B,42].

  alpha * sum smoothL1_tau_uv(uv diff) / (2 n) + beta * sum smoothL1_tau_d(d diff) / n, with n the
  number of valid joints in the batch (Eq. 7's 1/(mn): the uv term also averages its 2 coords).
  """
  mask = _mask(valid)
  diff = jnp.where(mask[..., None], _f32(pred) - _f32(target), 0.0)
  n = _safe_count(mask, axis_name)
  l_uv = jnp.sum(smooth_l1(diff[..., :2], tau_uv)) / (2.0 * n)
  l_d = jnp.sum(smooth_l1(diff[..., 2], tau_d)) / n
  return alpha * l_uv + beta * l_d


REDUCTIONS = ("sum", "mean")


def joint_loss_2d(pred_iterations, target, valid, tau=1.0, reduction="sum", axis_name=None):
  """Intermediate L_2D (Sec. 3.4.1: Eq. 6 with alpha=1, beta=0, tau1=1) on xy only.

  pred_iterations [B,T,42,3], target [B,42,3], valid [B,42]. The paper supervises "each
  iteration" and weights L_2D by lambda_1 = 3 (Eq. 11) without saying how the iterations
  combine. ``reduction='sum'`` (our reading, the default: each iteration's result carries an
  L_2D of its own, as DETR-style auxiliary losses do; with T = 3 the intermediate supervision
  weighs 9 against the final output's alpha = 0.5 on x, y) or ``'mean'`` (L_2D is one term,
  averaged over the iterations: weight 3 in all); ``config.loss.intermediate_reduction``.
  T = 0 gives 0.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"config.loss.intermediate_reduction must be one of {REDUCTIONS}, got "
                     f"{reduction!r}")
  mask = _mask(valid)[:, None, :, None]  # [B,1,42,1]
  target_uv = _f32(target)[:, None, :, :2]
  diff = jnp.where(mask, _f32(pred_iterations)[..., :2] - target_uv, 0.0)
  n = _safe_count(_mask(valid), axis_name)
  total = jnp.sum(smooth_l1(diff, tau)) / (2.0 * n)
  if reduction == "mean" and pred_iterations.shape[1]:
    total = total / pred_iterations.shape[1]
  return total


def _seg_inputs(logits, labels, valid):
  logits = _f32(logits)
  mask = _mask(valid)
  # Labels of invalid images may be placeholders; class 0 keeps one_hot well-defined.
  labels = jnp.where(mask[:, None, None], jnp.asarray(labels).astype(jnp.int32), 0)
  return logits, labels, mask


def focal_loss(logits, labels, valid, gamma=2.0, axis_name=None):
  """Multi-class focal loss (Eq. 8): -(1/HW) sum_px sum_j T (1-p)^gamma log p, p = softmax.

  logits [B,H,W,C], labels int [B,H,W], valid [B] per image; mean over valid images.
  gamma = 0 is cross-entropy.
  """
  logits, labels, mask = _seg_inputs(logits, labels, valid)
  logp = jax.nn.log_softmax(logits, axis=-1)
  onehot = jnp.asarray(labels[..., None] == jnp.arange(logits.shape[-1]), jnp.float32)
  logp_t = jnp.sum(onehot * logp, axis=-1)  # [B,H,W]; T is one-hot, only the true class counts
  # 1 - p = -expm1(log p), accurate near p = 1. The tiny floor keeps the gradient of
  # (1-p)^gamma finite at p = 1 when gamma < 1 (gamma = 0 included); its effect on the value is nil.
  one_minus_p = jnp.maximum(-jnp.expm1(logp_t), 1e-30)
  per_px = -jnp.power(one_minus_p, gamma) * logp_t
  per_image = jnp.mean(per_px, axis=(1, 2))
  per_image = jnp.where(mask, per_image, 0.0)
  return jnp.sum(per_image) / _safe_count(mask, axis_name)


def soft_dice_loss(logits, labels, valid, eps=1.0, axis_name=None):
  """Multi-class soft dice loss (Eq. 9), per image, averaged over valid images.

  1 - (1/C) sum_j (2 sum_px T_j p_j + eps) / (sum_px T_j + sum_px p_j + eps), p = softmax;
  all C classes count, absent ones included (eps makes an absent, unpredicted class score ~1).
  """
  logits, labels, mask = _seg_inputs(logits, labels, valid)
  p = jax.nn.softmax(logits, axis=-1)
  onehot = jnp.asarray(labels[..., None] == jnp.arange(logits.shape[-1]), jnp.float32)
  inter = jnp.sum(onehot * p, axis=(1, 2))  # [B,C]
  denom = jnp.sum(onehot, axis=(1, 2)) + jnp.sum(p, axis=(1, 2))
  per_image = 1.0 - jnp.mean((2.0 * inter + eps) / (denom + eps), axis=-1)
  per_image = jnp.where(mask, per_image, 0.0)
  return jnp.sum(per_image) / _safe_count(mask, axis_name)


def hand_presence_loss(logits, target, valid, axis_name=None):
  """Hand presence (extension head, not in the paper): BCE with logits on [B,2] (right, left).

  Mean over valid images and the 2 outputs.
  """
  mask = _mask(valid)
  target = jnp.where(mask[:, None], _f32(target), 0.0)
  bce = optax.sigmoid_binary_cross_entropy(_f32(logits), target)  # stable log-sum-exp form
  bce = jnp.where(mask[:, None], bce, 0.0)
  return jnp.sum(bce) / (2.0 * _safe_count(mask, axis_name))


def root_depth_loss(pred, target, valid, axis_name=None):
  """Relative root depth (extension head, not in the paper): L1 on [B], mean over valid."""
  mask = _mask(valid)
  diff = jnp.where(mask, _f32(pred) - _f32(target), 0.0)
  return jnp.sum(jnp.abs(diff)) / _safe_count(mask, axis_name)


def _cfg(config, name):
  """Reads ``name`` from a dict or ConfigDict-like object (key or attribute), else the default."""
  if config is not None:
    if isinstance(config, Mapping) or hasattr(config, "__getitem__"):
      try:
        return config[name]
      except (KeyError, TypeError, AttributeError):
        pass
    if hasattr(config, name):
      return getattr(config, name)
  return DEFAULT_LOSS_CONFIG[name]


def _valid(batch, key, shape):
  v = batch.get(key)
  return jnp.ones(shape, jnp.float32) if v is None else v


def _require(batch, key, pred_key):
  if key not in batch:
    raise KeyError(f"predictions has {pred_key!r} but batch has no {key!r}")
  return batch[key]


def total_loss(predictions, batch, config=None, axis_name=None):
  """L_total (Eq. 11) = L_2.5D + lambda_2d L_2D + lambda_seg (focal + dice) + extension heads.

  lambda_2d = 3 and lambda_seg = 1 are the paper's lambda1, lambda2. Hand presence and relative
  root depth are extension heads beyond the paper, weighted by presence_weight and
  root_depth_weight. A term whose prediction key is absent contributes nothing. A batch
  ``*_valid`` key that is missing means all valid. Segmentation labels must have the logits'
  spatial size (no resizing here).

  Under data parallelism pass the mesh axis as ``axis_name``: every normaliser then counts the
  valid items of the global batch, so the per-device losses add up to the single-device loss
  and their gradients (which shard_map sums for replicated parameters) to its gradient.

  Returns (loss, terms): terms holds the unweighted individual losses that were computed
  ('loss_25d', 'loss_2d', 'loss_focal', 'loss_dice', 'loss_presence', 'loss_root_depth') and the
  weighted total under 'loss'.
  """
  c = lambda name: _cfg(config, name)
  joints = predictions["joints"]
  bsz = joints.shape[0]
  joint_valid = _valid(batch, "joint_valid", joints.shape[:2])
  terms = {}
  terms["loss_25d"] = joint_loss_25d(
      joints, batch["joints"], joint_valid,
      alpha=c("alpha"), beta=c("beta"), tau_uv=c("tau_uv"), tau_d=c("tau_d"),
      axis_name=axis_name)
  total = terms["loss_25d"]

  if "joints_iterations" in predictions:
    terms["loss_2d"] = joint_loss_2d(
        predictions["joints_iterations"], batch["joints"], joint_valid, tau=c("tau_2d"),
        reduction=c("intermediate_reduction"), axis_name=axis_name)
    total = total + c("lambda_2d") * terms["loss_2d"]

  if "segmentation_logits" in predictions:
    logits = predictions["segmentation_logits"]
    labels = _require(batch, "segmentation", "segmentation_logits")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
      raise ValueError(f"segmentation labels {labels.shape} do not match logits {logits.shape}")
    seg_valid = _valid(batch, "segmentation_valid", (bsz,))
    terms["loss_focal"] = focal_loss(logits, labels, seg_valid, gamma=c("focal_gamma"),
                                     axis_name=axis_name)
    terms["loss_dice"] = soft_dice_loss(logits, labels, seg_valid, eps=c("dice_eps"),
                                        axis_name=axis_name)
    total = total + c("lambda_seg") * (terms["loss_focal"] + terms["loss_dice"])

  if "hand_presence_logits" in predictions:
    target = _require(batch, "hand_presence", "hand_presence_logits")
    terms["loss_presence"] = hand_presence_loss(
        predictions["hand_presence_logits"], target,
        _valid(batch, "hand_presence_valid", (bsz,)), axis_name=axis_name)
    total = total + c("presence_weight") * terms["loss_presence"]

  if "rel_root_depth" in predictions:
    target = _require(batch, "rel_root_depth", "rel_root_depth")
    terms["loss_root_depth"] = root_depth_loss(
        predictions["rel_root_depth"], target, _valid(batch, "rel_root_depth_valid", (bsz,)),
        axis_name=axis_name)
    total = total + c("root_depth_weight") * terms["loss_root_depth"]

  terms["loss"] = total
  return total, terms
