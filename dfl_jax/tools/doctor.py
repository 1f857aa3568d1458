"""What JAX sees on this machine, and what does not fit: ``python -m dfl_jax.doctor``.

    python -m dfl_jax.doctor [--dtype bfloat16]

Prints the backend, the devices (with the compute capability of NVIDIA GPUs), the versions of
jax, jaxlib, the CUDA/TPU plugins and cuDNN, and warns where they do not fit together:

  * a Volta GPU (sm_70, e.g. Titan V, V100) with the CUDA 13 plugin: CUDA 13 dropped Volta;
    install the ``cuda12`` extra instead;
  * a Volta GPU with a cuDNN newer than 9.10 (later releases have no Volta kernels);
  * a CUDA extra installed but no GPU found by JAX (driver, ``JAX_PLATFORMS``, or no GPU);
  * both CUDA plugins installed, or a plugin whose version differs from jaxlib's;
  * libtpu installed but no TPU found;
  * bfloat16 asked for on a GPU without bfloat16 tensor cores (before Ampere, sm_80).

The checks are pure functions of a facts dict (``gather_facts``), so they are tested with made-up
machines (tests/test_doctor.py).
"""

import os
import shutil
import subprocess

from absl import app, flags

from dfl_jax import errors

PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
            "jax-cuda13-pjrt", "libtpu", "nvidia-cudnn-cu12", "nvidia-cudnn-cu13", "flax",
            "optax", "orbax-checkpoint")
VOLTA_CUDNN = "9.10.2.21"  # the cuDNN the cuda12 extra pins (setup.py)


def _package_versions(names=PACKAGES) -> dict:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  versions = {}
  for name in names:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def _nvidia_smi_gpus():
  """[(name, compute capability)] from nvidia-smi, [] when it sees none, None without it."""
  exe = shutil.which("nvidia-smi")
  if not exe:
    return None
  try:
    out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return [tuple(x.strip() for x in line.split(",", 1)) for line in out.splitlines()
          if "," in line]


def gather_facts() -> dict:
  """Backend, devices, package versions and nvidia-smi's GPUs of this machine."""
  facts = {"packages": _package_versions(), "nvidia_smi": _nvidia_smi_gpus(),
           "jax_platforms": os.environ.get("JAX_PLATFORMS", ""), "backend": None,
           "devices": [], "error": None}
  try:
    import jax  # pylint: disable=import-outside-toplevel
    facts["backend"] = jax.default_backend()
    facts["devices"] = [{"platform": d.platform, "device_kind": d.device_kind,
                         "compute_capability": getattr(d, "compute_capability", None)}
                        for d in jax.devices()]
  except Exception as e:  # pylint: disable=broad-except
    facts["error"] = f"{type(e).__name__}: {e}"
  return facts


def _cc(value):
  """'7.0' -> (7, 0); None when unknown."""
  try:
    major, minor = str(value).split(".")[:2]
    return int(major), int(minor)
  except (ValueError, AttributeError):
    return None


def _version_tuple(version):
  parts = []
  for p in str(version).split("."):
    digits = "".join(ch for ch in p if ch.isdigit())
    if not digits:
      break
    parts.append(int(digits))
  return tuple(parts)


def gpu_capabilities(facts) -> list:
  """(name, (major, minor)) of every NVIDIA GPU seen by JAX or, failing that, by nvidia-smi."""
  gpus = [(d["device_kind"], _cc(d.get("compute_capability"))) for d in facts["devices"]
          if d["platform"] in ("gpu", "cuda")]
  if not gpus and facts.get("nvidia_smi"):
    gpus = [(name, _cc(cc)) for name, cc in facts["nvidia_smi"]]
  return [(n, cc) for n, cc in gpus if cc is not None]


