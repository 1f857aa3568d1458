"""Inference-ready weights: cast once and laid out for the compiled program, not per call.

A jitted ``model.apply`` of a bfloat16/float16 model with float32 weights casts every weight to
the compute dtype on every call, and on a GPU also re-lays out every convolution filter for
cuDNN. Compiled for an H100 at batch 1 (``python -m dfl_jax.aot``), 185 of the paper model's
511 kernels depend on the weights alone: at batch 1, where latency is bound by kernel launches,
that is work to do once. ``compile_inference`` does it at load time:

1. A weight whose every use in the traced program is a cast to one 16-bit dtype is cast once
   (the same rounding, so the outputs are bit for bit the same). Weights the model reads in
   float32 (BatchNorm statistics, the initial queries, the float32 heads) stay as they are.
2. With ``layouts=True`` (default on GPUs and TPUs) XLA chooses every weight's layout for the
   program (``Layout.AUTO``) and the weights are placed in it once.

Compiled for an H100 at batch 1 (bfloat16), both together: 511 -> 374 kernels (48 left on
weights alone: the position features and their projections, norm constants), and layout
transposes per call 52 MiB -> 0 (docs/benchmarks.md). The compiled function is for one input
shape; the prepared weights belong to it.
"""

import jax
import jax.numpy as jnp
from jax.experimental.layout import Format, Layout

HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def predict_fn(model, attention: bool = False):
  """``fn(variables, images)``: what inference serves (model.apply in inference mode without
  the segmentation logits; ``attention`` adds the attention maps)."""
  def fn(variables, images):
    out = model.apply(variables, images, train=False, return_attention=attention)
    out.pop("segmentation_logits", None)
    return out
  return fn


def cast_targets(fn, variables, *args):
  """Per leaf of ``variables``: the 16-bit dtype ``fn(variables, *args)`` only ever casts it
  to, or None (used otherwise, e.g. in float32, inside a nested function, or not at all)."""
  closed = jax.make_jaxpr(fn)(variables, *args)
  leaves, treedef = jax.tree.flatten(variables)
  invars = closed.jaxpr.invars[:len(leaves)]
  uses = {id(v): [] for v in invars}
  for eqn in closed.jaxpr.eqns:
    for a in eqn.invars:
      if id(a) in uses:
        uses[id(a)].append(eqn)
  for a in closed.jaxpr.outvars:  # returned as it is: not cast-only
    if id(a) in uses:
      uses[id(a)].append(None)
  targets = []
  for leaf, var in zip(leaves, invars):
    eqns = uses[id(var)]
    dtypes = {jnp.dtype(e.params["new_dtype"]) if e is not None
              and e.primitive.name == "convert_element_type" else None for e in eqns}
    target = dtypes.pop() if len(dtypes) == 1 else None
    ok = (eqns and target in HALF and jnp.dtype(leaf.dtype) == jnp.dtype(jnp.float32))
    targets.append(target if ok else None)
  return jax.tree.unflatten(treedef, targets)


def compile_inference(fn, variables, *example_args, prepare=True, layouts=None,
                      compiler_options=None):
  """(compiled ``fn``, prepared variables) for ``fn(variables, *args)`` at the example shapes.

  Call it as ``compiled(prepared, *args)`` (every leaf stays an argument, used or not).
  ``prepare=False``: the variables as given, default layouts (the per-call form, for A/B
  comparisons). ``layouts=None``: weight layouts are XLA's choice on GPUs and TPUs, the default
  layouts on CPUs (where XLA has no better one). Variables given as ``jax.ShapeDtypeStruct``
  (with shardings) compile without data (dfl_jax.aot) and come back cast, not placed.
  """
  abstract = all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(variables))
  if not abstract:
    variables = jax.tree.map(jnp.asarray, variables)  # on the device (jax arrays unchanged)
  prepared = variables
  if prepare:
    targets = cast_targets(fn, variables, *example_args)
    flat, treedef = jax.tree.flatten(variables)
    prepared = treedef.unflatten(
        [_cast(x, t) for x, t in zip(flat, treedef.flatten_up_to(targets))])
  if layouts is None:
    layouts = prepare and jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")
  shardings = {}
  if layouts:
    formats = jax.tree.map(lambda x: Format(Layout.AUTO, x.sharding), prepared)
    shardings = {"in_shardings": (formats,) + (None,) * len(example_args)}
  compiled = jax.jit(fn, keep_unused=True, **shardings).trace(
      prepared, *example_args).lower().compile(compiler_options)
  if layouts and not abstract:
    prepared = jax.device_put(prepared, compiled.input_formats[0][0])
  return compiled, prepared


def _cast(x, dtype):
  if dtype is None:
    return x
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)
  return x.astype(dtype)
