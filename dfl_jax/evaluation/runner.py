"""A network over the batches of an evaluation split, scored with the official protocol.

``evaluate`` is what training runs every epoch and what ``python -m dfl_jax.evaluate`` runs in
model mode (``model_mode.py``): the jitted forward pass on global batches, this process's rows
gathered across hosts, padding rows dropped, 2.5D decoded to camera coordinates with the GT box
and GT root depth, and ``metrics.OfficialMetrics`` accumulated (docs/evaluation.md); where the
model has a part segmentation and the batches carry its labels, the segmentation's figures
(``segmentation.SegmentationMetrics``, ``seg_*`` keys) come with them.
"""

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from dfl_jax import conventions, parallel
from dfl_jax.evaluation import metrics, segmentation

# Keys of an evaluation batch that the metrics read.
EVAL_KEYS = ("joint_cam", "affine", "focal", "princpt", "joint_valid_ann", "hand_type", "mask",
             "hand_presence_valid")
# Keys that the segmentation figures read, where the batches have them.
SEG_KEYS = ("segmentation", "segmentation_valid")


def make_predict_fn(model, mesh):
  """The jitted forward pass; the part segmentation comes back as its arg-max classes
  (``segmentation_pred``, int8), not as [B, H/4, W/4, 33] float logits."""
  def predict(params, batch_stats, images):
    out = model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
    if "segmentation_logits" in out:
      out["segmentation_pred"] = jnp.argmax(out.pop("segmentation_logits"), -1).astype(jnp.int8)
    return out
  out_sharding = NamedSharding(mesh, P(parallel.AXIS))
  return jax.jit(predict, out_shardings=out_sharding)


def evaluate(predict, state, eval_batches, mesh, predictions=None, root_depths=None):
  """Official InterHand2.6M metrics (GT box and GT root depth) over the evaluation split.

  Depth is decoded from the model's 256-unit range whatever the input size
  (``dfl_jax.conventions``, the units the pipeline's targets are in).

  With a dict as ``predictions``, it is filled in the predictions-file format of
  ``evaluation.predictions`` (annotation id -> joints_cam_mm, hand_presence, rel_root_depth_mm).

  ``root_depths`` (annotation id -> [right_mm, left_mm], ``protocols.read_root_depths``: a
  RootNet-style estimate) replaces the GT root depths of the back-projection (the official
  ``trans_test='rootnet'``); a frame without an entry is an error naming it.
  """
  acc = metrics.OfficialMetrics()
  seg = segmentation.SegmentationMetrics()
  scored_seg = False
  for batch in eval_batches:
    images = parallel.to_global(batch, mesh, keys=("images",))["images"]
    out = predict(state.params, state.batch_stats, images)
    rows = {k: batch[k] for k in EVAL_KEYS + ("annotation_id",) + SEG_KEYS if k in batch}
    rows.update({f"pred_{k}": parallel.local_rows(v) for k, v in out.items()
                 if k in ("joints", "rel_root_depth", "hand_presence_logits",
                          "segmentation_pred", "segmentation_logits")})
    if jax.process_count() > 1:
      rows = {k: multihost_utils.process_allgather(np.asarray(v), tiled=True)
              for k, v in rows.items()}
    # Only real rows: the padding (mask 0, all zeros) of a split that does not fill its last
    # batch, or of a multi-host evaluation's extra batches, has a singular affine and a zero
    # focal length, and is not scored.
    real = np.asarray(rows["mask"]) > 0
    if not real.any():
      continue
    rows = {k: np.asarray(v)[real] for k, v in rows.items()}
    if "pred_segmentation_pred" in rows and "segmentation" in rows:
      seg.update_predicted(rows["pred_segmentation_pred"], rows["segmentation"],
                           rows.get("segmentation_valid"))
      scored_seg = True
    elif "pred_segmentation_logits" in rows and "segmentation" in rows:
      seg.update(rows["pred_segmentation_logits"], rows["segmentation"],
                 rows.get("segmentation_valid"))
      scored_seg = True
    gt_cam = rows["joint_cam"]
    root_depth = gt_cam[:, list(conventions.WRISTS), 2]
    if root_depths is not None:
      ids = [str(int(i)) for i in rows["annotation_id"]]
      absent = [i for i in ids if i not in root_depths]
      if absent:
        raise ValueError(f"--root_depth has no depth for annotation ids {absent[:10]} "
                         f"({len(absent)} in this batch)")
      root_depth = np.stack([root_depths[i] for i in ids])
    pred_cam = metrics.crop_to_camera(rows["pred_joints"], rows["affine"], rows["focal"],
                                      rows["princpt"], root_depth)
    rel_root = (conventions.depth_units_to_mm(np.asarray(rows["pred_rel_root_depth"]))
                if "pred_rel_root_depth" in rows else None)
    presence = rows.get("pred_hand_presence_logits")
    acc.update(pred_cam, gt_cam, rows["joint_valid_ann"], rows["hand_type"],
               pred_rel_root_depth_mm=rel_root, presence_logits=presence,
               hand_type_valid=rows["hand_presence_valid"],
               abs_root_depth_mm=root_depth if root_depths is not None else None)
    if predictions is not None:
      for i in range(len(pred_cam)):
        entry = {"joints_cam_mm": pred_cam[i].tolist()}
        if presence is not None:
          entry["hand_presence"] = metrics.sigmoid(presence[i]).tolist()
        if rel_root is not None:
          entry["rel_root_depth_mm"] = float(rel_root[i])
        predictions[str(int(rows["annotation_id"][i]))] = entry
  result = acc.result()
  result["root_depth"] = "gt" if root_depths is None else "given"
  if scored_seg:
    result.update(seg.result())
  return result
