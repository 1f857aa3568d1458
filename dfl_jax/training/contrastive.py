"""The cross-domain system's pre-training and fine-tuning losses, pure functions over dicts.

Pre-training (cross-domain supplement, Sec. A, B and D) has two parts:

- The contrastive objective across modalities and augmentations. Each sample appears as two
  augmented views (``modality_augmentation.two_views``), each with three latents: s_R (RGB),
  s_F (attention-fused RGB) and s_D (depth). Their projections (``ProjectionHead``: 2-D points)
  are brought back to the sample's canonical frame by undoing the view's geometric augmentation
  on the points (z -> R^T (z - t / S) / s), since the geometric augmentations move the pose
  while the texture ones do not (Sec. B), then compared with a multi-positive NT-Xent (the six
  embeddings of one sample are each other's positives, every other sample's embeddings the
  negatives; temperature ``tau``). This is the pose-equivariant form of contrastive learning
  (PeCLR, Spurr et al., ICCV 2021); the supplement names the augmentations and their effect
  on the labels, not the loss's form, which is this module's choice.
- The multi-modal predictions (Fig. f: depth map, segmentation mask, 2D and 3D pose) from each
  latent through the one decoder, against the view's labels: L1 on the relative depth at the
  hand's pixels, cross entropy on the 33 part classes, L1 on the 2D joints (in units of the
  input size) and on the 3D joints relative to each hand's wrist (in units of 100 mm).

Fine-tuning on the target domain uses only what its labels give: the 2D and 3D pose losses on
s_R (the plain RGB stream: no depth map at test time).

The metrics (EPE, PCK@0.05) are in ``evaluation/crossdomain.py``.
"""

import jax
import jax.numpy as jnp
import optax

from dfl_jax.network import dual_modality
from dfl_jax.training import modality_augmentation

LATENTS = ("R", "F", "D")


def undo_geometry(points, geometry, image_size: int):
  """Projection points [B, P, 2] of a view mapped back to the sample's frame: R^T (z - t/S) / s."""
  r = modality_augmentation.rotation(geometry["angle"])
  z = points - geometry["shift"][:, None, :] / image_size
  return jnp.einsum("bji,bkj->bki", r, z) / geometry["scale"][:, None, None]


def multi_positive_nt_xent(embeddings, mask, temperature: float):
  """NT-Xent over [V, B, D] embeddings: the V embeddings of a sample are positives of each
  other, all others negatives; samples with ``mask`` 0 take no part. Mean over anchors."""
  v, b, _ = embeddings.shape
  z = embeddings / jnp.maximum(jnp.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-8)
  z = z.reshape(v * b, -1)
  sample = jnp.tile(jnp.arange(b), v)
  keep = jnp.tile(mask > 0, v)
  logits = (z @ z.T) / temperature
  eye = jnp.eye(v * b, dtype=bool)
  allowed = keep[None, :] & ~eye
  logits = jnp.where(allowed, logits, -1e9)
  log_prob = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
  positive = (sample[:, None] == sample[None, :]) & allowed
  per_anchor = -jnp.sum(jnp.where(positive, log_prob, 0.0), 1) / jnp.maximum(
      jnp.sum(positive, 1), 1)
  return jnp.sum(jnp.where(keep, per_anchor, 0.0)) / jnp.maximum(jnp.sum(keep), 1)


def _masked_mean(values, weights):
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def pose_losses(pred, labels, image_size: int):
  """L1 of the 2D joints (/ S) and of the 3D joints (/ 100 mm) over valid joints."""
  w2 = labels["joint_valid"] * labels["mask"][:, None]
  l2d = _masked_mean(jnp.sum(jnp.abs(pred["joints_2d"] - labels["joints"][..., :2]), -1)
                     / image_size, w2)
  w3 = labels["joints_3d_valid"] * labels["mask"][:, None]
  l3d = _masked_mean(jnp.sum(jnp.abs(pred["joints_3d"] - labels["joints_3d"]
                                     / dual_modality.POSE_SCALE_MM), -1), w3)
  return {"pose_2d": l2d, "pose_3d": l3d}


def depth_targets(labels, stride: int):
  """The relative depth and hand mask [B, S/stride, S/stride, 2] the depth loss compares with:
  ``dual_modality.depth_input`` of the view's depth map, sampled at the cell centres."""
  return dual_modality.depth_input(labels["depth_target"])[:, stride // 2::stride,
                                                           stride // 2::stride]


def dense_losses(pred, labels, target=None):
  """L1 of the relative depth on the hand's pixels, part cross entropy (both at stride 4).
  ``target``: ``depth_targets`` of the labels, when the caller already has it."""
  if target is None:
    target = depth_targets(labels, labels["images"].shape[1] // pred["depth"].shape[1])
  on_hand = target[..., 1] * labels["mask"][:, None, None]
  depth = _masked_mean(jnp.abs(pred["depth"] - target[..., 0]), on_hand)
  ce = optax.softmax_cross_entropy_with_integer_labels(pred["segmentation"],
                                                       labels["segmentation"])
  w = (labels["segmentation_valid"] * labels["mask"])[:, None, None] * jnp.ones_like(ce)
  return {"depth": depth, "segmentation": _masked_mean(ce, w)}


def pretrain_loss(outputs, views, weights):
  """(total, parts) of the pre-training objective; ``outputs`` and ``views`` one per view
  (network outputs; (labels, geometry) pairs)."""
  size = views[0][0]["images"].shape[1]
  parts = {}
  supervised = []
  for out, (labels, _) in zip(outputs, views):
    target = depth_targets(labels, size // out[LATENTS[0]]["depth"].shape[1])   # once per view
    for key in LATENTS:
      p = dict(pose_losses(out[key], labels, size), **dense_losses(out[key], labels, target))
      supervised.append(p)
  for name in supervised[0]:
    parts[name] = sum(p[name] for p in supervised) / len(supervised)
  embeddings = jnp.stack([undo_geometry(out[key]["projection"], geometry, size).reshape(
      out[key]["projection"].shape[0], -1)
      for out, (_, geometry) in zip(outputs, views) for key in LATENTS])
  parts["contrastive"] = multi_positive_nt_xent(embeddings, views[0][0]["mask"],
                                                weights["temperature"])
  total = (weights["contrastive"] * parts["contrastive"] + weights["pose_2d"] * parts["pose_2d"]
           + weights["pose_3d"] * parts["pose_3d"] + weights["depth"] * parts["depth"]
           + weights["segmentation"] * parts["segmentation"])
  return total, parts


def finetune_loss(outputs, labels, weights):
  """(total, parts): the pose losses on s_R against the target's labels."""
  parts = pose_losses(outputs["R"], labels, labels["images"].shape[1])
  return weights["pose_2d"] * parts["pose_2d"] + weights["pose_3d"] * parts["pose_3d"], parts
