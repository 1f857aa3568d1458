"""A profile of DFL's training step and its most expensive kernels: ``python -m dfl_jax.profile``.

    python -m dfl_jax.profile --config=configs/dfl.py [--dtype bfloat16] [--batch 256]
        [--steps 10] [--warmup 2] [--top 15] [--out workdir/profile]

Compiles the real training step as ``python -m dfl_jax.bench --train`` does
(``bench.compiled_train_step``: jit of shard_map over every device, state donated, a synthetic
batch already on the devices, no TensorFlow), runs ``--warmup`` untimed steps, then traces
``--steps`` steps with ``jax.profiler.trace`` into ``OUT/trace``. The trace (an XSpace protobuf,
``*.xplane.pb``, which TensorBoard's profile plugin or xprof open) is read back with
``jax.profiler.ProfileData`` and summarised (``summarise``):

* the timeline counted: on GPUs, the device planes' stream lines (``Stream #...``), where the
  kernels run; the derived lines beside them (``XLA Ops``, ``XLA Modules``, ``Steps``) cover the
  same time again and are not counted. On TPUs, whose device planes have no stream lines, the
  ``XLA Ops`` line. On a CPU, the host plane's XLA op events (those with an ``hlo_op`` stat).
* each kernel by name: the HLO ops it ran for, calls per step, time per step, mean time per
  call, share of the kernel time, and a kind guessed from the names (``kernel_kind``: matrix
  product, convolution, attention, copy/layout, reduction/normalisation, elementwise fusion,
  other): the table to pick the largest cost that is not a matrix product or a convolution;
* totals by kind, and the kernel time per step against the wall time per step under the
  tracer (kernels on several streams may overlap, so kernel time can exceed the wall time; the
  traced steps run slower than untraced ones, since XLA turns CUDA graphs off while profiling:
  ``dfl_jax.bench --train`` gives the step's real time).

Every time is per device: with several devices traced, the per-step figures are their mean. A
GPU trace without stream lines (CUPTI could not load) falls back to the host's op spans, which
are launch times, not kernel times: the summary's ``warning`` says so.

Writes ``profile.json`` and ``profile.md`` into ``--out``. A measurement, not a test.
"""

import collections
import datetime
import pathlib
import platform
import re
import shutil
import time

from absl import flags
import jax
from ml_collections import config_flags

from dfl_jax import errors
from dfl_jax.tools import bench

# Lines a profiler derives from the kernels' own lines: the same time again.
DERIVED_LINES = ("XLA Ops", "XLA Modules", "Steps", "Framework Name Scope", "Framework Ops",
                 "Source code", "XLA TraceMe", "Launch Stats")

# (kind, pattern over "kernel name + HLO op", lower case); the first match wins. cuDNN's
# convolution kernels are named after implicit GEMMs, so convolutions are matched before matrix
# products; "convert" fusions are elementwise, not convolutions; ``nvjet`` kernels are cuBLAS's
# GEMMs on Hopper and newer; on a CPU, ``ynn_fusion`` ops are YNNPACK's dot (and convolution)
# fusions.
KINDS = (
    ("attention", r"fmha|flash|sdpa|attention|softmax"),
    ("convolution", r"conv(?!ert)|fprop|dgrad|wgrad|implicit_gemm|implicit_convolve"),
    ("matrix product", r"gemm|cublas|matmul|\bdot\b|dot[._]|xmma|cutlass|nvjet|\bsm\d\d_|ynn_"),
    ("copy/layout", r"transpose|copy|memcpy|memset|concatenate|dynamic[-_]update[-_]slice"
                    r"|pad\b|slice"),
    ("reduction/normalisation", r"reduce|norm|scatter|sort"),
    ("elementwise fusion", r"fusion|loop_|elementwise|convert"),
)
MATMUL_OR_CONV = ("matrix product", "convolution")


def kernel_kind(name: str, hlo_op: str = "") -> str:
  """A kind for a kernel from its name and its HLO op's name (a guess from names, for reading
  the profile: see ``KINDS``)."""
  text = f"{name} {hlo_op}".lower()
  for kind, pattern in KINDS:
    if re.search(pattern, text):
      return kind
  return "other"


