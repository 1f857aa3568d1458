"""``python -m dfl_jax.bench``: inference and training throughput after compilation.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/tools/bench.py.
"""

from dfl_jax.tools import bench

__doc__ = bench.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  bench.command()
