"""torch ResNet-50 state dict -> Flax backbone: the features must match torch's."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfl_jax import errors
from dfl_jax.network import resnet
from dfl_jax.weights import backbone_file

torch = pytest.importorskip(
    "torch", reason="needs the CPU torch (pip install torch==2.13.0) for the reference model")
nn = torch.nn
safetensors_numpy = pytest.importorskip("safetensors.numpy")

TOL = 1e-4  # atol and rtol; features are O(1) (max |value| ~2-4 here)


class Bottleneck(nn.Module):
  """torchvision's Bottleneck (v1.5: the stride is on conv2), same attribute names."""

  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class TorchResNet50(nn.Module):
  """torchvision.models.resnet50 without torchvision: identical state-dict keys."""

  def __init__(self, num_classes=1000):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    self.layer1 = self._make_layer(64, 3)
    self.layer2 = self._make_layer(128, 4, stride=2)
    self.layer3 = self._make_layer(256, 6, stride=2)
    self.layer4 = self._make_layer(512, 3, stride=2)
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(512 * 4, num_classes)

  def _make_layer(self, planes, blocks, stride=1):
    downsample = nn.Sequential(
        nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
        nn.BatchNorm2d(planes * 4))
    layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * 4
    layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def features(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    c2 = self.layer1(x)
    c3 = self.layer2(c2)
    c4 = self.layer3(c3)
    c5 = self.layer4(c4)
    return [c2, c3, c4, c5]


def randomise_batchnorm(module):
  """BatchNorm affine and statistics away from the identity, so that conversion mistakes in
  them show in the features. Returns ``module`` in eval mode."""
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return module.eval()


def _random_torch_resnet(seed=0):
  torch.manual_seed(seed)
  return randomise_batchnorm(TorchResNet50())


def _numpy_state(model):
  return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def torch_model():
  return _random_torch_resnet()


@pytest.fixture(scope="module")
def state(torch_model):
  return _numpy_state(torch_model)


@pytest.fixture(scope="module")
def backbone_vars():
  """Variables shaped like ``ResNet().init``'s, filled with zeros (a real init is slow on CPU)."""
  shapes = jax.eval_shape(resnet.ResNet().init, jax.random.PRNGKey(1), jnp.zeros((1, 64, 64, 3)))
  return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_features_match_torch(tmp_path, torch_model, state):
  src = tmp_path / "resnet50.safetensors"
  safetensors_numpy.save_file(state, str(src))
  backbone_file.main(["--src", str(src), "--out", str(tmp_path / "backbone")])
  tree = backbone_file.load_backbone(tmp_path / "backbone")
  direct = backbone_file.convert_state_dict(backbone_file.load_state_dict(src))
  jax.tree_util.tree_map(np.testing.assert_array_equal, tree, direct)

  images = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
  feats = resnet.ResNet().apply(tree, jnp.asarray(images), train=False)

  mean = np.asarray(resnet.IMAGENET_MEAN, np.float32)
  std = np.asarray(resnet.IMAGENET_STD, np.float32)
  x = torch.from_numpy(((images - mean) / std).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    ref = [f.numpy().transpose(0, 2, 3, 1) for f in torch_model.features(x)]

  assert [f.shape for f in feats] == [(1, 16, 16, 256), (1, 8, 8, 512), (1, 4, 4, 1024),
                                      (1, 2, 2, 2048)]
  for level, (got, want) in enumerate(zip(feats, ref), start=2):
    err = float(np.abs(np.asarray(got) - want).max())
    print(f"C{level}: max|diff| {err:.3e}, max|torch| {np.abs(want).max():.3e}")
    np.testing.assert_allclose(np.asarray(got), want, rtol=TOL, atol=TOL,
                               err_msg=f"C{level}")


def test_pth_weights_only_round_trip(tmp_path, torch_model, state):
  src = tmp_path / "resnet50.pth"
  torch.save({"epoch": 3, "state_dict": torch_model.state_dict()}, src)
  loaded = backbone_file.load_state_dict(src)
  assert set(loaded) == set(state)
  for k in state:
    np.testing.assert_array_equal(loaded[k], state[k])
  backbone_file.convert_state_dict(loaded)


def test_pth_refuses_pickled_objects(tmp_path, state):
  src = tmp_path / "evil.pth"
  torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "obj": _Opaque()}, src)
  with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
    backbone_file.load_state_dict(src)


