"""Benchmark: inference and training throughput of DFL after compilation.

    python -m dfl_jax.bench --config=configs/dfl.py [--batch 1,8,64,256]
        [--dtype float32|bfloat16|float16] [--train] [--train_batch 64] [--image_size 256]
        [--iters 20] [--warmup 3] [--noprepare_weights] [--out workdir/bench]

Per inference batch size: compile time, latency (median and p90 of synchronous calls), images/s
(``iters`` calls dispatched back to back, then one wait, as a serving loop runs), FLOPs per image
from XLA's cost analysis, achieved FLOP/s and its fraction of the device's peak where the peak
is known (``PEAK_FLOPS``), the device's peak memory (``memory_stats``; n/a on CPU) and XLA's
own buffer estimate (arguments + outputs + temporaries). Inference runs as
``inference.Predictor`` serves: weights cast to the compute dtype and laid out once
(``dfl_jax/serving/prepared.py``); ``--noprepare_weights`` passes the float32 weights every
call. With ``--train``, the same for the real training step of ``dfl_jax/training/step.py`` (jit
of shard_map over every device, state donated, Adam, losses) at ``--train_batch`` (default
``config.train.batch_size``, the global batch).

Inputs are uint8 images (what the pipeline yields; a quarter of float32's bytes) put on the
device once before timing; the timed loops run under ``jax.transfer_guard('disallow')``, so a
hidden host-device copy would be an error, not a slower figure. Writes ``bench.json`` and
``bench.md`` into ``--out``, again after each measurement (a run stopped half-way keeps what it
measured). A benchmark, not a test: nothing here asserts a speed.
"""

import datetime
import json
import os
import pathlib
import platform
import sys
import time

from importlib import metadata

from absl import app, flags
import jax
from ml_collections import config_flags
import numpy as np

from dfl_jax import errors, parallel
from dfl_jax.conventions import DEPTH_UNITS, NUM_JOINTS
from dfl_jax.network.model import init_variables
from dfl_jax.serving import prepared
from dfl_jax.training.state import create_optimizer, create_train_state
from dfl_jax.training.step import TRAIN_KEYS, make_train_step

