"""``python -m input_pipeline.bench``: the tf.data pipeline's images/s.

An entry point, imported by nothing; the logic and its documentation:
input_pipeline/throughput.py.
"""

from input_pipeline import throughput

__doc__ = throughput.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  throughput.command()
