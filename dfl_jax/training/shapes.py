"""The Im2Hands pipeline end to end on DFL's keypoints: ``python -m dfl_jax.shapes``.

    python -m dfl_jax.shapes --config=configs/shapes_tiny.py --workdir=workdir/shapes [--stage=all]

Stages (``--stage``; ``all`` runs them in order, skipping what is already in the workdir; naming
a stage runs it again):

1. ``dfl``: the keypoint network. With ``shapes.dfl_workdir`` empty, ``config.dfl`` (a DFL
   configuration) is trained on the synthetic world in WORKDIR/dfl (rendered there, with the
   hands' solids); otherwise that run is used as it is (it must be a synthetic-world run: the
   shapes come from its solids).
2. ``keypoints``: DFL run on the training and validation splits in model mode (official
   protocol: GT box and GT root depth), its ``predictions.json`` (camera mm) kept in
   WORKDIR/keypoints/{split}.json.
3. ``examples``: ``input_pipeline.shape_data`` on both splits (crops, crop cameras, each hand's
   occupancy samples), WORKDIR/examples_{split}.npz, joined with DFL's keypoints.
4. ``k``: K trained to map DFL's keypoints (and the image) to the true joints (S.3.2: batch 32,
   30 epochs, Adam 1e-4, x0.3 every 5,000 steps); WORKDIR/k.npz.
5. ``i``: I trained on the true keypoints (S.3.2: batch 8, 10 epochs, Adam 1e-4 with weight
   decay 1e-5, x0.2 every 5,000 steps); WORKDIR/i.npz.
6. ``r``: R trained on the frozen I's initial shapes of the true keypoints (same schedule), its
   ImgEnc started from I's; WORKDIR/r.npz.
7. ``evaluate``: the validation frames reconstructed from the true keypoints (Table S1), from
   DFL's and from DFL's refined by K (Table S2), each by I and by I + R: meshes by marching
   cubes, mean IoU and Chamfer L1 after mid-joint alignment (``evaluation/shapes.py``), MPJPE
   of the keypoints before and after K; WORKDIR/metrics.json (``iou``, ``chamfer_mm``: K + I +
   R on DFL's keypoints, the system; ``mpjpe_before_k``, ``mpjpe_after_k``; every row under
   ``table``) and one mesh file per hand of the first frames under WORKDIR/meshes.

One device, one process (the networks are small; DFL's own training is data parallel); one run
per workdir (``workdir_lock``).
"""

import copy
import dataclasses
import json
import pathlib
import time

from absl import flags, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_flags

from dfl_jax import errors, workdir as workdir_lib
from dfl_jax.evaluation import model_mode, shapes as evaluation
from dfl_jax.network import initial_occupancy, keypoint_refinement, two_hand_refinement
from dfl_jax.training import config_check, loop, shape_steps, workdir_lock
from dfl_jax.weights import variables_file
from input_pipeline import shape_data

STAGES = ("all", "dfl", "keypoints", "examples", "k", "i", "r", "evaluate")
SPLITS = ("train", "val")


# ------------------------------------------------------------------ models

def _fields(section, module_cls):
  names = {f.name for f in dataclasses.fields(module_cls)} - {"parent", "name"}
  return {k: (tuple(v) if isinstance(v, (list, tuple)) else v)
          for k, v in section.items() if k in names}


def models(config):
  """(K, I, R) as the config describes them."""
  return (keypoint_refinement.KeypointRefinement(**_fields(config.k,
                                                           keypoint_refinement.KeypointRefinement)),
          initial_occupancy.InitialOccupancy(**_fields(config.i,
                                                       initial_occupancy.InitialOccupancy)),
          two_hand_refinement.TwoHandRefinement(**_fields(
              config.r, two_hand_refinement.TwoHandRefinement)))


# ------------------------------------------------------------------ DFL and the examples

def dfl_config(config):
  """The DFL configuration trained (or read) for the keypoints, on the shapes' data."""
  cfg = copy.deepcopy(config.dfl)
  with cfg.unlocked():
    cfg.data.source = "synthetic"
    cfg.data.image_size = config.shapes.image_size
    cfg.data.synthetic_sizes = config.shapes.synthetic_sizes
    cfg.data.eval_split = "val"
  return cfg


def dfl_run(config, workdir):
  """(DFL config, its workdir)."""
  given = config.shapes.dfl_workdir
  if given:
    run = pathlib.Path(given)
    if not (run / workdir_lib.CONFIG_FILE).is_file():
      raise errors.MissingFileError(f"--config.shapes.dfl_workdir={given}: no "
                                    f"{workdir_lib.CONFIG_FILE} (not a training run)")
    cfg = workdir_lib.load_config(workdir=run)
    if cfg.data.source != "synthetic":
      raise errors.ConfigError(f"--config.shapes.dfl_workdir={given} was trained on "
                               f"{cfg.data.source!r} data; the shapes come from the synthetic "
                               "world's solids, so it must be a synthetic-world run")
    return workdir_lib.restore_config(cfg), run
  return dfl_config(config), pathlib.Path(workdir) / "dfl"


