"""dfl_jax.doctor: the mismatch checks on made-up machines, and the real report on this one."""

from dfl_jax.tools import doctor


def _facts(devices=(), backend="cpu", nvidia_smi=None, jax_platforms="", **packages):
  pkgs = {name: None for name in doctor.PACKAGES}
  pkgs.update({"jax": "0.10.2", "jaxlib": "0.10.2"})
  pkgs.update({k.replace("_", "-"): v for k, v in packages.items()})
  return {"packages": pkgs, "nvidia_smi": nvidia_smi, "jax_platforms": jax_platforms,
          "backend": backend, "error": None,
          "devices": [{"platform": p, "device_kind": k, "compute_capability": cc}
                      for p, k, cc in devices]}


TITAN_V = ("gpu", "NVIDIA TITAN V", "7.0")
H100 = ("gpu", "NVIDIA H100 80GB HBM3", "9.0")


def test_a_cpu_machine_without_extras_is_fine():
  assert doctor.check(_facts([("cpu", "cpu", None)])) == []


def test_volta_with_the_cuda13_plugin_is_reported():
  facts = _facts([TITAN_V], backend="gpu", jax_cuda13_plugin="0.10.2",
                 jax_cuda13_pjrt="0.10.2")
  (warning,) = doctor.check(facts)
  assert "TITAN V" in warning and "CUDA 13 dropped" in warning and "[cuda12]" in warning


def test_volta_not_seen_by_jax_is_found_through_nvidia_smi():
  """With the CUDA 13 plugin JAX does not start on a Volta GPU at all; nvidia-smi still sees it."""
  facts = _facts([("cpu", "cpu", None)], nvidia_smi=[("Tesla V100-SXM2-16GB", "7.0")],
                 jax_cuda13_plugin="0.10.2")
  warnings = doctor.check(facts)
  assert any("V100" in w and "CUDA 13 dropped" in w for w in warnings)
  assert any("JAX found no GPU" in w and "nvidia-smi sees" in w for w in warnings)


def test_volta_with_a_new_cudnn_is_reported_and_the_pinned_one_is_not():
  new = _facts([TITAN_V], backend="gpu", jax_cuda12_plugin="0.10.2",
               nvidia_cudnn_cu12="9.12.0.46")
  assert any("9.10.2.21" in w for w in doctor.check(new))
  pinned = _facts([TITAN_V], backend="gpu", jax_cuda12_plugin="0.10.2",
                  nvidia_cudnn_cu12="9.10.2.21")
  assert doctor.check(pinned) == []


def test_a_cuda_extra_without_a_gpu_is_reported_with_the_likely_reason():
  none = _facts([("cpu", "cpu", None)], jax_cuda12_plugin="0.10.2")
  (warning,) = doctor.check(none)
  assert "JAX found no GPU" in warning and "nvidia-smi is missing" in warning
  hidden = _facts([("cpu", "cpu", None)], jax_platforms="cpu", jax_cuda13_plugin="0.10.2")
  (warning,) = doctor.check(hidden)
  assert "JAX_PLATFORMS=cpu" in warning


def test_both_plugins_or_mismatched_versions_are_reported():
  both = _facts([H100], backend="gpu", jax_cuda12_plugin="0.10.2", jax_cuda13_plugin="0.10.2")
  assert any("both CUDA plugins" in w for w in doctor.check(both))
  stale = _facts([H100], backend="gpu", jax_cuda13_plugin="0.9.0")
  assert any("does not match jaxlib 0.10.2" in w for w in doctor.check(stale))
  assert doctor.check(_facts([H100], backend="gpu", jax_cuda13_plugin="0.10.2")) == []


def test_libtpu_without_a_tpu_and_bfloat16_before_ampere():
  assert any("no TPU" in w for w in doctor.check(_facts([("cpu", "cpu", None)],
                                                        libtpu="0.0.42")))
  facts = _facts([TITAN_V], backend="gpu", jax_cuda12_plugin="0.10.2")
  assert any("bfloat16" in w and "float16" in w for w in doctor.check(facts, "bfloat16"))
  assert doctor.check(_facts([H100], backend="gpu", jax_cuda13_plugin="0.10.2"),
                      "bfloat16") == []


def test_the_report_of_this_machine():
  facts = doctor.gather_facts()
  text = doctor.report(facts)
  assert f"backend: {facts['backend']}" in text and "jax: " in text and "jaxlib: " in text
  assert isinstance(doctor.check(facts), list)
