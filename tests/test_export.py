"""The exported model (SavedModel through jax2tf, or jax.export) computes what the Flax model
computes, on a tiny DFL trained briefly on synthetic data."""

import json

import jax
import numpy as np
import pytest

from dfl_jax.serving import export, inference


@pytest.fixture(scope="module")
def net(trained_workdir):
  return inference.load_model(workdir=trained_workdir)


@pytest.fixture(scope="module")
def reference(net):
  images = np.random.default_rng(0).random((3, net.image_size, net.image_size, 3), np.float32)
  expected = jax.device_get(jax.jit(export.serving_fn(net.model))(net.variables, images))
  return images, expected


def _check(outputs, expected):
  assert sorted(outputs) == sorted(expected) == sorted(export.OUTPUTS)
  for k, v in expected.items():
    assert outputs[k].shape == v.shape
    np.testing.assert_allclose(outputs[k], v, rtol=1e-5, atol=1e-5, err_msg=k)


def test_saved_model_equals_the_flax_model(net, reference, tmp_path):
  if not export.tensorflow_available():
    pytest.skip("TensorFlow with jax2tf is not installed")
  record = export.export(net, tmp_path, "saved_model")
  assert record["format"] == "saved_model" and record["step"] == net.step
  assert json.loads((tmp_path / "export.json").read_text())["input"]["shape"] == [
      None, net.image_size, net.image_size, 3]
  images, expected = reference
  _check(export.load_saved_model(tmp_path / record["path"])(images), expected)


def test_jax_export_equals_the_flax_model(net, reference, tmp_path):
  record = export.export(net, tmp_path, "jax_export")
  assert record["format"] == "jax_export"
  images, expected = reference
  _check(export.load_jax_export(tmp_path)(images), expected)


def test_unknown_format_is_refused(net, tmp_path):
  with pytest.raises(ValueError, match="--format"):
    export.export(net, tmp_path, "onnx")
