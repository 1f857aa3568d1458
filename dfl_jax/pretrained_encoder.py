"""``python -m dfl_jax.pretrained_encoder``: a trained run's encoder into an encoder file.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/weights/encoder_export.py.
"""

from dfl_jax.weights import encoder_export

__doc__ = encoder_export.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  encoder_export.command()
