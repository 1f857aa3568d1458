"""The DFL family scaled down so that 2 CPU cores train it in minutes (tests, quickstart).

The encoder starts from dfl_jax/assets/tiny_encoder_synthetic.npz, the stand-in for the paper's
ImageNet initialisation (Sec. 3.2), which cannot be downloaded here: configs/tiny_encoder_pretrain.py
trained it on part segmentation of a synthetic set that shares no image with the quickstart's
(README, Quickstart). ``--config.train.encoder_init='' --config.train.from_scratch=True``
trains from scratch.

Unlike configs/dfl.py it has the extension heads (configs/dfl_wild.py), so that the quickstart
reports MRRPE and handedness, and clips the global gradient norm at 0.1: training the tiny
decoder without clipping, its gradient norms reached the thousands in our runs (the clipping
DETR-family trainers, A2J-Transformer's among them, use).
"""

import pathlib

from configs import default

# The shipped encoder file, found beside this folder (configs import no library code).
TINY_ENCODER = str(pathlib.Path(__file__).resolve().parents[1] / "dfl_jax" / "assets" /
                   "tiny_encoder_synthetic.npz")


def get_config():
  config = default.get_config()
  config.model.update(dict(
      backbone_stages=(1, 1, 1, 1), backbone_width=16, fpn_features=64,
      segmentation_hidden=64, position_features=64, num_heads=4, attn_dim=64, dim_ff=128,
      pooled_hidden=128, dropout=0.0, hand_heads=True,
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
  config.train.encoder_init = TINY_ENCODER
  config.train.grad_clip_norm = 0.1
  config.train.eval_at_start = True   # the untrained figure next to the trained one
  return config
