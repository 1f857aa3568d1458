"""The cross-domain dual-modality system: network (Fig. a, b), augmentations (Sec. B), losses,
stop-gradient (Sec. D), the E_R encoder file in DFL, and the pipeline end to end."""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import crossdomain_tiny, tiny
from conftest import ROOT, build_official_tree
from dfl_jax import conventions, parallel
from dfl_jax.evaluation import crossdomain as cd_evaluation
from dfl_jax.network import dual_modality as dm, model as dfl_model, resnet
from dfl_jax.training import contrastive, crossdomain, modality_augmentation as aug
from dfl_jax.weights import encoder_file
from input_pipeline import dataset_build

STAGES, WIDTH = (1, 1, 1, 1), 16
# These tests are compile-bound: XLA's CPU backend without its LLVM optimisations compiles
# faster and computes the same functions.
QUICK = {"xla_backend_optimization_level": 0}


def quick_jit(fn, **kwargs):
  return jax.jit(fn, compiler_options=QUICK, **kwargs)


def _images(n=2, size=64, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 255, (n, size, size, 3)), jnp.uint8)


def _depth(n=2, size=64, seed=1):
  rng = np.random.default_rng(seed)
  d = rng.uniform(500, 700, (n, size, size)) * (rng.random((n, size, size)) > 0.5)
  return jnp.asarray(d, jnp.float32)


# ------------------------------------------------------------------ the network

def test_staged_resnet_is_resnet_stage_by_stage():
  x = _images()
  net = resnet.ResNet(STAGES, WIDTH, trainable_bn=True)
  variables = net.init(jax.random.PRNGKey(0), x)
  staged = dm.StagedResNet(STAGES, WIDTH, trainable_bn=True)

  def stages(v, y):
    for stage in range(5):
      y = staged.apply(v, y, stage)
    return y

  np.testing.assert_array_equal(np.asarray(quick_jit(stages)(variables, x)),
                                np.asarray(quick_jit(net.apply)(variables, x)[-1]))


def test_encoder_shapes_channels_and_parameter_names():
  net = dm.DualModalityEncoder(STAGES, WIDTH)
  variables = net.init(jax.random.PRNGKey(0), _images(), _depth())
  out = net.apply(variables, _images(), _depth())
  # Fig. b: attention after each downsampling stage, C = 64..2048 at width 64 (here / 4).
  assert [a.shape for a in out["attention"]] == [(2, 16, 16, 1), (2, 16, 16, 1), (2, 8, 8, 1),
                                                 (2, 4, 4, 1), (2, 2, 2, 1)]
  assert all(float(a.min()) > 0 and float(a.max()) < 1 for a in out["attention"])
  for key in ("s_R", "s_F", "s_D"):
    assert out[key].shape == (2, 2, 2, 32 * WIDTH)
  ours = jax.tree_util.tree_structure(variables["params"]["backbone"])
  plain = resnet.ResNet(STAGES, WIDTH, trainable_bn=True).init(jax.random.PRNGKey(0), _images())
  assert ours == jax.tree_util.tree_structure(plain["params"])
  assert sorted(variables["params"]) == sorted(
      ["backbone", "depth_backbone"] + [f"attention{i}" for i in range(1, 6)])
  rgb = dm.DualModalityEncoder(STAGES, WIDTH, attention_source="rgb").init(
      jax.random.PRNGKey(0), _images(), _depth())
  assert {f"rgb_attention{i}" for i in range(1, 6)} <= set(rgb["params"])
  # Without a depth map only the plain RGB stream runs, and it equals the ResNet.
  alone = net.apply(variables, _images(), None)
  assert set(alone) == {"s_R"}
  np.testing.assert_allclose(np.asarray(alone["s_R"]), np.asarray(out["s_R"]), atol=1e-5)


