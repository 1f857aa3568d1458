"""dfl_jax.bench: the structure of its JSON and Markdown (a benchmark, so no speed is asserted)."""

import json

import pytest

from dfl_jax.tools import bench

ROW_KEYS = {"batch", "compile_s", "latency_ms_median", "latency_ms_p90", "images_per_s",
            "flops_per_image", "achieved_flops_per_s", "fraction_of_peak", "peak_memory_bytes",
            "xla_memory_bytes", "cpu_s_per_call", "dispatch_ms_median"}


@pytest.mark.slow
def test_bench_tiny_writes_json_and_markdown(tmp_path):
  from configs import tiny  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.data.image_size = 64
  result = bench.run(config, batches=[2, 1], train_batches=[2], warmup=1, iters=2,
                     config_name="configs/tiny.py")
  paths = bench.write(result, tmp_path / "out")
  loaded = json.loads((tmp_path / "out" / "bench.json").read_text())
  assert loaded == json.loads(json.dumps(result))
  assert [r["batch"] for r in loaded["inference"]] == [1, 2]
  assert [r["batch"] for r in loaded["train"]] == [2]
  for row in loaded["inference"] + loaded["train"]:
    assert set(row) == ROW_KEYS
    assert row["images_per_s"] > 0 and row["compile_s"] > 0
    assert 0 < row["latency_ms_median"] <= row["latency_ms_p90"]
    assert row["flops_per_image"] > 1e6  # XLA's cost analysis of the tiny model at 64 px
    assert row["fraction_of_peak"] is None  # no known peak for a CPU
  # A training step costs more than inference (backward pass).
  assert loaded["train"][0]["flops_per_image"] > 2 * loaded["inference"][0]["flops_per_image"]
  assert loaded["dtype"] == "float32" and loaded["image_size"] == 64
  assert loaded["device"]["platform"] == "cpu" and loaded["device"]["cpu"]
  assert loaded["params"] > 1e6 and loaded["versions"]["jax"]

  md = (tmp_path / "out" / "bench.md").read_text()
  assert paths["markdown"].endswith("bench.md")
  assert md.startswith("**configs/tiny.py**, 64x64, float32")
  assert "Inference (weights cast and laid out once" in md and "Training step:" in md
  assert loaded["prepare_weights"] is True
  header = "| " + " | ".join(c[1] for c in bench.COLUMNS) + " |"
  assert md.count(header) == 2
  table_rows = [l for l in md.splitlines() if l.startswith("| ") and l != header]
  assert len(table_rows) == 3 and all(l.count("|") == len(bench.COLUMNS) + 1
                                      for l in table_rows)


def test_peak_flops_table():
  assert bench.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
  assert bench.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756.0e12
  assert bench.peak_flops("NVIDIA TITAN V", "float16") == 110.0e12
  assert bench.peak_flops("NVIDIA TITAN V", "bfloat16") is None  # no bfloat16 units
  assert bench.peak_flops("Tesla V100-SXM2-16GB", "float32") == 15.7e12
  assert bench.peak_flops("TPU v5 lite", "bfloat16") == 197.0e12
  assert bench.peak_flops("TPU v5", "bfloat16") == 459.0e12
  assert bench.peak_flops("cpu", "float32") is None
