"""Trains and evaluates DFL (the logic: dfl_jax/training/).

    python main.py --config=configs/dfl.py --workdir=DIR [--config.train.batch_size=8]
"""

from dfl_jax.training import cli

if __name__ == "__main__":
  cli.command()
