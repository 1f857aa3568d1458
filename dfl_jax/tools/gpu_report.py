"""Every GPU measurement of the paper configuration in one run: ``python -m dfl_jax.gpu_report``.

    python -m dfl_jax.gpu_report [--config=configs/dfl.py] [--out workdir/gpu_report]
        [--budget_s 480] [--part_cap_s 240] [--batch 1,256] [--train_batch 256]
        [--more_batch 8,64] [--more_train_batch 64] [--float32_batch 1,256]
        [--per_call_batch 1,256] [--attention cudnn,xla,explicit] [--attention_batch 256]
        [--profile_batch 256] [--profile_steps 10] [--iters 20] [--set KEY=VALUE ...]

GPU time is scarce, so one command runs all of it, each part in its own process (a part that
fails or runs out of time costs only itself) and in this order, the most needed first:

1. ``doctor``: what JAX sees (``python -m dfl_jax.doctor --dtype bfloat16``);
2. ``bfloat16``: ``dfl_jax.bench`` in bfloat16 at the batches the targets name: inference at
   ``--batch`` (weights prepared once), the training step at ``--train_batch``;
3. ``profile``: ``dfl_jax.profile``, ``--profile_steps`` bfloat16 training steps at
   ``--profile_batch`` traced, the top 15 kernels and the largest that are neither matrix
   products nor convolutions;
4. ``bfloat16_more``: the other bfloat16 batches (``--more_batch``, ``--more_train_batch``);
5. ``float32``: inference at ``--float32_batch``;
6. ``per_call``: bfloat16 inference at ``--per_call_batch`` with ``--noprepare_weights``;
7. ``attention_IMPL``: bfloat16 inference at ``--attention_batch`` for each attention
   implementation (``config.model.attention_implementation``).

Nothing here needs TensorFlow (inputs are synthetic arrays put on the device). A part starts
only while ``--budget_s`` lasts and runs at most ``--part_cap_s``; each part's folder is emptied
before it starts, and ``bench`` writes its files after every measurement, so a part stopped
half-way reports what it measured, and nothing of an earlier run is reported as new. ``OUT``
holds ``report.md`` (each part's status, the targets with the figures measured, met or not,
and their share of the chip's peak, every part's tables, the profile) and ``report.json``,
both rewritten after every part, and a folder per part with its files and ``log.txt``.

Compile times are each part's own (no compilation cache is shared between parts).
"""

import datetime
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

from absl import flags

from dfl_jax import errors

# (what, section, batch, key, comparison, target): the targets of docs/benchmarks.md (one
# H100-class GPU, the paper configuration at 256x256, bfloat16).
TARGETS = (
    ("inference throughput, batch 256 (images/s)", "inference", 256, "images_per_s", ">=",
     5000.0),
    ("inference throughput, batch 1 (images/s)", "inference", 1, "images_per_s", ">=", 500.0),
    ("inference latency, batch 1 (median ms)", "inference", 1, "latency_ms_median", "<=", 2.0),
    ("training throughput, batch 256 (images/s)", "train", 256, "images_per_s", ">=", 2500.0),
)
STRETCH_FRACTION_OF_PEAK = 0.40  # the stretch goal: 40% of the dense bfloat16 peak
ROOT = pathlib.Path(__file__).resolve().parents[2]


def parts(config, out, batch, train_batch, more_batch, more_train_batch, float32_batch,
          per_call_batch, attention, attention_batch, profile_batch, profile_steps, iters,
          overrides=()):
  """[(name, argv after the interpreter, its folder)], in the order they run; ``overrides``
  (``KEY=VALUE``) go to every part that reads the configuration as ``--config.KEY=VALUE``."""
  out = pathlib.Path(out)
  sets = [f"--config.{o}" for o in overrides]
  common = [f"--config={config}", f"--iters={iters}"] + sets

  def bench(name, *args):
    return (name, ["-m", "dfl_jax.bench"] + common + list(args) + [f"--out={out / name}"],
            out / name)

  result = [("doctor", ["-m", "dfl_jax.doctor", "--dtype=bfloat16"], out / "doctor"),
            bench("bfloat16", "--dtype=bfloat16", f"--batch={batch}",
                  *([f"--train_batch={train_batch}", "--train"] if train_batch else [])),
            ("profile", ["-m", "dfl_jax.profile", f"--config={config}"] + sets + [
                "--dtype=bfloat16", f"--batch={profile_batch}", f"--steps={profile_steps}",
                f"--out={out / 'profile'}"], out / "profile")]
  if more_batch or more_train_batch:
    result.append(bench("bfloat16_more", "--dtype=bfloat16", f"--batch={more_batch}",
                        *([f"--train_batch={more_train_batch}", "--train"]
                          if more_train_batch else [])))
  if float32_batch:
    result.append(bench("float32", "--dtype=float32", f"--batch={float32_batch}"))
  if per_call_batch:
    result.append(bench("per_call", "--dtype=bfloat16", f"--batch={per_call_batch}",
                        "--noprepare_weights"))
  for impl in [a for a in attention.split(",") if a]:
    result.append(bench(f"attention_{impl}", "--dtype=bfloat16", f"--batch={attention_batch}",
                        f"--config.model.attention_implementation={impl}"))
  return result