class _Opaque:
  pass


def test_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
  src = tmp_path / "resnet50.pth"
  src.write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match="safetensors"):
    backbone_file.load_state_dict(src)


@pytest.mark.slow
def test_package_does_not_import_torch():
  code = "import sys, dfl_jax.weights.backbone_file; assert 'torch' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_refuses_existing_out(tmp_path, state, capsys):
  src = tmp_path / "resnet50.safetensors"
  safetensors_numpy.save_file(state, str(src))
  (tmp_path / "out").mkdir()
  with pytest.raises(SystemExit) as e:  # the command's error style: one line, exit 2
    errors.call(backbone_file.main, ["--src", str(src), "--out", str(tmp_path / "out")])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "--force" in err and "Traceback" not in err


def test_prefix_is_stripped(state):
  plain = backbone_file.convert_state_dict(state)
  for prefix in ("module.", "backbone.", "model.", "module.backbone."):
    tree = backbone_file.convert_state_dict({prefix + k: v for k, v in state.items()})
    jax.tree_util.tree_map(np.testing.assert_array_equal, tree, plain)


def test_missing_key_is_named(state):
  broken = {k: v for k, v in state.items() if k != "layer3.2.bn2.running_var"}
  with pytest.raises(ValueError, match=r"missing.*layer3\.2\.bn2\.running_var"):
    backbone_file.convert_state_dict(broken, source="some.safetensors")
  broken = {"module." + k: v for k, v in state.items() if k != "conv1.weight"}
  with pytest.raises(ValueError, match=r"missing.*conv1\.weight"):
    backbone_file.convert_state_dict(broken)


def test_unknown_key_is_named(state):
  extra = dict(state, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"unknown.*layer5\.0\.conv1\.weight"):
    backbone_file.convert_state_dict(extra)


def test_wrong_shape_is_named(state):
  broken = dict(state)
  broken["layer2.0.downsample.0.weight"] = np.zeros((512, 128, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"layer2\.0\.downsample\.0\.weight.*\(512, 128, 1, 1\)"):
    backbone_file.convert_state_dict(broken, source="r50.safetensors")
  with pytest.raises(ValueError, match=r"r50\.safetensors"):
    backbone_file.convert_state_dict(broken, source="r50.safetensors")


def test_pickle_suffix_is_refused(tmp_path):
  src = tmp_path / "resnet50.pkl"
  src.write_bytes(b"not read")
  with pytest.raises(ValueError, match="unsupported"):
    backbone_file.load_state_dict(src)


def test_merge_backbone(state, backbone_vars):
  other = {"head": {"kernel": np.full((3, 2), 7.0, np.float32)}}
  variables = {"params": {"backbone": backbone_vars["params"], "other": other},
               "batch_stats": {"backbone": backbone_vars["batch_stats"]}}
  tree = backbone_file.convert_state_dict(state)
  merged = backbone_file.merge_backbone(variables, tree)

  assert merged["params"]["other"] is not variables["params"]["other"]
  np.testing.assert_array_equal(merged["params"]["other"]["head"]["kernel"],
                                other["head"]["kernel"])
  assert set(merged["params"]) == {"backbone", "other"}
  jax.tree_util.tree_map(np.testing.assert_array_equal, merged["params"]["backbone"],
                         tree["params"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, merged["batch_stats"]["backbone"],
                         tree["batch_stats"])
  # The input is not modified.
  assert not np.array_equal(variables["params"]["backbone"]["conv1"]["kernel"],
                            tree["params"]["conv1"]["kernel"])

  bad = jax.tree_util.tree_map(lambda x: x, tree)
  bad["params"]["layer1"]["0"]["conv1"]["kernel"] = np.zeros((1, 1, 64, 65), np.float32)
  with pytest.raises(ValueError, match=r"layer1/0/conv1/kernel"):
    backbone_file.merge_backbone(variables, bad)
