"""dfl_jax.serving.prepared: weights cast and laid out once give the same outputs, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfl_jax.network import model as model_lib
from dfl_jax.serving import prepared


@pytest.fixture(scope="module")
def tiny_bf16():
  from configs import tiny  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.model.dtype = "bfloat16"
  config.train.encoder_init = ""
  model, variables = model_lib.init_variables(config, jax.random.key(0))
  images = jnp.asarray(np.random.RandomState(0).randint(0, 256, (2, 128, 128, 3)), jnp.uint8)
  return model, variables, images


def _paths(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
  return {jax.tree_util.keystr(p): x for p, x in flat}


def test_cast_targets_are_the_weights_the_model_only_casts(tiny_bf16):
  model, variables, images = tiny_bf16
  fn = lambda v, x: model.apply(v, x, train=False)
  targets = _paths(prepared.cast_targets(fn, variables, images))
  cast = {k for k, t in targets.items() if t is not None}
  assert all(targets[k] == jnp.bfloat16 for k in cast)
  # Convolution and Dense kernels are cast to bfloat16 for their matmuls...
  assert "['params']['backbone']['conv1']['kernel']" in cast
  assert "['params']['decoder']['ji0']['key_a']['kernel']" in cast
  # ...what the model reads in float32 is not: BatchNorm statistics, the initial queries
  # (float32 logits, decoder.py) and the hand heads' float32 presence layer.
  assert not any("batch_stats" in k for k in cast)
  assert "['params']['decoder']['init']['query_a']" not in cast
  assert "['params']['hands']['presence']['kernel']" not in cast
  # A float32 model casts nothing.
  model32 = model.clone(dtype=jnp.float32)
  fn32 = lambda v, x: model32.apply(v, x, train=False)
  assert all(t is None for t in _paths(prepared.cast_targets(fn32, variables, images)).values())


@pytest.mark.parametrize("layouts", [False, True])
def test_prepared_weights_give_identical_outputs(tiny_bf16, layouts):
  model, variables, images = tiny_bf16
  fn = lambda v, x: model.apply(v, x, train=False)
  compiled, ready = prepared.compile_inference(fn, variables, images, layouts=layouts)
  kinds = {jnp.dtype(x.dtype) for x in jax.tree.leaves(ready["params"])}
  assert kinds == {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)}
  want = jax.jit(fn)(variables, images)
  got = compiled(ready, images)
  for key in want:
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)


def test_predictor_serves_prepared_weights_and_names_bad_crops(trained_workdir):
  """inference.Predictor (weights prepared once) returns what model.apply returns, padding a
  partial batch; crops of another size or dtype are refused with the expected form named."""
  from dfl_jax.serving import inference  # pylint: disable=import-outside-toplevel
  net = inference.load_model(trained_workdir)
  size = net.image_size
  crops = np.random.RandomState(1).randint(0, 256, (3, size, size, 3)).astype(np.uint8)
  got = inference.Predictor(net, batch_size=2)(crops)
  want = jax.jit(lambda v, x: net.model.apply(v, x, train=False))(net.variables, crops)
  for key, value in got.items():
    np.testing.assert_allclose(value, np.asarray(want[key]), rtol=1e-5, atol=1e-5,
                               err_msg=key)
  predictor = inference.Predictor(net, batch_size=2)
  with pytest.raises(ValueError, match=rf"uint8 crops \[N, {size}, {size}, 3\].*float32"):
    predictor(crops.astype(np.float32) / 255)
  with pytest.raises(ValueError, match=r"uint8 crops .*\[3, 64, 64, 3\]"):
    predictor(crops[:, :64, :64])
