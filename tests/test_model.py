"""The DFL network: shapes, parameter count, BatchNorm modes, ablation variants, overfitting."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import ablation, default, dfl, dfl_wild
from dfl_jax.tools import summary
from dfl_jax.training import losses
from dfl_jax.network.model import create_model

from conftest import tiny_model_config


def _abstract_outputs(config, batch=2, **kw):
  model = create_model(config.model)
  size = config.data.image_size
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  variables = summary.param_shapes(config)
  return jax.eval_shape(lambda v, x: model.apply(v, x, **kw), variables, images), variables


def test_paper_configuration_shapes_without_compute():
  out, _ = _abstract_outputs(dfl.get_config(), batch=2, return_attention=True)
  assert out["joints"].shape == (2, 42, 3)
  assert out["joints_iterations"].shape == (2, 3, 42, 3)
  assert out["segmentation_logits"].shape == (2, 64, 64, 33)
  # The paper's configuration has Eq. 11's outputs only; the extension heads are dfl_wild's.
  assert "hand_presence_logits" not in out and "rel_root_depth" not in out
  wild, _ = _abstract_outputs(dfl_wild.get_config(), batch=2)
  assert wild["hand_presence_logits"].shape == (2, 2)
  assert wild["rel_root_depth"].shape == (2,)
  att = out["attention"]
  assert att["init"].shape == (2, 42, 8, 8)  # initialisation on the coarsest scale
  assert [m["fused"].shape[2:] for m in att["ji"]] == [(16, 16), (32, 32), (64, 64)]
  assert all(set(m) == {"fused", "appearance", "position"} for m in att["ji"])
  assert all(m["position"].shape == (2, 42, 42) for m in att["jj"])


def test_paper_configuration_parameter_count():
  """The paper reports 42M parameters (Table 4); without extension heads we must land within
  42M +/- 3M."""
  variables = summary.param_shapes(dfl.get_config())
  counts = summary.count_by_module(variables["params"], depth=1)
  total = sum(counts.values())
  assert "hands" not in counts
  assert 39e6 <= total <= 45e6, total
  assert 23.4e6 < counts["backbone"] < 23.6e6  # torchvision ResNet-50 without fc: 23.51M
  table = summary.format_table(summary.count_by_module(variables["params"], depth=2))
  assert table.splitlines()[-1] == f"params: {total}"
  # Appearance features are C_F + C_S = 289 wide (Sec. 3.2).
  assert variables["params"]["decoder"]["init"]["query_a"].shape == (42, 289)


def _tiny_config(size=64, **model_overrides):
  config = default.get_config()
  config.model = tiny_model_config(**model_overrides)
  config.data.image_size = size
  return config


def _batch(n, size, seed=0):
  """A fixed, learnable batch: targets inside the crop, segmentation blocks of the right size."""
  r = np.random.RandomState(seed)
  seg_hw = size // 4
  coarse = r.randint(0, 33, (n, seg_hw // 4, seg_hw // 4))
  return {
      "images": jnp.asarray(r.rand(n, size, size, 3), jnp.float32),
      "joints": jnp.asarray(np.concatenate(
          [r.uniform(8, size - 8, (n, 42, 2)), r.uniform(96, 160, (n, 42, 1))], -1), jnp.float32),
      "joint_valid": jnp.asarray(r.rand(n, 42) > 0.1, jnp.float32),
      "segmentation": jnp.asarray(np.repeat(np.repeat(coarse, 4, 1), 4, 2), jnp.int32),
      "segmentation_valid": jnp.ones((n,), jnp.float32),
      "hand_presence": jnp.asarray(r.rand(n, 2) > 0.3, jnp.float32),
      "rel_root_depth": jnp.asarray(r.uniform(100, 156, (n,)), jnp.float32),
  }


def _loss_fn(model, config, batch_stats, batch, rng):
  def fn(params):
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["images"],
                               train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    loss, terms = losses.total_loss(out, batch, config.loss)
    return loss, (terms, updates)
  return fn


def test_tiny_forward_real():
  config = _tiny_config(size=128)
  model = create_model(config.model)
  x = _batch(2, 128)["images"]
  v = model.init(jax.random.key(0), x)
  out = jax.jit(lambda v, x: model.apply(v, x, return_attention=True))(v, x)
  assert out["joints"].shape == (2, 42, 3)
  assert out["segmentation_logits"].shape == (2, 32, 32, 33)
  for leaf in jax.tree.leaves(out):
    assert np.all(np.isfinite(leaf))
  # Every attention map is a distribution over its keys.
  np.testing.assert_allclose(out["attention"]["init"].sum((-1, -2)), 1.0, rtol=1e-5)
  for maps in out["attention"]["ji"]:
    for m in maps.values():
      np.testing.assert_allclose(m.sum((-1, -2)), 1.0, rtol=1e-5)
  # The two images give different predictions (the model looks at the image).
  assert np.abs(out["joints"][0] - out["joints"][1]).max() > 1e-4


@pytest.mark.parametrize("trainable", [False, True])
def test_batchnorm_frozen_or_trainable(trainable):
  config = _tiny_config(trainable_bn=trainable)
  model = create_model(config.model)
  batch = _batch(2, 64)
  v = model.init(jax.random.key(0), batch["images"])
  (_, (_, updates)), grads = jax.jit(jax.value_and_grad(
      _loss_fn(model, config, v["batch_stats"], batch, jax.random.key(1)), has_aux=True))(
          v["params"])
  bn_grad = np.abs(np.asarray(grads["backbone"]["bn1"]["scale"])).sum()
  conv_grad = np.abs(np.asarray(grads["backbone"]["conv1"]["kernel"])).sum()
  stats_moved = not np.allclose(updates["batch_stats"]["backbone"]["bn1"]["mean"],
                                v["batch_stats"]["backbone"]["bn1"]["mean"])
  assert conv_grad > 0
  assert (bn_grad > 0) == trainable
  assert stats_moved == trainable


def test_extension_head_losses_never_reach_the_appearance_features():
  """configs/dfl_wild.py's heads read concat(stop_gradient(J^a), J^p): their losses train the
  heads and the position stream, and give no gradient to what only J^a feeds (the last J-I
  appearance residual and its final norm). The paper's joint losses reach neither either:
  the final regression reads J^p only (Table 2)."""
  config = _tiny_config(size=64, hand_heads=True)
  model = create_model(config.model)
  batch = _batch(2, 64)
  v = model.init(jax.random.key(0), batch["images"])
  last = config.model.num_iterations - 1

  def head_losses(params):
    out = model.apply({"params": params, "batch_stats": v["batch_stats"]}, batch["images"])
    return (losses.hand_presence_loss(out["hand_presence_logits"], batch["hand_presence"],
                                      jnp.ones(2))
            + losses.root_depth_loss(out["rel_root_depth"], batch["rel_root_depth"],
                                     jnp.ones(2)))

  def magnitude(tree):
    return sum(float(np.abs(np.asarray(g)).sum()) for g in jax.tree.leaves(tree))

  grads = jax.jit(jax.grad(head_losses))(v["params"])["decoder"]
  assert magnitude(grads[f"ji{last}_a"]) == 0.0
  assert magnitude(grads["final_norm_a"]) == 0.0
  assert magnitude(grads[f"ji{last}_p"]) > 0.0      # the position stream does get it
  assert magnitude(jax.jit(jax.grad(head_losses))(v["params"])["hands"]) > 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ablation.ABLATIONS))
def test_every_ablation_variant_runs_forward_and_backward(name):
  config = ablation.get_config(name + ",tiny")
  config.data.image_size = 64
  model = create_model(config.model)
  batch = _batch(2, 64)
  v = model.init(jax.random.key(0), batch["images"])
  fn = _loss_fn(model, config, v["batch_stats"], batch, jax.random.key(1))
  # Compile-bound: XLA's CPU backend without LLVM's optimisations compiles a third faster.
  (loss, (terms, _)), grads = jax.jit(jax.value_and_grad(fn, has_aux=True), compiler_options={
      "xla_backend_optimization_level": 0})(v["params"])
  assert np.isfinite(loss)
  assert ("loss_focal" in terms) == config.model.part_segmentation
  flat = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in flat)
  head_grad = jax.tree.leaves(grads["decoder"]["head_final"])
  assert sum(float(np.abs(g).sum()) for g in head_grad) > 0
  iterations = 0 if config.model.decoder == "pooled" else config.model.num_iterations
  assert terms["loss_2d"].shape == () and (
      model.apply(v, batch["images"])["joints_iterations"].shape[1] == iterations)


def test_ablation_config_rejects_unknown_name():
  with pytest.raises(ValueError, match="table9"):
    ablation.get_config("table9")


def test_unknown_model_field_is_named():
  cfg = ml_collections.ConfigDict(dict(tiny_model_config(), decodr="fused"))
  with pytest.raises(ValueError, match="decodr"):
    create_model(cfg)


@pytest.mark.slow
def test_tiny_model_overfits_four_samples():
  """Loss falls at least 10x on 4 fixed samples within a bounded number of Adam steps."""
  config = _tiny_config(size=64)
  model = create_model(config.model)
  batch = _batch(4, 64, seed=3)
  v = model.init(jax.random.key(0), batch["images"])
  tx = optax.adam(1e-3)
  params, opt_state = v["params"], tx.init(v["params"])

  @jax.jit
  def step(params, opt_state):
    (loss, _), grads = jax.value_and_grad(
        _loss_fn(model, config, v["batch_stats"], batch, jax.random.key(0)), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  history = []
  for _ in range(400):
    params, opt_state, loss = step(params, opt_state)
    history.append(float(loss))
    if history[-1] * 10 <= history[0]:
      break
  print(f"overfit: loss {history[0]:.3f} -> {history[-1]:.3f} in {len(history)} steps")
  assert history[-1] * 10 <= history[0], (history[0], min(history), len(history))
