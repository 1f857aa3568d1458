"""Encoder weights (backbone, FPN, part segmentation) saved from one run and loaded into another.

The paper (Sec. 3.2) starts from an ImageNet-pretrained ResNet-50 (``config.train.backbone_init``,
``backbone_file.py``). This module is the general form: a run's encoder modules in one ``.npz``
file, used as the starting point of another run (``config.train.encoder_init``), for example an
encoder pretrained on part segmentation alone, then trained with every loss. Writing one from a
trained run is ``encoder_export.py``:

    python -m dfl_jax.pretrained_encoder --workdir=RUN [--checkpoint=RUN/checkpoints/N] \
        --out=encoder.npz [--modules=backbone,fpn,segmentation]

The file holds ``{collection}/{module}/{path}`` arrays (``params`` and ``batch_stats``) and a
``__meta__`` JSON string (modules, source config's model section, step); it is read with
``allow_pickle=False``. ``merge`` requires every exported leaf to exist in the new model with the
same shape, and every leaf of the new model's exported modules to be in the file, so a file of
another model size fails loudly with the file and the keys named.

The shipped ``dfl_jax/assets/tiny_encoder_synthetic.npz`` (configs/tiny.py) was made this way:
``configs/tiny_encoder_pretrain.py`` trains the tiny encoder on part segmentation of a synthetic
set rendered with another seed than the quickstart's, then ``encoder_export.py`` writes it.
"""

import json
import logging
import os
import pathlib
from typing import Mapping, Sequence

import flax
import flax.traverse_util
import jax
import numpy as np

from dfl_jax import errors

DEFAULT_MODULES = ("backbone", "fpn", "segmentation")
COLLECTIONS = ("params", "batch_stats")


def extract(variables: Mapping, modules: Sequence[str] = DEFAULT_MODULES) -> dict:
  """{'collection/module/path': np.ndarray} of ``modules`` in ``variables``."""
  have = _modules(variables)
  missing = [m for m in modules if m not in have]
  if missing:
    raise errors.InputError(f"the model has no module(s) {missing} (it has {sorted(have)})")
  return {k: np.asarray(jax.device_get(v)) for k, v in _select(_flat(variables), modules).items()}


def _select(flat: Mapping, modules) -> dict:
  """The entries of ``flat`` in ``modules``, in the collections an encoder file holds."""
  return {k: v for k, v in flat.items()
          if _module(k) in modules and k.split("/")[0] in COLLECTIONS}


def _flat(variables: Mapping) -> dict:
  """{'collection/module/path': leaf} of every leaf, unconverted (leaves may be tracers)."""
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(variables), sep="/")


def _module(key: str) -> str:
  return key.split("/")[1]


def _modules(variables: Mapping) -> set:
  return set(flax.core.unfreeze(variables).get("params", {}))


def save(path, flat: Mapping[str, np.ndarray], meta: Mapping) -> str:
  """Writes ``flat`` and ``meta`` to ``path`` (.npz, compressed); returns the absolute path."""
  path = pathlib.Path(path).resolve()
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = dict(flat)
  arrays["__meta__"] = np.asarray(json.dumps(dict(meta), sort_keys=True))
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)
  return str(path)


def load(path) -> tuple[dict, dict]:
  """(flat arrays, meta) from a file written by ``save``; errors name the file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.MissingFileError(f"config.train.encoder_init: {path} does not exist (write one with "
                            f"`python -m dfl_jax.pretrained_encoder --workdir RUN --out FILE`)")
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: data[k] for k in data.files}
  except Exception as e:  # zipfile, ValueError, OSError: all mean "not our file"
    raise errors.InputError(f"config.train.encoder_init: {path} is not a readable .npz of encoder "
                     f"weights ({type(e).__name__}: {e})") from e
  meta = json.loads(str(flat.pop("__meta__"))) if "__meta__" in flat else {}
  foreign = [k for k in flat if len(k.split("/")) < 3 or k.split("/")[0] not in COLLECTIONS]
  if foreign or not flat:
    raise errors.InputError(f"config.train.encoder_init: {path} holds no encoder weights of the form "
                     f"'params|batch_stats/MODULE/...' (found {_first(foreign or ['nothing'])}); "
                     f"write one with `python -m dfl_jax.pretrained_encoder`")
  return flat, meta


def merge(variables: Mapping, flat: Mapping[str, np.ndarray], source: str = "encoder file") -> dict:
  """Copy of ``variables`` whose exported modules are replaced by ``flat`` (dtypes kept).

  A module of the file that the model does not have (the part segmentation of an ablation
  without it, supplement Table 1) is skipped with a warning; every module both have must match
  leaf for leaf.
  """
  have = _modules(variables)
  skipped = sorted({_module(k) for k in flat} - have)
  if skipped:
    logging.warning("%s: module(s) %s not in this model, not loaded", source, skipped)
    flat = {k: v for k, v in flat.items() if _module(k) in have}
  if not flat:
    raise errors.InputError(f"{source}: none of its modules {skipped} is in this model")
  modules = sorted({_module(k) for k in flat})
  merged = _flat(variables)  # shapes only are read: works under jax.eval_shape too
  ours = _select(merged, modules)
  problems = []
  if set(flat) - set(ours):
    problems.append(f"not in the model: {_first(set(flat) - set(ours))}")
  if set(ours) - set(flat):
    problems.append(f"missing from the file: {_first(set(ours) - set(flat))}")
  for key in sorted(set(ours) & set(flat)):
    if tuple(np.shape(ours[key])) != tuple(flat[key].shape):
      problems.append(f"{key} has shape {flat[key].shape}, the model expects "
                    f"{tuple(np.shape(ours[key]))}")
  if problems:
    raise errors.InputError(f"{source} does not fit this model's {', '.join(modules)} (another model "
                     f"configuration?): " + "; ".join(problems[:5]))
  merged.update({k: np.asarray(v, dtype=ours[k].dtype) for k, v in flat.items()})
  return flax.traverse_util.unflatten_dict(merged, sep="/")


def _first(keys, limit=5):
  keys = sorted(keys)
  return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")
