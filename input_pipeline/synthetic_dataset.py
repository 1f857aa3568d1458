"""The embedded default dataset: synthetic InterHand2.6M rendered and built inside a workdir.

``ensure(config, workdir)`` renders ``config.data.synthetic_sizes`` images per split with
``input_pipeline.synthetic_render`` into ``workdir/synthetic/raw`` (official layout) and builds
the TFDS dataset into ``workdir/synthetic/tfds`` with the same builder as the real data, unless
they are already there. In a multi-host run process 0 does the work while the others wait.
"""

import pathlib

import jax
from jax.experimental import multihost_utils

from dfl_jax import errors
from input_pipeline import dataset_build, synthetic_render, tfds_builder


def parse_sizes(text: str) -> dict:
  """'train:2000,val:200' -> {'train': 2000, 'val': 200}."""
  sizes = {}
  for part in str(text).split(","):
    name, _, count = part.partition(":")
    if not name or not count.strip().isdigit():
      raise errors.ConfigError(f"config.data.synthetic_sizes must look like 'train:2000,val:200', "
                       f"got {text!r}")
    sizes[name.strip()] = int(count)
  return sizes


def ensure(config, workdir) -> pathlib.Path:
  """Returns the TFDS data_dir of the synthetic set, rendering and building it if needed."""
  root = pathlib.Path(workdir) / "synthetic"
  raw, data_dir = root / "raw", root / "tfds"
  sizes = parse_sizes(config.data.get("synthetic_sizes", "train:2000,val:200,test:200"))
  annotation = config.data.get("annotation", "H+M")
  builder = tfds_builder.InterHand26M(config=tfds_builder.ANNOTATIONS[annotation],
                                      data_dir=str(data_dir))
  if jax.process_index() == 0 and not builder.is_prepared():
    done = raw / "RENDERED"
    if not done.exists():
      synthetic_render.generate_splits(
          raw, sizes, seed=config.data.get("synthetic_seed", 0),
          style=config.data.get("synthetic_style", "studio"),
          gesture_fraction=config.data.get("synthetic_gesture_fraction", 0.5))
      done.write_text(",".join(f"{k}:{v}" for k, v in sizes.items()))
    dataset_build.build(raw, data_dir, splits=tuple(sizes), annotation=annotation)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("synthetic dataset ready")
  return data_dir


def prepare_data(config, workdir):
  """Checks ``config.data.source`` and points ``config.data.data_dir`` at a built dataset,
  rendering and building the synthetic one (``ensure``) when the source is synthetic."""
  if config.data.source == "synthetic" and not config.data.data_dir:
    with config.unlocked():
      config.data.data_dir = str(ensure(config, pathlib.Path(workdir)))
  elif config.data.source not in ("interhand", "synthetic"):
    raise errors.ConfigError(f"config.data.source must be 'interhand' or 'synthetic', got "
                     f"{config.data.source!r}")
  if not config.data.data_dir:
    raise errors.ConfigError("config.data.data_dir is empty: build InterHand2.6M with "
                     "`python -m input_pipeline.build --source ROOT --data_dir DIR` and pass "
                     "--config.data.data_dir=DIR, or use --config.data.source=synthetic")
