"""Trains and evaluates DFL.

    python main.py --config=configs/dfl.py --workdir=DIR [--config.train.batch_size=8]
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and generated data.")
flags.mark_flags_as_required(["config", "workdir"])


class _DropLibraryInfo(std_logging.Filter):
  """Keeps orbax's and TFDS's warnings but not their per-save INFO chatter."""

  def filter(self, record):
    noisy = ("orbax" in record.pathname or "tensorflow_datasets" in record.pathname)
    return record.levelno >= std_logging.WARNING or not noisy


def quiet_libraries():
  logging.get_absl_handler().addFilter(_DropLibraryInfo())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerators belong to JAX.
  quiet_libraries()
  try:
    from dfl_jax import train  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    if getattr(e, "name", "") != "dfl_jax.train":
      raise
    raise SystemExit("main.py: the training loop (dfl_jax/train.py) has not landed yet; "
                     "see the README's Status table.") from None
  logging.info("workdir: %s", FLAGS.workdir)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
