"""ResNet-50 backbone (paper Sec. 3.2), NHWC, with torchvision/timm parameter names.

Module paths mirror the torch state-dict keys one-to-one, so that
``layer2.0.downsample.1.running_var`` in torchvision or timm is
``batch_stats['backbone']['layer2']['0']['downsample']['1']['var']`` here:

    torch                      flax
    conv*.weight [O,I,kh,kw]   conv*/kernel [kh,kw,I,O]
    bn*.weight / bn*.bias      bn*/scale / bn*/bias          (collection 'params')
    bn*.running_mean / _var    bn*/mean / bn*/var            (collection 'batch_stats')

Paddings are written out explicitly so the features equal torch's (ResNet v1.5: the stride sits
on the 3x3 convolution of a bottleneck, as in torchvision and timm ``resnet50``).

BatchNorm is frozen by default, as in DETR-family backbones (A2J-Transformer's included, which
DFL follows): running statistics and affine parameters are constants and receive no gradient.
With ``trainable_bn=True`` the statistics are computed from the batch in training and the
affine parameters learn; with ``bn_axis_name`` set (the data-parallel training step does) they
are the statistics of the global batch (SyncBatchNorm), so the result does not depend on how
the batch is split over devices.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BatchNorm(nn.Module):
  """BatchNorm2d with torch semantics (eps 1e-5, momentum 0.1) that can be frozen."""

  trainable: bool = False
  epsilon: float = 1e-5
  momentum: float = 0.1
  axis_name: str | None = None  # synchronise batch statistics over this mesh axis
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    if not self.trainable:
      scale, bias = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(bias)
    if self.trainable and train:
      xf = x.astype(jnp.float32)
      m, m2 = jnp.mean(xf, axis=(0, 1, 2)), jnp.mean(jnp.square(xf), axis=(0, 1, 2))
      n = x.shape[0] * x.shape[1] * x.shape[2]
      if self.axis_name is not None:  # SyncBatchNorm: statistics of the global batch
        m, m2 = jax.lax.pmean((m, m2), self.axis_name)
        n *= jax.lax.psum(1, self.axis_name)
      v = jnp.maximum(m2 - jnp.square(m), 0.0)
      if not self.is_initializing():
        unbiased = v * n / max(n - 1, 1)
        mean.value = (1 - self.momentum) * mean.value + self.momentum * m
        var.value = (1 - self.momentum) * var.value + self.momentum * unbiased
    else:
      m, v = mean.value, var.value
    # Folded into one multiply-add: y = x * s + b.
    s = scale * jax.lax.rsqrt(v + self.epsilon)
    b = bias - m * s
    return x * s.astype(self.dtype) + b.astype(self.dtype)


def normalize_images(images):
  """RGB pixels (uint8 in [0, 255] or float in [0, 1]) -> ImageNet-normalised float32."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def conv(features, kernel, stride, pad, name, dtype):
  """A bias-free convolution with explicit (torch) padding and He (fan-out) initialisation."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                 kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                 name=name)


class Downsample(nn.Module):
  """torchvision's ``downsample`` Sequential: '0' a 1x1 conv, '1' a BatchNorm."""

  features: int
  stride: int
  trainable_bn: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv(self.features, 1, self.stride, 0, "0", self.dtype)(x)
    return BatchNorm(self.trainable_bn, axis_name=self.bn_axis_name, dtype=self.dtype,
                     name="1")(x, train)


class Bottleneck(nn.Module):
  """ResNet v1.5 bottleneck: 1x1, 3x3 (strided), 1x1 with 4x expansion."""

  width: int
  stride: int = 1
  downsample: bool = False
  trainable_bn: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda name: BatchNorm(self.trainable_bn, axis_name=self.bn_axis_name,
                                dtype=self.dtype, name=name)
    out = nn.relu(bn("bn1")(conv(self.width, 1, 1, 0, "conv1", self.dtype)(x), train))
    out = nn.relu(bn("bn2")(conv(self.width, 3, self.stride, 1, "conv2", self.dtype)(out),
                            train))
    out = bn("bn3")(conv(self.width * 4, 1, 1, 0, "conv3", self.dtype)(out), train)
    if self.downsample:
      x = Downsample(self.width * 4, self.stride, self.trainable_bn, self.bn_axis_name,
                     self.dtype, name="downsample")(x, train)
    return nn.relu(out + x)


class ResLayer(nn.Module):
  """torchvision's ``layerN`` Sequential of bottlenecks named '0', '1', ..."""

  width: int
  num_blocks: int
  stride: int
  trainable_bn: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i in range(self.num_blocks):
      x = Bottleneck(self.width, self.stride if i == 0 else 1, downsample=(i == 0),
                     trainable_bn=self.trainable_bn, bn_axis_name=self.bn_axis_name,
                     dtype=self.dtype, name=str(i))(x, train)
    return x


class ResNet(nn.Module):
  """ResNet trunk returning C2..C5 (strides 4, 8, 16, 32) as a list.

  Input: images [B, H, W, 3], RGB, either uint8 in [0, 255] or float in [0, 1]; the ImageNet
  normalisation happens here so exported models and users' code feed plain pixels.
  ``widths`` scales the model (64 for ResNet-50); ``stage_sizes`` (3, 4, 6, 3) is ResNet-50.
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  trainable_bn: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    x, features = images, []
    for index in range(len(self.stage_sizes) + 1):
      x = stage(x, index, self.stage_sizes, self.width, self.trainable_bn, self.bn_axis_name,
                self.dtype, train)
      if index:
        features.append(x)
    return features


def stage(x, index: int, stage_sizes: Sequence[int], width: int, trainable_bn: bool,
          bn_axis_name: str | None, dtype: Any, train: bool, rgb_input: bool = True):
  """One downsampling stage of the trunk, called inside a module's compact method.

  Stage 0 is the stem (input normalisation, conv1, bn1, relu, 3x3 max pool; C = ``width``),
  stages 1..4 are layer1..layer4. Its submodules take the calling module's scope, so a module
  that runs all stages in order (``ResNet``) or one at a time (the dual-modality encoders) gets
  the same parameter tree. ``rgb_input`` False takes features as they are instead of pixels.
  """
  if index == 0:
    x = normalize_images(x) if rgb_input else x.astype(jnp.float32)
    x = conv(width, 7, 2, 3, "conv1", dtype)(x.astype(dtype))
    x = nn.relu(BatchNorm(trainable_bn, axis_name=bn_axis_name, dtype=dtype, name="bn1")(
        x, train))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  i = index - 1
  return ResLayer(width * 2**i, stage_sizes[i], 1 if i == 0 else 2, trainable_bn, bn_axis_name,
                  dtype, name=f"layer{index}")(x, train)
