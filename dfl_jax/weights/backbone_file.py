"""Convert a torchvision/timm ResNet-50, or a torchvision ResNet50-FPN detector, into weights.

The paper (Sec. 3.2) starts from a pre-trained ResNet50-FPN. Nothing is downloaded here: the
user brings the weights file (``.safetensors`` natively; ``.pth``/``.pt``/``.bin`` only through
torch's weights-only loader, never plain pickle) and gets an orbax checkpoint that
``config.train.backbone_init`` names:

    python -m dfl_jax.convert_resnet --src resnet50.safetensors --out DIR          # backbone
    python -m dfl_jax.convert_resnet --src fasterrcnn_resnet50_fpn.pth --out DIR   # + FPN

Two layouts are recognised:

- a classification ResNet-50 (torchvision ``resnet50``, timm ``resnet50``): keys map one-to-one
  onto ``dfl_jax.network.resnet.ResNet`` (see its docstring); ``fc.*`` and
  ``num_batches_tracked`` are dropped, and one common prefix such as ``module.``, ``model.`` or
  ``backbone.`` is stripped. The file gives the backbone only; the FPN starts at random.
- a torchvision COCO detector on ResNet50-FPN (``fasterrcnn_resnet50_fpn``,
  ``keypointrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``, v1): ``backbone.body.*`` is the
  ResNet as above and ``backbone.fpn.*`` the FPN: ``inner_blocks.{i}`` (1x1 lateral of C2..C5,
  ``.0.`` in torchvision >= 0.13, without it before) -> ``fpn/lateral{i}``, ``layer_blocks.{i}``
  (3x3 output) -> ``fpn/output{i}``. The extra max-pool level has no weights and DFL does not
  use it; ``rpn.*`` and ``roi_heads.*`` are dropped. ``dfl_jax.network.fpn.FPN`` is torchvision's
  FPN (nearest top-down upsampling, sum, 3x3), so with ``model.fpn_norm=False`` it gives
  torchvision's outputs; with the default ``fpn_norm=True`` the GroupNorm we add on each output
  (fpn.py) starts at its initialisation on top of them. Needs ``model.fpn_features=256``.

The checkpoint holds ``{'params', 'batch_stats'}`` of the backbone and, from a detector,
``{'fpn': {'params'}}``. The package never imports torch except lazily for ``.pth`` files.
"""

import argparse
import functools
import os
from typing import Any, Mapping, Optional

import flax
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dfl_jax import errors
from dfl_jax.network import fpn, resnet
from dfl_jax.weights import encoder_file

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_IGNORED_PREFIXES = ("fc.",)
_IGNORED_SUFFIXES = ("num_batches_tracked",)
# flax leaf name -> torch parameter name, per collection.
_LEAF_NAMES = {
    "params": {"kernel": "weight", "scale": "weight", "bias": "bias"},
    "batch_stats": {"mean": "running_mean", "var": "running_var"},
}


@functools.lru_cache(maxsize=None)
def _expected_layout():
  """torch key -> (collection, flax path, torch shape) for ``resnet.ResNet()``, via eval_shape."""
  shapes = jax.eval_shape(resnet.ResNet().init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 64, 64, 3), jnp.float32))
  layout = {}
  for collection, names in _LEAF_NAMES.items():
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes[collection]))
    for path, leaf in flat.items():
      shape = tuple(leaf.shape)
      if path[-1] == "kernel":  # [kh, kw, I, O] -> [O, I, kh, kw]
        shape = (shape[3], shape[2], shape[0], shape[1])
      layout[".".join(path[:-1] + (names[path[-1]],))] = (collection, path, shape)
  return layout


def _strip_prefix(keys):
  """The common prefix (e.g. ``module.``) in front of the ResNet keys, or ''."""
  layout = _expected_layout()
  candidates = set()
  for key in keys:
    parts = key.split(".")
    for i in range(len(parts)):
      if ".".join(parts[i:]) in layout:
        candidates.add(".".join(parts[:i]) + "." if i else "")
  for prefix in sorted(candidates, key=len):
    if all(k.startswith(prefix) for k in keys):
      return prefix
  return ""