def check(facts, dtype: str | None = None) -> list:
  """Warnings (strings) about this machine's setup; empty when everything fits."""
  pkgs = facts["packages"]
  warnings = []
  cuda12 = pkgs.get("jax-cuda12-plugin") or pkgs.get("jax-cuda12-pjrt")
  cuda13 = pkgs.get("jax-cuda13-plugin") or pkgs.get("jax-cuda13-pjrt")
  has_gpu = any(d["platform"] in ("gpu", "cuda") for d in facts["devices"])
  has_tpu = any(d["platform"] == "tpu" for d in facts["devices"])
  gpus = gpu_capabilities(facts)
  volta = [n for n, cc in gpus if cc < (7, 5)]

  if volta and cuda13:
    warnings.append(
        f"{volta[0]} is Volta-class (sm_70 or older), which CUDA 13 dropped, and the CUDA 13 "
        f"plugin (jax-cuda13-plugin {cuda13}) is installed: pip uninstall -y jax-cuda13-plugin "
        f"jax-cuda13-pjrt && pip install -e '.[cuda12]'")
  cudnn12 = pkgs.get("nvidia-cudnn-cu12")
  if volta and cudnn12 and _version_tuple(cudnn12)[:2] > (9, 10):
    warnings.append(
        f"{volta[0]} is Volta-class and nvidia-cudnn-cu12 {cudnn12} is newer than 9.10, whose "
        f"successors have no Volta kernels: pip install nvidia-cudnn-cu12=={VOLTA_CUDNN} "
        f"(the cuda12 extra pins it)")
  if cuda12 and cuda13:
    warnings.append(f"both CUDA plugins are installed (cuda12 {cuda12}, cuda13 {cuda13}); keep "
                    f"one: the cuda12 extra for Volta, cuda13 for Turing and newer")
  jaxlib = pkgs.get("jaxlib")
  for name in ("jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt"):
    if pkgs.get(name) and jaxlib and pkgs[name] != jaxlib:
      warnings.append(f"{name} {pkgs[name]} does not match jaxlib {jaxlib}; reinstall the "
                      f"extra so that they agree (pip install -e '.[cuda12]' or '.[cuda13]')")
  if (cuda12 or cuda13) and not has_gpu:
    seen = facts.get("nvidia_smi")
    if facts.get("jax_platforms") and "cuda" not in facts["jax_platforms"] \
        and "gpu" not in facts["jax_platforms"]:
      why = f"JAX_PLATFORMS={facts['jax_platforms']} hides it"
    elif seen:
      why = (f"nvidia-smi sees {', '.join(n for n, _ in seen)}: check the driver against "
             f"the plugin's CUDA version and the error above")
    else:
      why = "nvidia-smi is missing or sees no GPU: is there a GPU and its driver?"
    warnings.append(f"a CUDA plugin is installed but JAX found no GPU ({why})")
  if pkgs.get("libtpu") and not has_tpu:
    warnings.append("libtpu is installed but JAX found no TPU")
  if dtype == "bfloat16":
    old = [n for n, cc in gpus if cc < (8, 0)]
    if old:
      warnings.append(f"{old[0]} has no bfloat16 tensor cores (before Ampere): use "
                      f"--config.model.dtype=float16 (dynamic loss scaling) or float32")
  if facts.get("error"):
    warnings.append(f"JAX failed to start a backend: {facts['error']}")
  return warnings


def report(facts) -> str:
  """The facts as lines of text."""
  lines = [f"backend: {facts['backend']}"]
  for i, d in enumerate(facts["devices"]):
    cc = f", compute capability {d['compute_capability']}" if d.get("compute_capability") else ""
    lines.append(f"device {i}: {d['platform']} {d['device_kind']}{cc}")
  if facts.get("nvidia_smi") is not None:
    seen = ", ".join(f"{n} (sm {cc})" for n, cc in facts["nvidia_smi"]) or "none"
    lines.append(f"nvidia-smi GPUs: {seen}")
  if facts.get("jax_platforms"):
    lines.append(f"JAX_PLATFORMS={facts['jax_platforms']}")
  lines += [f"{name}: {version}" for name, version in facts["packages"].items() if version]
  return "\n".join(lines)


def define_flags():
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                    "The compute dtype you mean to use (config.model.dtype), checked too.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  facts = gather_facts()
  print(report(facts))
  warnings = check(facts, flags.FLAGS.dtype)
  for w in warnings:
    print(f"WARNING: {w}")
  if not warnings:
    print("no problems found")


def command():
  """Console script ``dfl-doctor`` and ``python -m dfl_jax.doctor``."""
  define_flags()
  errors.run(main)