def timeline_events(profile_data):
  """Every event of a ``jax.profiler.ProfileData`` as a dict: plane, line, name, duration_ns
  and its ``hlo_op`` stat (None where absent)."""
  for plane in profile_data.planes:
    for line in plane.lines:
      for event in line.events:
        hlo_op = next((value for key, value in event.stats if key == "hlo_op"), None)
        yield {"plane": plane.name, "line": line.name, "name": event.name,
               "duration_ns": float(event.duration_ns), "hlo_op": hlo_op}


def kernel_events(events):
  """The events that are kernels (or, on a CPU, XLA ops), and which timeline they came from."""
  events = list(events)
  device = [e for e in events if re.match(r"/device:(GPU|TPU)", e["plane"])]
  if device:
    streams = [e for e in device if e["line"].startswith("Stream")]
    if streams:
      return streams, "device stream lines"
    ops = [e for e in device if e["line"] == "XLA Ops"]
    if ops:
      return ops, "device XLA Ops line"
    return ([e for e in device if e["line"] not in DERIVED_LINES and e["hlo_op"]],
            "device lines with HLO ops")
  host = [e for e in events if e["plane"].startswith("/host") and e["hlo_op"]
          and e["line"] not in DERIVED_LINES]
  return host, "host XLA op events"


def summarise(events, steps: int, top: int = 15) -> dict:
  """Kernel table of ``events`` (``timeline_events``' dicts) over ``steps`` traced steps (of
  every traced device: the figures are per device)."""
  chosen, source = kernel_events(events)
  devices = max(1, len({e["plane"] for e in chosen}))
  device_steps = steps * devices      # every figure is per step of one device
  by_name = collections.OrderedDict()
  for e in chosen:
    row = by_name.setdefault(e["name"], {"name": e["name"], "calls": 0, "total_ns": 0.0,
                                         "hlo_ops": collections.Counter()})
    row["calls"] += 1
    row["total_ns"] += e["duration_ns"]
    if e["hlo_op"]:
      row["hlo_ops"][e["hlo_op"]] += 1
  total = sum(r["total_ns"] for r in by_name.values())
  rows = []
  for r in by_name.values():
    ops = [op for op, _ in r["hlo_ops"].most_common()]
    rows.append({"name": r["name"], "hlo_ops": ops[:3], "num_hlo_ops": len(ops),
                 "kind": kernel_kind(r["name"], " ".join(ops[:3])),
                 "calls_per_step": r["calls"] / device_steps,
                 "ms_per_step": r["total_ns"] / device_steps / 1e6,
                 "mean_us": r["total_ns"] / r["calls"] / 1e3,
                 "share": r["total_ns"] / total if total else 0.0})
  rows.sort(key=lambda r: -r["ms_per_step"])
  kinds = collections.defaultdict(float)
  for r in rows:
    kinds[r["kind"]] += r["ms_per_step"]
  by_kind = [{"kind": k, "ms_per_step": v, "share": v / (total / device_steps / 1e6) if total else 0.0}
             for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])]
  return {"timeline": source, "devices": devices, "num_kernels": len(rows),
          "kernel_calls_per_step": len(chosen) / device_steps,
          "kernel_ms_per_step": total / device_steps / 1e6,
          "top": rows[:top], "by_kind": by_kind,
          "top_not_matmul_or_conv": [r for r in rows if r["kind"] not in MATMUL_OR_CONV][:5]}


def _short(name, n=90):
  name = name.replace("|", "\\|")
  return name if len(name) <= n else name[:n - 1] + "…"


