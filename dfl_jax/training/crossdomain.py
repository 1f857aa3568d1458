"""The cross-domain dual-modality system end to end: ``python -m dfl_jax.crossdomain``.

    python -m dfl_jax.crossdomain --config=configs/crossdomain_tiny.py --workdir=workdir/crossdomain
        [--config.crossdomain.num_labels=N] [--label_sweep=0,100,200,400] [--stage=all]
        [--eval_data_dir=DIR [--eval_split=test]]

Stages (``--stage``; ``all`` runs them in order, skipping a training whose file is there;
naming a stage runs it again):

1. ``data``: both domains of the synthetic world rendered with depth and built as TFDS
   datasets, the source (``crossdomain.source_style``, "studio") in WORKDIR/source, the
   target ("wild", another seed) in WORKDIR/target.
2. ``pretrain``: E_R, E_D, the attention modules, the decoder and the projection head trained on
   the source with the contrastive and multi-modal objective (``contrastive.py``) over two
   augmented views per sample (``modality_augmentation.py``); writes WORKDIR/pretrain.npz (every
   variable) and WORKDIR/encoder_rgb.npz, E_R as an encoder file that DFL starts from
   (``--config.train.encoder_init=WORKDIR/encoder_rgb.npz``; module ``backbone``).
3. ``finetune``: E_R's plain stream, the decoder and the heads trained with the first N
   labelled target training images (``crossdomain.num_labels``, and each N of
   ``--label_sweep``; N = 0 is the pre-trained model itself) on the pose losses, with G and
   T_RGB; writes WORKDIR/finetune_N.npz.
4. ``evaluate``: the target's test split before fine-tuning (the pre-trained model) and after,
   EPE (mm) and PCK@0.05, also after pose correction; WORKDIR/metrics.json
   (``{"epe_mm": {"before_finetune", "after_finetune"}, "pck_005": {...}, ...}``), and Fig. f as
   WORKDIR/attention.png. ``--label_sweep`` fine-tunes and evaluates once per N and draws Fig. d
   (WORKDIR/epe_vs_labels.png). ``--eval_data_dir`` also scores both models on another dataset
   built by ``python -m input_pipeline.build`` (genuine InterHand2.6M, say: RGB only, cropped
   to the config's input size), as ``metrics["eval_data"]``.

Data parallel over every device (global batches on a 1-D mesh, the state replicated, one jitted
step with the state donated); one run per workdir (``workdir_lock``). The paper fine-tunes and
evaluates on real datasets (STB, FreiHAND, H3D, MVHand); here the target is the synthetic
world's second domain, the only other one that exists on this machine.
"""

import copy
import json
import pathlib
import time

from absl import flags, logging
import flax
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import ml_collections
from ml_collections import config_flags

from dfl_jax import errors, parallel
from dfl_jax.evaluation import crossdomain as evaluation
from dfl_jax.network import dual_modality
from dfl_jax.training import contrastive, modality_augmentation as augment, workdir_lock
from dfl_jax.weights import encoder_file, variables_file
from input_pipeline import pipeline, synthetic_dataset

STAGES = ("all", "data", "pretrain", "finetune", "evaluate")


@flax.struct.dataclass
class State:
  step: jnp.ndarray
  params: dict
  batch_stats: dict
  opt_state: optax.OptState

  def variables(self):
    return {"params": self.params, "batch_stats": self.batch_stats}


# ------------------------------------------------------------------ data

def domain_config(config, domain: str, data_dir: str = ""):
  """The data section of one domain ('source' or 'target'), depth on, InterNet's augmentation
  off (Sec. B's augmentations run on the device)."""
  cd = config.crossdomain
  data = copy.deepcopy(config.data)
  with data.unlocked():
    data.source = "synthetic"
    data.depth = True
    data.augment = False
    data.synthetic_style = cd.source_style if domain == "source" else cd.target_style
    data.synthetic_sizes = cd.source_sizes if domain == "source" else cd.target_sizes
    data.synthetic_seed = config.seed + (cd.target_seed if domain == "target" else 0) * 1000
    data.data_dir = data_dir
    data.eval_split = "test"
  return data


def prepare_domains(config, workdir):
  """{'source': data section, 'target': data section}, rendered and built if needed."""
  out = {}
  for domain in ("source", "target"):
    data = domain_config(config, domain)
    holder = copy.deepcopy(config)
    with holder.unlocked():
      holder.data = data
    out[domain] = domain_config(config, domain,
                                str(synthetic_dataset.ensure(holder, pathlib.Path(workdir) /
                                                              domain)))
  return out


