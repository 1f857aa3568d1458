"""The DFL family scaled down so that 2 CPU cores train it in minutes (tests, quickstart)."""

from configs import default


def get_config():
  config = default.get_config()
  config.model.update(dict(
      backbone_stages=(1, 1, 1, 1), backbone_width=16, fpn_features=64,
      segmentation_hidden=64, position_features=64, num_heads=4, attn_dim=64, dim_ff=128,
      pooled_hidden=128, dropout=0.0,
  ))
  config.data.source = "synthetic"
  config.data.image_size = 128
  config.train.batch_size = 8
  config.train.num_epochs = 10
  config.train.learning_rate = 1e-3
  config.train.lr_decay_epochs = (6, 8)
  return config
