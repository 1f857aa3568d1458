"""dfl_jax.bench: the peak FLOP/s table. The structure of its JSON and Markdown is checked on a
real ``python -m dfl_jax.bench`` run, the GPU script's CPU rehearsal
(tests/test_gpu_report.py::test_rehearsal_on_the_cpu_without_tensorflow; a benchmark, so no
speed is asserted)."""

from dfl_jax.tools import bench


def test_peak_flops_table():
  assert bench.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
  assert bench.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756.0e12
  assert bench.peak_flops("NVIDIA TITAN V", "float16") == 110.0e12
  assert bench.peak_flops("NVIDIA TITAN V", "bfloat16") is None  # no bfloat16 units
  assert bench.peak_flops("Tesla V100-SXM2-16GB", "float32") == 15.7e12
  assert bench.peak_flops("TPU v5 lite", "bfloat16") == 197.0e12
  assert bench.peak_flops("TPU v5", "bfloat16") == 459.0e12
  assert bench.peak_flops("cpu", "float32") is None