def run_parts(plan, budget_s: float, part_cap_s: float = float("inf"),
              min_start_s: float = 20.0, env=None, after_part=None):
  """Runs each part while the budget lasts, each at most ``part_cap_s``, in an emptied folder;
  [{name, command, folder, status, seconds, returncode}]. ``after_part(rows so far)`` after
  each."""
  start = time.monotonic()
  done = []
  for name, argv, folder in plan:
    shutil.rmtree(folder, ignore_errors=True)   # nothing of an earlier run is reported as new
    folder.mkdir(parents=True)
    left = budget_s - (time.monotonic() - start)
    row = {"name": name, "command": "python " + shlex.join(argv), "folder": str(folder)}
    if left < min_start_s:
      done.append(dict(row, status="skipped (budget spent)", seconds=0.0, returncode=None))
      print(f"[gpu_report] {name}: skipped, {left:.0f} s of the budget left", flush=True)
    else:
      limit = min(left, part_cap_s)
      print(f"[gpu_report] {name}: {row['command']} (at most {limit:.0f} s)", flush=True)
      t = time.monotonic()
      with open(folder / "log.txt", "w", encoding="utf-8") as log:
        try:
          rc = subprocess.run([sys.executable] + argv, stdout=log, stderr=subprocess.STDOUT,
                              timeout=limit, env=env, check=False).returncode
          status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
          rc, status = None, f"timed out after {limit:.0f} s"
      seconds = time.monotonic() - t
      if name == "doctor":   # its output is the part's result: kept beside the log
        (folder / "doctor.txt").write_text((folder / "log.txt").read_text())
      done.append(dict(row, status=status, seconds=seconds, returncode=rc))
      print(f"[gpu_report] {name}: {status} in {seconds:.0f} s", flush=True)
    if after_part:
      after_part(done)
  return done


def _stem(name):
  return "profile" if name == "profile" else "bench"


def _load(folder, stem):
  try:
    return json.loads((pathlib.Path(folder) / f"{stem}.json").read_text())
  except (OSError, ValueError):
    return None


def _row(results, section, batch):
  for result in results:
    for row in (result or {}).get(section) or []:
      if row["batch"] == batch:
        return row
  return None


def targets(*results):
  """[{what, figure, target, met, fraction_of_peak}] from bfloat16 bench results (the first
  that has the row)."""
  out = []
  for what, section, batch, key, op, target in TARGETS:
    row = _row(results, section, batch)
    value = row.get(key) if row else None
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    out.append({"what": what, "figure": value, "target": f"{op} {target:g}", "met": met,
                "fraction_of_peak": row.get("fraction_of_peak") if row else None})
  return out


def _fmt(value, digits=1):
  return "n/a" if value is None else f"{value:,.{digits}f}"


def to_markdown(report) -> str:
  results = report["results"]
  first = next((r for r in results.values() if r and r.get("device")), {})
  device = first.get("device") or {}
  lines = [f"# GPU report: {device.get('device_kind', 'device unknown (no part measured)')}",
           "", f"`{report['command']}`, {report['date']}; jax "
           f"{(first.get('versions') or {}).get('jax', '?')}.", "",
           "| part | status | seconds |", "|---|---|---|"]
  lines += [f"| {p['name']} | {p['status']} | {p['seconds']:.0f} |" for p in report["parts"]]
  lines += ["", "## Targets (bfloat16, paper configuration)", "",
            "| what | measured | target | met | share of peak |", "|---|---|---|---|---|"]
  for t in report["targets"]:
    met = "n/a" if t["met"] is None else ("yes" if t["met"] else "no")
    share = "n/a" if t["fraction_of_peak"] is None else f"{100 * t['fraction_of_peak']:.1f}%"
    lines.append(f"| {t['what']} | {_fmt(t['figure'], 2)} | {t['target']} | {met} | {share} |")
  lines.append(f"\nStretch goal: {100 * STRETCH_FRACTION_OF_PEAK:.0f}% of the dense bfloat16 "
               "peak.")
  for p in report["parts"]:
    folder = pathlib.Path(p["folder"])
    md = folder / f"{_stem(p['name'])}.md"
    lines += ["", f"## {p['name']}", "", f"`{p['command']}`: {p['status']}", ""]
    if p["name"] == "doctor" and (folder / "doctor.txt").exists():
      lines += ["```", (folder / "doctor.txt").read_text().strip()[-3000:], "```"]
    elif md.exists():
      lines.append(md.read_text().strip())
    if p["status"] != "ok" and (folder / "log.txt").exists():
      lines += ["", "Last lines of its log:", "", "```",
                "\n".join((folder / "log.txt").read_text().splitlines()[-15:]), "```"]
  return "\n".join(lines) + "\n"


