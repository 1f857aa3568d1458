"""Compile DFL for a GPU or TPU that is not attached: memory and kernel inventory, no device.

    python -m dfl_jax.aot --config=configs/dfl.py --target=h100_sxm --dtype=bfloat16 \
        [--batch 1,256] [--train_batch 256] [--devices 1] [--noprepare_weights] [--out workdir/aot]

XLA compiles for a GPU described by a target config (its ``GpuTargetConfigProto``: SM count,
memory, compute capability, cuDNN version) through the PJRT CUDA plugin's compile-only devices,
so one can check on a laptop or a CPU-only CI host, before renting the GPU, that:

- the program compiles for that GPU (cuDNN's flash attention included: its checks run then);
- it fits: XLA's own account of arguments, outputs and temporaries against the device memory;
- what it runs: kernels by kind (XLA fusions, cuBLAS GEMMs, cuDNN convolutions and attention,
  copies) and the bytes written by layout transposes and copies.

Nothing runs, so nothing here is a speed: time the real thing with ``dfl_jax.bench``. Needs
JAX's CUDA plugin (``pip install -e '.[cuda13]'``, or ``.[cuda12]`` for Volta) but no GPU or
driver. Shipped targets (``--target`` NAME) are in ``dfl_jax/assets/gpu_targets/``; any other
GPU takes a path to its text proto (XLA keeps some in ``xla/tools/hlo_opt/gpu_specs/``).
Cloud TPU hosts (``tpu_v4``, ``tpu_v5e``, ``tpu_v5p``, ``tpu_v6e``: 4 chips, ``TPU_TARGETS``)
come from libtpu's topology descriptions (``pip install -e '.[tpu]'``, no TPU needed); their
report shows memory only (``TPU_COLUMNS``).

Two choices, both reported: the CUDA plugin's version check against an attached driver is
skipped (``JAX_SKIP_CUDA_CONSTRAINTS_CHECK``: there is no driver), and every GEMM is compiled
for cuBLAS (``xla_gpu_enable_triton_gemm=False``), because without a device XLA cannot
autotune, and the untuned Triton GEMM tiling of jax/jaxlib 0.10.2's XLA refused one of the
model's dots (the initial aggregation of the position features), which autotuning would skip.
``config.model.attention_implementation='auto'`` is resolved for the target, not for this host.
"""

import collections
import os
import pathlib
import re
import time

from absl import app, flags
import jax
from jax.experimental import topologies
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding
import numpy as np

from dfl_jax import errors, parallel, workdir
from dfl_jax.network import attention
from dfl_jax.network.model import DTYPES, model_for
from dfl_jax.serving import prepared
from dfl_jax.tools import bench
from dfl_jax.training.state import create_optimizer
from dfl_jax.training.step import make_train_step

TARGETS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "gpu_targets"
GPU_MEMORY_FRACTION = 0.75  # JAX's default XLA_PYTHON_CLIENT_MEM_FRACTION
COMPILER_OPTIONS = {"cuda": {"xla_gpu_enable_triton_gemm": False}, "tpu": {}}
NOT_KERNELS = ("parameter", "constant", "get-tuple-element", "tuple", "bitcast",
               "opt-barrier", "after-all", "partition-id", "replica-id")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
KINDS = ("fusion", "gemm", "conv", "attention", "other_custom", "copy", "transpose",
         "collective", "other")
BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
         "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}


def target_path(target: str) -> pathlib.Path:
  """A shipped target's name (``h100_sxm``, ``titan_v``) or a path to a text proto."""
  path = pathlib.Path(target)
  if not path.suffix:
    path = TARGETS / f"{target}.txtpb"
  if not path.is_file():
    shipped = sorted(p.stem for p in TARGETS.glob("*.txtpb")) + sorted(TPU_TARGETS)
    raise FileNotFoundError(f"--target {target!r}: no file {path}; shipped targets: {shipped}, "
                            f"or give the path of a GpuTargetConfigProto text file")
  return path


# Cloud TPU hosts (4 chips each) that libtpu describes without a TPU: --target NAME ->
# (topology, chip config, device_kind, HBM per JAX device from the Cloud TPU docs).
TPU_TARGETS = {
    "tpu_v4": ("v4:2x2x1", "megacore", "TPU v4", 32 * 2**30),
    "tpu_v5e": ("v5e:2x2", "default", "TPU v5 lite", 16 * 2**30),
    "tpu_v5p": ("v5p:2x2x1", "megachip_tccontrol", "TPU v5", 95 * 2**30),
    "tpu_v6e": ("v6e:2x2", "default", "TPU v6 lite", 32 * 2**30),
}


