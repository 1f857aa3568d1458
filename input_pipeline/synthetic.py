"""``python -m input_pipeline.synthetic``: render a synthetic InterHand2.6M.

An entry point, imported by nothing; the logic and its documentation:
input_pipeline/synthetic_render.py.
"""

from input_pipeline import synthetic_render

__doc__ = synthetic_render.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  synthetic_render.command()
