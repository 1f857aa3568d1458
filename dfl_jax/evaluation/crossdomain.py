"""The cross-domain system scored in its supplement's terms, and its figures.

``evaluate`` runs the plain RGB stream (s_R: no depth map, as on a target domain at test time)
over every example of a split once and reports the mean EPE of the 3D joints relative to each
hand's wrist (mm) and PCK@0.05 of the 2D joints (the share of valid joints within 0.05 of the
input size), over valid joints (``pose_metrics``), and, with
``correct_pose``, the EPE after pose correction (``dfl_jax.pose_correction``) of the predicted
3D joints. ``attention_figure`` is Fig. f (image, multi-modal predictions, depth attention and
that attention over the image); ``label_curve_figure`` is Fig. d (EPE against the number of
target labels).
"""

import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from dfl_jax import parallel, pose_correction
from dfl_jax.conventions import ROOT_OF
from dfl_jax.network import dual_modality
from input_pipeline import pipeline

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

LABEL_KEYS = ("images", "joints", "joint_valid", "joint_cam", "joint_valid_ann", "mask",
              "depth", "segmentation", "segmentation_valid")


def relative_joints_3d(joint_cam, joint_valid):
  """[B, 42, 3] camera joints (mm) -> each hand's joints minus its wrist, and their validity
  (a joint counts when it and its wrist are valid)."""
  rel = joint_cam - joint_cam[:, ROOT_OF]
  return rel, joint_valid * joint_valid[:, ROOT_OF]


def pose_metrics(pred, labels, image_size: int):
  """Sums for EPE (mm) and PCK@0.05 over valid joints: {epe_sum, epe_count, pck_hits,
  pck_count} (divide after summing over batches)."""
  w3 = labels["joints_3d_valid"] * labels["mask"][:, None]
  err3 = jnp.linalg.norm(pred["joints_3d"] * dual_modality.POSE_SCALE_MM
                         - labels["joints_3d"], axis=-1)
  w2 = labels["joint_valid"] * labels["mask"][:, None]
  err2 = jnp.linalg.norm(pred["joints_2d"] - labels["joints"][..., :2], axis=-1)
  return {"epe_sum": jnp.sum(err3 * w3), "epe_count": jnp.sum(w3),
          "pck_hits": jnp.sum((err2 < 0.05 * image_size) * w2), "pck_count": jnp.sum(w2)}


def labels_of(batch):
  """A pipeline batch (arrays) with the 3D labels the losses and metrics read."""
  rel, valid = relative_joints_3d(batch["joint_cam"], batch["joint_valid_ann"])
  return dict(batch, joints_3d=rel, joints_3d_valid=valid)


def make_predict(model):
  """jit(variables, images) -> the s_R outputs (no depth: the target domain's test time)."""

  @jax.jit
  def predict(variables, images):
    out = model.apply(variables, images, None, train=False)["R"]
    return {k: out[k] for k in ("joints_2d", "joints_3d", "depth", "segmentation")}

  return predict


def evaluate(model, variables, data_cfg, batch_size: int, mesh, split: str = "test",
             correct_pose: bool = True, template=None) -> dict:
  """{epe_mm, pck_005, num_joints, num_images[, epe_mm_corrected]} of ``split``."""
  predict = make_predict(model)
  size = data_cfg.image_size
  sums = {"epe_sum": 0.0, "epe_count": 0.0, "pck_hits": 0.0, "pck_count": 0.0}
  corrected_sum, images = 0.0, 0
  ds = pipeline.eval_dataset(data_cfg, batch_size, split=split)
  for batch in ds.as_numpy_iterator():
    # Records without depth or parts (genuine InterHand2.6M) still carry what the metrics read.
    arrays = parallel.to_global({k: batch[k] for k in LABEL_KEYS if k in batch}, mesh)
    out = predict(variables, arrays["images"])
    labels = labels_of(arrays)
    for k, v in pose_metrics(out, labels, size).items():
      sums[k] += float(v)
    images += int(np.sum(batch["mask"]))
    if correct_pose:
      pred = np.asarray(parallel.local_rows(out["joints_3d"]), np.float64) * 100.0
      fixed = pose_correction.correct_two_hands(pred, template)
      gt = np.asarray(parallel.local_rows(labels["joints_3d"]))
      w = np.asarray(parallel.local_rows(labels["joints_3d_valid"])) * batch["mask"][:, None]
      corrected_sum += float(np.sum(np.linalg.norm(fixed - gt, axis=-1) * w))
  result = {"epe_mm": sums["epe_sum"] / max(sums["epe_count"], 1.0),
            "pck_005": sums["pck_hits"] / max(sums["pck_count"], 1.0),
            "num_joints": int(sums["epe_count"]), "num_images": images}
  if correct_pose:
    result["epe_mm_corrected"] = corrected_sum / max(sums["epe_count"], 1.0)
  return result


def attention_figure(model, variables, batch, path, count: int = 2):
  """Fig. f for the first ``count`` examples of ``batch`` (with depth): image, predicted depth,
  predicted hand mask, predicted and true 2D joints, the depth attention (stage 2, stride 4)
  and that attention over the image."""
  out = model.apply(variables, jnp.asarray(batch["images"][:count]),
                    jnp.asarray(batch["depth"][:count]), train=False)
  fused = out["F"]
  attention = np.asarray(out["attention"][1][..., 0])
  fig, axes = plt.subplots(count, 5, figsize=(15, 3.2 * count), squeeze=False)
  for i in range(count):
    image = np.asarray(batch["images"][i])
    size = image.shape[0]
    a = attention[i]
    up = np.kron(a, np.ones((size // a.shape[0], size // a.shape[1])))
    mask = np.argmax(np.asarray(fused["segmentation"][i]), -1) > 0
    panels = [(image, "RGB crop"), (np.asarray(fused["depth"][i]), "predicted depth"),
              (mask, "predicted hand mask"), (image, "2D pose (pred. red, GT green)"),
              (a, "attention from depth")]
    for ax, (content, title) in zip(axes[i], panels):
      ax.imshow(content, cmap=None if content.ndim == 3 else "viridis")
      ax.set_title(title, fontsize=9)
      ax.axis("off")
    valid = np.asarray(batch["joint_valid"][i]) > 0       # the hands that are there
    xy = np.asarray(fused["joints_2d"][i])[valid]
    gt = np.asarray(batch["joints"][i])[valid, :2]
    axes[i, 3].scatter(gt[:, 0], gt[:, 1], s=6, c="lime")
    axes[i, 3].scatter(xy[:, 0], xy[:, 1], s=6, c="red")
    axes[i, 3].set_xlim(-0.5, size - 0.5)
    axes[i, 3].set_ylim(size - 0.5, -0.5)
    axes[i, 4].imshow(image)
    axes[i, 4].imshow(up, cmap="jet", alpha=0.5)
    axes[i, 4].set_title("attention over the image", fontsize=9)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def label_curve_figure(curve, path, title="EPE on the target domain"):
  """Fig. d: EPE (mm) against the number of target labels; ``curve`` {N: {"epe_mm": ...}}."""
  ns = sorted(int(n) for n in curve)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(ns, [curve[n]["epe_mm"] for n in ns], "o-", label="EPE")
  if all("epe_mm_corrected" in curve[n] for n in ns):
    ax.plot(ns, [curve[n]["epe_mm_corrected"] for n in ns], "s--", label="EPE, pose corrected")
  ax.set_xlabel("labelled target images used in fine-tuning")
  ax.set_ylabel("mean EPE (mm)")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return pathlib.Path(path)
