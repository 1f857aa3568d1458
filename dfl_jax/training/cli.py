"""The training command: ``python main.py`` and the ``dfl-train`` console script.

    python main.py --config=configs/dfl.py --workdir=DIR [--config.train.batch_size=8]

Exit codes (``dfl_jax.errors``): 0 done (or stopped on a termination signal with a checkpoint),
2 a mistake in a flag, the configuration or the data, 3 a fault of the machine (the workdir is
held by another run, the disk is full, a folder cannot be written), 1 anything unforeseen
(with its traceback).
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags
import tensorflow as tf

from dfl_jax import errors
from dfl_jax.training import loop

FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Configuration file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and generated data.")
  flags.mark_flags_as_required(["config", "workdir"])


class _DropLibraryInfo(std_logging.Filter):
  """Keeps orbax's and TFDS's warnings but not their per-save INFO chatter."""

  def filter(self, record):
    noisy = ("orbax" in record.pathname or "tensorflow_datasets" in record.pathname)
    return record.levelno >= std_logging.WARNING or not noisy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerators belong to JAX.
  logging.get_absl_handler().addFilter(_DropLibraryInfo())
  logging.info("workdir: %s", FLAGS.workdir)
  loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def command():
  define_flags()
  errors.run(main)
