"""DFL: the whole network (paper Fig. 2), pure functional and channels-last.

    variables = model.init(rngs, images, train=False)
    outputs = model.apply(variables, images, train=False)           # no mutation needed
    outputs, updates = model.apply(variables, images, train=True,
                                   rngs={'dropout': key}, mutable=['batch_stats'])

``images`` [B, H, W, 3] RGB, uint8 or float in [0, 1] (normalised inside). Outputs:
  joints             [B, 42, 3]    final 2.5D joints: crop pixels x, y; depth in 256 units
  joints_iterations  [B, T, 42, 3] intermediate 2.5D predictions of each iteration
  segmentation_logits [B, H/4, W/4, 33]  when part segmentation is on
  hand_presence_logits [B, 2]      (right, left) logits; extension beyond the paper
  rel_root_depth     [B]           Z_left_wrist - Z_right_wrist in 256 depth units
                                   (400 mm range, 128 = 0 mm); extension beyond the paper
                                   (both with ``hand_heads``: configs/dfl_wild.py, not dfl.py)
  attention          only with ``return_attention=True``: {'init': [B,42,h0,w0],
                     'jj': [{'fused'|'appearance'|'position': [B,42,42]}] per iteration,
                     'ji': [{'fused'|'appearance'|'position': [B,42,h_t,w_t]}] per iteration}

Encoder (Sec. 3.2): ResNet-50 -> FPN (C_F) -> N scales coarse to fine; part segmentation S on
the finest map, its softmax average-pooled to every scale; F^a_n = concat(FPN_n, S_n);
F^p_n = Dense(sine encoding). Decoder: ``decoder.py``.

Ablations (each a field, set from ``config.model``): ``decoder`` 'decoupled' | 'pooled' (Table 1
id 1), 'coupled' ``jj_relation``/``ji_relation`` with ``use_jj``/``use_spr`` (Table 1 ids 2-4,
``decoder.py``); ``init_relation``, ``jj_relation``,
``ji_relation``, ``regression_features`` (Table 2); ``num_iterations`` and ``num_scales``
(Table 3); ``multi_scale`` and ``part_segmentation`` (supplement Table 1).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfl_jax.conventions import DEPTH_UNITS, LEFT, RIGHT
from dfl_jax.network.decoder import HEAD_INIT, DecoupledDecoder, PooledRegressor
from dfl_jax.network.fpn import FPN
from dfl_jax.network.part_segmentation import (NUM_PART_CLASSES, PartSegmentationHead,
                                               pooled_probabilities)
from dfl_jax.network.position_encoding import PositionFeatures
from dfl_jax.network.resnet import ResNet

DECODERS = ("decoupled", "pooled")


class HandHeads(nn.Module):
  """Extensions beyond the paper (InterNet-style): hand presence and relative root depth.

  Both read the per-hand mean of the final joint features (or a pooled vector), through one
  hidden layer. Root depth is regressed as (Dense + 0.5) * 256 in the 2.5D depth units.
  ``DFL`` feeds them ``concat(stop_gradient(J^a), J^p)``: they read the final appearance
  features but give them no gradient, so J^a is not regressed onto a position target (the paper
  regresses from position features only, Sec. 3.3 and Table 2's regression rows). Like the
  paper's own joint losses, their gradient still reaches the appearance side through the
  attention weights that form J^p (the J-I logits use both types). With ``decoder='pooled'``
  (Table 1 id 1) they read the pooled encoder features and train the encoder directly.
  """

  hidden: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features):
    if features.ndim == 3:  # [B, 42, C] joint features -> per-hand means
      features = jnp.concatenate([features[:, RIGHT].mean(1),
                                  features[:, LEFT].mean(1)], axis=-1)
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(features))
    h = h.astype(jnp.float32)
    presence = nn.Dense(2, dtype=jnp.float32, name="presence")(h)
    root = (nn.Dense(1, dtype=jnp.float32, kernel_init=HEAD_INIT, name="root_depth")(h)[:, 0]
            + 0.5) * DEPTH_UNITS
    return presence, root


class DFL(nn.Module):
  """The DFL network. Field defaults are the paper configuration (configs/dfl.py)."""

  # Encoder.
  backbone_stages: Sequence[int] = (3, 4, 6, 3)
  backbone_width: int = 64
  trainable_bn: bool = False            # create_model resolves the config's None (see there)
  bn_axis_name: str | None = None       # set by the data-parallel training step (SyncBN)
  fpn_features: int = 256                 # C_F
  fpn_norm: bool = True
  num_scales: int = 4                     # N
  multi_scale: bool = True
  part_segmentation: bool = True
  num_part_classes: int = NUM_PART_CLASSES  # C_S
  segmentation_hidden: int = 256
  position_features: int = 256            # C_P
  # Decoder.
  decoder: str = "decoupled"
  num_iterations: int = 3                 # T
  num_heads: int = 8
  attn_dim: int = 256
  dim_ff: int = 1536
  dropout: float = 0.1
  use_jj: bool = True
  use_spr: bool = True
  spr_layers: int = 1
  init_relation: str = "appearance"
  jj_relation: str = "position"
  ji_relation: str = "both"
  regression_features: str = "position"
  pre_norm: bool = True
  pooled_hidden: int = 1024
  # Speed only (same numbers): attention kernel, see attention.py.
  attention_implementation: str = "auto"
  # Extensions (configs/dfl_wild.py; off in the paper's configs/dfl.py).
  hand_heads: bool = False
  dtype: Any = jnp.float32

  def _check(self):
    if self.decoder not in DECODERS:
      hint = (" (the Table 1 baselines are now decoder='decoupled' with jj_relation and "
              "ji_relation 'coupled': configs/ablation.py)" if self.decoder == "fused" else "")
      raise ValueError(f"model.decoder must be one of {DECODERS}, got {self.decoder!r}{hint}")
    if not 1 <= self.num_scales <= len(self.backbone_stages):
      raise ValueError(f"model.num_scales must be in 1..{len(self.backbone_stages)}, "
                       f"got {self.num_scales}")

  @nn.compact
  def __call__(self, images, train: bool = False, return_attention: bool = False):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [B, H, W, 3], got shape {images.shape}")
    self._check()
    input_hw = images.shape[1:3]
    c = ResNet(self.backbone_stages, self.backbone_width, self.trainable_bn, self.bn_axis_name,
               self.dtype, name="backbone")(images, train)
    pyramid = FPN(self.fpn_features, self.fpn_norm, self.dtype, name="fpn")(c)  # fine to coarse
    out = {}
    # The decoder sees the ``num_scales`` finest levels, ordered coarse to fine.
    levels = pyramid[:self.num_scales][::-1]
    if self.part_segmentation:
      logits = PartSegmentationHead(self.num_part_classes, self.segmentation_hidden, self.dtype,
                                    name="segmentation")(pyramid[0])
      out["segmentation_logits"] = logits
      probs = pooled_probabilities(logits, [x.shape[1:3] for x in levels])
      f_a = [jnp.concatenate([x, p.astype(x.dtype)], axis=-1) for x, p in zip(levels, probs)]
    else:
      f_a = levels
    # F^p does not depend on the image: batch 1, projected once by the decoder's attention
    # and broadcast there (not B times).
    position = PositionFeatures(self.position_features, dtype=self.dtype, name="position")
    f_p = [position(*x.shape[1:3]) for x in levels]  # each [1, h, w, C_P]

    kw = dict(num_iterations=self.num_iterations, num_heads=self.num_heads,
              dim_ff=self.dim_ff, dropout=self.dropout, multi_scale=self.multi_scale,
              use_jj=self.use_jj, use_spr=self.use_spr, spr_layers=self.spr_layers,
              pre_norm=self.pre_norm, attention_implementation=self.attention_implementation,
              dtype=self.dtype, name="decoder")
    if self.decoder == "decoupled":
      dec = DecoupledDecoder(attn_dim=self.attn_dim, init_relation=self.init_relation,
                             jj_relation=self.jj_relation, ji_relation=self.ji_relation,
                             regression_features=self.regression_features, **kw)
    else:
      dec = PooledRegressor(self.pooled_hidden, self.dtype, name="decoder")
    d = dec(f_a, f_p, input_hw, train=train, return_attention=return_attention)
    out["joints"] = d["joints"]
    out["joints_iterations"] = d["joints_iterations"]
    if return_attention:
      out["attention"] = d["attention"]
    if self.hand_heads:
      if "pooled_features" in d:
        feats = d["pooled_features"]
      else:  # J^a read, not trained (see HandHeads)
        feats = jnp.concatenate([jax.lax.stop_gradient(d["appearance_features"]),
                                 d["position_features"].astype(d["appearance_features"].dtype)],
                                axis=-1)
      out["hand_presence_logits"], out["rel_root_depth"] = HandHeads(
          dtype=self.dtype, name="hands")(feats)
    return out


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve_trainable_bn(trainable_bn, pretrained_backbone: bool) -> bool:
  """config.model.trainable_bn: None means frozen BatchNorm exactly for a pretrained backbone."""
  return (not pretrained_backbone) if trainable_bn is None else bool(trainable_bn)


def create_model(model_config, pretrained_backbone: bool = False) -> DFL:
  """Builds DFL from ``config.model`` (a ConfigDict or mapping whose keys are DFL's fields).

  ``trainable_bn=None`` (the default) freezes BatchNorm only for a pretrained backbone
  (``pretrained_backbone``, i.e. config.train.backbone_init is set): frozen statistics of
  mean 0 and variance 1 make BatchNorm the identity, and a ResNet trained from scratch without
  normalisation has exploding activations that saturate the attention of the decoder.
  """
  kwargs = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
  kwargs["trainable_bn"] = resolve_trainable_bn(kwargs.get("trainable_bn"), pretrained_backbone)
  dtype = kwargs.pop("dtype", "float32")
  if dtype not in DTYPES:
    raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
  known = set(DFL.__dataclass_fields__) - {"parent", "name", "bn_axis_name"}
  unknown = sorted(set(kwargs) - known)
  if unknown:
    raise ValueError(f"unknown config.model field(s) {unknown}; known: {sorted(known)}")
  for key in ("backbone_stages",):
    if key in kwargs:
      kwargs[key] = tuple(kwargs[key])
  return DFL(dtype=DTYPES[dtype], **kwargs)


# XLA's CPU backend spends most of the initialiser's compile time on the unrolled threefry of every
# parameter (~50k HLO ops for configs/tiny.py): about 18 s at the default optimisation level and
# 9 s at level 0 on 2 cores. It runs once, so its own speed does not matter; values agree to
# 1-2 ulp.
INIT_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 0}}


@functools.cache
def _jitted_init(backend: str | None):
  """One jit of ``model.init`` per backend, the model static: equal models compile once.

  ``backend=None`` is for a call inside a trace (e.g. ``jax.eval_shape``), where a nested jit
  may not carry compiler options.
  """
  return jax.jit(lambda model, rng, images: model.init({"params": rng}, images, train=False),
                 static_argnums=0, compiler_options=INIT_COMPILER_OPTIONS.get(backend))


def model_for(config) -> DFL:
  """``create_model(config.model)`` with BatchNorm's mode resolved from ``config.train``: frozen
  exactly when an ImageNet backbone file is named (``train.backbone_init``), whether or not it is
  read (a restored run reads none)."""
  pretrained = bool(config.get("train", {}).get("backbone_init", ""))
  return create_model(config.model, pretrained_backbone=pretrained)


def init_variables(config, rng, batch_size: int = 1):
  """``(model_for(config), its random initial variables)`` at ``config.data.image_size``.

  Random initialisation only: the weight files of a run (``config.train.backbone_init``, the
  ImageNet ResNet-50 of Sec. 3.2, and ``config.train.encoder_init``) are merged into these
  variables when the training state is created (``dfl_jax.training.state``), not here.
  """
  model = model_for(config)
  size = config.data.image_size
  images = jnp.zeros((batch_size, size, size, 3), jnp.float32)
  traced = isinstance(images, jax.core.Tracer)  # zeros are staged only inside a trace
  variables = _jitted_init(None if traced else jax.default_backend())(model, rng, images)
  return model, variables
