"""dfl_jax.aot: compiling for a GPU that is not attached (target configs, kernel inventory)."""

import importlib.util

import pytest

from dfl_jax.tools import aot

# A compiled GPU module's entry computation, cut down: an input cast, a weight cast + layout
# transpose (on weights only), a cuDNN convolution, a cuBLAS GEMM, cuDNN flash attention, a copy.
HLO = """HloModule jit_f, entry_computation_layout={(f32[3,3,8,16]{3,2,1,0}, u8[2,8,8,8]{3,2,1,0})}

%fused_transpose.1 (p: f32[3,3,8,16]) -> bf16[16,3,3,8] {
  %p = f32[3,3,8,16]{3,2,1,0} parameter(0)
  ROOT %t = bf16[16,3,3,8]{3,2,1,0} transpose(%p), dimensions={3,0,1,2}
}

ENTRY %main.9 (w.1: f32[3,3,8,16], x.1: u8[2,8,8,8]) -> f32[2,16] {
  %w.1 = f32[3,3,8,16]{3,2,1,0} parameter(0), sharding={replicated}
  %x.1 = u8[2,8,8,8]{3,2,1,0} parameter(1), sharding={replicated}
  %loop_convert_fusion = bf16[2,8,8,8]{3,2,1,0} fusion(%x.1), kind=kLoop, calls=%fused_convert
  %input_transpose_fusion.1 = bf16[16,3,3,8]{3,2,1,0} fusion(%w.1), kind=kInput, calls=%fused_transpose.1
  %cudnn-conv.1 = (bf16[2,8,8,16]{3,2,1,0}, u8[0]{0}) custom-call(%loop_convert_fusion, %input_transpose_fusion.1), custom_call_target="__cudnn$convForward"
  %get-tuple-element.1 = bf16[2,8,8,16]{3,2,1,0} get-tuple-element(%cudnn-conv.1), index=0
  %bitcast.1 = bf16[2,1024]{1,0} bitcast(%get-tuple-element.1)
  %cublas-gemm.1 = (bf16[2,16]{1,0}, s8[4]{0}) custom-call(%bitcast.1, %bitcast.1), custom_call_target="__cublas$lt$matmul"
  %fmha.1 = (bf16[2,4,8,16]{3,2,1,0}, f32[2,4,8]{2,1,0}) custom-call(%bitcast.1, %bitcast.1, %bitcast.1), custom_call_target="__cudnn$fmhaSoftmax"
  %copy.1 = f32[3,3,8,16]{3,2,1,0} copy(%w.1)
  %all-reduce-start.1 = bf16[2,16]{1,0} all-reduce-start(%cublas-gemm.1), to_apply=%add
  %all-reduce-done.1 = bf16[2,16]{1,0} all-reduce-done(%all-reduce-start.1)
  ROOT %tuple = (f32[2,16]{1,0}) tuple(%cublas-gemm.1)
}
"""


def test_kernel_inventory_counts_launches_by_kind():
  inv = aot.kernel_inventory(HLO, data_parameters=(1,))
  assert {k: inv[k] for k in ("fusion", "gemm", "conv", "attention", "other_custom", "copy",
                              "transpose")} == {"fusion": 2, "gemm": 1, "conv": 1,
                                                "attention": 1, "other_custom": 0, "copy": 1,
                                                "transpose": 0}
  # The all-reduce pair counts once; it depends on the data through the GEMM.
  assert inv["kernels"] == 7 and inv["collective"] == 1 and inv["other"] == 0
  assert inv["transpose_bytes"] == 16 * 3 * 3 * 8 * 2  # the bf16 re-laid-out weight
  assert inv["copy_bytes"] == 3 * 3 * 8 * 16 * 4
  # The weight transpose and the weight copy depend on no input; everything else on x.
  assert inv["weights_only"] == 2
  # Without data parameters nothing is counted as weights-only.
  assert "weights_only" not in aot.kernel_inventory(HLO)


