"""``python -m dfl_jax.aot``: compile for a GPU or TPU that is not attached.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/tools/aot.py.
"""

from dfl_jax.tools import aot

__doc__ = aot.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  aot.command()