def report(rows, out, command):
  """Writes OUT/report.json and OUT/report.md for the parts run so far (``run_parts``' rows);
  a part's results are whatever its emptied folder holds now (all of it, or the measurements
  made before it stopped)."""
  results = {p["name"]: None if p["name"] == "doctor" else _load(p["folder"], _stem(p["name"]))
             for p in rows}
  rep = {"command": command,
         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "parts": rows, "results": results,
         "targets": targets(results.get("bfloat16"), results.get("bfloat16_more"))}
  out = pathlib.Path(out)
  (out / "report.json").write_text(json.dumps(rep, indent=1))
  (out / "report.md").write_text(to_markdown(rep))
  return rep


def define_flags():
  flags.DEFINE_string("config", "configs/dfl.py", "Configuration file (passed to each part); "
                      "a relative path not found here is read from the checkout.")
  flags.DEFINE_string("out", "workdir/gpu_report", "Folder for report.md, report.json, parts.")
  flags.DEFINE_float("budget_s", 480.0, "Seconds for all parts together.")
  flags.DEFINE_float("part_cap_s", 240.0, "Seconds one part may run at most.")
  flags.DEFINE_string("batch", "1,256", "bfloat16 inference batch sizes of the targets.")
  flags.DEFINE_string("train_batch", "256", "bfloat16 training global batch of the targets.")
  flags.DEFINE_string("more_batch", "8,64", "Further bfloat16 inference batch sizes.")
  flags.DEFINE_string("more_train_batch", "64", "Further bfloat16 training global batches.")
  flags.DEFINE_string("float32_batch", "1,256", "float32 inference batch sizes.")
  flags.DEFINE_string("per_call_batch", "1,256", "Inference batch sizes, weights cast per call.")
  flags.DEFINE_string("attention", "cudnn,xla,explicit", "Attention implementations compared.")
  flags.DEFINE_integer("attention_batch", 256, "Inference batch of the attention comparison.")
  flags.DEFINE_integer("profile_batch", 256, "Training global batch of the traced steps.")
  flags.DEFINE_integer("profile_steps", 10, "Traced training steps.")
  flags.DEFINE_integer("iters", 20, "Timed calls per bench measurement.")
  flags.DEFINE_multi_string("set", [], "KEY=VALUE: a configuration override for every part "
                            "(--set data.image_size=64 passes --config.data.image_size=64).")


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  config = pathlib.Path(FLAGS.config)
  if not config.is_file() and not config.is_absolute() and (ROOT / config).is_file():
    config = ROOT / config
  if not config.is_file():
    raise errors.MissingFileError(f"--config={FLAGS.config}: no such file")
  bad = [o for o in FLAGS.set if "=" not in o]
  if bad:
    raise errors.ConfigError(f"--set takes KEY=VALUE, got {bad[0]!r}")
  if FLAGS.budget_s <= 0 or FLAGS.part_cap_s <= 0:
    raise errors.ConfigError("--budget_s and --part_cap_s must be positive, got "
                             f"{FLAGS.budget_s} and {FLAGS.part_cap_s}")
  out = pathlib.Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  plan = parts(config, out, FLAGS.batch, FLAGS.train_batch, FLAGS.more_batch,
               FLAGS.more_train_batch, FLAGS.float32_batch, FLAGS.per_call_batch,
               FLAGS.attention, FLAGS.attention_batch, FLAGS.profile_batch,
               FLAGS.profile_steps, FLAGS.iters, FLAGS.set)
  # The parts import this checkout's packages, wherever the command is run from.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  command = " ".join(["python -m dfl_jax.gpu_report"] + sys.argv[1:])
  reports = []     # rewritten after every part: the last one is the run's
  run_parts(plan, FLAGS.budget_s, FLAGS.part_cap_s, env=env,
            after_part=lambda rows: reports.append(report(rows, out, command)))
  rep = reports[-1]
  print(to_markdown(rep))
  print(f"wrote {out / 'report.md'} and {out / 'report.json'}")


def command():
  """``python -m dfl_jax.gpu_report``."""
  define_flags()
  errors.run(main)
