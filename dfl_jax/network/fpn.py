"""Feature pyramid network on ResNet C2..C5 (paper Sec. 3.2, "ResNet50-FPN", C_F channels).

Lin et al.'s FPN as torchvision builds it: a 1x1 lateral convolution per level, nearest-neighbour
top-down upsampling and addition, then a 3x3 output convolution per level. For a 256x256 input
the outputs have strides 4, 8, 16, 32, i.e. 64x64, 32x32, 16x16 and 8x8.

With ``norm=True`` (our choice, the default) each output is group-normalised (32 groups), as
torchvision's FPN allows with its ``norm_layer``. The maps feed the dot-product attentions of
Eq. (1) and (3) directly; without a norm their scale drifts during training (we measured mean
magnitudes near 30), the logits then follow the key norms, every joint query attends to the
same pixels and the 42 joints collapse onto one point.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def upsample_nearest(x, shape):
  """Nearest-neighbour resize of [B, h, w, C] to [B, H, W, C] (integer factors)."""
  fy, fx = shape[0] // x.shape[1], shape[1] // x.shape[2]
  return jnp.repeat(jnp.repeat(x, fy, axis=1), fx, axis=2)


class FPN(nn.Module):
  """Returns the pyramid fine to coarse: [P2, P3, P4, P5], each [B, H_l, W_l, features]."""

  features: int = 256
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Sequence[jax.Array]):
    init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    laterals = [nn.Conv(self.features, (1, 1), dtype=self.dtype, kernel_init=init,
                        name=f"lateral{i}")(c) for i, c in enumerate(inputs)]
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
      merged.insert(0, lateral + upsample_nearest(merged[0], lateral.shape[1:3]))
    outputs = [nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                       kernel_init=init, name=f"output{i}")(m) for i, m in enumerate(merged)]
    if self.norm:
      groups = 32 if self.features % 32 == 0 else 1
      outputs = [nn.GroupNorm(groups, dtype=self.dtype, name=f"norm{i}")(x)
                 for i, x in enumerate(outputs)]
    return outputs