def _train_batches(data, batch_size, seed, split="train"):
  cfg = copy.deepcopy(data)
  with cfg.unlocked():
    cfg.train_split = split
  process, count = jax.process_index(), jax.process_count()
  ds = pipeline.train_dataset(cfg, batch_size // count, seed, process, count)
  return ds.as_numpy_iterator()


# ------------------------------------------------------------------ state and steps

def _optimizer(section):
  return optax.chain(optax.clip_by_global_norm(section.grad_clip_norm) if section.grad_clip_norm
                     else optax.identity(),
                     optax.adamw(section.learning_rate, weight_decay=section.weight_decay))


def init_variables(model, config, rng):
  size = config.data.image_size
  images = jnp.zeros((1, size, size, 3), jnp.uint8)
  depth = jnp.ones((1, size, size), jnp.float32)
  return jax.jit(lambda r: model.init(r, images, depth, train=False))(rng)


def _state(variables, tx, mesh):
  state = State(step=jnp.zeros((), jnp.int32), params=variables["params"],
                batch_stats=variables.get("batch_stats", {}),
                opt_state=tx.init(variables["params"]))
  return jax.device_put(state, parallel.replicated(mesh))


def _key(seed):
  """The augmentation's generator: XLA's RngBitGenerator ('rbg'), whose programs compile
  several times faster on CPUs than threefry's (the step's draws stay reproducible)."""
  return jax.random.key(seed, impl="rbg")


def make_pretrain_step(model, tx, weights, seed, mesh):
  """jit((state, batch) -> (state, metrics)): two views, one forward pass over both."""
  weights = dict(weights)

  def step(state, batch):
    key = jax.random.fold_in(_key(seed), state.step)
    labels = evaluation.labels_of(batch)
    views = augment.two_views(key, labels)
    n = batch["images"].shape[0]

    def loss_fn(params):
      images = jnp.concatenate([v["images"] for v, _ in views])
      depth = jnp.concatenate([v["depth"] for v, _ in views])
      out, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, images,
                                 depth, train=True, mutable=["batch_stats"])
      halves = [jax.tree_util.tree_map(lambda x, i=i: x[i * n:(i + 1) * n],
                                       {k: out[k] for k in contrastive.LATENTS})
                for i in range(2)]
      total, parts = contrastive.pretrain_loss(halves, views, weights)
      return total, (parts, updates["batch_stats"])

    (total, (parts, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(parts, loss=total, grad_norm=optax.global_norm(grads))
    return State(state.step + 1, params, stats, opt_state), metrics

  return _jit(step, mesh)


def make_finetune_step(model, tx, weights, seed, mesh):
  """jit((state, batch) -> (state, metrics)): the pose losses on s_R, G and T_RGB applied."""
  weights = dict(weights)

  def step(state, batch):
    key = jax.random.fold_in(_key(seed + 1), state.step)
    kg, kt = jax.random.split(key)
    labels = evaluation.labels_of(batch)
    size = labels["images"].shape[1]
    geometry = augment.sample_geometry(kg, labels["images"].shape[0], size)
    view = augment.geometric(dict(labels, images=labels["images"].astype(jnp.float32)),
                             geometry)
    view["images"] = augment.texture_rgb(kt, view["images"])

    def loss_fn(params):
      out, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                 view["images"], None, train=True, mutable=["batch_stats"])
      total, parts = contrastive.finetune_loss(out, view, weights)
      return total, (parts, updates["batch_stats"])

    (total, (parts, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return State(state.step + 1, params, stats, opt_state), dict(parts, loss=total)

  return _jit(step, mesh)


def _jit(step, mesh):
  replicated = parallel.replicated(mesh)
  return jax.jit(step, donate_argnums=(0,), out_shardings=(replicated, replicated))


def _run_steps(step_fn, state, batches, num_steps, mesh, log_every, name):
  start = time.time()
  last = {}
  for i in range(num_steps):
    batch = next(batches)
    state, metrics = step_fn(state, parallel.to_global(
        {k: batch[k] for k in evaluation.LABEL_KEYS}, mesh))
    if (i + 1) % log_every == 0 or i + 1 == num_steps:
      last = {k: float(v) for k, v in metrics.items()}
      if not np.isfinite(last["loss"]):
        raise FloatingPointError(f"{name}: the loss is {last['loss']} at step {i + 1}")
      logging.info("%s step %d/%d (%.1f s): %s", name, i + 1, num_steps, time.time() - start,
                   ", ".join(f"{k}={v:.4g}" for k, v in sorted(last.items())))
  return state, last


# ------------------------------------------------------------------ files

save_variables = variables_file.save   # the notebook and tests call these by these names
load_variables = variables_file.load


def export_rgb_encoder(variables, path, config):
  """E_R (``encoder/backbone``) as a DFL encoder file of module ``backbone``."""
  flat = {}
  for collection in encoder_file.COLLECTIONS:
    tree = jax.device_get(variables.get(collection, {})).get("encoder", {}).get("backbone", {})
    for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/").items():
      flat[f"{collection}/backbone/{k}"] = np.asarray(v)
  meta = {"modules": ["backbone"], "source": "cross-domain pre-training (E_R)",
          "model": {"backbone_stages": list(config.model.backbone_stages),
                    "backbone_width": config.model.backbone_width}}
  return encoder_file.save(path, flat, meta)


# ------------------------------------------------------------------ stages

def pretrain(config, domains, workdir, mesh):
  model = dual_modality.create_model(config)
  section = config.pretrain
  parallel.check_batch_size(section.batch_size)
  tx = _optimizer(section)
  state = _state(init_variables(model, config, jax.random.PRNGKey(config.seed)), tx, mesh)
  step = make_pretrain_step(model, tx, section.to_dict(), config.seed, mesh)
  batches = _train_batches(domains["source"], section.batch_size, config.seed)
  state, last = _run_steps(step, state, batches, section.num_steps, mesh,
                           section.log_every_steps, "pretrain")
  variables = jax.device_get(state.variables())
  meta = {"stage": "pretrain", "steps": int(section.num_steps), "last": last,
          "model": config.model.to_dict()}
  if jax.process_index() == 0:
    save_variables(pathlib.Path(workdir) / "pretrain.npz", variables, meta)
    export_rgb_encoder(variables, pathlib.Path(workdir) / "encoder_rgb.npz", config)
  return variables


def finetune(config, variables, domains, num_labels: int, workdir, mesh):
  if num_labels <= 0:
    return variables
  available = _split_size(domains["target"], "train")
  if num_labels > available:
    raise errors.ConfigError(f"config.crossdomain.num_labels={num_labels}: the target's training "
                             f"split has {available} images (crossdomain.target_sizes)")
  model = dual_modality.create_model(config)
  section = config.finetune
  parallel.check_batch_size(section.batch_size)
  tx = _optimizer(section)
  state = _state(variables, tx, mesh)
  step = make_finetune_step(model, tx, section.to_dict(), config.seed, mesh)
  batches = _train_batches(domains["target"], section.batch_size, config.seed,
                           split=f"train[:{num_labels}]")
  state, last = _run_steps(step, state, batches, section.num_steps, mesh,
                           section.log_every_steps, f"finetune N={num_labels}")
  tuned = jax.device_get(state.variables())
  if jax.process_index() == 0:
    save_variables(pathlib.Path(workdir) / f"finetune_{num_labels}.npz", tuned,
                   {"stage": "finetune", "num_labels": num_labels, "last": last})
  return tuned


def _split_size(data, split):
  return pipeline.dataset_info(ml_collections.ConfigDict({"data": data})).splits[split].num_examples


def eval_data_config(config, data_dir: str, split: str):
  """The data section that reads a dataset of ``input_pipeline.build`` (``--eval_data_dir``)."""
  data = domain_config(config, "target", data_dir)
  with data.unlocked():
    data.source = "interhand"
    data.eval_split = split
  return data


def run(config, workdir, stage="all", label_sweep=(), eval_data=None):
  """The stages above; returns the metrics written to WORKDIR/metrics.json. ``eval_data``:
  (data_dir, split) of another dataset to score both models on."""
  if stage not in STAGES:
    raise errors.ConfigError(f"--stage must be one of {STAGES}, got {stage!r}")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lock.hold(workdir):
    return _run(config, workdir, stage, label_sweep, eval_data)


def _load(path, stage):
  if not path.exists():
    raise errors.MissingFileError(f"{path} does not exist: run --stage={stage} first")
  return load_variables(path)[0]


def _run(config, workdir, stage, label_sweep, eval_data):
  mesh = parallel.make_mesh()
  domains = prepare_domains(config, workdir)
  if stage == "data":
    return {}
  cd = config.crossdomain
  counts = sorted(({int(n) for n in label_sweep} | {int(cd.num_labels)}) - {0})
  pre_path = workdir / "pretrain.npz"
  if stage == "pretrain" or (stage == "all" and not pre_path.exists()):
    pretrain(config, domains, workdir, mesh)
  if stage == "pretrain":
    return {}
  pretrained = _load(pre_path, "pretrain")
  for n in counts:
    path = workdir / f"finetune_{n}.npz"
    if stage == "finetune" or (stage == "all" and not path.exists()):
      finetune(config, pretrained, domains, n, workdir, mesh)
  if stage == "finetune":
    return {}
  model = dual_modality.create_model(config)
  batch = config.finetune.batch_size
  curve, tuned_main = {}, pretrained
  for n in [0] + counts:
    variables = pretrained if n == 0 else _load(workdir / f"finetune_{n}.npz", "finetune")
    curve[n] = evaluation.evaluate(model, variables, domains["target"], batch, mesh,
                                   correct_pose=cd.correct_pose)
    logging.info("target, %d labels: %s", n, curve[n])
    if n == int(cd.num_labels):
      tuned_main = variables
  before, after = curve[0], curve[int(cd.num_labels)]
  source = evaluation.evaluate(model, pretrained, domains["source"], batch, mesh,
                               correct_pose=False)
  metrics = {
      "target": cd.target_style, "source": cd.source_style, "num_labels": int(cd.num_labels),
      "attention_source": config.model.attention_source,
      "stop_gradient": bool(config.model.stop_gradient),
      "epe_mm": {"before_finetune": before["epe_mm"], "after_finetune": after["epe_mm"]},
      "pck_005": {"before_finetune": before["pck_005"], "after_finetune": after["pck_005"]},
      "source_test_before_finetune": source,
      "by_num_labels": {str(n): curve[n] for n in sorted(curve)},
  }
  if cd.correct_pose:
    metrics["epe_mm_corrected"] = {"before_finetune": before["epe_mm_corrected"],
                                   "after_finetune": after["epe_mm_corrected"]}
  if eval_data:
    data_dir, split = eval_data
    extra = eval_data_config(config, data_dir, split)
    metrics["eval_data"] = {"data_dir": str(data_dir), "split": split}
    for when, variables in (("before_finetune", pretrained), ("after_finetune", tuned_main)):
      metrics["eval_data"][when] = evaluation.evaluate(model, variables, extra, batch, mesh,
                                                       split=split, correct_pose=cd.correct_pose)
    logging.info("%s (%s): %s", data_dir, split, metrics["eval_data"])
  if jax.process_index() == 0:
    sample = next(pipeline.eval_dataset(domains["target"], 4).as_numpy_iterator())
    metrics["figures"] = {"attention": str(evaluation.attention_figure(
        model, tuned_main, sample, workdir / "attention.png"))}
    if len(curve) > 2:
      metrics["figures"]["epe_vs_labels"] = str(evaluation.label_curve_figure(
          curve, workdir / "epe_vs_labels.png"))
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=1))
  return metrics


# ------------------------------------------------------------------ command line

def define_flags():
  config_flags.DEFINE_config_file("config", None, "configs/crossdomain.py or "
                                  "configs/crossdomain_tiny.py", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output folder (data, weights, metrics.json).")
  flags.DEFINE_enum("stage", "all", list(STAGES), "Which stage to run (see the docstring).")
  flags.DEFINE_list("label_sweep", [], "Also fine-tune and evaluate with these numbers of "
                    "target labels (Fig. d).")
  flags.DEFINE_string("eval_data_dir", None, "Also score the models on this dataset of "
                      "python -m input_pipeline.build (e.g. genuine InterHand2.6M).")
  flags.DEFINE_string("eval_split", "test", "--eval_data_dir: the split to score.")


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if FLAGS.config is None or not FLAGS.workdir:
    raise errors.ConfigError("give --config (configs/crossdomain_tiny.py) and --workdir")
  try:
    sweep = [int(n) for n in FLAGS.label_sweep]
  except ValueError:
    raise errors.ConfigError(f"--label_sweep takes integers, got {FLAGS.label_sweep}") from None
  if any(n < 0 for n in sweep + [FLAGS.config.crossdomain.num_labels]):
    raise errors.ConfigError("numbers of labels must be >= 0")
  eval_data = None
  if FLAGS.eval_data_dir:
    info = pathlib.Path(FLAGS.eval_data_dir)
    if not info.is_dir():
      raise errors.ConfigError(f"--eval_data_dir={FLAGS.eval_data_dir}: no such folder (build "
                               "one with python -m input_pipeline.build)")
    eval_data = (FLAGS.eval_data_dir, FLAGS.eval_split)
  metrics = run(FLAGS.config, FLAGS.workdir, FLAGS.stage, sweep, eval_data)
  if metrics:
    print(json.dumps({k: metrics[k] for k in ("epe_mm", "pck_005")}))


def command():
  """Console script ``dfl-crossdomain`` and ``python -m dfl_jax.crossdomain``."""
  define_flags()
  errors.run(main)
