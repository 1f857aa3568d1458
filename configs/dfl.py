"""DFL as in the paper: ResNet-50 + FPN 256, 4 scales, 3 iterations, 33 part classes, input 256,
Eq. 11's losses only, Adam lr 1e-4 for 50 epochs at global batch 64, lr x0.1 at epochs 24 and 35
(Sec. 4.2), no gradient clipping, no extension heads, from a pre-trained ResNet50-FPN:

    python -m dfl_jax.convert_resnet --src fasterrcnn_resnet50_fpn.pth --out pretrained/r50_fpn
    python main.py --config=configs/dfl.py --workdir=DIR \
        --config.data.data_dir=TFDS_DIR --config.train.backbone_init=pretrained/r50_fpn

The intermediate 2D loss is summed over the iterations (``loss.intermediate_reduction``; 'mean'
is the other reading of Sec. 3.4.1).
"""

from configs import default


def get_config():
  return default.get_config()
