"""dfl_jax.profile's kernel table and dfl_jax.gpu_report's one-run GPU measurement, rehearsed on
the CPU with the tiny configuration and no TensorFlow (the GPU machine has none)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, compilation_cache_env
from dfl_jax.tools import bench, gpu_report, profile

ROW_KEYS = {"batch", "compile_s", "latency_ms_median", "latency_ms_p90", "images_per_s",
            "flops_per_image", "achieved_flops_per_s", "fraction_of_peak", "peak_memory_bytes",
            "xla_memory_bytes", "cpu_s_per_call", "dispatch_ms_median"}


@pytest.mark.parametrize("name, hlo_op, kind", [
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64",
     "cudnn-conv.12", "convolution"),
    ("sm90_xmma_wgrad_implicit_gemm_indexed_bf16bf16", "cudnn-conv-bw-filter.3", "convolution"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "cublas-gemm.4",
     "matrix product"),
    ("cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8", "custom-call.2",
     "matrix product"),
    ("gemm_fusion_dot_17", "gemm_fusion_dot.17", "matrix product"),
    ("cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x128_4x1x1_kernel0_0",
     "custom-call.9", "attention"),
    ("loop_transpose_fusion_3", "transpose_fusion.3", "copy/layout"),
    ("MemcpyD2D", "", "copy/layout"),
    ("input_reduce_fusion_21", "reduce_fusion.21", "reduction/normalisation"),
    ("loop_convert_fusion_5", "convert_fusion.5", "elementwise fusion"),
    ("loop_multiply_fusion", "fusion.44", "elementwise fusion"),
    ("nvjet_hsh_192x192_64x4_2x1_v_bz_coopA_NNT", "custom-call.7", "matrix product"),
    ("rng_bit_generator_kernel", "rng-bit-generator.1", "other"),
    ("ynn_fusion.235", "ynn_fusion.235", "matrix product"),         # XLA:CPU's YNNPACK
    ("copy.1493", "copy.1493", "copy/layout"),
])
def test_kernel_kind(name, hlo_op, kind):
  assert profile.kernel_kind(name, hlo_op) == kind


def _event(plane, line, name, us, hlo_op=None):
  return {"plane": plane, "line": line, "name": name, "duration_ns": us * 1e3,
          "hlo_op": hlo_op}


def test_summary_counts_the_gpu_streams_once_per_device():
  kernels, derived = [], []
  for gpu in ("/device:GPU:0", "/device:GPU:1"):   # two devices: the figures are their mean
    kernels += ([_event(gpu, "Stream #13(Kernel)", "sm90_xmma_gemm_bf16", 100, "cublas-gemm.1")]
                * 3
                + [_event(gpu, "Stream #14(Kernel)", "loop_add_fusion", 50, "fusion.2")] * 2
                + [_event(gpu, "Stream #14(Kernel)", "loop_add_fusion", 30, "fusion.3")]
                + [_event(gpu, "Stream #15(MemcpyD2D)", "MemcpyD2D", 10)])
    # Lines that are not kernels: the profiler's overhead, a derived line repeating the time.
    derived += ([_event(gpu, "CUPTI overhead", "overhead", 500)]
                + [_event(gpu, "XLA Ops", "fusion.2", 50, "fusion.2")] * 3)
  host = [_event("/host:CPU", "python", "step", 1000),
          _event("/host:CPU", "tf_XLA", "fusion.2", 70, "fusion.2")]
  s = profile.summarise(kernels + derived + host, steps=2, top=2)
  assert s["timeline"] == "device stream lines" and s["devices"] == 2
  assert s["num_kernels"] == 3 and s["kernel_calls_per_step"] == 3.5
  assert s["kernel_ms_per_step"] == pytest.approx((300 + 130 + 10) / 2 / 1e3)
  assert [r["name"] for r in s["top"]] == ["sm90_xmma_gemm_bf16", "loop_add_fusion"]
  gemm, fusion = s["top"]
  assert gemm["calls_per_step"] == 1.5 and gemm["mean_us"] == pytest.approx(100)
  assert gemm["ms_per_step"] == pytest.approx(0.15) and gemm["kind"] == "matrix product"
  assert fusion["hlo_ops"] == ["fusion.2", "fusion.3"] and fusion["num_hlo_ops"] == 2
  assert fusion["mean_us"] == pytest.approx(130 / 3) and fusion["share"] == pytest.approx(130 / 440)
  assert sum(k["share"] for k in s["by_kind"]) == pytest.approx(1.0)
  assert {k["kind"]: k["ms_per_step"] for k in s["by_kind"]} == pytest.approx(
      {"matrix product": 0.15, "elementwise fusion": 0.065, "copy/layout": 0.005})
  assert [r["name"] for r in s["top_not_matmul_or_conv"]] == ["loop_add_fusion", "MemcpyD2D"]


def test_summary_reads_the_xla_ops_line_on_tpus_and_the_host_ops_on_cpus():
  tpu = [_event("/device:TPU:0", "XLA Ops", "fusion.1", 20, "fusion.1"),
         _event("/device:TPU:0", "XLA Modules", "jit_step", 20, "jit_step")]
  s = profile.summarise(tpu, steps=1)
  assert s["timeline"] == "device XLA Ops line" and s["num_kernels"] == 1
  cpu = [_event("/host:CPU", "python", "step", 1000),
         _event("/host:CPU", "tf_XLAPjRtCpuClient/1", "convolution.3", 40, "convolution.3"),
         _event("/host:CPU", "tf_XLAPjRtCpuClient/2", "ThreadpoolListener::Record", 0)]
  s = profile.summarise(cpu, steps=1)
  assert s["timeline"] == "host XLA op events"
  assert [(r["name"], r["kind"]) for r in s["top"]] == [("convolution.3", "convolution")]


def test_parts_run_in_order_with_the_overrides(tmp_path):
  plan = gpu_report.parts("configs/dfl.py", tmp_path, "1,256", "256", "8", "64", "1", "1",
                          "cudnn,xla", 256, 256, 10, 20, ["data.image_size=64"])
  assert [p[0] for p in plan] == ["doctor", "bfloat16", "profile", "bfloat16_more", "float32",
                                  "per_call", "attention_cudnn", "attention_xla"]
  for name, argv, folder in plan[1:]:
    assert "--config.data.image_size=64" in argv and folder == tmp_path / name
  assert "--config.model.attention_implementation=xla" in plan[-1][1]
  assert "--noprepare_weights" in plan[5][1]
  assert {"--batch=1,256", "--train", "--train_batch=256"} <= set(plan[1][1])
  # Empty lists leave their parts out.
  plan = gpu_report.parts("c.py", tmp_path, "1", "", "", "", "", "", "", 2, 2, 1, 1)
  assert [p[0] for p in plan] == ["doctor", "bfloat16", "profile"]
  assert "--train" not in plan[1][1]


@pytest.mark.slow
def test_a_failing_part_a_stopped_one_and_a_skipped_one_report_nothing_stale(tmp_path):
  # An earlier run's results in the folders must not be reported as this run's.
  for name in ("bfloat16", "slow"):
    (tmp_path / name).mkdir()
    (tmp_path / name / "bench.json").write_text(json.dumps(
        {"inference": [{"batch": 256, "images_per_s": 9999.0}], "train": []}))
  plan = [("bfloat16", ["-c", "import sys; print('boom'); sys.exit(4)"], tmp_path / "bfloat16"),
          ("slow", ["-c", "import time; time.sleep(30)"], tmp_path / "slow"),
          ("late", ["-c", "pass"], tmp_path / "late")]
  seen = []
  rows = gpu_report.run_parts(plan, budget_s=60.0, part_cap_s=2.0, min_start_s=0.5,
                              after_part=lambda r: seen.append(len(r)))
  assert seen == [1, 2, 3]
  assert [r["status"] for r in rows] == ["failed (exit 4)", "timed out after 2 s", "ok"]
  assert (tmp_path / "bfloat16" / "log.txt").read_text().strip() == "boom"
  rep = gpu_report.report(rows, tmp_path, "python -m dfl_jax.gpu_report")
  assert rep["results"] == {"bfloat16": None, "slow": None, "late": None}
  assert all(t["figure"] is None and t["met"] is None for t in rep["targets"])
  md = (tmp_path / "report.md").read_text()
  assert "| bfloat16 | failed (exit 4) |" in md and "boom" in md and "9999" not in md
  # Out of budget: not started.
  rows = gpu_report.run_parts(plan[2:], budget_s=0.1, min_start_s=0.5)
  assert rows[0]["status"] == "skipped (budget spent)" and rows[0]["returncode"] is None


def test_targets_read_the_bfloat16_rows():
  bf16 = {"inference": [{"batch": 1, "images_per_s": 600.0, "latency_ms_median": 1.5,
                         "fraction_of_peak": 0.01},
                        {"batch": 256, "images_per_s": 4000.0, "fraction_of_peak": 0.11}],
          "train": []}
  more = {"inference": [], "train": [{"batch": 256, "images_per_s": 2600.0,
                                      "fraction_of_peak": 0.2}]}
  got = {t["what"]: (t["figure"], t["met"], t["fraction_of_peak"])
         for t in gpu_report.targets(bf16, more)}
  assert got == {"inference throughput, batch 256 (images/s)": (4000.0, False, 0.11),
                 "inference throughput, batch 1 (images/s)": (600.0, True, 0.01),
                 "inference latency, batch 1 (median ms)": (1.5, True, 0.01),
                 "training throughput, batch 256 (images/s)": (2600.0, True, 0.2)}


@pytest.mark.slow
def test_rehearsal_on_the_cpu_without_tensorflow(tmp_path, shared_compilation_cache):
  """The whole GPU run with the tiny configuration, as the GPU machine would run it: packages it
  lacks (TensorFlow, tensorflow-datasets, clu, plyfile) cannot be imported."""
  blocked = tmp_path / "blocked"
  for name in ("tensorflow", "tensorflow_datasets", "clu", "plyfile"):
    (blocked / name).mkdir(parents=True)
    (blocked / name / "__init__.py").write_text(
        f"raise ImportError('{name} is not on the GPU machine')\n")
  out = tmp_path / "report"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocked), str(ROOT)]),
             JAX_PLATFORMS="cpu", **compilation_cache_env(shared_compilation_cache))
  proc = subprocess.run(
      [sys.executable, "-m", "dfl_jax.gpu_report", "--config=configs/tiny.py", f"--out={out}",
       "--set=data.image_size=64", "--batch=1", "--train_batch=2", "--more_batch=",
       "--more_train_batch=", "--float32_batch=1", "--per_call_batch=1",
       "--attention=xla", "--attention_batch=1", "--profile_batch=2",
       "--profile_steps=2", "--iters=2", "--budget_s=1200", "--part_cap_s=600"],
      cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=1800)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  rep = json.loads((out / "report.json").read_text())
  statuses = {p["name"]: p["status"] for p in rep["parts"]}
  # Each kind of part once (bfloat16_more and the other attention implementations run the
  # same code as bfloat16 and attention_xla; the plan's order and flags: test_parts_...).
  assert statuses == {n: "ok" for n in ("doctor", "bfloat16", "profile", "float32", "per_call",
                                        "attention_xla")}, \
      {p["name"]: (p["status"], (out / p["name"] / "log.txt").read_text()[-1500:])
       for p in rep["parts"] if p["status"] != "ok"}
  r = rep["results"]
  _check_bench(r["bfloat16"], (out / "bfloat16" / "bench.md").read_text())
  assert r["float32"]["dtype"] == "float32" and r["per_call"]["prepare_weights"] is False
  assert "(float32 weights every call)" in (out / "per_call" / "bench.md").read_text()
  s = r["profile"]["summary"]
  assert s["timeline"] == "host XLA op events" and 0 < len(s["top"]) <= 15
  assert r["profile"]["warning"] is None and s["devices"] == 1
  assert s["kernel_ms_per_step"] > 0 and r["profile"]["steps"] == 2
  assert sum(k["share"] for k in s["by_kind"]) == pytest.approx(1.0)
  assert os.path.getsize(r["profile"]["trace"]) > 0
  md = (out / "report.md").read_text()
  for heading in ("## Targets", "## bfloat16", "## profile", "Top ", "## attention_xla"):
    assert heading in md
  assert "JAX" in (out / "doctor" / "doctor.txt").read_text()



def _check_bench(loaded, md):
  """The structure of a ``python -m dfl_jax.bench`` result (the tiny model in bfloat16 at 64
  pixels, inference at batch 1, training at 2, on the CPU) and of its Markdown."""
  assert [r["batch"] for r in loaded["inference"]] == [1]
  assert [r["batch"] for r in loaded["train"]] == [2]
  for row in loaded["inference"] + loaded["train"]:
    assert set(row) == ROW_KEYS
    assert row["images_per_s"] > 0 and row["compile_s"] > 0
    assert 0 < row["latency_ms_median"] <= row["latency_ms_p90"]
    assert row["flops_per_image"] > 1e6  # XLA's cost analysis of the tiny model at 64 px
    assert row["fraction_of_peak"] is None  # no known peak for a CPU
  # A training step costs more than inference (backward pass).
  assert loaded["train"][0]["flops_per_image"] > 2 * loaded["inference"][0]["flops_per_image"]
  assert loaded["dtype"] == "bfloat16" and loaded["image_size"] == 64
  assert loaded["device"]["platform"] == "cpu" and loaded["device"]["cpu"]
  assert loaded["params"] > 1e6 and loaded["versions"]["jax"]
  assert loaded["prepare_weights"] is True
  assert md.startswith(f"**{loaded['config']}**, 64x64, bfloat16")
  assert "Inference (weights cast and laid out once" in md and "Training step:" in md
  header = "| " + " | ".join(c[1] for c in bench.COLUMNS) + " |"
  assert md.count(header) == 2
  table_rows = [l for l in md.splitlines() if l.startswith("| ") and l != header]
  assert len(table_rows) == 2 and all(l.count("|") == len(bench.COLUMNS) + 1
                                      for l in table_rows)