def test_attention_weights_the_fused_stream_and_the_depth_stream():
  net = dm.DualModalityEncoder((1, 1, 1, 1), WIDTH)
  variables = net.init(jax.random.PRNGKey(0), _images(), _depth())
  a = net.apply(variables, _images(), _depth())
  b = net.apply(variables, _images(), _depth(seed=5))
  assert not np.allclose(np.asarray(a["s_F"]), np.asarray(b["s_F"]))   # depth steers RGB
  np.testing.assert_allclose(np.asarray(a["s_R"]), np.asarray(b["s_R"]), atol=1e-5)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_between_rgb_features_and_attention(stop_gradient):
  net = dm.DualModalityEncoder(STAGES, WIDTH, stop_gradient=stop_gradient)
  images, depth = _images(), _depth()
  variables = net.init(jax.random.PRNGKey(0), images, depth)

  def fused_only(params):
    return jnp.sum(jnp.square(net.apply(dict(variables, params=params), images, depth)["s_F"]))

  grads = quick_jit(jax.grad(fused_only))(variables["params"])
  g_attention = sum(float(jnp.sum(jnp.abs(g))) for g in
                    jax.tree_util.tree_leaves([grads[f"attention{i}"] for i in range(1, 6)]))
  g_depth = sum(float(jnp.sum(jnp.abs(g))) for g in
                jax.tree_util.tree_leaves(grads["depth_backbone"]))
  g_rgb = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads["backbone"]))
  assert g_rgb > 0
  if stop_gradient:
    assert g_attention == 0.0 and g_depth == 0.0
  else:
    assert g_attention > 0 and g_depth > 0


def test_depth_input_against_numpy():
  depth = np.asarray(_depth())
  got = np.asarray(dm.depth_input(jnp.asarray(depth)))
  for i in range(depth.shape[0]):
    on = depth[i] > 0
    median = np.median(depth[i][on])
    np.testing.assert_allclose(got[i, ..., 0][on], (depth[i][on] - median) / 200.0, atol=1e-5)
    assert np.all(got[i, ..., 0][~on] == 0) and np.array_equal(got[i, ..., 1] > 0, on)


def test_decoder_heads_and_soft_argmax():
  net = dm.DualModalityNet(STAGES, WIDTH, decoder_features=32, projection_hidden=32,
                           projection_points=8)
  variables = net.init(jax.random.PRNGKey(0), _images(), _depth())
  out = net.apply(variables, _images(), _depth())
  for key in ("R", "F", "D"):
    assert out[key]["depth"].shape == (2, 16, 16)
    assert out[key]["segmentation"].shape == (2, 16, 16, 33)
    assert out[key]["joints_2d"].shape == (2, 42, 2) and out[key]["joints_3d"].shape == (2, 42, 3)
    assert out[key]["projection"].shape == (2, 8, 2)
  peaked = jnp.full((1, 16, 16, 42), -1e4).at[0, 5, 9, :].set(0.0)
  np.testing.assert_allclose(np.asarray(dm.soft_argmax(peaked))[0, 0], [9 * 4 + 1.5, 5 * 4 + 1.5])


# ------------------------------------------------------------------ augmentations and losses

def test_geometric_warp_moves_pixels_and_joints_together():
  size = 64
  geometry = {"angle": jnp.array([math.radians(70.0)]), "scale": jnp.array([0.85]),
              "shift": jnp.array([[4.0, -3.0]])}
  point = np.array([[[20.0, 41.0]]])
  ys, xs = np.mgrid[0:size, 0:size]
  image = np.exp(-((xs - 20.0) ** 2 + (ys - 41.0) ** 2) / (2 * 2.0**2))[None].astype(np.float32)
  moved = np.asarray(aug.warp(jnp.asarray(image), geometry, size, order=1))[0]
  xy = np.asarray(aug.forward_points(jnp.asarray(point), geometry, size))[0, 0]
  centroid = np.array([np.sum(moved * xs), np.sum(moved * ys)]) / np.sum(moved)
  np.testing.assert_allclose(centroid, xy, atol=0.1)     # the blob's centre is the moved point
  near = np.asarray(aug.warp(jnp.asarray(image), geometry, size, order=0))[0]
  peak = np.unravel_index(np.argmax(near), near.shape)
  assert abs(peak[1] - xy[0]) <= 1.5 and abs(peak[0] - xy[1]) <= 1.5   # nearest: a cell off
  identity = {"angle": jnp.zeros(1), "scale": jnp.ones(1), "shift": jnp.zeros((1, 2))}
  rgb = np.asarray(_images(1), np.float32)
  np.testing.assert_allclose(np.asarray(aug.warp(jnp.asarray(rgb), identity, size, order=1)),
                             rgb, atol=1e-4)


