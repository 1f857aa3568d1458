"""``python -m dfl_jax.crossdomain``: the cross-domain dual-modality system end to end.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/training/crossdomain.py.
"""

from dfl_jax.training import crossdomain

__doc__ = crossdomain.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  crossdomain.command()
