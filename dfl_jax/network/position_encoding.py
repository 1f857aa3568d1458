"""Image position features F^p_n (paper Sec. 3.2): 2D sine encoding mapped by a Dense layer.

The sine encoding is DETR's (Carion et al.): per axis ``num_feats`` channels of sin/cos at
geometric frequencies of the normalised pixel-centre coordinate times 2*pi. Coordinates are
normalised to [0, 1] of the image, so the same image location has the same encoding at every
scale; one Dense layer (shared across scales, a choice the paper leaves open) maps it to C_P.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def sine_encoding(height: int, width: int, num_feats: int = 128,
                  temperature: float = 10000.0) -> np.ndarray:
  """Returns [height, width, 2 * num_feats]: (y-encoding, x-encoding), each sin/cos interleaved."""
  y = (np.arange(height, dtype=np.float64) + 0.5) / height * 2 * np.pi
  x = (np.arange(width, dtype=np.float64) + 0.5) / width * 2 * np.pi
  dim_t = temperature ** (2 * (np.arange(num_feats) // 2) / num_feats)

  def encode(v):
    p = v[:, None] / dim_t  # [n, num_feats]
    return np.stack([np.sin(p[:, 0::2]), np.cos(p[:, 1::2])], axis=2).reshape(len(v), -1)

  ey, ex = encode(y), encode(x)
  enc = np.concatenate([np.broadcast_to(ey[:, None], (height, width, num_feats)),
                        np.broadcast_to(ex[None, :], (height, width, num_feats))], axis=-1)
  return enc.astype(np.float32)


class PositionFeatures(nn.Module):
  """Maps the sine encoding of an [H, W] grid to position features [1, H, W, C_P]."""

  features: int = 256
  num_feats: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, height: int, width: int):
    enc = jnp.asarray(sine_encoding(height, width, self.num_feats))[None]
    return nn.Dense(self.features, dtype=self.dtype, name="proj")(enc)
