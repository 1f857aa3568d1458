"""DFL as in the paper: ResNet-50 + FPN 256, 4 scales, 3 iterations, 33 part classes, input 256,
Adam lr 1e-4 for 50 epochs at global batch 64, lr x0.1 at epochs 24 and 35 (Sec. 4.2)."""

from configs import default


def get_config():
  return default.get_config()
