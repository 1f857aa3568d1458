"""``python -m dfl_jax.predict``: DFL on your images, folders and videos.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/serving/predict.py.
"""

from dfl_jax.serving import predict

__doc__ = predict.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  predict.command()
