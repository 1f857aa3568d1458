"""configs/shapes.py scaled down for 2 CPU cores: what ``make shapes`` runs.

A tiny DFL (configs/tiny.py's, trained briefly here) gives the keypoints; K, I and R have
single-block ResNets of width 8, one-block ViTs and small MLPs; 64-pixel crops, a few hundred
frames, coarse grids. It shows every stage working end to end, not the supplement's numbers.
"""

from configs import shapes, tiny


def get_config():
  config = shapes.get_config()
  config.dfl = tiny.get_config()
  config.dfl.data.image_size = 64
  config.dfl.train.num_steps = 400
  config.dfl.train.eval_at_start = False
  config.shapes.update(dict(image_size=64, synthetic_sizes="train:600,val:60,test:8",
                            num_uniform=512, num_near=512, grid_resolution=16, candidates=512,
                            num_points=128, mesh_resolution=32, eval_frames=40,
                            eval_points=20000, eval_surface=5000, meshes_written=4))
  small = dict(image_stages=(1, 1, 1, 1), image_width=8, image_features_dim=16, vit_dim=32,
               vit_depth=1, vit_heads=2)
  config.k.update(dict(index_features=8, coord_features=32, heads=2, regressor_hidden=64,
                       batch_size=16, epochs=6, learning_rate=1e-3, **small))
  config.i.update(dict(hidden=64, layers=3, pose_code=4, attention_features=32, batch_size=8,
                       epochs=6, learning_rate=1e-3, **small))
  small.pop("vit_dim"), small.pop("vit_depth"), small.pop("vit_heads")
  config.r.update(dict(features=32, encoder_layers=1, num_anchors=32, k=8, image_latent=32,
                       batch_size=8, epochs=4, learning_rate=1e-3, **small))
  config.log_every_steps = 25
  return config
