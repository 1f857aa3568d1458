"""``python -m dfl_jax.gpu_report``: every GPU measurement of the paper configuration in one run.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/tools/gpu_report.py.
"""

from dfl_jax.tools import gpu_report

__doc__ = gpu_report.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  gpu_report.command()
