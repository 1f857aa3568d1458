"""``python -m dfl_jax.evaluate``: scores predictions files or a trained run (official protocol).

An entry point, imported by nothing; the logic and its documentation: dfl_jax/evaluation/cli.py.
"""

from dfl_jax.evaluation import cli

if __name__ == "__main__":
  cli.command()
