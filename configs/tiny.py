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
  config.data.eval_split = "val"
  config.data.shuffle_buffer = 512
  config.data.synthetic_sizes = "train:1500,val:200,test:100"
  config.train.batch_size = 8
  config.train.num_epochs = 6
  config.train.learning_rate = 1e-3
  config.train.lr_decay_epochs = (4, 5)
  config.train.log_every_steps = 25
  return config
