"""Weight files: ImageNet backbones converted from torchvision/timm, encoder files of runs."""
