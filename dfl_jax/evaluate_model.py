"""Model mode of ``python -m dfl_jax.evaluate``: a trained DFL on an InterHand2.6M split.

    python -m dfl_jax.evaluate --config=configs/dfl.py --workdir=DIR [--checkpoint PATH]
                               [--split test] [--out OUT]

Restores the latest checkpoint of ``DIR/checkpoints`` (or the step folder given as PATH, e.g.
``DIR/checkpoints/12000``), runs the network on every example of the split once and scores it
with the official protocol (GT box and GT root depth; ``dfl_jax.metrics``). Writes
``metrics.json``, ``pck.png`` and ``predictions.json`` (the predictions-file format, so the same
numbers can be reproduced with ``--predictions``) into OUT (default ``DIR/eval/<split>_<step>``).
"""

import json
import os
import pathlib

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

from dfl_jax import checkpointing, evaluate, train


def restore_run(workdir, checkpoint, target):
  """(step, state): the step folder ``checkpoint``, or the latest checkpoint of ``workdir``."""
  if checkpoint:
    path = pathlib.Path(checkpoint)
    if not path.name.isdigit():
      raise ValueError(f"--checkpoint {path}: expected a step folder such as "
                       f"{pathlib.Path(workdir) / 'checkpoints' / '1000'}")
    ckpt = checkpointing.Checkpointer(path.parent)
    step, state, _ = ckpt.restore(int(path.name), target)
  else:
    ckpt = checkpointing.Checkpointer(pathlib.Path(workdir) / "checkpoints")
    restored = ckpt.restore_latest(target)
    if restored is None:
      raise FileNotFoundError(f"no checkpoint in {pathlib.Path(workdir) / 'checkpoints'}; "
                              f"train first or pass --checkpoint")
    step, state, _ = restored
  ckpt.close()
  return step, state


def evaluate_model(config, workdir, checkpoint=None, split=None, out_dir=None) -> dict:
  import input_pipeline  # pylint: disable=import-outside-toplevel
  from input_pipeline import pipeline  # pylint: disable=import-outside-toplevel
  train.maybe_initialize_distributed(config)
  train.prepare_data(config, workdir)
  split = split or config.data.get("eval_split", "test")
  mesh = train.make_mesh()
  tx = train.create_optimizer(config, steps_per_epoch=1)
  model, target = train.create_train_state(train.restore_config(config),
                                           jax.random.key(config.seed), tx)
  step, state = restore_run(workdir, checkpoint, target)
  state = jax.device_put(state, NamedSharding(mesh, P()))

  info = input_pipeline.dataset_info(config)
  if split not in info.splits:
    raise ValueError(f"split {split!r} is not in {config.data.data_dir} "
                     f"(it has {sorted(info.splits.keys())})")
  train.check_batch_size(config.train.batch_size)
  n, b = jax.process_count(), config.train.batch_size // jax.process_count()
  num_batches = pipeline.eval_batch_count(info, split, n, b)
  ds = pipeline.eval_dataset(config.data, b, split=split, process_index=jax.process_index(),
                             process_count=n, num_batches=num_batches)
  predictions = {}
  result = train.evaluate(train.make_predict_fn(model, mesh), state, ds.as_numpy_iterator(),
                          mesh, predictions=predictions)
  result.update(step=int(step), split=split, data_dir=str(config.data.data_dir))
  out = pathlib.Path(out_dir) if out_dir else pathlib.Path(workdir) / "eval" / f"{split}_{step}"
  if jax.process_index() == 0:
    result["report"] = {k: os.fspath(v) for k, v in evaluate.write_report(result, out).items()}
    with open(out / "predictions.json", "w", encoding="utf-8") as f:
      json.dump(predictions, f)
    result["report"]["predictions"] = os.fspath(out / "predictions.json")
  return result
