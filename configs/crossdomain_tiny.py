"""configs/crossdomain.py scaled down for 2 CPU cores: what ``make crossdomain`` runs.

Single-block stages of width 16 (E_R and E_D), 64x64 crops, a few hundred images per domain and
a few hundred steps: the whole pipeline (render both domains with depth, pre-train, fine-tune,
evaluate) in about 15 minutes on 2 CPU cores (docs/crossdomain.md). It shows the pipeline
working end to end, not the supplement's numbers.
"""

from configs import crossdomain


def get_config():
  config = crossdomain.get_config()
  config.model.update(dict(backbone_stages=(1, 1, 1, 1), backbone_width=16, decoder_features=64,
                           projection_hidden=128, projection_points=16))
  config.data.image_size = 64
  config.data.shuffle_buffer = 512
  config.crossdomain.update(dict(source_sizes="train:800,test:100",
                                 target_sizes="train:400,test:200", num_labels=200))
  config.pretrain.update(dict(batch_size=16, num_steps=400, learning_rate=1e-3,
                              log_every_steps=50))
  config.finetune.update(dict(batch_size=16, num_steps=200, learning_rate=3e-4,
                              log_every_steps=50))
  return config
