"""DFL for images in the wild: configs/dfl.py plus the extension heads (not in the paper).

Hand presence (which hands are in the crop) and the relative root depth of the two wrists
(Z_left - Z_right, for MRRPE and for placing both hands in one camera frame) are read from the
per-hand means of the final joint features ``concat(stop_gradient(J^a), J^p)``: their losses
(``loss.presence_weight`` x BCE, ``loss.root_depth_weight`` x L1) train the heads and the position
features and give the final appearance features no gradient (they reach the appearance side only
through the attention weights, as the paper's joint losses do; dfl_jax/network/model.py,
HandHeads). Inference on a
user's images (``python -m dfl_jax.predict``) reports both when the run has them.
"""

from configs import dfl


def get_config():
  config = dfl.get_config()
  config.model.hand_heads = True
  return config
