"""``python -m dfl_jax.evaluate``: scores predictions files or a trained run (official protocol).

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/evaluation/cli.py.
"""

from dfl_jax.evaluation import cli

__doc__ = cli.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  cli.command()