def _ignored(key):
  return key.startswith(_IGNORED_PREFIXES) or key.endswith(_IGNORED_SUFFIXES)


def _list(keys, limit=10):
  keys = sorted(keys)
  more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def convert_state_dict(state: Mapping[str, Any], source: Optional[str] = None) -> dict:
  """torch ResNet-50 state dict -> ``{'params': ..., 'batch_stats': ...}`` of float32 numpy.

  Raises ValueError naming the offending keys (and ``source``) for unknown or missing keys and
  for shapes that differ from ``resnet.ResNet()``.
  """
  where = f" in {source}" if source else ""
  layout = _expected_layout()
  prefix = _strip_prefix(list(state))
  state = {k[len(prefix):]: v for k, v in state.items()}
  state = {k: v for k, v in state.items() if not _ignored(k)}

  unknown = set(state) - set(layout)
  missing = set(layout) - set(state)
  problems = []
  if unknown:
    problems.append(f"unknown keys{where}: {_list(unknown)}")
  if missing:
    problems.append(f"missing keys{where}: {_list(missing)}")
  mismatched = []
  for key in sorted(set(state) & set(layout)):
    got = tuple(np.shape(state[key]))
    if got != layout[key][2]:
      mismatched.append(f"{key} has shape {got}, expected {layout[key][2]}")
  if mismatched:
    problems.append(f"shape mismatch{where}: " + "; ".join(mismatched[:10]))
  if problems:
    raise errors.InputError("not a ResNet-50 state dict (torchvision/timm layout"
                     + (f", stripped prefix {prefix!r}" if prefix else "") + "):\n  "
                     + "\n  ".join(problems))

  flat = {"params": {}, "batch_stats": {}}
  for key, (collection, path, _) in layout.items():
    value = np.asarray(state[key], dtype=np.float32)
    if path[-1] == "kernel":
      value = np.transpose(value, (2, 3, 1, 0))
    flat[collection][path] = np.ascontiguousarray(value)
  return {c: flax.traverse_util.unflatten_dict(f) for c, f in flat.items()}


DETECTION_BODY = "backbone.body."
DETECTION_FPN = "backbone.fpn."
_DETECTION_HEADS = ("rpn.", "roi_heads.")
NUM_FPN_LEVELS = 4  # C2..C5


def is_detection_state_dict(state: Mapping[str, Any]) -> bool:
  """True for a torchvision detector's state dict (``backbone.body.*`` and ``backbone.fpn.*``)."""
  return (any(k.startswith(DETECTION_BODY) for k in state)
          and any(k.startswith(DETECTION_FPN) for k in state))


