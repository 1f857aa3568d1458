"""The training configuration checked before a run writes anything.

``check(config)`` (types, ranges, choices, the files a run reads) and ``check_devices(config)``
(the batch over this run's devices and processes) raise ``dfl_jax.errors.ConfigError`` naming the
key, its value and what would be valid. Unknown keys never get this far: the command line's
``--config.KEY=...`` overrides are checked as flags (``dfl_jax.errors``), with the closest valid
keys. ``check_data(config)`` runs once ``config.data.data_dir`` is set (the embedded synthetic
set is rendered inside the workdir, after the workdir lock): the folder must hold a dataset
built by ``python -m input_pipeline.build`` with the configured splits.
"""

import numbers
import os
import pathlib

from dfl_jax import errors, parallel
from dfl_jax.training.state import check_initialisation
from input_pipeline import tfds_builder

DTYPES = ("float32", "bfloat16", "float16")
BUILD_HINT = ("build it with `python -m input_pipeline.build --source ROOT --data_dir DIR` "
              "(ROOT: an InterHand2.6M download in its official layout), or train on the "
              "embedded synthetic set with --config.data.source=synthetic "
              "--config.data.data_dir=''")


def _get(config, key):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _integer(config, key, minimum=None):
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise errors.ConfigError(f"config.{key}={value!r}: must be an integer")
  if minimum is not None and value < minimum:
    raise errors.ConfigError(f"config.{key}={value}: must be at least {minimum}")
  return int(value)


def _number(config, key, minimum=None, positive=False):
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise errors.ConfigError(f"config.{key}={value!r}: must be a number")
  if positive and not value > 0:
    raise errors.ConfigError(f"config.{key}={value}: must be greater than 0")
  if minimum is not None and value < minimum:
    raise errors.ConfigError(f"config.{key}={value}: must be at least {minimum}")
  return float(value)


def _choice(config, key, choices):
  value = _get(config, key)
  if value not in choices:
    raise errors.ConfigError(f"config.{key}={value!r}: must be one of "
                             f"{', '.join(repr(c) for c in choices)}")
  return value


def _existing(config, key, kind="file or folder"):
  path = _get(config, key)
  if path and not os.path.exists(path):
    raise errors.MissingFileError(f"config.{key}={path}: no such {kind}")


def _image_size(config, key):
  size = _integer(config, key, minimum=32)
  if size % 32:
    raise errors.ConfigError(
        f"config.{key}={size}: must be a multiple of 32 (the ResNet's coarsest "
        f"scale is 1/32 of the image), e.g. {max(32, size // 32 * 32)} or {size // 32 * 32 + 32}")
  return size


def check(config, prefix=""):
  """Types, ranges and choices of the keys a training run reads; the weight files exist.

  ``prefix``: where the DFL configuration sits in ``config`` ('' for a training run's own;
  'dfl.' in an Im2Hands configuration), so that a message names the key as the user writes it.
  """
  def k(key):
    return prefix + key

  _integer(config, k("train.batch_size"), minimum=1)
  _image_size(config, k("data.image_size"))
  _choice(config, k("model.dtype"), DTYPES)
  _choice(config, k("data.source"), ("interhand", "synthetic"))
  _choice(config, k("data.annotation"), tuple(tfds_builder.ANNOTATIONS))
  epochs = _integer(config, k("train.num_epochs"), minimum=0)
  steps = _integer(config, k("train.num_steps"), minimum=0)
  if not steps and not epochs:
    raise errors.ConfigError(f"config.{k('train.num_epochs')} and config.{k('train.num_steps')} "
                             "are both 0: nothing to train")
  _number(config, k("train.learning_rate"), positive=True)
  _number(config, k("train.lr_decay_factor"), positive=True)
  _number(config, k("train.grad_clip_norm"), minimum=0.0)
  _integer(config, k("train.log_every_steps"), minimum=1)
  for key in ("eval_every_steps", "checkpoint_every_steps"):
    _integer(config, k(f"train.{key}"), minimum=0)
  _integer(config, k("train.keep_checkpoints"), minimum=1)
  _integer(config, k("data.shuffle_buffer"), minimum=1)
  _existing(config, k("train.backbone_init"),
            "folder (written by python -m dfl_jax.convert_resnet)")
  _existing(config, k("train.encoder_init"),
            "file (written by python -m dfl_jax.pretrained_encoder)")


