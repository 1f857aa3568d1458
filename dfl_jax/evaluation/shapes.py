"""Im2Hands scored: reconstruction of validation frames, IoU, Chamfer L1, MPJPE before/after K.

For each validation frame the keypoints come from three sources: the truth (Table S1), DFL's
prediction (Table S2 without K) and DFL's refined by K (Table S2); from each, I's shapes and
I + R's (``reconstruction``: occupancy on a grid over each hand's box, marching cubes) are scored
against the frame's true solids with ``shape_metrics.score_hand`` (mid-joint alignment, mean
IoU over uniform points, Chamfer L1 between surface samples). The predicted inside test is the
network's own occupancy (probability >= 0.5) at the IoU points, not the mesh's.

MPJPE of the keypoints (``mpjpe_before_k``, ``mpjpe_after_k``): the mean distance over valid
joints after aligning each hand at its wrist (the official protocol's).
"""

import numpy as np

import jax
import jax.numpy as jnp

from dfl_jax.conventions import HANDS, LEFT, RIGHT, ROOT_OF
from dfl_jax.evaluation import metrics, reconstruction, shape_metrics
from dfl_jax.network import keypoint_refinement
from input_pipeline import hand_shape

SOURCES = ("gt", "dfl", "dfl+K")
MODELS = ("I", "I+R")
HAND_JOINTS = (RIGHT, LEFT)


def root_aligned_mpjpe(pred, truth, valid):
  """Mean joint error (mm) over valid joints (and valid wrists), each hand aligned at its wrist
  (``metrics.joint_errors``, the official alignment)."""
  w = valid * valid[:, ROOT_OF]
  return float(np.sum(metrics.joint_errors(pred, truth) * w) / max(np.sum(w), 1.0))


def refine_keypoints(k_model, k_variables, images, keypoints, batch_size=16):
  fn = jax.jit(lambda v, img, kp: k_model.apply(v, img, kp))
  out = [np.asarray(fn(k_variables, jnp.asarray(images[s:s + batch_size]),
                       jnp.asarray(keypoints[s:s + batch_size])))
         for s in range(0, len(images), batch_size)]
  return np.concatenate(out)


def make_occupancy(i_model, r_model, config):
  """jit(i_vars, r_vars, frame, queries [1, 2, Q, 3]) -> (I logits, I + R logits) [1, 2, Q]."""
  surface, initial, refine = _occupancy_parts(i_model, r_model, config)

  def occupancy(i_vars, r_vars, frame, queries):
    start = initial(i_vars, frame, queries)
    return start, refine(r_vars, frame, surface(i_vars, frame), queries, start)

  return jax.jit(occupancy)


def make_occupancy_parts(i_model, r_model, config):
  """``make_occupancy`` in three jitted parts, for a caller that asks several sets of queries
  of one frame: surface(i_vars, frame) -> R's input point clouds [1, 2, P, 3] (I's iso-surface
  on each hand's grid, farthest point sampled); initial(i_vars, frame, queries) -> I's logits;
  refine(r_vars, frame, surface, queries, I's logits there) -> I + R's logits."""
  return tuple(jax.jit(f) for f in _occupancy_parts(i_model, r_model, config))


def _occupancy_parts(i_model, r_model, config):
  s = config.shapes

  def initial(i_vars, frame, queries):
    return i_model.apply(i_vars, frame["image"], frame["keypoints"], frame["focal"],
                         frame["princpt"], queries)["logits"]

  def surface(i_vars, frame):
    grids, _, _ = reconstruction.hand_grids(frame["keypoints"], s.grid_resolution)
    return reconstruction.surface_points(grids, initial(i_vars, frame, grids), s.num_points,
                                         s.candidates)

  def refine(r_vars, frame, surface_points, queries, initial_logits):
    centre = keypoint_refinement.keypoint_centre(frame["keypoints"])[:, 0]
    return r_model.apply(r_vars, frame["image"], frame["focal"], frame["princpt"],
                         surface_points, centre, queries, jax.nn.sigmoid(initial_logits))

  return surface, initial, refine


