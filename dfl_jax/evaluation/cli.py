"""The evaluate command: a thin layer over the scoring library.

Predictions-file mode (``predictions.py``; nothing but the annotations is needed)::

  python -m dfl_jax.evaluate --predictions PRED.json --annotations ANN_DIR [--split test] \
      [--out DIR]

Model mode (``model_mode.py``): a trained run on a split of its dataset::

  python -m dfl_jax.evaluate --config=configs/dfl.py --workdir=DIR [--checkpoint PATH] \
      [--split test] [--out OUT]

Both print a summary (``report.format_summary``) and write ``metrics.json`` and ``pck.png``; model
mode also writes ``predictions.json``, which predictions-file mode scores to the same numbers.

Protocols (``protocols.py``, docs/evaluation.md), in either mode:

  --protocol=interhand   the official one (default); --filter=table4 keeps the paper's Table 4
                         filtered interacting set; --root_depth=FILE uses RootNet-style root
                         depths instead of the GT's
  --protocol=intaghand   IntagHand's (one ``mpjpe``); --images=DIR adds its brightness filter,
                         --gt_joints=FILE scores against MANO-fitted joints you give
  --protocol=interwild   InterWild's, on the frames of --id_list=aid_human_annot_test.txt
  --protocol=hic         the paper's Table 5 on HIC (``hic.py``): --predictions keyed by HIC
                         annotation ids, --hic=HIC.json, --mano_regressor=J_regressor.npy

Pose correction (``dfl_jax/pose_correction.py``), in either mode: ``--correct_pose`` scores the
joints after registering a hand template to them (bone lengths, joint-angle intervals);
``--template=FILE`` replaces the default template (``python -m dfl_jax.correct_pose --help``).

Model mode with any protocol but plain ``interhand``, or with ``--correct_pose``, also needs
``--annotations`` (the official JSON files of the split): it scores its ``predictions.json``
against them.

Shapes mode (Im2Hands, ``dfl_jax/evaluation/shapes.py``): a workdir of ``python -m
dfl_jax.shapes`` rescored, mean IoU and Chamfer L1 after mid-joint alignment::

  python -m dfl_jax.evaluate --shapes=SHAPES_WORKDIR [--shape_points 100000]
      [--shape_surface 30000] [--mesh_resolution 64] [--shape_frames 0] [--out OUT]
"""

import pathlib

from absl import app, flags
from ml_collections import config_flags

from dfl_jax import errors
from dfl_jax.evaluation import hic, predictions, protocols, report


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
  flags.DEFINE_enum("protocol", "interhand", list(protocols.PROTOCOLS),
                    "Evaluation protocol (docs/evaluation.md).")
  flags.DEFINE_enum("filter", "none", list(protocols.FILTERS),
                    "interhand only: 'table4' = the paper's Table 4 filtered interacting set.")
  flags.DEFINE_string("images", None, "Folder the annotations' file_name is relative to "
                      "(ROOT/images/SPLIT): enables the brightness filter of intaghand/table4.")
  flags.DEFINE_string("id_list", None, "interwild: annotation ids to score, one per line.")
  flags.DEFINE_string("gt_joints", None, "intaghand: JSON of annotation id -> 42 x 3 camera mm "
                      "GT joints (e.g. from the MANO fits) replacing joint_3d.")
  flags.DEFINE_string("hic", None, "hic: InterWild's HIC.json (meshes beside it).")
  flags.DEFINE_string("mano_regressor", None, "hic: MANO's J_regressor as a [16, 778] .npy.")
  flags.DEFINE_string("root_depth", None, "interhand: RootNet-style root depths (JSON list of "
                      "{annot_id, abs_depth: [right, left]} or id -> [right, left], mm).")
  flags.DEFINE_bool("correct_pose", False, "Score the pose-corrected joints (template bone "
                    "lengths, joint angles within their intervals; dfl_jax/pose_correction.py).")
  flags.DEFINE_string("template", None, "--correct_pose: a template JSON (default: the built-in "
                      "one; write one with python -m dfl_jax.correct_pose --fit_template).")
  flags.DEFINE_string("shapes", None, "Shapes mode: a workdir of python -m dfl_jax.shapes.")
  flags.DEFINE_integer("shape_points", None, "--shapes: IoU query points per hand "
                       "(default: the workdir's config.shapes.eval_points).")
  flags.DEFINE_integer("shape_surface", None, "--shapes: Chamfer surface samples per mesh.")
  flags.DEFINE_integer("mesh_resolution", None, "--shapes: marching-cubes grid points a side.")
  flags.DEFINE_integer("shape_frames", None, "--shapes: validation frames scored (0: all).")


