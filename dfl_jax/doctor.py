"""``python -m dfl_jax.doctor``: what JAX sees on this machine, and what does not fit.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/tools/doctor.py.
"""

from dfl_jax.tools import doctor

__doc__ = doctor.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  doctor.command()