def evaluate(config, data, k, i, r, gt_solids, mesh_dir=None):
  """The metrics (module docstring) of the first ``config.shapes.eval_frames`` examples of
  ``data`` (``load_examples``' arrays); ``gt_solids[j]`` is frame j's {'right', 'left'} solids
  in camera mm; writes the system's meshes of the first ``meshes_written`` frames to
  ``mesh_dir``.

  Per frame and keypoint source the networks run twice: on the mesh grids of both hands, then
  on the IoU points of every (hand, model) at once (each hand's slot holds its points for I,
  then those for I + R; I answers both, R the second half from I's answer there)."""
  s = config.shapes
  n = len(data["image"]) if not s.eval_frames else min(int(s.eval_frames), len(data["image"]))
  (k_model, k_vars), (i_model, i_vars), (r_model, r_vars) = k, i, r
  # On the device once: every call below would copy the NumPy trees again.
  k_vars, i_vars, r_vars = jax.device_put((k_vars, i_vars, r_vars))
  truth = data["joints"][:n].astype(np.float64)
  valid = data["joint_valid"][:n]
  dfl = data["dfl_keypoints"][:n]
  refined = refine_keypoints(k_model, k_vars, data["image"][:n], dfl)
  sources = {"gt": truth.astype(np.float32), "dfl": dfl, "dfl+K": refined}
  surface_fn, initial_fn, refine_fn = make_occupancy_parts(i_model, r_model, config)
  rng = np.random.default_rng(config.seed)
  scores = {src: {m: [] for m in MODELS} for src in SOURCES}
  written = []
  res, num = int(s.mesh_resolution), int(s.eval_points)
  for j in range(n):
    gt_meshes = {}
    for h, side in enumerate(HANDS):
      if data["hand_valid"][j, h] and gt_solids[j][side] is not None:
        gt_meshes[side] = hand_shape.mesh(gt_solids[j][side])
    for src, keypoints in sources.items():
      frame = {"image": jnp.asarray(data["image"][j:j + 1]),
               "keypoints": jnp.asarray(keypoints[j:j + 1], jnp.float32),
               "focal": jnp.asarray(data["focal"][j:j + 1]),
               "princpt": jnp.asarray(data["princpt"][j:j + 1])}
      surface = surface_fn(i_vars, frame)
      grids, lo, hi = reconstruction.hand_grids(frame["keypoints"], res)
      start = initial_fn(i_vars, frame, grids)
      grid_logits = (start, refine_fn(r_vars, frame, surface, grids, start))
      queries = np.zeros((1, 2, len(MODELS) * num, 3), np.float32)
      pending = []
      for h, side in enumerate(HANDS):
        if side not in gt_meshes:
          continue
        for m, logits in enumerate(grid_logits):
          prob = jax.nn.sigmoid(logits[0, h]).reshape((res,) * 3)
          mesh = reconstruction.mesh_from_grid(prob, lo[0, h], hi[0, h])
          points, shift = shape_metrics.iou_queries(
              mesh, keypoints[j, HAND_JOINTS[h]], gt_meshes[side], truth[j, HAND_JOINTS[h]],
              rng, num)
          queries[0, h, m * num:(m + 1) * num] = points - shift
          pending.append((h, side, m, mesh, points, shift))
          if (mesh_dir is not None and src == "dfl+K" and MODELS[m] == "I+R"
              and j < s.meshes_written):
            written.append(_write(mesh_dir, int(data["annotation_id"][j]), side, mesh,
                                  s.mesh_format))
      if not pending:
        continue
      queries = jnp.asarray(queries)
      start = initial_fn(i_vars, frame, queries)
      point_logits = (np.asarray(start)[..., :num],
                      np.asarray(refine_fn(r_vars, frame, surface, queries[:, :, num:],
                                           start[:, :, num:])))
      for h, side, m, mesh, points, shift in pending:
        pred_inside = point_logits[m][0, h] >= 0.0
        gt_inside = hand_shape.contains(gt_solids[j][side], points)
        scores[src][MODELS[m]].append(shape_metrics.score_at(
            pred_inside, gt_inside, mesh, gt_meshes[side], shift, rng, s.eval_surface))
  table = {src: {m: _summary(scores[src][m]) for m in MODELS} for src in SOURCES}
  system = table["dfl+K"]["I+R"]
  return {"iou": system["iou"], "chamfer_mm": system["chamfer_mm"],
          "mpjpe_before_k": root_aligned_mpjpe(dfl, truth, valid),
          "mpjpe_after_k": root_aligned_mpjpe(refined, truth, valid),
          "num_frames": n, "table": table, "meshes": [str(p) for p in written]}


def _summary(scores):
  chamfer = [x["chamfer_mm"] for x in scores if not x["empty"]]
  return {"iou": float(np.mean([x["iou"] for x in scores])) if scores else float("nan"),
          "chamfer_mm": float(np.mean(chamfer)) if chamfer else float("nan"),
          "num_hands": len(scores), "num_empty": int(sum(x["empty"] for x in scores))}


def _write(folder, annotation_id, side, mesh, fmt):
  path = f"{folder}/{annotation_id}_{side}.{fmt}"
  writer = reconstruction.write_ply if fmt == "ply" else reconstruction.write_obj
  return writer(path, *mesh)


def format_table(metrics):
  """Tables S1/S2's rows of ``evaluate``'s metrics as text lines."""
  lines = [f"Im2Hands, {metrics['num_frames']} frames: MPJPE {metrics['mpjpe_before_k']:.2f} mm "
           f"(DFL) -> {metrics['mpjpe_after_k']:.2f} mm (after K)"]
  for src in SOURCES:
    for m in MODELS:
      row = metrics["table"][src][m]
      lines.append(f"  keypoints {src:6s} {m:4s} IoU {100 * row['iou']:5.1f}%  Chamfer L1 "
                   f"{row['chamfer_mm']:6.2f} mm  ({row['num_hands']} hands, "
                   f"{row['num_empty']} empty)")
  return "\n".join(lines)