# Dense peak FLOP/s per device (no structured sparsity), by compute dtype; matched by
# substrings of ``device.device_kind`` (first match wins). float32 on Ampere and newer is the
# TF32 tensor-core peak (XLA's default precision for float32 matmuls and convolutions there);
# on TPU every dtype is the bfloat16 peak (float32 matmuls run as bfloat16 passes by default).
# Volta and Turing have no bfloat16 units: n/a. Sources: NVIDIA data sheets, Cloud TPU docs.
PEAK_FLOPS = (
    (("h100", "sxm"), {"float32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12}),
    (("h100", "pcie"), {"float32": 378.0e12, "bfloat16": 756.0e12, "float16": 756.0e12}),
    (("h100", "nvl"), {"float32": 417.5e12, "bfloat16": 835.5e12, "float16": 835.5e12}),
    (("h100",), {"float32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12}),  # "H100 80GB HBM3"
    (("h200",), {"float32": 494.7e12, "bfloat16": 989.4e12, "float16": 989.4e12}),
    (("a100",), {"float32": 156.0e12, "bfloat16": 312.0e12, "float16": 312.0e12}),
    (("l4",), {"float32": 60.0e12, "bfloat16": 121.0e12, "float16": 121.0e12}),
    (("a10",), {"float32": 62.5e12, "bfloat16": 125.0e12, "float16": 125.0e12}),
    (("rtx 4090",), {"float32": 82.6e12, "bfloat16": 165.2e12, "float16": 165.2e12}),
    (("v100", "pcie"), {"float32": 14.0e12, "float16": 112.0e12}),
    (("v100",), {"float32": 15.7e12, "float16": 125.0e12}),
    (("titan v",), {"float32": 14.9e12, "float16": 110.0e12}),
    (("2080 ti",), {"float32": 13.4e12, "float16": 53.8e12}),  # fp16 with fp32 accumulation
    (("t4",), {"float32": 8.1e12, "float16": 65.0e12}),
    (("tpu v2",), {d: 22.5e12 for d in ("float32", "bfloat16")}),   # per core (a JAX device)
    (("tpu v3",), {d: 61.5e12 for d in ("float32", "bfloat16")}),   # per core (a JAX device)
    (("tpu v4",), {d: 275.0e12 for d in ("float32", "bfloat16")}),
    (("tpu v5 lite",), {d: 197.0e12 for d in ("float32", "bfloat16")}),  # v5e
    (("tpu v5e",), {d: 197.0e12 for d in ("float32", "bfloat16")}),
    (("tpu v5",), {d: 459.0e12 for d in ("float32", "bfloat16")}),  # v5p
    (("tpu v6",), {d: 918.0e12 for d in ("float32", "bfloat16")}),  # Trillium (v6e)
)


def peak_flops(device_kind: str, dtype: str):
  """The device's dense peak FLOP/s for ``dtype``, or None when unknown."""
  kind = device_kind.lower()
  for needles, peaks in PEAK_FLOPS:
    if all(n in kind for n in needles):
      return peaks.get(dtype)
  return None


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def device_facts(device=None) -> dict:
  device = device or jax.devices()[0]
  facts = {"platform": device.platform, "device_kind": device.device_kind,
           "num_devices": jax.device_count(),
           "compute_capability": getattr(device, "compute_capability", None)}
  if device.platform == "cpu":
    facts["cpu"] = cpu_name()
    facts["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    facts["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
  return facts


def flops_of(compiled):
  """Total FLOPs of one call of a compiled function (XLA cost analysis), or None."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  value = (cost or {}).get("flops")
  return float(value) if value and value > 0 else None


def xla_bytes(compiled):
  """XLA's buffer estimate for one call: arguments + outputs + temporaries - aliased."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def peak_memory(device=None):
  """Peak bytes in use on the device so far in this process (None where not reported)."""
  try:
    stats = (device or jax.devices()[0]).memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return (stats or {}).get("peak_bytes_in_use")


def _percentile(times, q):
  return float(np.percentile(np.asarray(times), q))


def time_calls(call, warmup: int, iters: int):
  """Runs ``call()`` (which returns what to wait on).

  Returns (latencies s, wall s per call, host CPU s per call, dispatch times s). Latency: each
  call waited for. Throughput: ``iters`` calls dispatched back to back, one wait; the host CPU
  time of this process over them (all threads) says how busy the host was (on a shared CPU, how
  much of the wall time was ours), and the time each call took to return is the Python and
  dispatch overhead that asynchronous execution hides while it stays below the device's time.
  """
  for _ in range(warmup):
    jax.block_until_ready(call())
  latencies = []
  # Inputs and state are on the device already: any host-device copy in the loop is an error.
  with jax.transfer_guard("disallow"):
    for _ in range(iters):
      t = time.perf_counter()
      jax.block_until_ready(call())
      latencies.append(time.perf_counter() - t)
    t, cpu = time.perf_counter(), time.process_time()
    out, dispatch = None, []
    for _ in range(iters):
      d = time.perf_counter()
      out = call()
      dispatch.append(time.perf_counter() - d)
    jax.block_until_ready(out)
  return (latencies, (time.perf_counter() - t) / iters, (time.process_time() - cpu) / iters,
          dispatch)


def _summary(batch, compile_s, timing, flops, peak, xla_mem, device):
  latencies, per_call, cpu_per_call, dispatch = timing
  per_image = flops / batch if flops else None
  images_per_s = batch / per_call
  achieved = per_image * images_per_s if per_image else None
  return {
      "batch": batch, "compile_s": compile_s,
      "latency_ms_median": 1e3 * _percentile(latencies, 50),
      "latency_ms_p90": 1e3 * _percentile(latencies, 90),
      "images_per_s": images_per_s,
      "flops_per_image": per_image,
      "achieved_flops_per_s": achieved,
      "fraction_of_peak": achieved / peak if (achieved and peak) else None,
      "peak_memory_bytes": peak_memory(device),
      "xla_memory_bytes": xla_mem,
      "cpu_s_per_call": cpu_per_call,
      "dispatch_ms_median": 1e3 * _percentile(dispatch, 50),
  }


def random_images(batch: int, size: int, seed: int = 0):
  return np.random.RandomState(seed).randint(0, 256, (batch, size, size, 3)).astype(np.uint8)


def bench_inference(model, variables, batch: int, size: int, warmup: int, iters: int,
                    peak=None, prepare_weights: bool = True):
  """Inference (``train=False``, what Predictor returns) at one batch size on the default device.

  ``prepare_weights``: as ``inference.Predictor`` serves, the weights cast and laid out once
  for the program (``prepared.compile_inference``; its time is in the compile time); False:
  the float32 weights passed to a plain jit every call.
  """
  device = jax.devices()[0]
  variables = jax.device_put(variables, device)
  images = jax.device_put(random_images(batch, size), device)
  fn = prepared.predict_fn(model)  # what inference.Predictor returns
  t = time.perf_counter()
  compiled, variables = prepared.compile_inference(fn, variables, images,
                                                  prepare=prepare_weights)
  compile_s = time.perf_counter() - t
  timing = time_calls(lambda: compiled(variables, images), warmup, iters)
  return _summary(batch, compile_s, timing, flops_of(compiled), peak, xla_bytes(compiled),
                  device)


def synthetic_train_batch(batch: int, size: int, seed: int = 0) -> dict:
  """A training batch with the pipeline's keys, shapes and dtypes (random content)."""
  r = np.random.RandomState(seed)
  joints = np.concatenate([r.uniform(4, size - 4, (batch, NUM_JOINTS, 2)),
                           r.uniform(100, 156, (batch, NUM_JOINTS, 1))], -1).astype(np.float32)
  return {"images": random_images(batch, size, seed), "joints": joints,
          "joint_valid": np.ones((batch, NUM_JOINTS), np.float32),
          "segmentation": r.randint(0, 33, (batch, size // 4, size // 4)).astype(np.int32),
          "segmentation_valid": np.ones(batch, np.float32),
          "hand_presence": np.ones((batch, 2), np.float32),
          "hand_presence_valid": np.ones(batch, np.float32),
          "rel_root_depth": np.full(batch, DEPTH_UNITS / 2, np.float32),
          "rel_root_depth_valid": np.ones(batch, np.float32)}


def compiled_train_step(config, batch: int):
  """(compiled step, state, batch, compile seconds): the real training step
  (dfl_jax/training/step.py: jit of shard_map over every device, state donated) at global batch
  ``batch``, its replicated state and a synthetic batch already on the devices."""
  parallel.check_batch_size(batch)
  mesh = parallel.make_mesh()
  tx = create_optimizer(config, steps_per_epoch=1000)
  # No weight file is read: the figures do not depend on the weights' values.
  model, state = create_train_state(config, jax.random.key(0), tx, weight_files=False)
  state = jax.device_put(state, parallel.replicated(mesh))
  data = parallel.to_global(synthetic_train_batch(batch, config.data.image_size), mesh,
                            TRAIN_KEYS)
  step = make_train_step(model, tx, config.loss, mesh)
  t = time.perf_counter()
  compiled = step.lower(state, data).compile()
  return compiled, state, data, time.perf_counter() - t


def bench_train(config, batch: int, warmup: int, iters: int, peak=None):
  """The real training step (dfl_jax/training/step.py), global batch ``batch``, every device."""
  compiled, state, data, compile_s = compiled_train_step(config, batch)
  holder = [state]

  def call():
    holder[0], metrics = compiled(holder[0], data)
    return metrics["loss"]

  timing = time_calls(call, warmup, iters)
  jax.block_until_ready(holder[0])
  # Cost analysis is of the per-device program: FLOPs of batch / devices images.
  flops = flops_of(compiled)
  flops = flops * jax.device_count() if flops else None
  peak_all = peak * jax.device_count() if peak else None
  return _summary(batch, compile_s, timing, flops, peak_all, xla_bytes(compiled),
                  jax.devices()[0])


def run(config, batches, train_batches=(), warmup: int = 3, iters: int = 20,
        config_name: str = "", command: str = "", prepare_weights: bool = True,
        on_row=None) -> dict:
  """All measurements as one JSON-able dict; ``on_row(result)`` after each measurement (the
  command writes its files then, so a run stopped half-way keeps what it measured)."""
  dtype = config.model.get("dtype", "float32")
  facts = device_facts()
  peak = peak_flops(facts["device_kind"], dtype)
  model, variables = init_variables(config, jax.random.key(0))
  result = {
      "command": command,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "config": config_name, "dtype": dtype, "image_size": int(config.data.image_size),
      "params": int(sum(x.size for x in jax.tree.leaves(variables["params"]))),
      "device": facts, "peak_flops_per_s": peak,
      "versions": {"jax": jax.__version__, "jaxlib": _version("jaxlib"),
                   "flax": _version("flax"), "python": platform.python_version()},
      "warmup": warmup, "iters": iters, "prepare_weights": prepare_weights,
      "inference": [], "train": [],
  }
  for b in sorted(batches):
    result["inference"].append(bench_inference(model, variables, b, config.data.image_size,
                                               warmup, iters, peak, prepare_weights))
    _log(f"inference batch {b}", result["inference"][-1])
    if on_row:
      on_row(result)
  for b in sorted(train_batches):
    result["train"].append(bench_train(config, b, warmup, iters, peak))
    _log(f"train batch {b}", result["train"][-1])
    if on_row:
      on_row(result)
  return result


def _version(package):
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def _log(what, row):
  print(f"{what}: {row['images_per_s']:.1f} images/s, latency {row['latency_ms_median']:.2f} ms "
        f"(p90 {row['latency_ms_p90']:.2f}), compile {row['compile_s']:.1f} s", flush=True)


def _fmt(value, kind):
  if value is None:
    return "n/a"
  if kind == "int":
    return f"{value:,.0f}"
  if kind == "rate":
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
  if kind == "ms":
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"
  if kind == "s":
    return f"{value:.1f}"
  if kind == "gflop":
    return f"{value / 1e9:.2f}"
  if kind == "tflops":
    return f"{value / 1e12:.3g}"
  if kind == "cpu_ms":
    return f"{1e3 * value:.0f}"
  if kind == "pct":
    return f"{100 * value:.1f}%"
  if kind == "mib":
    return f"{value / 2**20:,.0f}"
  return str(value)


COLUMNS = (("batch", "batch", "int"), ("images_per_s", "images/s", "rate"),
           ("latency_ms_median", "latency ms (median)", "ms"),
           ("latency_ms_p90", "latency ms (p90)", "ms"), ("compile_s", "compile s", "s"),
           ("flops_per_image", "GFLOP/image", "gflop"),
           ("achieved_flops_per_s", "TFLOP/s", "tflops"),
           ("fraction_of_peak", "of peak", "pct"),
           ("peak_memory_bytes", "peak device MiB", "mib"),
           ("xla_memory_bytes", "XLA buffers MiB", "mib"),
           ("cpu_s_per_call", "host CPU ms/call", "cpu_ms"),
           ("dispatch_ms_median", "dispatch ms", "ms"))


def to_markdown(result: dict) -> str:
  """The result as Markdown: a heading line, then one table for inference and one for training."""
  d = result["device"]
  where = d["device_kind"] + (f" ({d['cpu']}, {d['cores']} cores)" if d.get("cpu") else "")
  if d.get("compute_capability"):
    where += f", compute capability {d['compute_capability']}"
  if d.get("load_average_1min") is not None:  # a shared CPU: how busy it was at the start
    where += f", load average {d['load_average_1min']:.1f}"
  lines = [f"**{result['config'] or 'config'}**, {result['image_size']}x{result['image_size']}, "
           f"{result['dtype']}, {result['params']:,} parameters, on {d['num_devices']} x {where}; "
           f"jax {result['versions']['jax']}; peak "
           f"{_fmt(result['peak_flops_per_s'], 'tflops')} TFLOP/s per device; "
           f"{result['date']}.", ""]
  for section, title in (("inference", "Inference"), ("train", "Training step")):
    rows = result.get(section) or []
    if not rows:
      continue
    if section == "inference":
      title += (" (weights cast and laid out once, dfl_jax/serving/prepared.py)"
                if result.get("prepare_weights") else " (float32 weights every call)")
    lines += [f"{title}:", "",
              "| " + " | ".join(c[1] for c in COLUMNS) + " |",
              "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(key), kind) for key, _, kind in COLUMNS) + " |"
              for r in rows]
    lines.append("")
  if result["train"]:
    lines.append("Training latency is the time of one synchronous step; images/s is measured "
                 "over steps dispatched back to back.")
  return "\n".join(lines).rstrip() + "\n"


def write(result: dict, out_dir, stem: str = "bench", render=None) -> dict:
  """``stem``.json and ``stem``.md (``render``, default this module's ``to_markdown``)."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
  (out / f"{stem}.md").write_text((render or to_markdown)(result))
  return {"json": str(out / f"{stem}.json"), "markdown": str(out / f"{stem}.md")}


def invocation(module: str):
  """(the ``--config=`` file as given, the command line as ``python -m MODULE ...``): what a
  tool's JSON records of how it was run."""
  name = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "")
  return name, " ".join([f"python -m {module}"] + sys.argv[1:])


def parse_ints(text):
  return [int(x) for x in str(text).split(",") if x.strip()] if text else []


def define_common_flags(batch: str, out: str, stem: str):
  """The flags dfl_jax.bench and dfl_jax.aot share."""
  config_flags.DEFINE_config_file("config", None, "Configuration file.", lock_config=False)
  flags.DEFINE_string("batch", batch, "Inference batch sizes, comma-separated.")
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                    "Compute dtype (default: config.model.dtype).")
  flags.DEFINE_string("out", out, f"Folder for {stem}.json and {stem}.md.")
  flags.DEFINE_bool("prepare_weights", True, "Inference: weights cast and laid out once "
                    "(dfl_jax/serving/prepared.py), as inference.Predictor serves; false: per "
                    "call.")
  flags.mark_flag_as_required("config")


def define_flags():
  define_common_flags("1,8,64,256", "workdir/bench", "bench")
  flags.DEFINE_bool("train", False, "Also time the training step.")
  flags.DEFINE_string("train_batch", None,
                      "Training global batch sizes (default: config.train.batch_size).")
  flags.DEFINE_integer("image_size", None, "Input size (default: config.data.image_size).")
  flags.DEFINE_integer("warmup", 3, "Untimed calls after compilation.")
  flags.DEFINE_integer("iters", 20, "Timed calls per measurement.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  config = FLAGS.config
  if FLAGS.dtype:
    config.model.dtype = FLAGS.dtype
  if FLAGS.image_size:
    config.data.image_size = FLAGS.image_size
  train_batches = ((parse_ints(FLAGS.train_batch) or [config.train.batch_size])
                   if FLAGS.train else [])
  name, command = invocation("dfl_jax.bench")
  result = run(config, parse_ints(FLAGS.batch), train_batches, FLAGS.warmup, FLAGS.iters, name,
               command, FLAGS.prepare_weights, on_row=lambda r: write(r, FLAGS.out))
  paths = write(result, FLAGS.out)
  print(to_markdown(result))
  print(f"wrote {paths['json']} and {paths['markdown']}")


def command():
  """Console script ``dfl-bench`` and ``python -m dfl_jax.bench``."""
  define_flags()
  errors.run(main)
