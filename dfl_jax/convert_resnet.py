"""``python -m dfl_jax.convert_resnet``: a torchvision/timm ResNet-50 into backbone weights.

An entry point, imported by nothing; the logic and its documentation:
dfl_jax/weights/backbone_file.py.
"""

from dfl_jax.weights import backbone_file

__doc__ = backbone_file.__doc__  # what --help prints: the command's own documentation

if __name__ == "__main__":
  backbone_file.command()
