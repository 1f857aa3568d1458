"""A trained run's encoder (backbone, FPN, part segmentation) written to an encoder file.

    python -m dfl_jax.pretrained_encoder --workdir=RUN [--checkpoint=RUN/checkpoints/N] \
        --out=encoder.npz [--modules=backbone,fpn,segmentation]

The file (``encoder_file.py``) starts another run through ``config.train.encoder_init``.
"""

import argparse
import pathlib
import sys
from typing import Sequence

from dfl_jax import errors, workdir as workdir_lib
from dfl_jax.weights import encoder_file


def export_run(workdir, out, checkpoint=None,
               modules: Sequence[str] = encoder_file.DEFAULT_MODULES) -> str:
  """Exports ``modules`` of a trained run (latest checkpoint, or ``checkpoint``) to ``out``."""
  config = workdir_lib.load_config(workdir, None)
  step, state = workdir_lib.restore_run(workdir, checkpoint,
                                        workdir_lib.abstract_train_state(config))
  flat = encoder_file.extract({"params": state.params, "batch_stats": state.batch_stats},
                              modules)
  meta = {"modules": list(modules), "step": int(step), "source": str(pathlib.Path(workdir)),
          "model": config.model.to_dict()}
  return encoder_file.save(out, flat, meta)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m dfl_jax.pretrained_encoder",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True,
                      help="training workdir (config.json, checkpoints)")
  parser.add_argument("--checkpoint", default=None, help="a step folder; default: the latest")
  parser.add_argument("--out", required=True, help="output .npz")
  parser.add_argument("--modules", default=",".join(encoder_file.DEFAULT_MODULES),
                      help="top-level modules to export (comma separated)")
  errors.add_debug_argument(parser)
  args = parser.parse_args(argv)
  modules = tuple(m for m in args.modules.split(",") if m)
  try:
    path = export_run(args.workdir, args.out, args.checkpoint, modules)
  except ValueError as e:  # an unknown module name, a file that cannot be written
    raise errors.ConfigError(f"{errors.one_line(e)}") from e
  print(path)
  return 0


def command():
  """Console script ``dfl-pretrained-encoder`` and ``python -m dfl_jax.pretrained_encoder``."""
  sys.exit(errors.call(main))