def read_target(target: str) -> dict:
  """The facts of a target config that the report uses: name, compute capability, memory."""
  if target in TPU_TARGETS:
    topology, chip_config, kind, memory = TPU_TARGETS[target]
    return {"platform": "tpu", "path": target, "name": kind, "topology": topology,
            "chip_config": chip_config, "compute_capability": None,
            "device_memory_bytes": memory}
  path = target_path(target)
  text = path.read_text()
  name = re.search(r'device_description_str:\s*"([^"]*)"', text)
  major = re.search(r"cuda_compute_capability\s*\{[^}]*major:\s*(\d+)", text)
  minor = re.search(r"cuda_compute_capability\s*\{[^}]*minor:\s*(\d+)", text)
  memory = re.search(r"device_memory_size:\s*(\d+)", text)
  if not (name and major and memory):
    raise ValueError(f"{path}: not a GpuTargetConfigProto text (needs device_description_str, "
                     f"cuda_compute_capability and device_memory_size)")
  shown = (f"dfl_jax/assets/gpu_targets/{path.name}"
           if path.resolve().parent == TARGETS.resolve() else str(path))
  return {"platform": "cuda", "path": shown, "text": text, "name": name.group(1),
          "compute_capability": f"{major.group(1)}.{minor.group(1) if minor else 0}",
          "device_memory_bytes": int(memory.group(1))}


def usable_bytes(target: dict) -> int:
  """What a JAX process may allocate: on GPUs the 75% of the memory that JAX's allocator takes
  by default (``XLA_PYTHON_CLIENT_MEM_FRACTION``), on TPUs the whole HBM."""
  fraction = 1.0 if target["platform"] == "tpu" else GPU_MEMORY_FRACTION
  return int(fraction * target["device_memory_bytes"])


def target_devices(target: dict, num_devices: int = 1):
  """``num_devices`` compile-only devices of the target (one host)."""
  if target["platform"] == "tpu":
    try:
      topo = topologies.get_topology_desc(
          platform="tpu", topology_name=target["topology"],
          chip_config_name=target["chip_config"], chips_per_host_bounds=(2, 2, 1),
          num_slices=1, wrap=(False, False, False))
    except RuntimeError as e:
      raise RuntimeError(f"--target {target['path']!r} needs libtpu to compile for a TPU (no "
                         f"TPU needed): pip install -e '.[tpu]' ({e})") from e
    if num_devices > len(topo.devices):
      raise ValueError(f"--devices {num_devices}: a {target['name']} host has "
                       f"{len(topo.devices)}")
    return list(topo.devices)[:num_devices]
  # No driver to check the CUDA libraries against; must be set before the plugin initialises.
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  try:
    topo = topologies.get_topology_desc("dfl", "cuda", target_config=target["text"],
                                        topology=f"1x1x{num_devices}")
  except NotImplementedError as e:
    raise RuntimeError(
        f"--target {target['name']!r} needs JAX's CUDA plugin to compile for a GPU (no GPU or "
        f"driver needed): pip install -e '.[cuda13]' ('.[cuda12]' for Volta) ({e})") from e
  return list(topo.devices)


