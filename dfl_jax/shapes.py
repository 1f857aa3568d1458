"""``python -m dfl_jax.shapes``: Im2Hands on DFL's keypoints, end to end.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/training/shapes.py.
"""

from dfl_jax.training import shapes

__doc__ = shapes.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  shapes.command()
