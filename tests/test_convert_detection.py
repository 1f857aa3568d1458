"""torchvision ResNet50-FPN detectors -> DFL backbone and FPN: the pyramid must be torchvision's.

Random weights (nothing is downloaded): torchvision's own ``fasterrcnn_resnet50_fpn``,
``keypointrcnn_resnet50_fpn`` and ``maskrcnn_resnet50_fpn`` built with ``weights=None``, their
BatchNorm statistics randomised so that the frozen BatchNorm is not the identity.
"""

import importlib.util
import os
import sys
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from dfl_jax.network import fpn, resnet
from dfl_jax.network.model import init_variables, model_for
from dfl_jax.training import state as train_state
from dfl_jax.weights import backbone_file
from test_convert_resnet import randomise_batchnorm

torch = pytest.importorskip(
    "torch", reason="needs the CPU torch (pip install torch==2.13.0) for the reference model")

TOL = 1e-5  # of the largest output value


def _torchvision():
  """torchvision's Python modules. The registry's torchvision wheels are CUDA builds whose
  compiled ops (NMS, RoI align) cannot load beside the CPU torch, and its package __init__
  registers those ops; the backbone and FPN are plain Python, so when the ops fail the package
  is entered without its __init__ (the models below never call the compiled ops)."""
  try:
    import torchvision  # pylint: disable=import-outside-toplevel
    return torchvision
  except (RuntimeError, OSError):
    spec = importlib.util.find_spec("torchvision")
    pkg = types.ModuleType("torchvision")
    pkg.__path__ = [os.path.dirname(spec.origin)]
    pkg.__version__ = "python modules only"
    sys.modules["torchvision"] = pkg
    return pkg


if importlib.util.find_spec("torchvision") is None:
  pytest.skip("needs torchvision (make venv installs it)", allow_module_level=True)
_torchvision()
from torchvision.models import detection  # noqa: E402  pylint: disable=wrong-import-position


def _random_detector(name):
  torch.manual_seed(0)
  model = getattr(detection, name)(weights=None, weights_backbone=None)
  randomise_batchnorm(model.backbone)
  return model.eval()


def _numpy_state(model):
  return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def faster():
  return _random_detector("fasterrcnn_resnet50_fpn")


def test_converted_fpn_reproduces_torchvision(tmp_path, faster):
  src = tmp_path / "fasterrcnn_resnet50_fpn.pth"
  torch.save(faster.state_dict(), src)
  backbone_file.main(["--src", str(src), "--out", str(tmp_path / "r50_fpn")])
  tree = backbone_file.load_backbone(tmp_path / "r50_fpn")
  assert set(tree) == {"params", "batch_stats", "fpn"}

  images = np.random.default_rng(0).uniform(size=(1, 128, 128, 3)).astype(np.float32)
  body = {"params": tree["params"], "batch_stats": tree["batch_stats"]}
  c = resnet.ResNet().apply(body, jnp.asarray(images), train=False)
  pyramid = fpn.FPN(256, norm=False).apply({"params": tree["fpn"]["params"]}, c)

  mean = np.asarray(resnet.IMAGENET_MEAN, np.float32)
  std = np.asarray(resnet.IMAGENET_STD, np.float32)
  x = torch.from_numpy(((images - mean) / std).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    ref = faster.backbone(x)
  assert [p.shape for p in pyramid] == [(1, 32, 32, 256), (1, 16, 16, 256), (1, 8, 8, 256),
                                        (1, 4, 4, 256)]
  for level, got in enumerate(pyramid):
    want = ref[str(level)].numpy().transpose(0, 2, 3, 1)
    err = float(np.abs(np.asarray(got) - want).max())
    print(f"P{level + 2}: max|diff| {err:.3e}, max|torch| {np.abs(want).max():.3e}")
    # Random detector weights give outputs in the thousands: float32 round-off relative to it.
    assert err <= TOL * np.abs(want).max(), f"P{level + 2}: {err}"


@pytest.mark.parametrize("name", ["keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"])
def test_keypoint_and_mask_detectors_convert_to_the_same_modules(name, faster):
  tree = backbone_file.convert_any_state_dict(_numpy_state(_random_detector(name)), name)
  ref = backbone_file.convert_any_state_dict(_numpy_state(faster), "faster")
  assert (jax.tree.map(np.shape, tree) == jax.tree.map(np.shape, ref))


def test_old_torchvision_fpn_names_and_bad_fpn_are_named(faster):
  state = _numpy_state(faster)
  old = {k.replace("blocks.0.0.", "blocks.0.").replace("blocks.1.0.", "blocks.1.")
         .replace("blocks.2.0.", "blocks.2.").replace("blocks.3.0.", "blocks.3."): v
         for k, v in state.items()}
  a = backbone_file.convert_any_state_dict(state)["fpn"]
  b = backbone_file.convert_any_state_dict(old)["fpn"]
  jax.tree.map(np.testing.assert_array_equal, a, b)
  broken = dict(state)
  del broken["backbone.fpn.layer_blocks.2.0.weight"]
  with pytest.raises(ValueError, match=r"missing backbone\.fpn\.layer_blocks\.2\.0\.weight "
                                       r"in det\.pth"):
    backbone_file.convert_any_state_dict(broken, "det.pth")
  extra = dict(state)
  extra["backbone.fpn.extra_blocks.p6.weight"] = np.zeros((256, 256, 3, 3), np.float32)
  with pytest.raises(ValueError, match="extra_blocks.p6"):
    backbone_file.convert_any_state_dict(extra, "det.pth")


def test_training_state_merges_backbone_and_fpn(tmp_path, faster):
  """config.train.backbone_init with a converted detector: the model's backbone and FPN
  convolutions are the file's, the GroupNorms we add keep their initialisation, and BatchNorm
  is frozen (torchvision's detectors freeze it too)."""
  tree = backbone_file.convert_any_state_dict(_numpy_state(faster))
  backbone_file.save_backbone(tree, tmp_path / "r50_fpn")
  config = tiny.get_config()
  config.model.update(backbone_stages=(3, 4, 6, 3), backbone_width=64, fpn_features=256)
  config.data.image_size = 64
  config.train.encoder_init = ""
  config.train.backbone_init = str(tmp_path / "r50_fpn")
  train_state.check_initialisation(config)
  assert not model_for(config).trainable_bn
  shapes = jax.eval_shape(lambda: init_variables(config, jax.random.key(0))[1])
  variables = jax.tree.map(lambda s: np.full(s.shape, 7, s.dtype), shapes)
  merged = train_state.load_weight_files(variables, config)
  np.testing.assert_array_equal(merged["params"]["fpn"]["output3"]["kernel"],
                                tree["fpn"]["params"]["output3"]["kernel"])
  np.testing.assert_array_equal(merged["params"]["backbone"]["conv1"]["kernel"],
                                tree["params"]["conv1"]["kernel"])
  np.testing.assert_array_equal(merged["batch_stats"]["backbone"]["bn1"]["var"],
                                tree["batch_stats"]["bn1"]["var"])
  flat = flax.traverse_util.flatten_dict(merged["params"]["fpn"], sep="/")
  assert all(np.all(v == 7) for k, v in flat.items() if k.startswith("norm"))
  assert not np.any(merged["params"]["fpn"]["lateral0"]["kernel"] == 7)