def raw_root(dfl_workdir):
  return pathlib.Path(dfl_workdir) / "synthetic" / "raw"


def train_dfl(config, workdir):
  cfg, run = dfl_run(config, workdir)
  if not config.shapes.dfl_workdir:
    loop.train_and_evaluate(cfg, str(run))


def predict_keypoints(config, workdir):
  cfg, run = dfl_run(config, workdir)
  out = pathlib.Path(workdir) / "keypoints"
  for split in SPLITS:
    result = model_mode.evaluate_model(copy.deepcopy(cfg), run, split=split,
                                       out_dir=out / split)
    (out / f"{split}.json").write_bytes((out / split / "predictions.json").read_bytes())
    logging.info("DFL on %s: MPJPE %.2f mm", split, result["mpjpe_all"])


def build_examples(config, workdir):
  _, run = dfl_run(config, workdir)
  s = config.shapes
  for i, split in enumerate(SPLITS):
    shape_data.build(raw_root(run), split, pathlib.Path(workdir) / f"examples_{split}.npz",
                     s.image_size, seed=config.seed + i, num_uniform=s.num_uniform,
                     num_near=s.num_near)


def load_examples(workdir, split):
  """The split's examples with DFL's keypoints (``keypoints``, camera mm) joined in."""
  workdir = pathlib.Path(workdir)
  data = shape_data.load(workdir / f"examples_{split}.npz")
  path = workdir / "keypoints" / f"{split}.json"
  try:
    predicted = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise errors.MissingFileError(f"{path}: DFL's keypoints are missing or unreadable ({e}); "
                                  "run --stage=keypoints") from None
  missing = [int(a) for a in data["annotation_id"] if str(int(a)) not in predicted]
  if missing:
    raise errors.InputError(f"{path}: no keypoints for annotations {missing[:10]} of "
                            f"examples_{split}.npz (rebuild both with --stage=keypoints)")
  data["dfl_keypoints"] = np.stack([np.asarray(predicted[str(int(a))]["joints_cam_mm"],
                                               np.float32) for a in data["annotation_id"]])
  return data


# ------------------------------------------------------------------ training

def batches(data, keys, batch_size, seed):
  """Shuffled batches (dicts of jnp arrays) of the examples, every epoch a new order."""
  n = len(data["annotation_id"])
  if n < batch_size:
    raise errors.ConfigError(f"{n} examples cannot fill a batch of {batch_size}")
  rng = np.random.default_rng(seed)
  while True:
    order = rng.permutation(n)
    for s in range(0, n - batch_size + 1, batch_size):
      idx = order[s:s + batch_size]
      yield {k: jnp.asarray(data[k][idx]) for k in keys}