@functools.lru_cache(maxsize=None)
def _fpn_layout(features: int = 256):
  """flax path -> torch shape of ``fpn.FPN(norm=False)``'s parameters on ResNet-50's C2..C5."""
  widths = [256, 512, 1024, 2048]
  inputs = [jnp.zeros((1, 64 // 2 ** i, 64 // 2 ** i, c), jnp.float32)
            for i, c in enumerate(widths)]
  shapes = jax.eval_shape(fpn.FPN(features, norm=False).init, jax.random.PRNGKey(0), inputs)
  layout = {}
  for path, leaf in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(shapes["params"])).items():
    shape = tuple(leaf.shape)
    if path[-1] == "kernel":
      shape = (shape[3], shape[2], shape[0], shape[1])
    layout[path] = shape
  return layout


def convert_fpn_state_dict(state: Mapping[str, Any], source: Optional[str] = None) -> dict:
  """torchvision ``FeaturePyramidNetwork`` state dict (keys ``inner_blocks.*``,
  ``layer_blocks.*``, no prefix) -> ``fpn.FPN`` params of float32 numpy; errors name the keys."""
  where = f" in {source}" if source else ""
  torch_names = {"kernel": "weight", "bias": "bias"}
  blocks = {"lateral": "inner_blocks", "output": "layer_blocks"}
  converted, used, problems = {}, set(), []
  for path, shape in _fpn_layout().items():
    module, leaf = path
    kind, level = module.rstrip("0123456789"), module[len(module.rstrip("0123456789")):]
    names = [f"{blocks[kind]}.{level}.0.{torch_names[leaf]}",
             f"{blocks[kind]}.{level}.{torch_names[leaf]}"]  # torchvision < 0.13
    key = next((n for n in names if n in state), None)
    if key is None:
      problems.append(f"missing {DETECTION_FPN}{names[0]}{where}")
      continue
    value = np.asarray(state[key], np.float32)
    if value.shape != shape:
      problems.append(f"{DETECTION_FPN}{key} has shape {value.shape}, expected {shape}{where} "
                    "(DFL's FPN is 4 levels of 256 channels on ResNet-50)")
      continue
    if leaf == "kernel":
      value = np.transpose(value, (2, 3, 1, 0))
    converted[path] = np.ascontiguousarray(value)
    used.add(key)
  unknown = sorted(set(state) - used)
  if unknown:
    problems.append(f"unknown FPN keys{where}: {_list(DETECTION_FPN + k for k in unknown)} "
                  "(a v2 detector's normalised FPN or extra levels are not supported)")
  if problems:
    raise errors.InputError("not a torchvision ResNet50-FPN (v1) FPN:\n  "
                            + "\n  ".join(problems))
  return flax.traverse_util.unflatten_dict(converted)


def convert_detection_state_dict(state: Mapping[str, Any], source: Optional[str] = None) -> dict:
  """A torchvision ``*rcnn_resnet50_fpn`` state dict -> the backbone tree of
  ``convert_state_dict`` plus ``'fpn': {'params': ...}``; the detection heads are dropped."""
  body = {k[len(DETECTION_BODY):]: v for k, v in state.items() if k.startswith(DETECTION_BODY)}
  neck = {k[len(DETECTION_FPN):]: v for k, v in state.items() if k.startswith(DETECTION_FPN)}
  other = sorted(k for k in state if not k.startswith(
      (DETECTION_BODY, DETECTION_FPN) + _DETECTION_HEADS))
  if other:
    where = f" in {source}" if source else ""
    raise errors.InputError(f"unknown keys{where} beside backbone.body, backbone.fpn, rpn and "
                     f"roi_heads: {_list(other)}")
  tree = convert_state_dict(body, source=f"{source or 'state dict'} ({DETECTION_BODY}*)")
  tree["fpn"] = {"params": convert_fpn_state_dict(neck, source)}
  return tree


def convert_any_state_dict(state: Mapping[str, Any], source: Optional[str] = None) -> dict:
  """A detector's state dict (backbone and FPN) or a classification ResNet-50's (backbone)."""
  if is_detection_state_dict(state):
    return convert_detection_state_dict(state, source)
  return convert_state_dict(state, source)


def _unwrap(state, source):
  """A checkpoint dict that wraps the weights under 'state_dict' or 'model' -> the weights."""
  for wrapper in ("state_dict", "model"):
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise errors.InputError(f"{source} does not hold a state dict (got {type(state).__name__})")
  return state


def load_state_dict(path: str) -> dict:
  """Read a state dict as ``{key: np.ndarray}`` from ``.safetensors`` or (with torch) ``.pth``."""
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".safetensors":
    from safetensors.numpy import load_file
    return dict(load_file(path))
  if suffix in _TORCH_SUFFIXES:
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
          f"reading {path} needs torch (loaded with weights_only=True); install torch or "
          "convert the file to .safetensors (safetensors.torch.save_file) first") from e
    state = _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)
    out = {}
    for key, value in state.items():
      if not isinstance(value, torch.Tensor):
        raise errors.InputError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
      value = value.detach()
      if value.is_floating_point():
        value = value.to(torch.float32)
      out[key] = value.numpy()
    return out
  raise errors.InputError(f"unsupported weights file {path!r}: use .safetensors, or .pth/.pt/.bin "
                   "(read with torch.load(weights_only=True)); plain pickles are refused")


