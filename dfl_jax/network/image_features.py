"""Im2Hands' image pathway: ImgEnc (ResNet-50 and four deconvolutions) and the patch ViT.

Its supplement, S.3.1: "For the image encoder-decoder (ImgEnc in Equation 3), we use a ResNet-50
architecture as an encoder and a CNN composed of four deconvolutional layers as a decoder. For
the multi-headed self-attention module (MSA in Equation 3), we extract features of 8x8 image
patches using an encoder of Vision Transformer", and K uses "the same Vision Transformer
encoder". Choices where it is silent:

- ``ImageEncoderDecoder``: the project's ResNet (``resnet.py``, so ImageNet or DFL encoder
  weights load by name under ``backbone``), its stride-32 features through four 4x4
  transposed convolutions of stride 2 (GroupNorm, ReLU) to a stride-2 feature map; also the
  global image latent z_I (the pooled stride-32 features through a dense layer) that R's context
  encoder reads.
- ``PatchViT``: the ViT encoder over 8x8 patches *of ImgEnc's feature map* (not of the raw
  pixels: 64 tokens at a 128-pixel input, where pixel patches would give 256 tokens per query
  in I's attention): a linear patch embedding, a learned position embedding, pre-norm blocks
  (multi-head self-attention, a GELU MLP of 4x width) and a final LayerNorm.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfl_jax.network import resnet


class ImageEncoderDecoder(nn.Module):
  """images [B, S, S, 3] -> (features [B, S/2, S/2, features], z_I [B, latent])."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  features: int = 64
  latent: int = 256
  trainable_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    c5 = resnet.ResNet(self.stage_sizes, self.width, self.trainable_bn, dtype=self.dtype,
                       name="backbone")(images, train)[-1]
    x = c5
    for i in range(4):   # stride 32 -> 2
      x = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding="SAME",
                           dtype=self.dtype, name=f"deconv{i + 1}")(x)
      x = nn.relu(nn.GroupNorm(num_groups=min(8, self.features // 4), dtype=self.dtype,
                               name=f"norm{i + 1}")(x))
    z = nn.Dense(self.latent, dtype=self.dtype, name="latent")(jnp.mean(c5, axis=(1, 2)))
    return x.astype(jnp.float32), z.astype(jnp.float32)


def patch_tokens(module, images, train: bool, vit: bool = True):
  """ImgEnc then the patch ViT, created in ``module``'s scope (call inside its compact method;
  submodules ``image_encoder`` and ``vit``), from its ``image_*``, ``vit_*`` and ``patch``
  fields: K and I build the same pathway. Returns (feature map, patch tokens, or None without
  ``vit``: I's pixel-aligned variant reads the feature map only)."""
  fmap, _ = ImageEncoderDecoder(module.image_stages, module.image_width,
                                module.image_features_dim, dtype=module.dtype,
                                name="image_encoder")(images, train)
  if not vit:
    return fmap, None
  tokens = PatchViT(module.vit_dim, module.vit_depth, module.vit_heads, module.patch,
                    module.dtype, name="vit")(fmap, train)
  return fmap, tokens


class TransformerBlock(nn.Module):
  """Pre-norm ViT block: x + MSA(LN(x)), then x + MLP(LN(x))."""

  heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    d = x.shape[-1]
    y = nn.LayerNorm(dtype=self.dtype, name="norm1")(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype,
                                        name="attention")(y, y)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(d * self.mlp_ratio, dtype=self.dtype, name="mlp1")(y)
    y = nn.Dense(d, dtype=self.dtype, name="mlp2")(nn.gelu(y))
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class PatchViT(nn.Module):
  """feature map [B, H, W, C] -> patch tokens [B, (H / patch) (W / patch), dim]."""

  dim: int = 128
  depth: int = 4
  heads: int = 4
  patch: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool = False):
    b, h, w, _ = features.shape
    if h % self.patch or w % self.patch:
      raise ValueError(f"a {h}x{w} feature map does not split into {self.patch}x{self.patch} "
                       "patches")
    x = nn.Conv(self.dim, (self.patch, self.patch), strides=(self.patch, self.patch),
                padding="VALID", dtype=self.dtype, name="patch_embedding")(features)
    x = x.reshape(b, -1, self.dim)
    x = x + self.param("position_embedding", nn.initializers.normal(0.02),
                       (1, x.shape[1], self.dim), jnp.float32).astype(x.dtype)
    for i in range(self.depth):
      x = TransformerBlock(self.heads, dtype=self.dtype, name=f"block{i + 1}")(x, train)
    return nn.LayerNorm(dtype=self.dtype, name="norm")(x).astype(jnp.float32)