def test_geometric_labels_follow_the_image():
  size = 64
  rng = np.random.default_rng(0)
  batch = {"images": jnp.asarray(rng.uniform(0, 255, (2, size, size, 3)), jnp.float32),
           "depth": _depth(), "segmentation": jnp.zeros((2, 16, 16), jnp.int32),
           "joints": jnp.asarray(np.concatenate([rng.uniform(0, 63, (2, 42, 2)),
                                                 rng.uniform(0, 256, (2, 42, 1))], -1)),
           "joint_valid": jnp.ones((2, 42)),
           "joints_3d": jnp.asarray(rng.normal(0, 50, (2, 42, 3)), jnp.float32)}
  geometry = aug.sample_geometry(jax.random.PRNGKey(3), 2, size)
  out = aug.geometric(batch, geometry)
  a = np.asarray(geometry["angle"])
  for i in range(2):
    rot = np.array([[math.cos(a[i]), -math.sin(a[i])], [math.sin(a[i]), math.cos(a[i])]])
    np.testing.assert_allclose(np.asarray(out["joints_3d"])[i, :, :2],
                               np.asarray(batch["joints_3d"])[i, :, :2] @ rot.T, rtol=1e-5,
                               atol=1e-4)
    c = 31.5
    expected = (np.asarray(batch["joints"])[i, :, :2] - c) @ rot.T * float(
        geometry["scale"][i]) + c + np.asarray(geometry["shift"])[i]
    np.testing.assert_allclose(np.asarray(out["joints"])[i, :, :2], expected, atol=1e-3)
    inside = np.all((expected >= 0) & (expected <= 63), -1)
    np.testing.assert_array_equal(np.asarray(out["joint_valid"])[i] > 0, inside)
  np.testing.assert_array_equal(np.asarray(out["joints"])[..., 2], np.asarray(batch["joints"])[..., 2])
  # Sec. B's ranges.
  g = aug.sample_geometry(jax.random.PRNGKey(0), 4000, 256)
  assert float(jnp.max(jnp.abs(g["angle"]))) <= math.pi
  assert 0.8 <= float(g["scale"].min()) and float(g["scale"].max()) <= 1.0
  assert float(jnp.max(jnp.abs(g["shift"]))) <= 20.0 and float(jnp.max(jnp.abs(g["shift"]))) > 19


def test_texture_augmentations():
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)), jnp.float32)
  x = np.asarray(aug.texture_rgb(jax.random.PRNGKey(0), images))
  assert x.shape == images.shape and x.min() >= 0 and x.max() <= 1
  grey = np.all(np.abs(x[..., 0] - x[..., 1]) < 1e-6, axis=(1, 2))
  assert 2 <= grey.sum() <= 30    # grey-scale with probability 0.2 (some pixels may be erased)
  depth = jnp.full((64, 32, 32), 600.0)
  d = np.asarray(aug.texture_depth(jax.random.PRNGKey(1), depth))
  zero = np.mean(d == 0, axis=(1, 2))
  assert np.any(zero > 0.02)                 # erased rectangles
  changed = np.mean((d != 600.0) & (d != 0), axis=(1, 2))
  assert 0.003 < changed.mean() < 0.02        # salt: about 1% of the pixels


def test_undo_geometry_inverts_the_view():
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(3, 8, 2)), jnp.float32)
  geometry = aug.sample_geometry(jax.random.PRNGKey(2), 3, 64)
  a = geometry["angle"]
  r = jnp.stack([jnp.stack([jnp.cos(a), -jnp.sin(a)], -1), jnp.stack([jnp.sin(a), jnp.cos(a)], -1)], -2)
  viewed = jnp.einsum("bij,bkj->bki", r, z) * geometry["scale"][:, None, None] + \
      geometry["shift"][:, None, :] / 64
  np.testing.assert_allclose(np.asarray(contrastive.undo_geometry(viewed, geometry, 64)),
                             np.asarray(z), atol=1e-5)


def _nt_xent_reference(embeddings, mask, temperature):
  v, b, _ = embeddings.shape
  z = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
  items = [(i, j) for i in range(v) for j in range(b) if mask[j]]
  losses = []
  for (vi, bi) in items:
    others = [(vj, bj) for (vj, bj) in items if (vj, bj) != (vi, bi)]
    logits = np.array([z[vi, bi] @ z[vj, bj] / temperature for vj, bj in others])
    log_den = np.log(np.sum(np.exp(logits)))
    pos = [logits[k] - log_den for k, (vj, bj) in enumerate(others) if bj == bi]
    losses.append(-np.mean(pos))
  return np.mean(losses)


