"""The training state, the paper's optimiser, and where a run's weight files come in.

Optimiser (paper Sec. 4.2): Adam, lr 1e-4, x0.1 at epochs 24 and 35, 50 epochs, global batch 64.

Weight files are merged here, when the state is created, and nowhere else: the network
(``dfl_jax.network``) only initialises at random. ``config.train.backbone_init`` names a
ResNet50-FPN (a torchvision COCO detector: backbone and FPN) or an ImageNet ResNet-50 (backbone)
converted by ``python -m dfl_jax.convert_resnet`` (Sec. 3.2: a pre-trained ResNet50-FPN); ``config.train.encoder_init`` an encoder file of ``python -m
dfl_jax.pretrained_encoder``, merged after it. A state to restore a checkpoint into reads
neither (``weight_files=False``; ``dfl_jax.workdir``).

Mixed precision (``mixed_precision.py``): parameters and optimiser state are float32 whatever
``config.model.dtype``; with float16 the state carries a dynamic loss scale.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from dfl_jax import errors
from dfl_jax.network.model import init_variables
from dfl_jax.training import mixed_precision
from dfl_jax.weights import backbone_file, encoder_file


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 scalar
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array             # uint32 key data, for dropout
  first_bad_step: jax.Array  # int32: first step with a non-finite loss or gradient, or -1
  loss_scale: Any = None     # mixed_precision.LossScale with float16 compute, else None


def create_learning_rate_fn(config, steps_per_epoch: int):
  """Piecewise constant: lr, times ``lr_decay_factor`` at each of ``lr_decay_epochs``."""
  t = config.train
  boundaries = {int(e * steps_per_epoch): t.lr_decay_factor for e in t.lr_decay_epochs}
  return optax.piecewise_constant_schedule(t.learning_rate, boundaries)


def create_optimizer(config, steps_per_epoch: int):
  """Adam (Sec. 4.2), after clipping the global gradient norm when ``train.grad_clip_norm > 0``.

  The paper does not mention clipping, and configs/dfl.py has none. DETR-family trainers,
  A2J-Transformer's among them (which DFL follows), clip at 0.1; configs/tiny.py does, because
  its gradient norms reached the thousands without.
  """
  adam = optax.adam(create_learning_rate_fn(config, steps_per_epoch))
  clip = config.train.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam


def check_initialisation(config):
  """Stops a run that would start from random weights without asking for it.

  The paper starts from a pre-trained ResNet50-FPN (Sec. 3.2); a run with neither
  ``train.backbone_init`` (a converted ResNet-50, with its FPN when converted from a torchvision
  detection model) nor ``train.encoder_init`` must say ``train.from_scratch=True``.
  """
  train = config.get("train", {})
  if train.get("backbone_init", "") or train.get("encoder_init", "") or train.get(
      "from_scratch", False):
    return
  raise errors.ConfigError(
      "config.train names no pre-trained weights: the paper starts from a pre-trained "
      "ResNet50-FPN (Sec. 3.2). On a machine with internet, save torchvision's COCO-trained "
      "detector: torch.save(torchvision.models.detection.fasterrcnn_resnet50_fpn("
      "weights='DEFAULT').state_dict(), 'r50_fpn.pth') (keypointrcnn_/maskrcnn_resnet50_fpn "
      "work too; an ImageNet ResNet-50 gives the backbone only), convert it with "
      "`python -m dfl_jax.convert_resnet --src r50_fpn.pth --out DIR` and pass "
      "--config.train.backbone_init=DIR; or pass an encoder file with "
      "--config.train.encoder_init=FILE.npz; or, to train from random weights on purpose, "
      "--config.train.from_scratch=True")


def load_weight_files(variables, config):
  """``variables`` with the run's ImageNet backbone, then its encoder file, merged in (when the
  configuration names them); errors name the file."""
  train = config.get("train", {})
  path = train.get("backbone_init", "")
  if path:
    variables = backbone_file.merge_backbone(variables, backbone_file.load_backbone(path))
  encoder = train.get("encoder_init", "")
  if encoder:
    flat, _ = encoder_file.load(encoder)
    variables = encoder_file.merge(variables, flat, source=f"config.train.encoder_init {encoder}")
  return variables


def create_train_state(config, rng, tx, weight_files: bool = True):
  """The model and its initial state (identical on every process for the same rng).

  ``weight_files=False`` leaves the weight files of the configuration unread (a state that a
  checkpoint is restored into; BatchNorm's mode still follows ``train.backbone_init``).
  """
  init_rng, dropout_rng = jax.random.split(rng)
  model, variables = init_variables(config, init_rng)
  if weight_files:
    variables = load_weight_files(variables, config)
  params = variables["params"]
  loss_scale = None
  if mixed_precision.uses_loss_scaling(config.model):
    loss_scale = mixed_precision.init_loss_scale(
        config.train.get("loss_scale_init", mixed_precision.DEFAULT_INITIAL_SCALE))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                     rng=jax.random.key_data(dropout_rng),
                     first_bad_step=jnp.full((), -1, jnp.int32), loss_scale=loss_scale)
  return model, state