def to_markdown(result: dict) -> str:
  d = result["device"]
  s = result["summary"]
  wall = result["wall_ms_per_step"]
  lines = [f"**{result['config'] or 'config'}** training step, global batch {result['batch']}, "
           f"{result['dtype']}, on {d['num_devices']} x {d['device_kind']}; jax "
           f"{result['versions']['jax']}; {result['steps']} traced steps after {result['warmup']} "
           f"untimed; {result['date']}.", ""]
  if result.get("warning"):
    lines += [f"**Warning: {result['warning']}.**", ""]
  lines += [f"Kernel time {s['kernel_ms_per_step']:.2f} ms per step against {wall:.2f} ms of "
           f"wall time per step under the tracer (per device, {s['devices']} traced); "
           f"{s['kernel_calls_per_step']:.0f} kernel calls per step, {s['num_kernels']} distinct "
           f"kernels (timeline: {s['timeline']}).", "",
           "By kind (a guess from the kernels' and HLO ops' names):", "",
           "| kind | ms per step | share of kernel time |", "|---|---|---|"]
  lines += [f"| {k['kind']} | {k['ms_per_step']:.3f} | {100 * k['share']:.1f}% |"
            for k in s["by_kind"]]
  header = ["", f"Top {len(s['top'])} kernels by time:", "",
            "| # | kernel | HLO op | kind | calls per step | ms per step | mean us | share |",
            "|---|---|---|---|---|---|---|---|"]

  def table(rows):
    return [f"| {i + 1} | `{_short(r['name'])}` | {_short(', '.join(r['hlo_ops']), 40)}"
            f"{' (+%d)' % (r['num_hlo_ops'] - 3) if r['num_hlo_ops'] > 3 else ''} | {r['kind']} "
            f"| {r['calls_per_step']:g} | {r['ms_per_step']:.3f} | {r['mean_us']:.1f} | "
            f"{100 * r['share']:.1f}% |" for i, r in enumerate(rows)]

  lines += header + table(s["top"])
  lines += ["", "The largest kernels that are neither matrix products nor convolutions:", "",
            header[3], header[4]] + table(s["top_not_matmul_or_conv"])
  return "\n".join(lines) + "\n"


def profile(config, batch: int, steps: int, warmup: int, top: int, out_dir,
            config_name: str = "", command: str = "") -> dict:
  """Compiles, warms up, traces ``steps`` training steps into OUT/trace; the summary dict."""
  out = pathlib.Path(out_dir)
  trace_dir = out / "trace"
  shutil.rmtree(trace_dir, ignore_errors=True)
  compiled, state, data, compile_s = bench.compiled_train_step(config, batch)
  metrics = None
  for _ in range(warmup):
    state, metrics = compiled(state, data)
  jax.block_until_ready((state, metrics))
  with jax.profiler.trace(str(trace_dir)):
    t = time.perf_counter()           # the steps only: not the trace's start and its writing
    for _ in range(steps):
      state, metrics = compiled(state, data)
    jax.block_until_ready((state, metrics))
    wall = time.perf_counter() - t
  traces = sorted(trace_dir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
  if not traces:
    raise RuntimeError(f"{trace_dir}: jax.profiler.trace wrote no *.xplane.pb")
  events = timeline_events(jax.profiler.ProfileData.from_file(str(traces[-1])))
  facts = bench.device_facts()
  summary = summarise(events, steps, top)
  warning = None
  if facts["platform"] != "cpu" and not summary["timeline"].startswith("device"):
    warning = (f"no kernel timeline of the {facts['platform']} in the trace (profiler plugin or "
               "CUPTI not loaded?): the times are the host's op spans, not kernel times")
  return {
      "command": command, "config": config_name,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "dtype": config.model.get("dtype", "float32"), "batch": batch, "steps": steps,
      "warmup": warmup, "compile_s": compile_s, "wall_ms_per_step": 1e3 * wall / steps,
      "device": facts, "trace": str(traces[-1]), "warning": warning,
      "versions": {"jax": jax.__version__, "python": platform.python_version()},
      "summary": summary,
  }


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Configuration file.", lock_config=False)
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                    "Compute dtype (default: config.model.dtype).")
  flags.DEFINE_integer("batch", None, "Global batch (default: config.train.batch_size).")
  flags.DEFINE_integer("steps", 10, "Traced training steps.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation, before the trace.")
  flags.DEFINE_integer("top", 15, "Kernels listed.")
  flags.DEFINE_string("out", "workdir/profile", "Folder for trace/, profile.json, profile.md.")
  flags.mark_flag_as_required("config")


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  config = FLAGS.config
  if FLAGS.dtype:
    config.model.dtype = FLAGS.dtype
  if FLAGS.steps < 1 or FLAGS.top < 1 or FLAGS.warmup < 0:
    raise errors.ConfigError("--steps and --top must be at least 1, --warmup at least 0")
  name, command = bench.invocation("dfl_jax.profile")
  result = profile(config, FLAGS.batch or int(config.train.batch_size), FLAGS.steps,
                   FLAGS.warmup, FLAGS.top, FLAGS.out, name, command)
  paths = bench.write(result, FLAGS.out, "profile", to_markdown)
  print(to_markdown(result))
  print(f"wrote {paths['json']} and {paths['markdown']}; trace {result['trace']}")


def command():
  """``python -m dfl_jax.profile``."""
  define_flags()
  errors.run(main)
