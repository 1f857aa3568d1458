"""Decoupled attention: supplement Eq. 1-3 and the relation switches of Eq. 4."""

from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfl_jax.network.attention import DecoupledAttention, attention_maps, resolve_implementation

B, Q, K, H = 2, 5, 7, 4
DA_IN, DP_IN, INNER_A, INNER_P = 12, 8, 16, 24


def _inputs(seed=0):
  r = np.random.RandomState(seed)
  f = lambda *s: jnp.asarray(r.randn(*s), jnp.float32)
  return f(B, Q, DA_IN), f(B, Q, DP_IN), f(B, K, DA_IN), f(B, K, DP_IN)


def _decoupled(relation="both"):
  m = DecoupledAttention(num_heads=H, inner_a=INNER_A, inner_p=INNER_P, relation=relation)
  q_a, q_p, kv_a, kv_p = _inputs()
  params = m.init(jax.random.key(1), q_a, q_p, kv_a, kv_p)["params"]
  # Non-zero biases so the identity is tested with them.
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape),
                        params)
  return m, params


def test_decoupled_ji_equals_multihead_attention_on_concatenation():
  """Supplement Eq. 1-3: Split(Attn(Concat(J^a,J^p), Concat(F^a,F^p))) with block-diagonal
  projections equals the decoupled form softmax(A_a + A_p) aggregating each type's own values."""
  m, p = _decoupled("both")
  q_a, q_p, kv_a, kv_p = _inputs()
  out_a, out_p, _ = m.apply({"params": p}, q_a, q_p, kv_a, kv_p)

  da, dp = INNER_A // H, INNER_P // H
  dh = da + dp
  din, dout = DA_IN + DP_IN, DA_IN + DP_IN
  # The concatenated MHA scales logits by 1/sqrt(dh); the decoupled form scales each part by
  # 1/sqrt(d_a) and 1/sqrt(d_p), so the query blocks carry the ratio.
  sa, sp = np.sqrt(dh / da), np.sqrt(dh / dp)

  def block(name_a, name_p, qa=1.0, qp=1.0):
    kern = np.zeros((din, H, dh), np.float32)
    kern[:DA_IN, :, :da] = np.asarray(p[name_a]["kernel"]) * qa
    kern[DA_IN:, :, da:] = np.asarray(p[name_p]["kernel"]) * qp
    bias = np.concatenate([np.asarray(p[name_a]["bias"]) * qa,
                           np.asarray(p[name_p]["bias"]) * qp], axis=-1)
    return {"kernel": kern, "bias": bias}

  out_kernel = np.zeros((H, dh, dout), np.float32)
  out_kernel[:, :da, :DA_IN] = np.asarray(p["out_a"]["kernel"])
  out_kernel[:, da:, DA_IN:] = np.asarray(p["out_p"]["kernel"])
  mha_params = {
      "query": block("query_a", "query_p", sa, sp),
      "key": block("key_a", "key_p"),
      "value": block("value_a", "value_p"),
      "out": {"kernel": out_kernel,
              "bias": np.concatenate([p["out_a"]["bias"], p["out_p"]["bias"]])},
  }
  mha = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=H * dh, out_features=dout)
  ref = mha.apply({"params": mha_params}, jnp.concatenate([q_a, q_p], -1),
                  jnp.concatenate([kv_a, kv_p], -1))
  np.testing.assert_allclose(np.asarray(out_a), np.asarray(ref[..., :DA_IN]), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(out_p), np.asarray(ref[..., DA_IN:]), rtol=1e-5,
                             atol=1e-5)


