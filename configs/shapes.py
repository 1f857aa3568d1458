"""Im2Hands on DFL's keypoints at the supplement's scale (its S.3; docs/shapes.md).

``python -m dfl_jax.shapes --config=configs/shapes.py --workdir=DIR``: DFL (``dfl``, the
paper's configuration, or a trained run given as ``shapes.dfl_workdir``) predicts the keypoints,
then K, I and R are trained on the synthetic world's hands and the validation frames are
reconstructed and scored (mean IoU, Chamfer L1 after mid-joint alignment). ``k``, ``i`` and
``r`` hold each network's fields (``dfl_jax.network.keypoint_refinement``,
``initial_occupancy``, ``two_hand_refinement``) and its training (S.3.2). Table S1/S2 switches:
``--config.i.image_conditioning=False`` (ImageCond), ``--config.i.query_image_attention=False``
(QueryImageAtt), ``--config.r.init_occupancy_condition=False`` (InitOccCond),
``--config.r.feature_cloud=False`` (FeatureCloud), ``--config.r.context_latent=False``
(ContextLatent); Table S3: ``--config.shapes.num_points=256|512|1024``.
"""

import ml_collections

from configs import dfl


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dfl = dfl.get_config()
  config.dfl.data.source = "synthetic"
  config.shapes = ml_collections.ConfigDict(dict(
      image_size=256,
      synthetic_sizes="train:20000,val:1000,test:1000",
      dfl_workdir="",            # a trained DFL run to take keypoints from ('' trains config.dfl)
      num_uniform=1024,          # occupancy queries per hand: uniform in the padded box ...
      num_near=1024,             # ... and near the surface (HALO's two kinds)
      grid_resolution=32,        # I's grid for R's surface points (per side, per hand)
      candidates=2048,           # grid points nearest I's 0.5 level, before FPS
      num_points=512,            # points per hand cloud (Table S3: 256, 512, 1024)
      mesh_resolution=64,        # the marching cubes grid per hand
      eval_frames=0,             # validation frames scored (0: all)
      eval_points=100000,        # IoU query points per hand
      eval_surface=30000,        # Chamfer surface samples per mesh
      mesh_format="ply",         # 'ply' | 'obj'
      meshes_written=8,          # frames whose meshes are written to WORKDIR/meshes
  ))
  image = dict(image_stages=(3, 4, 6, 3), image_width=64, image_features_dim=64)
  vit = dict(vit_dim=128, vit_depth=4, vit_heads=4, patch=8)
  config.k = ml_collections.ConfigDict(dict(
      index_features=32, coord_features=96, gcn_layers=4, heads=4, regressor_hidden=128,
      **image, **vit,
      batch_size=32, epochs=30, learning_rate=1e-4, decay_factor=0.3, decay_every=5000,
  ))
  config.i = ml_collections.ConfigDict(dict(
      hidden=128, layers=4, pose_code=4, image_conditioning=True, query_image_attention=True,
      attention_features=64, heads=2, **image, **vit,
      batch_size=8, epochs=10, learning_rate=1e-4, decay_factor=0.2, decay_every=5000,
      weight_decay=1e-5,
  ))
  config.r = ml_collections.ConfigDict(dict(
      features=128, encoder_layers=2, num_anchors=128, k=16, init_occupancy_condition=True,
      feature_cloud=True, context_latent=True, **image, image_latent=256,
      batch_size=8, epochs=10, learning_rate=1e-4, decay_factor=0.2, decay_every=5000,
      weight_decay=1e-5,
  ))
  config.log_every_steps = 50
  return config
