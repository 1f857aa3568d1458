"""Pretrains configs/tiny.py's encoder (backbone, FPN, part segmentation) on segmentation alone.

The paper (Sec. 3.2) starts from an ImageNet ResNet-50, which nothing here may download. For the
quickstart, whose 10 CPU minutes are far too few to learn hand parts from scratch, this config is
the stand-in: the tiny encoder learns the 33-class part segmentation (Eq. 8-9; the joint losses
are off and the cheap pooled decoder of Table 1 id 1 takes the decoder's place) on a synthetic set
rendered with seed 1, which shares no image with the quickstart's seed-0 set. The result ships as
dfl_jax/assets/tiny_encoder_synthetic.npz (configs/tiny.py's ``train.encoder_init``):

    python main.py --config=configs/tiny_encoder_pretrain.py --workdir=workdir/tiny_encoder \
        --config.train.num_steps=12000
    python -m dfl_jax.pretrained_encoder --workdir=workdir/tiny_encoder \
        --checkpoint=workdir/tiny_encoder/checkpoints/12000 \
        --out=dfl_jax/assets/tiny_encoder_synthetic.npz

The shipped file is step 12,000 of that run on the 3-D synthetic world (192,000 images, 49 min on
2 CPU cores, 2026-12-02; the learning rate never decays before step 56,250). On the
quickstart's validation images it separates hand from background on 97.8% of the pixels and
gives 26.2% of the hand pixels their part (the 2-D world's encoder: 12.7% on its own world,
4.7% on this one); of the pixels it calls hand, 60.6% get the right part of either hand, but
the side (right or left hand) is right on only 46.6% (README, "What the 3-D world changed").
"""

from configs import tiny


def get_config():
  config = tiny.get_config()
  config.train.encoder_init = ""      # from scratch
  config.train.from_scratch = True
  config.train.eval_at_start = False
  config.model.decoder = "pooled"     # its parameters are not exported
  config.model.hand_heads = False
  for key in ("alpha", "beta", "lambda_2d", "root_depth_weight", "presence_weight"):
    config.loss[key] = 0.0            # segmentation only (lambda_seg stays 1)
  config.data.synthetic_sizes = "train:6000,val:200,test:100"
  config.data.synthetic_seed = 1
  config.data.shuffle_buffer = 2048
  config.train.batch_size = 16
  config.train.num_epochs = 200
  config.train.lr_decay_epochs = (150, 180)
  config.train.eval_every_steps = 2000
  config.train.checkpoint_every_steps = 1000
  config.train.log_every_steps = 200
  return config
