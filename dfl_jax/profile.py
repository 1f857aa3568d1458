"""``python -m dfl_jax.profile``: a traced training step and its most expensive kernels.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/tools/profile.py.
"""

from dfl_jax.tools import profile

__doc__ = profile.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  profile.command()
