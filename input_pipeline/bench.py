"""``python -m input_pipeline.bench``: the tf.data pipeline's images/s.

An entry point, imported by nothing; the logic and its documentation: input_pipeline/throughput.py.
"""

from input_pipeline import throughput

if __name__ == "__main__":
  throughput.command()