def kernel_inventory(hlo_text: str, data_parameters=()) -> dict:
  """Counts the launches of a compiled HLO module's entry computation by kind.

  Kinds: XLA ``fusion`` kernels; custom calls by library (``gemm``: cuBLAS; ``conv``, ``attention``:
  cuDNN; ``other_custom``); ``copy``; bare ``transpose``; ``collective`` (all-reduce and
  friends: the data-parallel step); ``other`` (any other instruction but parameters, constants,
  tuples and bitcasts). An async pair counts once. ``transpose_bytes`` / ``copy_bytes``: what
  the layout transposes (fusions whose name says transpose, as XLA names them, and bare
  transposes) and copies write. With ``data_parameters`` (entry parameter numbers of the
  inputs, e.g. the images; one parameter per argument leaf), ``weights_only``: the kernels that
  depend on no input (weights cast or re-laid out per call, and what depends on constants
  alone, such as the position features).
  """
  start = hlo_text.find("\nENTRY")
  entry = hlo_text[start:] if start >= 0 else hlo_text
  count, nbytes = collections.Counter(), collections.Counter()
  data_parameters = set(data_parameters)
  depends = {}  # instruction name -> whether it depends on a data parameter
  for line in entry.splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.-]+) = (.+?) ([\w-]+)\((.*)", line)
    if not m:
      continue
    name, shape, op, rest = m.groups()
    if op == "parameter":
      depends[name] = int(re.match(r"(\d+)", rest).group(1)) in data_parameters
      continue
    args = re.findall(r"%([\w.-]+)", rest.split("), ")[0])
    depends[name] = any(depends.get(a, False) for a in args)
    if op in NOT_KERNELS or op.endswith("-done"):  # an async pair counts at its start
      continue
    if data_parameters and not depends[name]:
      count["weights_only"] += 1
    size = sum(BYTES.get(dt, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
               for dt, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape))
    if op == "custom-call":
      target = re.search(r'custom_call_target="([^"]+)"', line)
      target = target.group(1) if target else ""
      kind = ("gemm" if "cublas" in target or "gemm" in target.lower() else
              "attention" if "fmha" in target else "conv" if "cudnn$conv" in target else
              "other_custom")
      count[kind] += 1
    elif op == "fusion":
      count["fusion"] += 1
      if "transpose" in name:
        nbytes["transpose_bytes"] += size
    elif op in ("copy", "transpose"):
      count[op] += 1
      nbytes[f"{op}_bytes"] += size
    elif op in ("dot", "convolution"):  # backends without library calls (CPU)
      count["gemm" if op == "dot" else "conv"] += 1
    elif op.startswith(COLLECTIVES):
      count["collective"] += 1
    else:
      count["other"] += 1
  out = {k: count.get(k, 0) for k in KINDS}
  out["kernels"] = sum(out.values())
  if data_parameters:
    out["weights_only"] = count.get("weights_only", 0)
  out.update({k: nbytes.get(k, 0) for k in ("transpose_bytes", "copy_bytes")})
  return out


def _abstract(tree, sharding):
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def _report(kind, batch, compiled, seconds, target, data_parameters=()):
  m = compiled.memory_analysis()
  total = bench.xla_bytes(compiled)
  row = {"kind": kind, "batch": batch, "compile_s": seconds,
         "argument_bytes": int(m.argument_size_in_bytes),
         "temp_bytes": int(m.temp_size_in_bytes), "total_bytes": total,
         "fits": bool(total <= usable_bytes(target))}
  row.update(kernel_inventory(compiled.as_text(), data_parameters))
  return row


def compile_for_target(config, target: dict, batches=(1,), train_batches=(),
                       num_devices: int = 1, prepare_weights: bool = True) -> dict:
  """Compiles inference (``model.apply`` as Predictor serves it) per batch and the training step
  (``training.step.make_train_step``, data parallel over ``num_devices``) per global batch.

  ``prepare_weights``: inference as ``inference.Predictor`` serves, its weights cast and laid
  out once (``dfl_jax/serving/prepared.py``); False: float32 weights in the default layouts
  per call.
  """
  devices = target_devices(target, num_devices)
  options = COMPILER_OPTIONS[target["platform"]]
  config = workdir.restore_config(config)  # a copy (the attention choice is written into it)
  dtype = config.model.get("dtype", "float32")
  requested = config.model.get("attention_implementation", "auto")
  impl = attention.resolve_implementation(requested, DTYPES[dtype], devices[0])
  config.model.attention_implementation = impl
  size = config.data.image_size
  mesh = Mesh(np.array(devices), (parallel.AXIS,))
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(parallel.AXIS))
  tx = create_optimizer(config, steps_per_epoch=1000)
  state = workdir.abstract_train_state(config, replicated)  # no weight file read
  model = model_for(config)
  result = {"target": {k: v for k, v in target.items() if k != "text"},
            "num_devices": num_devices, "dtype": dtype, "image_size": int(size),
            "attention_implementation": f"{impl}" + (" (auto)" if requested == "auto" else ""),
            "compiler_options": options, "jax": jax.__version__,
            "prepare_weights": prepare_weights,
            "inference": [], "train": []}
  predict = prepared.predict_fn(model)  # what inference.Predictor returns
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  one = SingleDeviceSharding(devices[0])
  variables = _abstract(variables, one)
  for b in sorted(batches):
    images = jax.ShapeDtypeStruct((b, size, size, 3), jnp.uint8, sharding=one)
    t = time.perf_counter()
    compiled, _ = prepared.compile_inference(predict, variables, images,
                                             prepare=prepare_weights, layouts=prepare_weights,
                                             compiler_options=options)
    images_parameter = len(jax.tree.leaves(variables))  # after the variables (keep_unused)
    result["inference"].append(_report("inference", b, compiled, time.perf_counter() - t,
                                       target, data_parameters=(images_parameter,)))
    _log(result["inference"][-1])
  step = make_train_step(model, tx, config.loss, mesh)
  for b in sorted(train_batches):
    parallel.check_batch_size(b, num_devices)
    data = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=split)
            for k, v in bench.synthetic_train_batch(b, size).items()}
    t = time.perf_counter()
    compiled = step.trace(state, data).lower().compile(options)
    result["train"].append(_report("train", b, compiled, time.perf_counter() - t, target))
    _log(result["train"][-1])
  return result