def save_backbone(tree: Mapping[str, Any], out_dir: str, force: bool = False) -> str:
  """Write the converted tree to ``out_dir`` (an orbax checkpoint); returns the absolute path."""
  out_dir = os.path.abspath(os.fspath(out_dir))
  if os.path.exists(out_dir) and not force:
    raise errors.ConfigError(f"{out_dir} already exists (pass force=True / --force to overwrite)")
  tree = jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(tree))
  ocp.PyTreeCheckpointer().save(out_dir, tree, force=force)  # synchronous: done on return
  return out_dir


def load_backbone(out_dir: str) -> dict:
  """Read a tree written by ``save_backbone`` as plain numpy arrays (no target needed)."""
  tree = ocp.PyTreeCheckpointer().restore(os.path.abspath(os.fspath(out_dir)))
  return jax.tree_util.tree_map(np.asarray, tree)


def merge_backbone(variables: Mapping[str, Any], tree: Mapping[str, Any]) -> dict:
  """Copy of a full model's ``variables`` with the backbone (and the FPN, when ``tree`` has
  one) replaced by ``tree``.

  Every collection of the backbone must match ``variables[collection]['backbone']`` leaf for
  leaf (same paths, same shapes), and the FPN's convolutions ``variables['params']['fpn']``'s;
  the FPN's GroupNorms (``model.fpn_norm``, not in torchvision's FPN) keep their initialisation.
  The result keeps the dtypes of ``variables``. The merge is ``encoder_file.merge``'s.
  """
  tree = dict(flax.core.unfreeze(tree))
  neck = tree.pop("fpn", None)
  flat = {f"{collection}/backbone/{key}": value
          for collection, sub in tree.items()
          for key, value in flax.traverse_util.flatten_dict(sub, sep="/").items()}
  if neck is not None:
    flat.update({f"params/fpn/{key}": value for key, value in
                 flax.traverse_util.flatten_dict(neck["params"], sep="/").items()})
    ours = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables), sep="/")
    flat.update({k: v for k, v in ours.items()  # our GroupNorms: not in the file
                 if k.startswith("params/fpn/norm") and k not in flat})
  return encoder_file.merge(variables, flat, source="config.train.backbone_init (converted "
                            + ("backbone and FPN)" if neck is not None else "backbone)"))


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m dfl_jax.convert_resnet",
      description="Convert a torchvision/timm ResNet-50 state dict, or a torchvision "
                  "*rcnn_resnet50_fpn detector's, into DFL backbone (and FPN) variables.")
  parser.add_argument("--src", required=True,
                      help=".safetensors, or .pth/.pt/.bin (needs torch; weights_only load)")
  parser.add_argument("--out", required=True, help="output directory (orbax checkpoint)")
  parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
  errors.add_debug_argument(parser)
  args = parser.parse_args(argv)
  try:
    tree = convert_any_state_dict(load_state_dict(args.src), source=args.src)
    out_dir = save_backbone(tree, args.out, force=args.force)
  except ImportError as e:  # a .pth without torch installed
    raise errors.ConfigError(f"--src {args.src}: {errors.one_line(e)}") from e
  counts = {c: len(jax.tree_util.tree_leaves(t)) for c, t in tree.items()}
  what = "backbone and FPN" if "fpn" in tree else "backbone only; the FPN starts at random"
  print(f"converted {sum(counts.values())} tensors ({counts['params']} backbone params, "
        f"{counts['batch_stats']} batch_stats, {counts.get('fpn', 0)} FPN params: {what}) "
        f"from {args.src} -> {out_dir}")


def command():
  """Console script ``dfl-convert-resnet`` and ``python -m dfl_jax.convert_resnet``."""
  errors.call(main)
