"""``python -m dfl_jax.doctor``: what JAX sees on this machine, and what does not fit.

An entry point, imported by nothing; the logic and its documentation: dfl_jax/tools/doctor.py.
"""

from dfl_jax.tools import doctor

if __name__ == "__main__":
  doctor.command()