def _steps(section, n):
  return max(1, int(section.epochs) * (n // int(section.batch_size)))


def _optimizer(section):
  return shape_steps.optimizer(section.learning_rate, section.decay_factor, section.decay_every,
                               section.get("weight_decay", 0.0))


def _loop(name, step_fn, state, batch_iter, num_steps, log_every):
  """Runs the steps; the log's ``seconds_per_step`` is the time of the steps after the first
  (which compiles), measured to the last step's end (Table S3's training time per iteration)."""
  start, last, first_done = time.time(), {}, None
  for i in range(num_steps):
    state, metrics = step_fn(state, next(batch_iter), jax.random.key(i))
    if i == 0:
      jax.block_until_ready(metrics)
      first_done = time.time()
    if (i + 1) % log_every == 0 or i + 1 == num_steps:
      last = {k: float(v) for k, v in metrics.items()}
      if not np.isfinite(last["loss"]):
        raise FloatingPointError(f"{name}: the loss is {last['loss']} at step {i + 1}")
      logging.info("%s step %d/%d (%.1f s, %.3f s/step): %s", name, i + 1, num_steps,
                   time.time() - start, (time.time() - start) / (i + 1),
                   ", ".join(f"{k}={v:.4g}" for k, v in sorted(last.items())))
  jax.block_until_ready(state)
  end = time.time()
  per_step = (end - first_done) / (num_steps - 1) if num_steps > 1 else float("nan")
  return state, dict(last, seconds=end - start, steps=num_steps,
                     first_step_seconds=first_done - start, seconds_per_step=per_step)


def _example_batch(data, n=1):
  return {k: jnp.asarray(data[k][:n]) for k in ("image", "joints", "focal", "princpt", "points",
                                                  "inside", "hand_valid")}


def train_k(config, workdir):
  model, _, _ = models(config)
  data = load_examples(workdir, "train")
  data["keypoints"] = data["dfl_keypoints"]
  b = _example_batch(data)
  variables = jax.jit(lambda r: model.init(r, b["image"], jnp.asarray(data["keypoints"][:1])))(
      jax.random.key(config.seed))
  state = shape_steps.State.create(variables, _optimizer(config.k))
  it = batches(data, ("image", "keypoints", "joints", "joint_valid"), config.k.batch_size,
               config.seed)
  state, log = _loop("K", shape_steps.make_keypoint_step(model), state, it,
                     _steps(config.k, len(data["image"])), config.log_every_steps)
  variables_file.save(pathlib.Path(workdir) / "k.npz", state.variables(),
                      {"network": "K", "train": log})


def train_i(config, workdir):
  _, model, _ = models(config)
  data = load_examples(workdir, "train")
  data["keypoints"] = data["joints"]
  b = _example_batch(data)
  variables = jax.jit(lambda r: model.init(r, b["image"], b["joints"], b["focal"], b["princpt"],
                                           b["points"]))(jax.random.key(config.seed + 1))
  state = shape_steps.State.create(variables, _optimizer(config.i))
  it = batches(data, ("image", "keypoints", "focal", "princpt", "points", "inside",
                      "hand_valid"), config.i.batch_size, config.seed + 1)
  state, log = _loop("I", shape_steps.make_initial_step(model), state, it,
                     _steps(config.i, len(data["image"])), config.log_every_steps)
  variables_file.save(pathlib.Path(workdir) / "i.npz", state.variables(),
                      {"network": "I", "train": log})


def _load(workdir, name):
  path = pathlib.Path(workdir) / f"{name}.npz"
  if not path.exists():
    raise errors.MissingFileError(f"{path} does not exist: run --stage={name} first")
  return variables_file.load(path)[0]


def initial_shapes_of(i_model, i_variables, data, config, batch_size=8):
  """I's frozen initial shapes of every example (``shape_steps.initial_shapes`` on
  ``data['keypoints']``): {'surface': [n, 2, P, 3], 'init_logits': [n, 2, 2N]}, computed once
  for R's whole training instead of again at every step."""
  s = config.shapes
  fn = jax.jit(lambda v, b: shape_steps.initial_shapes(i_model, v, b, s.grid_resolution,
                                                       s.num_points, s.candidates))
  variables = jax.device_put(i_variables)
  n = len(data["image"])
  keys = ("image", "keypoints", "focal", "princpt", "points")
  out = {"surface": [], "init_logits": []}
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size) % n        # one shape: the last batch wraps
    surface, init = fn(variables, {k: jnp.asarray(data[k][idx]) for k in keys})
    keep = min(batch_size, n - start)
    out["surface"].append(np.asarray(surface)[:keep])
    out["init_logits"].append(np.asarray(init)[:keep])
  return {k: np.concatenate(v) for k, v in out.items()}


def train_r(config, workdir):
  _, i_model, model = models(config)
  i_variables = _load(workdir, "i")
  data = load_examples(workdir, "train")
  data["keypoints"] = data["joints"]
  start = time.time()
  data.update(initial_shapes_of(i_model, i_variables, data, config))
  logging.info("I's initial shapes of %d training frames: %.1f s", len(data["image"]),
               time.time() - start)
  b = dict(_example_batch(data), keypoints=jnp.asarray(data["joints"][:1]),
           surface=jnp.asarray(data["surface"][:1]),
           init_logits=jnp.asarray(data["init_logits"][:1]))
  centre = keypoint_refinement.keypoint_centre(b["keypoints"])[:, 0]
  variables = jax.jit(lambda r: model.init(
      r, b["image"], b["focal"], b["princpt"], b["surface"], centre,
      shape_steps.refinement_queries(b), jax.nn.sigmoid(b["init_logits"])))(
          jax.random.key(config.seed + 2))
  variables = start_image_encoder_from(variables, i_variables)
  state = shape_steps.State.create(variables, _optimizer(config.r))
  it = batches(data, ("image", "keypoints", "focal", "princpt", "points", "inside",
                      "hand_valid", "surface", "init_logits"), config.r.batch_size,
               config.seed + 2)
  state, log = _loop("R", shape_steps.make_refinement_step(model), state, it,
                     _steps(config.r, len(data["image"])), config.log_every_steps)
  variables_file.save(pathlib.Path(workdir) / "r.npz", state.variables(),
                      {"network": "R", "train": log})


def start_image_encoder_from(r_variables, i_variables):
  """R's variables with its ImgEnc replaced by I's trained one where the shapes agree (I's
  latent head, which I does not train, is kept from R's initialisation)."""
  out = jax.tree.map(lambda x: x, r_variables)
  for collection, tree in out.items():
    mine = tree.get("image_encoder")
    theirs = i_variables.get(collection, {}).get("image_encoder")
    if mine is None or theirs is None:
      continue
    for name in mine:
      if name != "latent" and name in theirs and jax.tree.structure(mine[name]) == \
          jax.tree.structure(theirs[name]) and all(
              a.shape == b.shape for a, b in zip(jax.tree.leaves(mine[name]),
                                                 jax.tree.leaves(theirs[name]))):
        mine[name] = theirs[name]
  return out


# ------------------------------------------------------------------ the command

def run(config, workdir, stage="all"):
  """The stages above; returns the metrics written to WORKDIR/metrics.json."""
  if stage not in STAGES:
    raise errors.ConfigError(f"--stage must be one of {STAGES}, got {stage!r}")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lock.hold(workdir):
    return _run(config, workdir, stage)


def _done(workdir, stage, config):
  _, run_dir = dfl_run(config, workdir)
  return {
      "dfl": (run_dir / "checkpoints").is_dir() and any(
          p.name.isdigit() for p in (run_dir / "checkpoints").iterdir()),
      "keypoints": all((workdir / "keypoints" / f"{s}.json").exists() for s in SPLITS),
      "examples": all((workdir / f"examples_{s}.npz").exists() for s in SPLITS),
      "k": (workdir / "k.npz").exists(), "i": (workdir / "i.npz").exists(),
      "r": (workdir / "r.npz").exists(),
  }[stage]


CONFIG_FILE = "shapes_config.json"


def load_config(workdir):
  """The configuration a shapes workdir was run with (what predict rebuilds K, I, R from)."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except (OSError, ValueError) as e:
    raise errors.MissingFileError(f"{path}: not a shapes workdir ({e}); run python -m "
                                  "dfl_jax.shapes first") from None


def _run(config, workdir, stage):
  (workdir / CONFIG_FILE).write_text(config.to_json(indent=1))
  work = {"dfl": train_dfl, "keypoints": predict_keypoints, "examples": build_examples,
          "k": train_k, "i": train_i, "r": train_r}
  for name, fn in work.items():
    if stage == name or (stage == "all" and not _done(workdir, name, config)):
      logging.info("stage %s", name)
      fn(config, workdir)
  if stage not in ("all", "evaluate"):
    return {}
  return evaluate_workdir(config, workdir)


def evaluate_workdir(config, workdir, out_dir=None):
  """The ``evaluate`` stage: scores the workdir's K, I and R on its validation examples and
  writes ``metrics.json`` and ``meshes/`` into ``out_dir`` (default: the workdir)."""
  workdir = pathlib.Path(workdir)
  out = pathlib.Path(out_dir) if out_dir else workdir
  out.mkdir(parents=True, exist_ok=True)
  k_model, i_model, r_model = models(config)
  data = load_examples(workdir, "val")
  _, run_dir = dfl_run(config, workdir)
  by_id = {int(r["annotation_id"]): r for r in shape_data.records(raw_root(run_dir), "val")}
  n = len(data["image"]) if not config.shapes.eval_frames else min(
      int(config.shapes.eval_frames), len(data["image"]))
  solids = [shape_data.solids_in_camera(by_id[int(a)], raw_root(run_dir), "val")
            for a in data["annotation_id"][:n]]
  metrics = evaluation.evaluate(config, data, (k_model, _load(workdir, "k")),
                                (i_model, _load(workdir, "i")), (r_model, _load(workdir, "r")),
                                solids, out / "meshes")
  (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
  return metrics


def define_flags():
  config_flags.DEFINE_config_file("config", None, "configs/shapes.py or configs/shapes_tiny.py",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Output folder (data, networks, meshes, metrics.json).")
  flags.DEFINE_enum("stage", "all", list(STAGES), "Which stage to run (see the docstring).")


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if FLAGS.config is None or not FLAGS.workdir:
    raise errors.ConfigError("give --config (configs/shapes_tiny.py) and --workdir")
  # Checked before anything is written (the DFL trained here too, unless a run is given).
  config_check.check_shapes(FLAGS.config)
  if not FLAGS.config.shapes.dfl_workdir:
    config_check.check(ml_collections.ConfigDict({"dfl": dfl_config(FLAGS.config)}),
                       prefix="dfl.")
  metrics = run(FLAGS.config, FLAGS.workdir, FLAGS.stage)
  if metrics:
    print(json.dumps({k: metrics[k] for k in ("iou", "chamfer_mm", "mpjpe_before_k",
                                              "mpjpe_after_k")}))


def command():
  """Console script ``dfl-shapes`` and ``python -m dfl_jax.shapes``."""
  define_flags()
  errors.run(main)