def check_shapes(config):
  """The Im2Hands pipeline's own keys (configs/shapes.py): ``shapes``, and the training of K, I
  and R (``k``, ``i``, ``r``). The DFL it trains (``config.dfl``) is ``check``ed by the caller."""
  _integer(config, "seed")
  _integer(config, "log_every_steps", minimum=1)
  _image_size(config, "shapes.image_size")
  for key in ("num_uniform", "num_near", "num_points", "eval_points", "eval_surface"):
    _integer(config, f"shapes.{key}", minimum=1)
  grid = _integer(config, "shapes.grid_resolution", minimum=2)
  _integer(config, "shapes.mesh_resolution", minimum=2)
  candidates = _integer(config, "shapes.candidates", minimum=1)
  points = config.shapes.num_points
  if not points <= candidates <= grid ** 3:
    raise errors.ConfigError(
        f"config.shapes.candidates={candidates}: must lie between config.shapes.num_points "
        f"({points}: farthest point sampling picks them among the candidates) and the "
        f"{grid}^3 = {grid ** 3} points of I's grid (config.shapes.grid_resolution)")
  for key in ("eval_frames", "meshes_written"):
    _integer(config, f"shapes.{key}", minimum=0)
  _choice(config, "shapes.mesh_format", ("ply", "obj"))
  _existing(config, "shapes.dfl_workdir", "folder (a DFL run on the synthetic world)")
  for net in ("k", "i", "r"):
    for key in ("batch_size", "epochs", "decay_every"):
      _integer(config, f"{net}.{key}", minimum=1)
    _number(config, f"{net}.learning_rate", positive=True)
    _number(config, f"{net}.decay_factor", positive=True)
    if "weight_decay" in config[net]:
      _number(config, f"{net}.weight_decay", minimum=0.0)


def check_data_dir(config):
  """``config.data.data_dir`` exists, or is empty for the embedded synthetic set."""
  data_dir = config.data.data_dir
  if data_dir and not os.path.isdir(data_dir):
    raise errors.MissingFileError(f"config.data.data_dir={data_dir}: no such folder; "
                                  + BUILD_HINT.replace("DIR", data_dir))
  if not data_dir and config.data.source != "synthetic":
    raise errors.ConfigError("config.data.data_dir is empty: " + BUILD_HINT)


def check_resume_or_initialisation(config, resuming: bool):
  """``state.check_initialisation``, unless the run resumes (its checkpoints hold every weight)."""
  if not resuming:
    check_initialisation(config)


def check_devices(config):
  """The global batch divides by the devices (and so by the processes) of this run."""
  parallel.check_batch_size(config.train.batch_size)


def check_data(config):
  """``config.data.data_dir`` holds the dataset of ``config.data.annotation`` with its splits."""
  data_dir = config.data.data_dir
  builder = tfds_builder.InterHand26M(config=tfds_builder.ANNOTATIONS[config.data.annotation],
                                      data_dir=data_dir)
  if not builder.is_prepared():
    found = sorted(str(p.relative_to(data_dir)) for p in _dataset_versions(data_dir))
    name = tfds_builder.ANNOTATIONS[config.data.annotation]
    raise errors.MissingFileError(
        f"config.data.data_dir={data_dir} holds no '{name}' "
        f"InterHand2.6M dataset (config.data.annotation={config.data.annotation!r}; found: "
        f"{', '.join(found) or 'nothing'}); " + BUILD_HINT.replace("DIR", data_dir))
  splits = builder.info.splits
  for key in ("train_split", "eval_split"):
    name = config.data[key]
    if name not in splits or not splits[name].num_examples:
      raise errors.ConfigError(
          f"config.data.{key}={name!r}: the dataset in {data_dir} has no such split (it has "
          f"{', '.join(sorted(splits)) or 'none'})")


def _dataset_versions(data_dir):
  root = pathlib.Path(data_dir)
  return [p.parent for p in root.glob("*/*/*/dataset_info.json")]