def test_nt_xent_against_numpy():
  rng = np.random.default_rng(0)
  e = rng.normal(size=(6, 5, 7))
  mask = np.array([1, 1, 0, 1, 1], np.float32)
  got = float(contrastive.multi_positive_nt_xent(jnp.asarray(e), jnp.asarray(mask), 0.1))
  assert got == pytest.approx(_nt_xent_reference(e, mask, 0.1), rel=1e-5)
  # Identical views of distinct samples: far lower than random embeddings.
  same = np.repeat(rng.normal(size=(1, 5, 7)), 6, axis=0)
  assert float(contrastive.multi_positive_nt_xent(jnp.asarray(same), jnp.ones(5), 0.1)) < got


# ------------------------------------------------------------------ into DFL

def test_rgb_encoder_file_fits_dfl(tmp_path):
  config = crossdomain_tiny.get_config()
  model = dm.create_model(config)
  variables = crossdomain.init_variables(model, config, jax.random.PRNGKey(0))
  path = crossdomain.export_rgb_encoder(variables, tmp_path / "encoder_rgb.npz", config)
  flat, meta = encoder_file.load(path)
  assert meta["modules"] == ["backbone"]
  dfl_config = tiny.get_config()
  shapes = jax.eval_shape(lambda: dfl_model.init_variables(dfl_config, jax.random.key(0))[1])
  merged = encoder_file.merge(shapes, flat, "encoder_rgb.npz")
  ours = variables["params"]["encoder"]["backbone"]["layer2"]["0"]["conv2"]["kernel"]
  np.testing.assert_array_equal(merged["params"]["backbone"]["layer2"]["0"]["conv2"]["kernel"],
                                np.asarray(ours))


def test_evaluation_scores_genuine_interhand_records(tmp_path, fixtures):
  """``--eval_data_dir``'s path: the fixture frames built by ``input_pipeline.build`` (no depth,
  no parts) scored by an untrained model: every frame, every valid joint with a valid wrist."""
  build_official_tree(fixtures, tmp_path / "ih")
  dataset_build.build(tmp_path / "ih", tmp_path / "tfds", splits=("test",), workers=1)
  config = crossdomain_tiny.get_config()
  model = dm.create_model(config)
  variables = crossdomain.init_variables(model, config, jax.random.PRNGKey(0))
  data = crossdomain.eval_data_config(config, str(tmp_path / "tfds"), "test")
  result = cd_evaluation.evaluate(model, variables, data, 4, parallel.make_mesh(), split="test")
  with open(fixtures / "interhand26m_samples" / "test_interhand2.6m_data.json") as f:
    annotations = json.load(f)["annotations"]
  expected = 0
  for a in annotations:
    valid = np.asarray(a["joint_valid"], np.float64).reshape(42)
    expected += int(np.sum(valid * valid[conventions.ROOT_OF]))
  assert result["num_images"] == len(annotations) == 4
  assert result["num_joints"] == expected
  for key in ("epe_mm", "pck_005", "epe_mm_corrected"):
    assert math.isfinite(result[key]), key
  assert result["epe_mm"] > 1.0


@pytest.mark.slow
def test_command_line_mistakes_are_one_line(tmp_path):
  # The pipeline itself runs end to end in tests/test_notebooks.py (colab/crossdomain.ipynb
  # calls crossdomain.run stage by stage, then trains DFL from the exported E_R).
  base = [sys.executable, "-m", "dfl_jax.crossdomain", "--config=configs/crossdomain_tiny.py"]
  for args, needle in (([], "--workdir"),
                       ([f"--workdir={tmp_path / 'w'}", "--config.crossdomain.num_lables=3"],
                        "num_labels"),
                       ([f"--workdir={tmp_path / 'w'}", "--label_sweep=a"], "label_sweep"),
                       ([f"--workdir={tmp_path / 'w'}", f"--eval_data_dir={tmp_path / 'none'}"],
                        "--eval_data_dir")):
    proc = subprocess.run(base + args, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert lines and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / "w").exists()