def test_kernel_inventory_of_a_cpu_program():
  """On a program XLA compiled here: a dot of both arguments and a transposed copy of the first
  alone. With the second as the data, the transposed copy depends on no data; with the first
  (or both) as the data, every kernel does."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  text = jax.jit(lambda a, b: (a @ b, a.T + 1.0)).lower(
      jnp.ones((64, 32)), jnp.ones((32, 16))).compile().as_text()
  inv = aot.kernel_inventory(text, data_parameters=(1,))
  assert inv["kernels"] >= 2 and inv["fusion"] >= 1
  assert inv["weights_only"] >= 1
  assert aot.kernel_inventory(text, data_parameters=(0,))["weights_only"] == 0
  assert aot.kernel_inventory(text, data_parameters=(0, 1))["weights_only"] == 0
  assert inv["collective"] == 0 and inv["other"] == 0


@pytest.mark.parametrize("name, capability, memory_gib", [("h100_sxm", "9.0", 79.1),
                                                         ("titan_v", "7.0", 11.8)])
def test_shipped_targets(name, capability, memory_gib):
  target = aot.read_target(name)
  assert target["compute_capability"] == capability
  assert target["device_memory_bytes"] / 2**30 == pytest.approx(memory_gib, abs=0.05)
  assert "NVIDIA" in target["name"]


def test_unknown_target_names_the_flag_and_the_shipped_ones(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"--target 'a100'.*h100_sxm.*titan_v.*tpu_v5e"):
    aot.read_target("a100")
  bad = tmp_path / "gpu.txtpb"
  bad.write_text("platform_name: 'CUDA'\n")
  with pytest.raises(ValueError, match="gpu.txtpb"):
    aot.read_target(str(bad))


def _cuda_plugin():
  return any(importlib.util.find_spec(m) is not None
             for m in ("jax_cuda12_plugin", "jax_cuda13_plugin"))


def _compile_tiny_or_error(target_name, dtype, installed, error):
  """configs/tiny.py compiled for the target (inference at batch 2, the training step at global
  batch 4 over 2 devices) where its compiler is installed, else the error checked (None).
  Attention 'auto' is XLA's form on both targets of these tests."""
  from configs import tiny  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.model.dtype = dtype
  target = aot.read_target(target_name)
  if not installed:
    with pytest.raises(RuntimeError, match=error):
      aot.compile_for_target(config, target, batches=(2,))
    return None
  result = aot.compile_for_target(config, target, batches=(2,), train_batches=(4,),
                                  num_devices=2)
  assert result["attention_implementation"] == "xla (auto)"
  return result


def test_compile_for_target_or_a_clear_error():
  """With JAX's CUDA plugin installed (no GPU needed), the tiny model compiles for the paper's
  Titan V in float16: attention 'auto' resolves to XLA's form there (no cuDNN flash attention
  before sm_80), the data-parallel training step over 2 devices too. Without the plugin (CI),
  the error says what to install."""
  result = _compile_tiny_or_error("titan_v", "float16", _cuda_plugin(),
                                  r"--target .*CUDA plugin.*cuda13")
  if result is None:
    return
  (inference,), (step,) = result["inference"], result["train"]
  assert inference["fits"] and step["fits"]
  assert inference["conv"] > 0 and inference["attention"] == 0
  assert step["kernels"] > inference["kernels"] and step["collective"] > 0  # 2 devices
  assert "TITAN V" in aot.to_markdown(result)


def test_tpu_target_compiles_or_a_clear_error():
  """With libtpu installed (no TPU needed), the tiny model compiles for a TPU v5e in bfloat16
  (attention 'auto': XLA's form). Without it (CI), the error says what to install."""
  target = aot.read_target("tpu_v5e")
  assert target["platform"] == "tpu" and target["device_memory_bytes"] == 16 * 2**30
  result = _compile_tiny_or_error("tpu_v5e", "bfloat16",
                                  importlib.util.find_spec("libtpu") is not None,
                                  r"--target 'tpu_v5e' needs libtpu.*\[tpu\]")
  if result is None:
    return
  (inference,), (step,) = result["inference"], result["train"]
  assert inference["fits"] and step["fits"] and step["kernels"] > inference["kernels"]
  assert step["collective"] > 0  # 2 chips
  assert 0 < inference["weights_only"] < inference["kernels"]
  assert "TPU v5 lite" in aot.to_markdown(result)
