"""Im2Hands' networks: HALO's part frames, the image pathway and K (shapes, invariants, NumPy)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dfl_jax.network import (hand_frames, image_features, initial_occupancy as io,
                             keypoint_refinement as kr, two_hand_refinement as rf)
from input_pipeline import hand_model

TINY_K = dict(index_features=8, coord_features=24, heads=2, regressor_hidden=32,
              image_stages=(1, 1, 1, 1), image_width=8, image_features_dim=16, vit_dim=32,
              vit_depth=1, vit_heads=2)


def _hand(seed, left=False):
  rng = np.random.default_rng(seed)
  joints, _ = hand_model.kinematics(hand_model.sample_angles(rng), 1.0, left)
  return joints


def test_part_frames_are_rotations_along_the_bones():
  joints = jnp.asarray(np.stack([_hand(s) for s in range(4)]))
  origins, rot, lengths = hand_frames.part_frames(joints)
  assert rot.shape == (4, 16, 3, 3) and origins.shape == (4, 16, 3)
  eye = np.broadcast_to(np.eye(3), rot.shape)
  np.testing.assert_allclose(np.einsum("bpij,bpkj->bpik", rot, rot), eye, atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(np.asarray(rot)), 1.0, atol=1e-5)
  proximal, distal = hand_frames.PART_BONES.T
  bone = np.asarray(joints)[:, distal] - np.asarray(joints)[:, proximal]
  np.testing.assert_allclose(lengths, np.linalg.norm(bone, axis=-1), rtol=1e-5)
  # y runs along each part's bone: the distal joint sits at (0, length, 0).
  tip = hand_frames.local_coordinates(joints[:, distal], origins, rot)        # [B, 16, 16, 3]
  on_own_axis = np.asarray(tip)[:, np.arange(16), np.arange(16)]
  np.testing.assert_allclose(on_own_axis[..., 1], lengths, rtol=1e-4)
  np.testing.assert_allclose(on_own_axis[..., [0, 2]], 0.0, atol=1e-3)


def test_local_coordinates_do_not_move_with_the_hand():
  rng = np.random.default_rng(5)
  joints = _hand(7)
  points = rng.uniform(-80, 120, (100, 3))
  rot = hand_model.random_rotation(rng)
  shift = rng.uniform(-300, 300, 3) + np.array([0, 0, 600])
  before = hand_frames.local_coordinates(jnp.asarray(points),
                                         *hand_frames.part_frames(jnp.asarray(joints))[:2])
  after = hand_frames.local_coordinates(jnp.asarray(points @ rot.T + shift),
                                        *hand_frames.part_frames(jnp.asarray(
                                            joints @ rot.T + shift))[:2])
  np.testing.assert_allclose(after, before, atol=1e-3)


def test_a_mirrored_left_hand_has_the_right_hands_coordinates():
  rng = np.random.default_rng(6)
  right = _hand(8)
  left = right * np.array([-1.0, 1.0, 1.0])            # the same hand, left
  points = rng.uniform(-80, 120, (50, 3))
  expect = hand_frames.local_coordinates(jnp.asarray(points),
                                         *hand_frames.part_frames(jnp.asarray(right))[:2])
  mirrored = hand_frames.mirror(jnp.asarray(left), True)
  got = hand_frames.local_coordinates(hand_frames.mirror(jnp.asarray(points * [-1, 1, 1]), True),
                                      *hand_frames.part_frames(mirrored)[:2])
  np.testing.assert_allclose(got, expect, atol=1e-4)
  np.testing.assert_allclose(hand_frames.mirror(jnp.asarray(right), False), right)


def test_vit_tokens_and_image_encoder_shapes():
  enc = image_features.ImageEncoderDecoder((1, 1, 1, 1), 8, 16, 32)
  images = jnp.zeros((2, 64, 64, 3), jnp.uint8)
  fmap, z = jax.eval_shape(lambda: enc.init_with_output(jax.random.key(0), images)[0])
  assert fmap.shape == (2, 32, 32, 16) and z.shape == (2, 32)
  vit = image_features.PatchViT(32, 1, 2, 8)
  tokens = jax.eval_shape(lambda: vit.init_with_output(jax.random.key(0), jnp.zeros(
      (2, 32, 32, 16)))[0])
  assert tokens.shape == (2, 16, 32)


def test_graph_convolution_against_numpy():
  a = kr.normalized_adjacency()
  np.testing.assert_allclose(a, a.T)
  assert np.all(np.linalg.eigvalsh(a) <= 1.0 + 1e-5)   # a normalised adjacency's spectrum
  layer = kr.GraphConvolution()
  h = jax.random.normal(jax.random.key(1), (2, 42, 12))
  variables = layer.init(jax.random.key(2), h)
  got = layer.apply(variables, h)
  w = np.asarray(variables["params"]["weight"]["kernel"])
  y = np.einsum("ij,bjc->bic", a, np.asarray(h) @ w)
  mean, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
  norm = (y - mean) / np.sqrt(var + 1e-6)
  np.testing.assert_allclose(got, np.asarray(h) + np.maximum(norm, 0.0), atol=1e-4)


def test_untrained_k_is_the_identity_and_trains_towards_the_truth():
  model = kr.KeypointRefinement(**TINY_K)
  rng = np.random.default_rng(9)
  truth = np.concatenate([_hand(10) + [40, 0, 600], _hand(11, left=True) + [-40, 0, 600]])
  noisy = truth + rng.normal(0, 8.0, truth.shape)
  images = jnp.asarray(rng.integers(0, 255, (1, 64, 64, 3)), jnp.uint8)
  joints = jnp.asarray(noisy[None], jnp.float32)
  variables = model.init(jax.random.key(0), images, joints)
  np.testing.assert_array_equal(model.apply(variables, images, joints), joints)

  tx = optax.adam(3e-3)
  params, opt = variables["params"], tx.init(variables["params"])

  def loss(p, key):
    out = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, images, joints,
                      train=True, rngs={"dropout": key})
    return jnp.mean(jnp.linalg.norm(out - truth[None], axis=-1))

  @jax.jit
  def step(p, o, key):
    value, grads = jax.value_and_grad(loss)(p, key)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, value

  first = None
  for i in range(40):
    params, opt, value = step(params, opt, jax.random.key(i))
    first = float(value) if first is None else first
  assert float(value) < 0.7 * first, (first, float(value))   # 13.5 -> 7.3 mm measured


TINY_I = dict(hidden=32, layers=3, pose_code=2, attention_features=16, heads=2,
              image_stages=(1, 1, 1, 1), image_width=8, image_features_dim=16, vit_dim=16,
              vit_depth=1, vit_heads=2)


def test_query_image_attention_is_the_query_row_of_self_attention():
  rng = jax.random.key(3)
  queries = jax.random.normal(rng, (2, 5, 16))
  patches = jax.random.normal(jax.random.key(4), (2, 7, 16))
  layer = io.QueryImageAttention(heads=2)
  variables = layer.init(jax.random.key(5), queries, patches)
  got = layer.apply(variables, queries, patches)
  mha = nn.MultiHeadDotProductAttention(num_heads=2)
  for m in range(5):
    tokens = jnp.concatenate([queries[:, m:m + 1], patches], 1)
    want = mha.apply(variables, queries[:, m:m + 1], tokens)[:, 0]
    np.testing.assert_allclose(got[:, m], want, atol=1e-5)


def test_part_occupancy_is_one_mlp_per_part_against_numpy():
  rng = np.random.default_rng(7)
  inputs = rng.normal(size=(2, 3, 5, 16, 6)).astype(np.float32)       # [B, hands, N, parts, D]
  feature = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)          # [B, hands, N, F]
  for image in (None, feature):
    layer = io.PartOccupancy(hidden=8, layers=3)
    variables = layer.init(jax.random.key(8), inputs, image)
    p = jax.tree.map(np.asarray, variables["params"])
    assert p["layer1_kernel"].shape == (16, 6, 8) and p["out_kernel"].shape == (16, 8, 1)
    assert p["layer2_kernel"].shape == (16, 8 + (0 if image is None else 4), 8)
    # Noisy biases, so that each part's bias is exercised.
    p = {k: v + rng.normal(size=v.shape).astype(np.float32) * 0.1 if k.endswith("bias") else v
         for k, v in p.items()}
    got = np.asarray(layer.apply({"params": p}, inputs, image))
    want = np.zeros(inputs.shape[:-1], np.float32)
    for part in range(16):
      x = np.maximum(inputs[..., part, :] @ p["layer1_kernel"][part] + p["layer1_bias"][part], 0)
      if image is not None:
        x = np.concatenate([x, image], -1)
      x = np.maximum(x @ p["layer2_kernel"][part] + p["layer2_bias"][part], 0)
      x = np.maximum(x @ p["layer3_kernel"][part] + p["layer3_bias"][part], 0)
      want[..., part] = (x @ p["out_kernel"][part] + p["out_bias"][part])[..., 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _two_hands():
  return np.concatenate([_hand(12) + [45, 0, 600], _hand(13, left=True) + [-45, 0, 620]])


def test_initial_occupancy_shapes_switches_and_rigid_invariance():
  rng = np.random.default_rng(14)
  joints = _two_hands()
  near = rng.integers(0, 21, 64)
  queries = (joints.reshape(2, 21, 3)[:, near] + rng.normal(0, 20.0, (2, 64, 3)))[None]
  images = jnp.zeros((1, 64, 64, 3), jnp.uint8)
  focal, princpt = jnp.array([[150.0, 150.0]]), jnp.array([[32.0, 32.0]])
  trees = {}
  for name, kw in (("full", {}), ("no_image", dict(image_conditioning=False)),
                   ("pixel_aligned", dict(query_image_attention=False))):
    model = io.InitialOccupancy(**TINY_I, **kw)
    args = (images, jnp.asarray(joints[None]), focal, princpt, jnp.asarray(queries))
    variables = model.init(jax.random.key(0), *args)
    out = model.apply(variables, *args)
    assert out["logits"].shape == (1, 2, 64) and out["part_logits"].shape == (1, 2, 64, 16)
    np.testing.assert_allclose(out["logits"], out["part_logits"].max(-1))
    trees[name] = set(variables["params"])
    if name == "no_image":
      # HALO alone: the occupancy moves with the skeleton.
      rot, shift = hand_model.random_rotation(rng), np.array([10.0, -20.0, 30.0])
      moved = model.apply(variables, images, jnp.asarray(joints @ rot.T + shift)[None], focal,
                          princpt, jnp.asarray(queries @ rot.T + shift))
      np.testing.assert_allclose(moved["logits"], out["logits"], atol=1e-4)
      # One set of weights for both hands: the left hand is the mirrored right hand.
      swapped = np.concatenate([joints[21:], joints[:21]]) * [-1, 1, 1]
      mirrored = model.apply(variables, images, jnp.asarray(swapped)[None], focal, princpt,
                             jnp.asarray(queries[:, ::-1] * [-1, 1, 1]))
      np.testing.assert_allclose(mirrored["logits"][:, ::-1], out["logits"], atol=1e-4)
  assert "vit" in trees["full"] and "image_encoder" in trees["full"]
  assert not trees["no_image"] & {"vit", "image_encoder", "pos_enc"}
  assert "vit" not in trees["pixel_aligned"] and "pixel_aligned" in trees["pixel_aligned"]


TINY_R = dict(features=16, encoder_layers=1, num_anchors=16, k=4, image_stages=(1, 1, 1, 1),
              image_width=8, image_features_dim=8, image_latent=8)


def _r_inputs(rng, points=64, queries=32):
  joints = _two_hands()
  hands = joints.reshape(2, 21, 3)
  surface = hands[:, rng.integers(0, 21, points)] + rng.normal(0, 8.0, (2, points, 3))
  q = hands[:, rng.integers(0, 21, queries)] + rng.normal(0, 15.0, (2, queries, 3))
  centre = 0.5 * (joints[20] + joints[41])
  images = jnp.asarray(rng.integers(0, 255, (1, 64, 64, 3)), jnp.uint8)
  return (images, jnp.array([[150.0, 150.0]]), jnp.array([[32.0, 32.0]]),
          jnp.asarray(surface[None], jnp.float32), jnp.asarray(centre[None]),
          jnp.asarray(q[None], jnp.float32), jnp.asarray(rng.random((1, 2, queries)), jnp.float32))


def test_refinement_shapes_switches_and_point_order():
  rng = np.random.default_rng(15)
  args = _r_inputs(rng)
  model = rf.TwoHandRefinement(**TINY_R)
  variables = model.init(jax.random.key(0), *args)
  out = model.apply(variables, *args)
  assert out.shape == (1, 2, 32) and np.all(np.isfinite(out))
  # The surface points are a set: their order does not matter (FPS starts from the point
  # farthest from the mean, kNN and attention are order-free).
  perm = rng.permutation(64)
  shuffled = args[:3] + (args[3][:, :, perm],) + args[4:]
  np.testing.assert_allclose(model.apply(variables, *shuffled), out, atol=1e-4)
  # The initial occupancy conditions the output; switched off it does not.
  other = args[:6] + (1.0 - args[6],)
  assert not np.allclose(model.apply(variables, *other), out)
  plain = rf.TwoHandRefinement(**TINY_R, init_occupancy_condition=False)
  v_plain = plain.init(jax.random.key(0), *args)
  np.testing.assert_array_equal(plain.apply(v_plain, *other), plain.apply(v_plain, *args))
  # Without the feature cloud the image features at the points are not read; without the
  # context latent there is no context encoder.
  no_fc = rf.TwoHandRefinement(**TINY_R, feature_cloud=False)
  v_fc = no_fc.init(jax.random.key(0), *args)
  # (the crop camera only places the feature cloud, so moving it changes nothing here)
  np.testing.assert_array_equal(no_fc.apply(v_fc, args[0], args[1] * 3.0, *args[2:]),
                                no_fc.apply(v_fc, *args))
  assert not np.allclose(model.apply(variables, args[0], args[1] * 3.0, *args[2:]), out)
  no_ctx = rf.TwoHandRefinement(**TINY_R, context_latent=False)
  assert "context1" in variables["params"]
  assert "context1" not in no_ctx.init(jax.random.key(0), *args)["params"]
