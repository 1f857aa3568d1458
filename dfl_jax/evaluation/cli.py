"""The evaluate command: a thin layer over the scoring library.

Predictions-file mode (``predictions.py``; nothing but the annotations is needed)::

  python -m dfl_jax.evaluate --predictions PRED.json --annotations ANN_DIR [--split test] \
      [--out DIR]

Model mode (``model_mode.py``): a trained run on a split of its dataset::

  python -m dfl_jax.evaluate --config=configs/dfl.py --workdir=DIR [--checkpoint PATH] \
      [--split test] [--out OUT]

Both print a summary (``report.format_summary``) and write ``metrics.json`` and ``pck.png``; model
mode also writes ``predictions.json``, which predictions-file mode scores to the same numbers.
"""

from absl import app, flags
from ml_collections import config_flags

from dfl_jax.evaluation import predictions, report


def define_flags():
  flags.DEFINE_string("predictions", None,
                      "Predictions JSON (format: dfl_jax/evaluation/predictions.py).")
  flags.DEFINE_string("annotations", None,
                      "Folder with InterHand2.6M_{split}_{data,camera,joint_3d}.json.")
  flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Split of the annotations.")
  flags.DEFINE_string("out", None, "Report folder (default: beside --predictions; model mode: "
                      "WORKDIR/eval/SPLIT_STEP).")
  config_flags.DEFINE_config_file("config", None, "Model mode: configuration file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Model mode: training workdir.")
  flags.DEFINE_string("checkpoint", None, "Model mode: checkpoint (default: latest in workdir).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if FLAGS.config is not None:
    if not FLAGS.workdir:
      raise app.UsageError("--config needs --workdir")
    # Model mode only: it brings the network, TensorFlow and the data pipeline, which scoring a
    # predictions file does not need.
    from dfl_jax.evaluation import model_mode  # pylint: disable=import-outside-toplevel
    result = model_mode.evaluate_model(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint,
                                       FLAGS.split, FLAGS.out)
  else:
    if not FLAGS.predictions or not FLAGS.annotations:
      raise app.UsageError("give --predictions and --annotations (or --config and --workdir)")
    result = predictions.evaluate_predictions_file(FLAGS.predictions, FLAGS.annotations,
                                                   FLAGS.split, FLAGS.out)
  print(report.format_summary(result))
  if result.get("report"):
    print(f"report: {result['report']}")


def command():
  """Console script ``dfl-evaluate`` and ``python -m dfl_jax.evaluate``."""
  define_flags()
  app.run(main)