def _log(row):
  print(f"{row['kind']} batch {row['batch']}: compiled in {row['compile_s']:.0f} s, "
        f"{row['total_bytes'] / 2**30:.2f} GiB, {row['kernels']} kernels", flush=True)


COLUMNS = ("batch", "XLA memory GiB (temporaries)", "fits", "kernels", "of them on weights only",
           "fusions", "cuBLAS GEMMs", "cuDNN convs", "cuDNN attention", "copies",
           "transposes MiB", "copies MiB", "compile s")


# XLA:TPU's compiled HLO has no one-instruction-one-launch reading (most of it is neither a
# fusion nor a library call): the JSON keeps the counts, the table shows memory only.
TPU_COLUMNS = ("batch", "XLA memory GiB (temporaries)", "fits", "compile s")


def to_markdown(result: dict) -> str:
  t = result["target"]
  if t.get("platform") == "tpu":
    what = f"topology `{t['topology']}` from libtpu"
  else:
    what = (f"sm_{t['compute_capability'].replace('.', '')}, target config "
            f"`{pathlib.Path(t['path']).name}`")
  devices = (f"inference on 1, training over {result['num_devices']} x"
             if result["num_devices"] > 1 else "1 x")
  lines = [f"Compiled for {devices} **{t['name']}** ("
           f"{t['device_memory_bytes'] / 2**30:.1f} GiB, {what}; no device attached), "
           f"{result['image_size']}x{result['image_size']}, {result['dtype']}, attention "
           f"{result['attention_implementation']}"
           + (", GEMMs on cuBLAS" if t.get("platform") != "tpu" else "")
           + f"; jax {result['jax']}. Fits: XLA's arguments + outputs + temporaries within "
           + ("the HBM" if t.get("platform") == "tpu" else
              f"the {GPU_MEMORY_FRACTION:.0%} of memory JAX's allocator takes by default") + ".",
           ""]
  tpu = t.get("platform") == "tpu"
  columns = TPU_COLUMNS if tpu else COLUMNS
  for section, title in (("inference", "Inference"), ("train", "Training step (per device)")):
    rows = result.get(section) or []
    if not rows:
      continue
    if section == "inference":
      title += (" (weights cast and laid out once, dfl_jax/serving/prepared.py)"
                if result.get("prepare_weights") else " (float32 weights every call)")
    lines += [f"{title}:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
      if tpu:
        lines.append(f"| {r['batch']} | {r['total_bytes'] / 2**30:.2f} "
                     f"({r['temp_bytes'] / 2**30:.2f}) | {'yes' if r['fits'] else '**no**'} | "
                     f"{r['compile_s']:.0f} |")
        continue
      cells = (r["batch"], f"{r['total_bytes'] / 2**30:.2f} ({r['temp_bytes'] / 2**30:.2f})",
               "yes" if r["fits"] else "**no**", r["kernels"], r.get("weights_only", "n/a"),
               r["fusion"], r["gemm"],
               r["conv"], r["attention"], r["copy"], f"{r['transpose_bytes'] / 2**20:.0f}",
               f"{r['copy_bytes'] / 2**20:.0f}", f"{r['compile_s']:.0f}")
      lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
  return "\n".join(lines).rstrip() + "\n"


def define_flags():
  bench.define_common_flags("1,256", "workdir/aot", "aot")
  flags.DEFINE_string("target", "h100_sxm", "h100_sxm | titan_v | tpu_v4 | tpu_v5e | tpu_v5p | "
                      "tpu_v6e, or the path of a GpuTargetConfigProto text file.")
  flags.DEFINE_string("train_batch", "", "Training global batch sizes, comma-separated.")
  flags.DEFINE_integer("devices", 1, "Devices of the target host (data parallel training).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  config = FLAGS.config
  if FLAGS.dtype:
    config.model.dtype = FLAGS.dtype
  result = compile_for_target(config, read_target(FLAGS.target), bench.parse_ints(FLAGS.batch),
                              bench.parse_ints(FLAGS.train_batch), FLAGS.devices,
                              FLAGS.prepare_weights)
  result["command"] = bench.invocation("dfl_jax.aot")[1]
  paths = bench.write(result, FLAGS.out, stem="aot", render=to_markdown)
  print(to_markdown(result))
  print(f"wrote {paths['json']} and {paths['markdown']}")


def command():
  """Console script ``dfl-aot`` and ``python -m dfl_jax.aot``."""
  define_flags()
  errors.run(main)
