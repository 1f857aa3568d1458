"""Model mode of ``python -m dfl_jax.evaluate``: a trained DFL on an InterHand2.6M split.

    python -m dfl_jax.evaluate --config=configs/dfl.py --workdir=DIR [--checkpoint PATH]
                               [--split test] [--out OUT]

Restores the latest checkpoint of ``DIR/checkpoints`` (or the step folder given as PATH, e.g.
``DIR/checkpoints/12000``), runs the network on every example of the split once and scores it
with the official protocol (GT box and GT root depth; ``runner.evaluate``, docs/evaluation.md).
Writes ``metrics.json``, ``pck.png`` and ``predictions.json`` (the predictions-file format, so the
same numbers can be reproduced with ``--predictions``) into OUT (default
``DIR/eval/<split>_<step>``).
"""

import json
import os
import pathlib

import jax

from dfl_jax import parallel, workdir as workdir_lib
from dfl_jax.evaluation import report, runner
from dfl_jax.network.model import model_for
from input_pipeline import pipeline, synthetic_dataset


def evaluate_model(config, workdir, checkpoint=None, split=None, out_dir=None,
                   root_depths=None) -> dict:
  """Scores a run's checkpoint on a split (module doc); ``root_depths`` as ``runner.evaluate``."""
  parallel.maybe_initialize_distributed(config)
  synthetic_dataset.prepare_data(config, workdir)
  split = split or config.data.get("eval_split", "test")
  mesh = parallel.make_mesh()
  target = workdir_lib.abstract_train_state(config, parallel.replicated(mesh))
  step, state = workdir_lib.restore_run(workdir, checkpoint, target)
  model = model_for(config)

  info = pipeline.dataset_info(config)
  if split not in info.splits:
    raise ValueError(f"split {split!r} is not in {config.data.data_dir} "
                     f"(it has {sorted(info.splits.keys())})")
  parallel.check_batch_size(config.train.batch_size)
  n, b = jax.process_count(), config.train.batch_size // jax.process_count()
  num_batches = pipeline.eval_batch_count(info, split, n, b)
  ds = pipeline.eval_dataset(config.data, b, split=split, process_index=jax.process_index(),
                             process_count=n, num_batches=num_batches)
  predictions = {}
  result = runner.evaluate(runner.make_predict_fn(model, mesh), state, ds.as_numpy_iterator(),
                           mesh, predictions=predictions, root_depths=root_depths)
  result.update(step=int(step), split=split, data_dir=str(config.data.data_dir))
  out = pathlib.Path(out_dir) if out_dir else pathlib.Path(workdir) / "eval" / f"{split}_{step}"
  if jax.process_index() == 0:
    result["report"] = {k: os.fspath(v) for k, v in report.write_report(result, out).items()}
    with open(out / "predictions.json", "w", encoding="utf-8") as f:
      json.dump(predictions, f)
    result["report"]["predictions"] = os.fspath(out / "predictions.json")
  return result
