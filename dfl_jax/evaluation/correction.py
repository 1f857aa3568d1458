"""The correct_pose command: pose correction of a predictions file (``dfl_jax.pose_correction``).

    python -m dfl_jax.correct_pose --predictions IN.json --out OUT.json [--template FILE]
    python -m dfl_jax.correct_pose --fit_template ANN_DIR [--split train] --out TEMPLATE.json
    python -m dfl_jax.correct_pose --write_default_template --out TEMPLATE.json

The first registers the template to both hands of every frame of IN.json (the evaluate
predictions format, ``predictions.py``) and writes OUT.json in the same format: the same ids and
keys, ``joints_cam_mm`` corrected (each bone its template length, every joint angle within its
interval, the wrists unchanged). The second fits a template on the annotated hands of an
InterHand2.6M annotation folder (mean bone lengths, the 0.5 and 99.5 percentiles of each angle:
Spurr et al.'s limits from data); the third writes the built-in default, to read or edit.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

from dfl_jax import conventions, errors, pose_correction
from dfl_jax.evaluation import predictions as predictions_lib


def correct_file(in_path, out_path, template=None) -> int:
  """Writes the corrected ``in_path`` to ``out_path``; returns the number of frames."""
  in_path = pathlib.Path(in_path)
  parsed = predictions_lib.load_predictions(in_path)
  with open(in_path, encoding="utf-8") as f:
    raw = json.load(f)
  corrected = predictions_lib.correct_poses(parsed, template)
  out = {str(k): dict(v, joints_cam_mm=corrected[str(k)]["joints_cam_mm"].tolist())
         for k, v in raw.items()}
  out_path = pathlib.Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_path.with_name(out_path.name + ".tmp")
  tmp.write_text(json.dumps(out))
  os.replace(tmp, out_path)
  return len(out)


def fit_on_annotations(annotations_dir, split="train"):
  """A template fitted on both hands (the left ones mirrored) of a split's annotations."""
  records, _ = predictions_lib.load_annotations(annotations_dir, split)
  hands = []
  for record in records:
    joints = np.asarray(record["joint_cam"], np.float64)
    valid = np.asarray(record["joint_valid"]) > 0
    for left, part in ((False, conventions.RIGHT), (True, conventions.LEFT)):
      if valid[part].all():
        hands.append(pose_correction.mirror(joints[part], left))
  if not hands:
    raise errors.InputError(f"{annotations_dir} ({split}): no hand with all 21 joints valid to "
                            "fit a template on")
  template = pose_correction.fit_template(np.stack(hands))
  template["source"] = f"fitted on {len(hands)} hands of {annotations_dir} ({split})"
  return template


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m dfl_jax.correct_pose",
                                   description=__doc__.split("\n\n")[0])
  what = parser.add_mutually_exclusive_group(required=True)
  what.add_argument("--predictions", help="predictions JSON to correct (evaluate's format)")
  what.add_argument("--fit_template", metavar="ANN_DIR",
                    help="fit a template on this InterHand2.6M annotation folder")
  what.add_argument("--write_default_template", action="store_true",
                    help="write the built-in template")
  parser.add_argument("--out", required=True, help="output JSON")
  parser.add_argument("--template", default=None, help="template JSON (default: built in)")
  parser.add_argument("--split", default="train", help="--fit_template: the annotations' split")
  errors.add_debug_argument(parser)
  args = parser.parse_args(argv)
  if args.predictions:
    template = pose_correction.load_template(args.template) if args.template else None
    n = correct_file(args.predictions, args.out, template)
    print(f"{n} frames corrected: {args.out}")
    return 0
  if args.template:
    raise errors.ConfigError("--template goes with --predictions only")
  template = (fit_on_annotations(args.fit_template, args.split) if args.fit_template
              else pose_correction.default_template())
  pose_correction.save_template(template, args.out)
  print(f"template ({template['source']}): {args.out}")
  return 0


def command():
  """Console script ``dfl-correct-pose`` and ``python -m dfl_jax.correct_pose``."""
  sys.exit(errors.call(main))