def _numpy_reference(p, q_a, q_p, kv_a, kv_p, relation):
  """Eq. 3 in NumPy, head by head, with explicit loops."""
  def proj(name, x):
    return np.einsum("bnc,chd->bnhd", x, p[name]["kernel"]) + p[name]["bias"]
  logits = np.zeros((B, H, Q, K))
  for part, (qx, kx, d) in {"appearance": (q_a, kv_a, INNER_A // H),
                            "position": (q_p, kv_p, INNER_P // H)}.items():
    if relation in (part, "both"):
      qh, kh = proj(f"query_{part[0]}", qx), proj(f"key_{part[0]}", kx)
      for b in range(B):
        for h in range(H):
          logits[b, h] += qh[b, :, h] @ kh[b, :, h].T / np.sqrt(d)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  outs = []
  for s, kv in (("a", kv_a), ("p", kv_p)):
    v = proj(f"value_{s}", kv)
    agg = np.einsum("bhqk,bkhd->bqhd", w, v)
    outs.append(np.einsum("bqhd,hdc->bqc", agg, p[f"out_{s}"]["kernel"]) + p[f"out_{s}"]["bias"])
  return outs, w


@pytest.mark.parametrize("relation", ["appearance", "position", "both"])
def test_relations_against_numpy(relation):
  m, p = _decoupled(relation)
  q_a, q_p, kv_a, kv_p = _inputs()
  out_a, out_p, parts = m.apply({"params": p}, q_a, q_p, kv_a, kv_p)
  pn = jax.tree.map(np.asarray, p)
  (ref_a, ref_p), w = _numpy_reference(pn, *map(np.asarray, (q_a, q_p, kv_a, kv_p)), relation)
  np.testing.assert_allclose(out_a, ref_a, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out_p, ref_p, rtol=1e-4, atol=1e-5)
  maps = attention_maps(parts)
  np.testing.assert_allclose(maps["fused"], w.mean(1), rtol=1e-5, atol=1e-6)


def test_position_relation_ignores_appearance_for_weights():
  """J-J (Eq. 4, M2): with relation 'position' the weights do not depend on appearance."""
  m, p = _decoupled("position")
  q_a, q_p, kv_a, kv_p = _inputs()
  _, out_p1, parts1 = m.apply({"params": p}, q_a, q_p, kv_a, kv_p)
  _, out_p2, parts2 = m.apply({"params": p}, q_a * 3 + 1, q_p, kv_a * -2, kv_p)
  assert parts1["appearance"] is None
  np.testing.assert_allclose(parts1["position"], parts2["position"])
  np.testing.assert_allclose(out_p1, out_p2, rtol=1e-6)  # p values aggregate with p weights


def test_attention_maps_are_distributions():
  m, p = _decoupled("both")
  _, _, parts = m.apply({"params": p}, *_inputs())
  maps = attention_maps(parts)
  assert set(maps) == {"fused", "appearance", "position"}
  for v in maps.values():
    assert v.shape == (B, Q, K)
    np.testing.assert_allclose(v.sum(-1), 1.0, rtol=1e-5)
  # The fused map is not the average of the parts' maps: one softmax over the summed logits.
  assert not np.allclose(maps["fused"], 0.5 * (maps["appearance"] + maps["position"]),
                         atol=1e-3)


def test_bad_relation_names_the_value():
  m = DecoupledAttention(num_heads=H, inner_a=INNER_A, inner_p=INNER_P, relation="fused")
  with pytest.raises(ValueError, match="fused"):
    m.init(jax.random.key(0), *_inputs())


@pytest.mark.parametrize("relation", ["appearance", "position", "both"])
def test_fused_kernel_matches_numpy_reference(relation):
  """Without logits every relation runs as ONE jax.nn.dot_product_attention: 'both' on the
  concatenated [Q_a/sqrt(d_a), Q_p/sqrt(d_p)] queries, a single relation with zero columns
  padding its query and key to the value's [V_a, V_p] width. Every one must give the
  reference's numbers."""
  m, p = _decoupled(relation)
  fused = m.clone(implementation="xla")
  inputs = _inputs()
  calls = []
  real = jax.nn.dot_product_attention

  def counting(*args, **kwargs):
    calls.append(tuple(x.shape[-1] for x in args[:3]))
    return real(*args, **kwargs)

  with mock.patch.object(jax.nn, "dot_product_attention", counting):
    out_a, out_p, parts = fused.apply({"params": p}, *inputs, return_logits=False)
  assert calls == [((INNER_A + INNER_P) // H,) * 3]
  pn = jax.tree.map(np.asarray, p)
  (ref_a, ref_p), _ = _numpy_reference(pn, *map(np.asarray, inputs), relation)
  np.testing.assert_allclose(out_a, ref_a, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out_p, ref_p, rtol=1e-4, atol=1e-5)
  assert parts == {"appearance": None, "position": None, "coupled": None}  # no logits made


def _coupled_reference(p, q_a, q_p, kv_a, kv_p, d):
  """Table 1's coupled attention in NumPy: the projected position added to the projected
  appearance of the queries and of the keys, one logit term per head, values per type."""
  def proj(name, x):
    return np.einsum("bnc,chd->bnhd", x, p[name]["kernel"]) + p[name]["bias"]
  q = proj("query_a", q_a) + proj("query_p", q_p)
  k = proj("key_a", kv_a) + proj("key_p", kv_p)
  logits = np.zeros((B, H, Q, K))
  for b in range(B):
    for h in range(H):
      logits[b, h] = q[b, :, h] @ k[b, :, h].T / np.sqrt(d)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  outs = []
  for s, kv in (("a", kv_a), ("p", kv_p)):
    agg = np.einsum("bhqk,bkhd->bqhd", w, proj(f"value_{s}", kv))
    outs.append(np.einsum("bqhd,hdc->bqc", agg, p[f"out_{s}"]["kernel"]) + p[f"out_{s}"]["bias"])
  return outs, logits


@pytest.mark.parametrize("impl", ["explicit", "xla"])
def test_coupled_relation_against_numpy(impl):
  """'coupled' (Table 1 baselines): the same parameters as 'both', the logits
  (Q_a + Q_p)(K_a + K_p)^T / sqrt(d) with the cross terms that decoupling removes, on both the
  explicit and the fused path."""
  inner = 16
  m = DecoupledAttention(num_heads=H, inner_a=inner, inner_p=inner, relation="coupled",
                         implementation=impl)
  inputs = _inputs()
  p = m.init(jax.random.key(1), *inputs)["params"]
  p = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape), p)
  both = DecoupledAttention(num_heads=H, inner_a=inner, inner_p=inner, relation="both")
  assert (jax.tree.map(jnp.shape, both.init(jax.random.key(1), *inputs)["params"])
          == jax.tree.map(jnp.shape, p))
  out_a, out_p, parts = m.apply({"params": p}, *inputs, return_logits=impl == "explicit")
  pn = jax.tree.map(np.asarray, p)
  (ref_a, ref_p), logits = _coupled_reference(pn, *map(np.asarray, inputs), inner // H)
  np.testing.assert_allclose(out_a, ref_a, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out_p, ref_p, rtol=1e-4, atol=1e-5)
  if impl == "explicit":
    assert parts["appearance"] is None and parts["position"] is None
    np.testing.assert_allclose(parts["coupled"], logits, rtol=1e-4, atol=1e-4)
    assert set(attention_maps(parts)) == {"fused"}
  # Not the decoupled sum: the cross terms change the output.
  dec_a, _, _ = both.apply({"params": p}, *inputs)
  assert not np.allclose(dec_a, out_a, atol=1e-3)


def test_coupled_relation_needs_equal_widths():
  m = DecoupledAttention(num_heads=H, inner_a=INNER_A, inner_p=INNER_P, relation="coupled")
  with pytest.raises(ValueError, match="must be equal"):
    m.init(jax.random.key(0), *_inputs())


@pytest.mark.parametrize("relation", ["appearance", "position", "both"])
def test_fused_kernel_is_used_and_gradients_agree(relation):
  """The fused path really calls dot_product_attention, and its gradients equal the explicit
  path's (training uses it; J-J's 'position' relation included)."""
  m, p = _decoupled(relation)
  inputs = _inputs()

  def loss(params, impl):
    a, b, _ = m.clone(implementation=impl).apply({"params": params}, *inputs,
                                                  return_logits=False)
    return jnp.sum(a ** 2) + jnp.sum(jnp.sin(b))

  calls = []
  real = jax.nn.dot_product_attention

  def counting(*args, **kwargs):
    calls.append(args[0].shape)
    return real(*args, **kwargs)

  with mock.patch.object(jax.nn, "dot_product_attention", counting):
    loss(p, "xla")
    assert calls == [(B, Q, H, (INNER_A + INNER_P) // H)]  # one call, concatenated head width
    loss(p, "explicit")
    assert len(calls) == 1
  g_fused = jax.grad(loss)(p, "xla")
  g_explicit = jax.grad(loss)(p, "explicit")
  for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_explicit)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["explicit", "xla"])
def test_batch_one_keys_are_broadcast(impl):
  """Position features (batch 1) give the same result as the same rows repeated per image."""
  m, p = _decoupled("both")
  q_a, q_p, kv_a, kv_p = _inputs()
  shared = kv_p[:1]
  m = m.clone(implementation=impl)
  got = m.apply({"params": p}, q_a, q_p, kv_a, shared, return_logits=False)
  want = m.apply({"params": p}, q_a, q_p, kv_a, jnp.broadcast_to(shared, kv_p.shape),
                 return_logits=False)
  for a, b in zip(got[:2], want[:2]):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


class _Device:
  def __init__(self, platform, cc=None):
    self.platform = platform
    if cc is not None:
      self.compute_capability = cc


@pytest.mark.parametrize("device, dtype, expected", [
    (_Device("cpu"), jnp.bfloat16, "explicit"),
    (_Device("cpu"), jnp.float16, "explicit"),
    (_Device("tpu"), jnp.bfloat16, "xla"),
    (_Device("tpu"), jnp.float16, "explicit"),
    (_Device("gpu", "9.0"), jnp.bfloat16, "cudnn"),      # H100
    (_Device("gpu", "8.0"), jnp.float16, "cudnn"),       # A100
    (_Device("gpu", "9.0"), jnp.float32, "xla"),         # cuDNN flash attention has no fp32
    (_Device("gpu", "7.0"), jnp.float16, "xla"),         # Volta: no cuDNN flash kernels
    (_Device("gpu"), jnp.bfloat16, "xla"),               # unknown capability
])
def test_auto_implementation(device, dtype, expected):
  assert resolve_implementation("auto", dtype, device) == expected
  assert resolve_implementation("explicit", dtype, device) == "explicit"


def test_bad_implementation_is_named():
  with pytest.raises(ValueError, match="flash"):
    resolve_implementation("flash", jnp.float32)


def test_fused_kernel_single_stream_and_boolean_mask():
  """The non-decoupled form (q_p None: SPR, the Table 1 baselines) and a key mask give the same
  numbers fused and explicit."""
  m = DecoupledAttention(num_heads=H, inner_a=INNER_A)
  q_a, _, kv_a, _ = _inputs()
  p = m.init(jax.random.key(1), q_a, None, kv_a, None)["params"]
  mask = jnp.asarray(np.random.RandomState(4).rand(B, 1, 1, K) > 0.3)
  mask = mask.at[:, :, :, 0].set(True)  # no row fully masked
  for m_ in (None, mask):
    want, _, _ = m.clone(implementation="explicit").apply({"params": p}, q_a, None, kv_a, None,
                                                           mask=m_)
    got, none, parts = m.clone(implementation="xla").apply({"params": p}, q_a, None, kv_a, None,
                                                            mask=m_, return_logits=False)
    assert none is None and parts["appearance"] is None
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(want, m.apply({"params": p}, q_a, None, kv_a, None)[0], atol=1e-4)
