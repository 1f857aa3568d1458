"""Mixed precision: float32 weights, low-precision compute, float32 outputs; float16 loss scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfl_jax.training import mixed_precision as mp

SIZE = 128  # configs/tiny.py's input size


def _tiny(dtype="float32", size=SIZE, batch=2):
  from configs import tiny  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.train.encoder_init = ""  # untrained weights: the tolerances below were measured on them
  config.model.dtype = dtype
  config.data.image_size = size
  config.train.batch_size = batch
  return config


@pytest.fixture(scope="module")
def tiny_variables():
  from dfl_jax.network.model import init_variables  # pylint: disable=import-outside-toplevel
  _, variables = init_variables(_tiny(), jax.random.key(0))
  images = jax.random.randint(jax.random.key(1), (2, SIZE, SIZE, 3), 0, 256).astype(jnp.uint8)
  return variables, images


def _apply(dtype, variables, images):
  from dfl_jax.network.model import create_model  # pylint: disable=import-outside-toplevel
  model = create_model(_tiny(dtype).model)
  return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)


def test_bfloat16_predictions_agree_with_float32(tiny_variables):
  """The same float32 weights run in bfloat16 and in float32 (tiny model, 128 px, untrained).

  bfloat16 keeps 8 significant bits (rounding error 2^-9 = 0.2%); through the ResNet, FPN and
  decoder it adds up to about 1% of a feature's norm. Tolerances (measured differences in
  brackets): joints and intermediate joints within 0.5 px of the 128 px crop in x, y and 0.5
  depth units (0.8 mm) in z [0.1-0.2]; relative root depth within 0.5 depth units [0.1];
  segmentation logits within 0.15 [0.06], their spread being ~0.7, and 5% relative L2 error
  [1.6%]; hand presence logits within 0.05 [0.02], i.e. probabilities within 1.25%.
  """
  variables, images = tiny_variables
  ref = _apply("float32", variables, images)
  low = _apply("bfloat16", variables, images)
  assert ref.keys() == low.keys()
  atol = {"joints": 0.5, "joints_iterations": 0.5, "rel_root_depth": 0.5,
          "segmentation_logits": 0.15, "hand_presence_logits": 0.05}
  assert set(atol) == set(ref)
  for k, tol in atol.items():
    assert low[k].dtype == jnp.float32, k  # outputs are float32 whatever the compute dtype
    np.testing.assert_allclose(low[k], ref[k], atol=tol, rtol=0, err_msg=k)
  a, b = np.asarray(ref["segmentation_logits"]), np.asarray(low["segmentation_logits"])
  assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(a)


def test_weights_stay_float32_and_convolutions_run_in_the_compute_dtype(tiny_variables):
  from dfl_jax.network.model import create_model  # pylint: disable=import-outside-toplevel
  variables, images = tiny_variables
  model = create_model(_tiny("bfloat16").model)
  init = jax.eval_shape(lambda r: model.init({"params": r}, images, train=False),
                        jax.random.key(0))
  assert {x.dtype for x in jax.tree.leaves(init)} == {jnp.dtype(jnp.float32)}
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
  convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
  if not convs:  # nested in pjit/closed_call
    convs = [e for e in _all_eqns(jaxpr.jaxpr) if e.primitive.name == "conv_general_dilated"]
  assert convs and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)


def _all_eqns(jaxpr):
  for e in jaxpr.eqns:
    yield e
    for p in e.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        inner = getattr(sub, "jaxpr", None)
        if inner is not None:
          yield from _all_eqns(getattr(inner, "jaxpr", inner))


def test_loss_scale_halves_on_non_finite_and_grows_after_a_period():
  s = mp.init_loss_scale(1024.0)
  s = mp.update_loss_scale(s, jnp.asarray(False), period=3)
  assert float(s.scale) == 512.0 and int(s.good_steps) == 0
  for expected_good in (1, 2):
    s = mp.update_loss_scale(s, jnp.asarray(True), period=3)
    assert float(s.scale) == 512.0 and int(s.good_steps) == expected_good
  s = mp.update_loss_scale(s, jnp.asarray(True), period=3)  # the third finite step in a row
  assert float(s.scale) == 1024.0 and int(s.good_steps) == 0
  s = mp.update_loss_scale(mp.LossScale(jnp.float32(1.0), jnp.int32(5)), jnp.asarray(False))
  assert float(s.scale) == 1.0 and int(s.good_steps) == 0  # never below min_scale
  s = mp.update_loss_scale(mp.init_loss_scale(2.0**24), jnp.asarray(True), period=1)
  assert float(s.scale) == 2.0**24  # never above max_scale


def test_unscale_and_all_finite():
  s = mp.init_loss_scale(8.0)
  grads = {"a": jnp.full((3,), 16.0), "b": {"c": jnp.asarray(-8.0)}}
  out = mp.unscale(grads, s)
  np.testing.assert_array_equal(out["a"], 2.0)
  assert float(out["b"]["c"]) == -1.0
  assert bool(mp.all_finite(out))
  assert not bool(mp.all_finite({"a": jnp.asarray([1.0, jnp.inf])}))
  assert not bool(mp.all_finite({"a": jnp.asarray([jnp.nan])}))
  assert mp.uses_loss_scaling({"dtype": "float16"})
  assert not mp.uses_loss_scaling({"dtype": "bfloat16"})


@pytest.mark.slow
def test_float16_train_step_skips_an_overflowing_step_and_halves_the_scale():
  """One tiny float16 step on CPU (XLA CPU runs float16 convolutions) with a loss scale so large
  that the gradients overflow: no update, the scale halves (to the cap first), the run goes on.
  With a sane scale the next step updates the parameters."""
  import sys  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from dfl_jax import parallel  # pylint: disable=import-outside-toplevel
  from dfl_jax.training.state import create_optimizer, create_train_state
  from dfl_jax.training.step import make_train_step  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, str(pathlib.Path(__file__).parent))
  from test_train import _batch  # pylint: disable=import-outside-toplevel
  config = _tiny("float16", size=64, batch=2)
  config.train.loss_scale_init = 1e30
  mesh = parallel.make_mesh()
  tx = create_optimizer(config, 10)
  model, state = create_train_state(config, jax.random.key(0), tx)
  assert isinstance(state.loss_scale, mp.LossScale)
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  state = jax.device_put(state, NamedSharding(mesh, P()))
  step = make_train_step(model, tx, config.loss, mesh, loss_scale_period=2)
  batch = parallel.to_global(_batch(2, 64), mesh)
  before = jax.device_get(state.params)

  state, m = step(state, batch)
  assert np.isfinite(float(m["loss"])) and not np.isfinite(float(m["grad_norm"]))
  assert int(state.first_bad_step) == -1  # not a reason to stop
  assert float(state.loss_scale.scale) == 2.0**24  # halved, then capped
  same = jax.tree.map(np.array_equal, before, jax.device_get(state.params))
  assert all(jax.tree.leaves(same))

  # Same shardings as before, so the compiled step is reused.
  state = jax.device_put(state.replace(loss_scale=mp.init_loss_scale(256.0)),
                         NamedSharding(mesh, P()))
  state, m = step(state, batch)
  assert np.isfinite(float(m["grad_norm"])) and float(m["loss_scale"]) == 256.0
  assert int(state.loss_scale.good_steps) == 1 and int(state.step) == 2
  assert step._cache_size() == 1  # pylint: disable=protected-access  # compiled once, reused
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), before, jax.device_get(state.params))
  assert max(jax.tree.leaves(moved)) > 0
