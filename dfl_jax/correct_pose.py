"""``python -m dfl_jax.correct_pose``: pose correction of a predictions file.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/evaluation/correction.py (the command) and dfl_jax/pose_correction.py (the method).
"""

from dfl_jax.evaluation import correction

__doc__ = correction.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  correction.command()
