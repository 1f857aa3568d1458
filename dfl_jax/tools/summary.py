"""Per-module parameter table of a configuration, without computing anything.

    python -m dfl_jax.summary --config=configs/dfl.py [--depth 2]

The count is the 'params' collection: every learnable tensor, including the frozen ResNet
BatchNorm affine parameters (torch counts those as parameters too) and the extension heads
where the configuration has them (configs/dfl_wild.py); it excludes BatchNorm running statistics
('batch_stats'), which torch keeps as buffers. The rows add up to the total.
"""

import collections

from absl import app, flags
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np

from dfl_jax import errors
from dfl_jax.network.model import create_model


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Configuration file.", lock_config=True)
  flags.DEFINE_integer("depth", 2, "Depth of the module paths in the table.")


def param_shapes(config):
  """The abstract variables of ``config.model`` at the configured input size (eval_shape)."""
  model = create_model(config.model)
  size = config.data.image_size
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), images)


def count_by_module(params, depth: int):
  """{module path truncated to ``depth``: parameter count}, in first-seen order."""
  counts = collections.OrderedDict()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [p.key for p in path]
    name = "/".join(keys[:min(depth, len(keys) - 1)]) or keys[0]
    counts[name] = counts.get(name, 0) + int(np.prod(leaf.shape))
  return counts


def format_table(counts) -> str:
  total = sum(counts.values())
  width = max([len(k) for k in counts] + [6])
  lines = [f"{'module':<{width}}  {'params':>12}  {'share':>6}", "-" * (width + 22)]
  lines += [f"{k:<{width}}  {v:>12,}  {100 * v / total:>5.1f}%" for k, v in counts.items()]
  lines += ["-" * (width + 22), f"params: {total}"]
  return "\n".join(lines)


def main(argv):
  del argv
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/dfl.py")
  variables = param_shapes(config)
  print(format_table(count_by_module(variables["params"], flags.FLAGS.depth)))


def command():
  """Console script ``dfl-summary`` and ``python -m dfl_jax.summary``."""
  define_flags()
  errors.run(main)
