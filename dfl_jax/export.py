"""``python -m dfl_jax.export``: a trained run as a SavedModel or a jax.export artifact.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/serving/export.py.
"""

from dfl_jax.serving import export

__doc__ = export.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  export.command()
