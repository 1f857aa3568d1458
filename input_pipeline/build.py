"""``python -m input_pipeline.build``: the InterHand2.6M TFDS dataset from the release.

An entry point, imported by nothing; the logic and its documentation:
input_pipeline/dataset_build.py.
"""

from input_pipeline import dataset_build

__doc__ = dataset_build.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  dataset_build.command()
