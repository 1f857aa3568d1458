"""The cross-domain dual-modality system at the paper's scale (its supplement, Sec. A-E).

ResNet-50 encoders E_R and E_D with depth attention after every downsampling stage, pre-trained
on a source domain with RGB and depth (the synthetic "studio"), then fine-tuned with N labelled
images of the target domain (the synthetic "wild") and evaluated there
(``python -m dfl_jax.crossdomain``, docs/crossdomain.md). Over configs/default.py: its data
section (with depth) and seed; ``model``, ``pretrain``, ``finetune`` and ``crossdomain`` are
this system's. Ablations (Tables a and b): ``--config.model.attention_source=rgb``,
``--config.model.stop_gradient=False``; Fig. d: ``--config.crossdomain.num_labels=N``.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  # Every field is a field of dfl_jax.network.dual_modality.DualModalityNet.
  config.model = ml_collections.ConfigDict(dict(
      backbone_stages=(3, 4, 6, 3),   # ResNet-50, E_R and E_D alike
      backbone_width=64,              # C = 64, 256, 512, 1024, 2048 (Fig. b)
      attention_source="depth",       # Table a: 'depth' (the system) | 'rgb'
      stop_gradient=True,             # Table b / Sec. D: between RGB features and attention
      decoder_features=256,
      projection_hidden=512,
      projection_points=64,           # contrastive embedding: 64 2-D points
      trainable_bn=True,              # from scratch here: BatchNorm learns
      dtype="float32",
  ))
  config.data.source = "synthetic"
  config.data.depth = True
  config.data.augment = False         # Sec. B's augmentations replace InterNet's
  config.data.image_size = 256
  config.data.eval_split = "test"
  config.crossdomain = ml_collections.ConfigDict(dict(
      source_style="studio",          # pre-training domain (RGB + depth)
      target_style="wild",            # fine-tuning and evaluation domain
      source_sizes="train:20000,test:500",
      target_sizes="train:15000,test:1000",   # 15K: the supplement's fine-tuning size (Sec. E)
      target_seed=1,                  # the target world's images share no draw with the source's
      num_labels=750,                 # N labelled target images for fine-tuning (0: none)
      correct_pose=True,              # also report EPE after pose correction (Sec. C)
  ))
  config.pretrain = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=60000, learning_rate=1e-4, weight_decay=1e-4, grad_clip_norm=1.0,
      temperature=0.1,                # NT-Xent temperature
      contrastive=1.0, pose_2d=1.0, pose_3d=1.0, depth=1.0, segmentation=1.0,   # loss weights
      log_every_steps=100,
  ))
  config.finetune = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=10000, learning_rate=1e-4, weight_decay=1e-4, grad_clip_norm=1.0,
      pose_2d=1.0, pose_3d=1.0, log_every_steps=100,
  ))
  return config
