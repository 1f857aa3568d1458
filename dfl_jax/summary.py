"""``python -m dfl_jax.summary``: the per-module parameter table of a configuration.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/tools/summary.py.
"""

from dfl_jax.tools import summary

__doc__ = summary.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  summary.command()
