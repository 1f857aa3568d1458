"""``python -m dfl_jax.aot``: compile for a GPU or TPU that is not attached.

An entry point, imported by nothing; the logic and its documentation: dfl_jax/tools/aot.py.
"""

from dfl_jax.tools import aot

if __name__ == "__main__":
  aot.command()
