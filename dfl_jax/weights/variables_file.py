"""A whole Flax variable tree as one ``.npz`` (the encoder file's format, every module kept).

Used by the systems that train several networks in one command (the cross-domain system, the
Im2Hands pipeline) for the networks they hand from one stage to the next. ``save`` flattens the
tree to ``collection/module/.../leaf`` keys with a JSON ``meta``; ``load`` gives the tree and
the meta back. Damaged or foreign files are reported naming the file (``encoder_file.load``).
"""

import flax
import flax.traverse_util
import jax
import numpy as np

from dfl_jax.weights import encoder_file


def save(path, variables, meta):
  flat = {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(
      jax.device_get(flax.core.unfreeze(variables)), sep="/").items()}
  return encoder_file.save(path, flat, meta)


def load(path):
  """(variables, meta) of a file ``save`` wrote."""
  flat, meta = encoder_file.load(path)
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/"), meta
