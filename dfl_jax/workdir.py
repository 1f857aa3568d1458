"""The workdir contract: what a training run writes, and how every other command reads it back.

A run's workdir holds ``config.json`` (the resolved configuration, written before the first step
by ``save_config``), ``checkpoints/STEP/`` (``dfl_jax.training.checkpointing``), ``tensorboard/``
and, after evaluation, ``eval/``. Evaluation, inference, export, the encoder export, the
benchmark and the compile-only check all restore through this module:

    config = workdir.load_config(workdir=DIR)                # or checkpoint=DIR/checkpoints/N
    config = workdir.restore_config(config)                  # a copy, BatchNorm mode resolved
    target = workdir.abstract_train_state(config)            # shapes only, nothing computed
    step, state = workdir.restore_run(DIR, None, target)     # latest checkpoint, or a step folder
    run = workdir.restore(workdir=DIR)                       # all three at once

The state to restore into is built from the configuration without reading any weight file
(``create_train_state(..., weight_files=False)``): the checkpoint holds every weight, so a moved
or deleted ImageNet backbone or encoder file does not matter.
"""

import dataclasses
import json
import pathlib

import jax
import ml_collections

from dfl_jax import errors
from dfl_jax.network.model import model_for
from dfl_jax.training import checkpointing
from dfl_jax.training.state import create_optimizer, create_train_state

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"


def save_config(config, workdir) -> pathlib.Path:
  """Writes the run's configuration to WORKDIR/config.json (process 0); returns the path."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if jax.process_index() == 0:
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")
  return path


def config_path(workdir=None, checkpoint=None) -> pathlib.Path:
  """WORKDIR/config.json, or for a checkpoint WORKDIR/checkpoints/STEP the same file."""
  if workdir:
    return pathlib.Path(workdir) / CONFIG_FILE
  return pathlib.Path(checkpoint).resolve().parent.parent / CONFIG_FILE


def load_config(workdir=None, checkpoint=None) -> ml_collections.ConfigDict:
  """The configuration a run was trained with (its config.json); errors name the file."""
  path = config_path(workdir, checkpoint)
  if not path.is_file():
    raise errors.MissingFileError(
        f"{path} not found: training writes it into the workdir; for a run trained before "
        f"that, pass the configuration it was trained with (--config=configs/tiny.py)")
  with open(path, encoding="utf-8") as f:
    try:
      return ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
      raise errors.InputError(f"{path}: not valid JSON ({e})") from e


def restore_config(config) -> ml_collections.ConfigDict:
  """A copy of a run's configuration with BatchNorm's mode resolved as training resolved it
  (``model.trainable_bn`` True or False, never None), so that ``create_model(config.model)``
  rebuilds the trained network. The weight-file paths stay as the record of how the run began;
  nothing that restores reads them."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.trainable_bn = model_for(config).trainable_bn  # the network's own rule
  return config


def abstract_train_state(config, sharding=None):
  """The train state's shapes and dtypes (``jax.ShapeDtypeStruct`` leaves), nothing computed.

  ``sharding`` (default: this process's first device) is given to every leaf: the state is
  replicated, so a ``NamedSharding(mesh, P())`` restores straight onto every device.
  """
  tx = create_optimizer(config, steps_per_epoch=1)
  state = jax.eval_shape(
      lambda key: create_train_state(config, key, tx, weight_files=False)[1],
      jax.random.key(0))
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def restore_run(workdir, checkpoint, target):
  """(step, state): the step folder ``checkpoint``, or the latest checkpoint of ``workdir``."""
  if checkpoint:
    path = pathlib.Path(checkpoint)
    if not path.name.isdigit():
      raise errors.ConfigError(f"--checkpoint {path}: expected a step folder such as "
                             f"{pathlib.Path(workdir) / CHECKPOINTS / '1000'}")
    ckpt = checkpointing.Checkpointer(path.parent)
    step, state, _ = ckpt.restore(int(path.name), target)
  else:
    directory = pathlib.Path(workdir) / CHECKPOINTS
    if not directory.is_dir() or not any(p.name.isdigit() for p in directory.iterdir()):
      raise errors.MissingFileError(f"no checkpoint in {directory}; train first (python "
                                    f"main.py --workdir={workdir} ...) or pass --checkpoint")
    ckpt = checkpointing.Checkpointer(directory)
    try:
      restored = ckpt.restore_latest(target)
    finally:
      ckpt.close()
    if restored is None:
      raise errors.MissingFileError(f"no committed checkpoint in {directory}; train first or "
                                    f"pass --checkpoint")
    step, state, _ = restored
  ckpt.close()
  return step, state


@dataclasses.dataclass
class RestoredRun:
  config: ml_collections.ConfigDict
  step: int
  state: object      # dfl_jax.training.state.TrainState
  checkpoint: str    # the step folder restored


def restore(workdir=None, checkpoint=None, config=None, sharding=None) -> RestoredRun:
  """A run's configuration and its latest checkpoint (or the step folder ``checkpoint``).

  ``config`` defaults to the run's config.json (``load_config``); the run's config is returned
  resolved (``restore_config``).
  """
  if not workdir and not checkpoint:
    raise errors.ConfigError("give a workdir or a checkpoint (WORKDIR/checkpoints/STEP)")
  if checkpoint:
    checkpoint = pathlib.Path(checkpoint).resolve()
    if not checkpoint.is_dir():
      raise errors.MissingFileError(f"--checkpoint {checkpoint}: no such folder")
  config = restore_config(config if config is not None else load_config(workdir, checkpoint))
  run_dir = workdir or checkpoint.parent.parent
  step, state = restore_run(run_dir, checkpoint and str(checkpoint),
                            abstract_train_state(config, sharding))
  path = checkpoint or pathlib.Path(workdir).resolve() / CHECKPOINTS / str(step)
  return RestoredRun(config, int(step), state, str(path))