def _protocol_args(FLAGS):  # pylint: disable=invalid-name
  return dict(protocol=FLAGS.protocol, frame_filter=FLAGS.filter, id_list=FLAGS.id_list,
              images_dir=FLAGS.images, gt_joints=FLAGS.gt_joints,
              correct_pose=FLAGS.correct_pose, template=FLAGS.template)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if FLAGS.template and not FLAGS.correct_pose:
    raise app.UsageError("--template is used by --correct_pose only")
  if FLAGS.shapes:
    _shapes_mode(FLAGS)
    return
  if FLAGS.protocol == "hic":
    if FLAGS.correct_pose:
      raise app.UsageError("--correct_pose is not available with --protocol=hic")
    if not (FLAGS.predictions and FLAGS.hic and FLAGS.mano_regressor):
      raise app.UsageError("--protocol=hic needs --predictions (keyed by HIC annotation ids), "
                           "--hic=HIC.json and --mano_regressor=FILE.npy")
    result = hic.evaluate_hic_predictions(FLAGS.predictions, FLAGS.hic, FLAGS.mano_regressor,
                                          FLAGS.out)
  elif FLAGS.config is not None:
    if not FLAGS.workdir:
      raise app.UsageError("--config needs --workdir")
    # Model mode only: it brings the network, TensorFlow and the data pipeline, which scoring a
    # predictions file does not need.
    from dfl_jax.evaluation import model_mode  # pylint: disable=import-outside-toplevel
    official = (FLAGS.protocol == "interhand" and FLAGS.filter == "none"
                and not FLAGS.correct_pose)
    if not official and not FLAGS.annotations:
      raise app.UsageError(f"--protocol={FLAGS.protocol} --filter={FLAGS.filter}"
                           f"{' --correct_pose' if FLAGS.correct_pose else ''} in model mode "
                           "needs --annotations (the split's official JSON files)")
    root_depths = protocols.read_root_depths(FLAGS.root_depth) if FLAGS.root_depth else None
    result = model_mode.evaluate_model(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint,
                                       FLAGS.split, FLAGS.out, root_depths=root_depths)
    if not official and result.get("report"):  # process 0 wrote predictions.json
      result = predictions.evaluate_predictions_file(
          result["report"]["predictions"], FLAGS.annotations, FLAGS.split,
          pathlib.Path(result["report"]["metrics"]).parent
          / (FLAGS.protocol + ("_corrected" if FLAGS.correct_pose else "")),
          root_depth=FLAGS.root_depth, **_protocol_args(FLAGS))
  else:
    if not FLAGS.predictions or not FLAGS.annotations:
      raise app.UsageError("give --predictions and --annotations (or --config and --workdir)")
    result = predictions.evaluate_predictions_file(FLAGS.predictions, FLAGS.annotations,
                                                   FLAGS.split, FLAGS.out,
                                                   root_depth=FLAGS.root_depth,
                                                   **_protocol_args(FLAGS))
  print(report.format_summary(result))
  if result.get("report"):
    print(f"report: {result['report']}")


def _shapes_mode(FLAGS):  # pylint: disable=invalid-name
  # Shapes mode only: it brings the Im2Hands networks and the synthetic world.
  from dfl_jax.evaluation import shapes  # pylint: disable=import-outside-toplevel
  from dfl_jax.training import shapes as pipeline  # pylint: disable=import-outside-toplevel
  config = pipeline.load_config(FLAGS.shapes)
  for flag, key in (("shape_points", "eval_points"), ("shape_surface", "eval_surface"),
                    ("mesh_resolution", "mesh_resolution"), ("shape_frames", "eval_frames")):
    value = getattr(FLAGS, flag)
    if value is not None:
      if value < (0 if flag == "shape_frames" else 2):
        raise app.UsageError(f"--{flag}={value} is too small")
      config.shapes[key] = value
  metrics = pipeline.evaluate_workdir(config, FLAGS.shapes, FLAGS.out)
  print(shapes.format_table(metrics))
  print(f"report: {pathlib.Path(FLAGS.out or FLAGS.shapes) / 'metrics.json'}")


def command():
  """Console script ``dfl-evaluate`` and ``python -m dfl_jax.evaluate``."""
  define_flags()
  errors.run(main)
