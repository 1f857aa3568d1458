"""Base configuration: the paper's setting (Sec. 3-4.2). Variants import it and override fields.

Everything here is the paper's or a choice it leaves open (each written beside its field);
nothing beyond it is on: the extension heads (``model.hand_heads``) are configs/dfl_wild.py's,
gradient clipping is off, and a run must start from pre-trained weights
(``train.backbone_init`` or ``train.encoder_init``) unless ``train.from_scratch`` says otherwise.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Model (paper Sec. 3.2-3.3); every field is a field of dfl_jax.network.model.DFL.
  config.model = ml_collections.ConfigDict(dict(
      backbone_stages=(3, 4, 6, 3),   # ResNet-50
      backbone_width=64,
      # BatchNorm: None = frozen with a converted backbone (train.backbone_init, as DETR-family
      # backbones do), trained otherwise; True/False force it.
      trainable_bn=None,
      fpn_features=256,               # C_F
      fpn_norm=True,                  # GroupNorm on the FPN outputs (see dfl_jax/network/fpn.py)
      num_scales=4,                   # N: 8x8, 16x16, 32x32, 64x64 for a 256 input
      multi_scale=True,               # supplement Table 1
      part_segmentation=True,         # supplement Table 1 ("identity info")
      num_part_classes=33,            # C_S
      segmentation_hidden=256,
      position_features=256,          # C_P
      decoder="decoupled",            # Table 1: 'pooled' (id 1); ids 2-4: configs/ablation.py
      num_iterations=3,               # T = N - 1 (Table 3)
      num_heads=8,
      attn_dim=256,
      dim_ff=1536,
      dropout=0.1,
      use_jj=True,                    # Table 1
      use_spr=True,                   # Table 1
      spr_layers=1,
      pre_norm=True,                  # pre-norm sub-layers (see dfl_jax/network/decoder.py)
      init_relation="appearance",     # Table 2
      jj_relation="position",         # Table 2; 'coupled': Table 1 (no decoupling)
      ji_relation="both",             # Table 2; 'coupled': Table 1 (no decoupling)
      regression_features="position",  # Table 2
      pooled_hidden=1024,
      hand_heads=False,               # extension (configs/dfl_wild.py): presence, root depth
      # Attention kernel (same numbers): 'auto' (cuDNN flash attention on sm_80+ GPUs in
      # bf16/fp16, XLA on other GPUs/TPUs, explicit einsums on CPUs) | 'explicit' | 'xla' |
      # 'cudnn'; see dfl_jax/network/attention.py.
      attention_implementation="auto",
      # Compute dtype: 'float32' | 'bfloat16' | 'float16' (weights stay float32; float16 adds
      # dynamic loss scaling, see dfl_jax/training/mixed_precision.py).
      dtype="float32",
  ))

  # Losses (paper Sec. 3.4, Eq. 6-11).
  config.loss = ml_collections.ConfigDict(dict(
      alpha=0.5, beta=1.0, tau_uv=1.0, tau_d=3.0, tau_2d=1.0,
      lambda_2d=3.0, lambda_seg=1.0, focal_gamma=2.0, dice_eps=1.0,
      # L_2D over the T iterations: 'sum' (each iteration its own L_2D) | 'mean' (one term);
      # the paper says "each iteration" only (dfl_jax/training/losses.py, joint_loss_2d).
      intermediate_reduction="sum",
      # Extension heads only (model.hand_heads), not in the paper.
      presence_weight=1.0, root_depth_weight=0.25,
  ))

  # Data (input_pipeline): InterHand2.6M v1.0 5 fps, H+M, all frames (Sec. 4.1).
  config.data = ml_collections.ConfigDict(dict(
      source="interhand",             # 'interhand' | 'synthetic'
      data_dir="",                    # TFDS data_dir written by `python -m input_pipeline.build`
      image_size=256,
      annotation="H+M",               # 'H' | 'M' | 'H+M'
      frames="all",                   # 'all' | 'single' | 'interacting'
      train_split="train",
      eval_split="test",
      shuffle_buffer=4096,
      augment=True,
      depth=False,                    # batches carry the depth map (data that has one)
      # source='synthetic': rendered into the workdir on first use
      # (input_pipeline/synthetic_render.py).
      synthetic_sizes="train:2000,val:200,test:200",
      synthetic_seed=0,
      synthetic_style="studio",       # 'studio' | 'wild'
      synthetic_gesture_fraction=0.5,  # share of frames posed as gestures and interactions
  ))

  # Training (paper Sec. 4.2). batch_size is always the global batch.
  config.train = ml_collections.ConfigDict(dict(
      batch_size=64,
      num_epochs=50,
      learning_rate=1e-4,
      lr_decay_epochs=(24, 35),
      lr_decay_factor=0.1,
      grad_clip_norm=0.0,             # not in the paper: off (> 0 clips the global norm)
      # Pre-trained weights (Sec. 3.2), one of them unless from_scratch:
      backbone_init="",               # directory written by `python -m dfl_jax.convert_resnet`
      encoder_init="",                # .npz written by `python -m dfl_jax.pretrained_encoder`
      from_scratch=False,             # True: random weights on purpose
      num_steps=0,                    # > 0 overrides num_epochs
      log_every_steps=50,
      eval_every_steps=0,             # 0: once an epoch
      eval_at_start=False,            # also evaluate the untrained model (step 0)
      checkpoint_every_steps=0,       # 0: once an epoch
      keep_checkpoints=3,
      # float16 only: dynamic loss scale, doubled after loss_scale_period finite steps.
      loss_scale_init=2.0**15,
      loss_scale_period=2000,
  ))

  # Multi-host: jax.distributed.initialize() when enabled (or DFL_DISTRIBUTED=1); the three
  # fields are passed when set (on managed clusters they are discovered automatically).
  config.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator_address="", num_processes=-1, process_id=-1,
  ))
  return config
