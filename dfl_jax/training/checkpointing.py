"""Checkpoints: periodic and on preemption, the latest few plus the best, resume past damage.

The training loop sees only ``Checkpointer`` (save / restore_latest / wait / close) and
``PreemptionGuard``; every orbax call is in this file, so the orbax API can move without
touching the loop.

One orbax ``CheckpointManager`` (async saves, multi-host aware) writes, per step::

    directory/<step>/state/             the train state (StandardSave: OCDBT + zarr)
    directory/<step>/meta/meta.json     {"step", "metrics", "fingerprint"} (JsonSave)
    directory/<step>/commit_success.txt orbax's commit marker, written last
    directory/<step>/inventory.json     {file: [size, crc32]} of the step, once it is committed
    directory/quarantine/<step>-<why>-<time>/   steps set aside by us (never deleted)

Retention is one custom orbax preservation policy: the ``max_to_keep`` newest steps plus the
single best step by ``best_metric`` (``best_mode`` 'min' or 'max'), so the best survives when it
is older than the latest few and costs no second copy when it is among them. Orbax deletes old
steps only after the new one is committed, so a failed save never loses the previous ones.
(Orbax's own ``best_fn`` is not used: it makes ``max_to_keep`` count the best steps, and it reads
its metrics files while the manager is built, so one truncated file would stop every resume.)

A step is unusable when its commit marker is missing (a partial save), when orbax or tensorstore
fails to read it (a file deleted or truncated), when its meta JSON is bad, or when the restored
arrays do not match the fingerprint saved with them: a per-leaf uint32 weighted sum of the
array bits, computed under ``jit`` on the global arrays (no gather; identical on any sharding).
The fingerprint catches what tensorstore reads back silently, such as a flipped bit in array
data. ``restore_latest`` warns with the step and reason and tries the next older step; the newer
unusable steps are then moved to ``quarantine/`` (kept for inspection; this also frees their step
numbers for the resumed run). A damage report names the step, the files that differ from the
step's inventory (missing, truncated, altered) and the leaves that could not be read or differ.
A step whose arrays are intact (its inventory matches) but whose metadata is gone is repaired
instead: ``meta/meta.json`` is rebuilt from the restored arrays (the metrics are lost), and
orbax's tree metadata ``state/_METADATA`` is taken from another step of the same run or written
anew from the state the run's configuration builds; the step is then checked against its
fingerprint as any other. Uncommitted ``<step>.orbax-checkpoint-tmp`` folders from a killed
save are never listed as steps; orbax removes them when the manager starts.
"""

import errno
import json
import logging as std_logging
import math
import os
import re
import shutil
import signal
import threading
import time
from typing import Optional
import zlib

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dfl_jax import errors

STATE, META = "state", "meta"
META_FILE = "meta.json"
COMMIT_MARKER = "commit_success.txt"  # orbax writes it into a step folder on commit
QUARANTINE = "quarantine"
INVENTORY = "inventory.json"
TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(errors.UserError, RuntimeError):
  """No usable checkpoint, or one that holds another run's state."""


class CorruptCheckpointError(CheckpointError):
  """One checkpoint step cannot be used."""


class CheckpointSaveError(CheckpointError):
  """A save that did not complete; the committed steps are kept."""
  exit_code = errors.FAULT_EXIT


class DiskFullError(CheckpointSaveError):
  """No room for the next checkpoint."""


# tensorstore's messages inside orbax's: the key (leaf path joined by '.') and the database.
_TS_KEY = re.compile(r'(?:Error (?:reading|writing)|Metadata at) \\?"([^"\\/]+)/')


def _chain(e: BaseException):
  seen = []
  while e is not None and e not in seen:
    seen.append(e)
    e = e.__cause__ or e.__context__
  return seen


def _reason(e: BaseException) -> str:
  """A one-line reason: tensorstore's own message (naming the leaf and the file) when there is
  one in the exception's chain, else the first line of the error."""
  for x in reversed(_chain(e)):
    first = errors.one_line(x, 1000)
    for cut in (" [tensorstore_spec", " See full TensorStore details"):
      first = first.split(cut)[0]
    match = _TS_KEY.search(first)
    if match:
      leaf = match.group(1).split("/")[0]
      return f"leaf {leaf} unreadable: {first}"
  return f"{type(e).__name__}: {errors.one_line(e, 400)}"


def _is_disk_full(e: BaseException) -> bool:
  for x in _chain(e):
    if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(x)
    if "No space left" in text or ("RESOURCE_EXHAUSTED" in text and "writing" in text.lower()):
      return True
  return False


def _read_json(path):
  try:
    return json.loads(epath.Path(path).read_text())
  except Exception:  # pylint: disable=broad-except
    return None


def _listing(differences) -> str:
  if not differences:
    return ""
  more = f" and {len(differences) - 5} more" if len(differences) > 5 else ""
  return f"; files differing from the step's {INVENTORY}: {', '.join(differences[:5])}{more}"


def _megabytes(n: float) -> str:
  return f"{n / 2**20:.1f} MB"


class _DropFailedSaveNoise(std_logging.Filter):
  """A failed save's other write coroutines each log their own copy of the error through
  asyncio; the one message that matters is raised by ``Checkpointer``."""

  def filter(self, record):
    return not str(record.getMessage()).startswith(("Task exception was never retrieved",
                                                    "Future exception was never retrieved"))


class _OneLineOrbaxErrors(std_logging.Filter):
  """Orbax logs each failed save thread's traceback; ``Checkpointer`` raises the cause itself,
  so those records keep their first line only (``--debug`` / DFL_DEBUG keeps them whole)."""

  def filter(self, record):
    if ("orbax" in record.pathname and record.levelno >= std_logging.ERROR
        and record.exc_info and not errors.debugging()):
      record.msg, record.args = errors.one_line(record.getMessage(), 300), None
      record.exc_info, record.exc_text = None, None
    return True


std_logging.getLogger("asyncio").addFilter(_DropFailedSaveNoise())
std_logging.getLogger("absl").addFilter(_OneLineOrbaxErrors())


def _inventory(step_dir) -> dict:
  """{relative path: [size, crc32]} of every file under a step folder but the inventory."""
  out = {}
  step_dir = os.fspath(step_dir)
  for d, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(d, name)
      rel = os.path.relpath(path, step_dir)
      if rel == INVENTORY:
        continue
      crc = 0
      with open(path, "rb") as f:
        for block in iter(lambda f=f: f.read(1 << 20), b""):
          crc = zlib.crc32(block, crc)
      out[rel] = [os.path.getsize(path), crc]
  return out


def _inventory_differences(step_dir, under: str = "") -> Optional[list]:
  """What differs from the step's inventory (files under ``under`` only), None without one."""
  try:
    saved = json.loads((epath.Path(step_dir) / INVENTORY).read_text())
  except Exception:  # pylint: disable=broad-except
    return None
  now = _inventory(step_dir)
  out = []
  for rel, (size, crc) in sorted(saved.items()):
    if not rel.startswith(under):
      continue
    if rel not in now:
      out.append(f"{rel} missing")
    elif now[rel][0] != size:
      out.append(f"{rel} is {now[rel][0]} bytes, was {size}")
    elif now[rel][1] != crc:
      out.append(f"{rel} altered (same size, other content)")
  return out


def _words(x):
  """The bits of ``x`` as uint32 words (8-byte types give a trailing axis of 2)."""
  x = jnp.asarray(x)
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if jnp.iscomplexobj(x):
    x = jnp.stack([x.real, x.imag], -1)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = x.dtype.itemsize
  if size in (1, 2):
    return jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * size}")).astype(jnp.uint32)
  return jax.lax.bitcast_convert_type(x, jnp.uint32)


def _leaf_fingerprint(x):
  """Sum of word * odd position weight, mod 2**32: any one changed word changes it."""
  w = _words(x)
  index = jnp.zeros(w.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(w.ndim)):
    index += jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis) * jnp.uint32(stride % 2**32)
    stride *= w.shape[axis]
  weight = (index * jnp.uint32(0x9E3779B1)) | jnp.uint32(1)
  return jnp.sum(w * weight, dtype=jnp.uint32)


@jax.jit
def _fingerprint_leaves(leaves):
  if not leaves:
    return jnp.zeros((0,), jnp.uint32)
  return jnp.stack([_leaf_fingerprint(x) for x in leaves])


def fingerprint(tree) -> dict:
  """{key path: uint32 fingerprint} of every array leaf (a collective on multi-host)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  values = np.asarray(jax.device_get(_fingerprint_leaves([x for _, x in flat])))
  return {jax.tree_util.keystr(p): int(v) for (p, _), v in zip(flat, values)}


def _all_processes_ok(ok: bool) -> bool:
  """True when ``ok`` on every process (hosts must agree before falling back)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


class _KeepLatestAndBest(ocp.checkpoint_managers.PreservationPolicy):
  """Orbax preservation policy: the ``n`` newest steps and the best-scoring step."""

  def __init__(self, n: Optional[int], best_of):
    self.n, self.best_of = n, best_of

  def should_preserve(self, checkpoints, *, context):
    del context
    steps = [c.step for c in checkpoints]
    keep = set(steps) if self.n is None else set(sorted(steps)[-self.n:])
    best = self.best_of(steps)
    if best is not None:
      keep.add(best)
    return [s in keep for s in steps]


class Checkpointer:
  """Saves and restores the train state under ``directory``; see the module docstring.

  ``state`` is any pytree of arrays (params, opt_state, batch_stats, step, rng key data).
  ``metrics`` are floats, e.g. {'mpjpe_all': 12.3}; ``best_metric`` among them picks the best.
  """

  def __init__(self, directory, max_to_keep: Optional[int] = 3,
               best_metric: str = "mpjpe_all", best_mode: str = "min"):
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be None or at least 1, got {max_to_keep}")
    directory = os.fspath(directory)
    if "://" not in directory:
      directory = os.path.abspath(directory)
    self.directory = epath.Path(directory)
    self.max_to_keep, self.best_metric, self.best_mode = max_to_keep, best_metric, best_mode
    self._scores = {}     # step -> best_metric value, from meta.json
    self._written = set()  # steps this instance saved or restored
    self._barriers = 0
    self._pending = None   # the step of the save in flight
    self._last_size = None  # bytes of the last committed step
    self.space_check = "://" not in directory
    options = ocp.CheckpointManagerOptions(
        preservation_policy=_KeepLatestAndBest(max_to_keep, self._best_of),
        enable_async_checkpointing=True, cleanup_tmp_directories=True, create=True)
    self._mngr = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       META: ocp.JsonCheckpointHandler(filename=META_FILE)})
    for step in self.all_steps():
      self._load_score(step)

  # --- queries ---

  def all_steps(self) -> list:
    """Committed steps, oldest first (may include damaged ones until a restore finds them)."""
    return sorted(self._mngr.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def best_step(self) -> Optional[int]:
    """The step with the best ``best_metric``; None when no step has it."""
    return self._best_of(self.all_steps())

  def _best_of(self, steps):
    scored = [(self._scores[s], s) for s in steps if s in self._scores]
    if not scored:
      return None
    sign = 1.0 if self.best_mode == "min" else -1.0
    return min(scored, key=lambda vs: (sign * vs[0], -vs[1]))[1]  # ties: the newest

  def _step_dir(self, step: int) -> epath.Path:
    return self.directory / str(step)

  def _load_score(self, step: int):
    self._scores.pop(step, None)
    try:
      meta = json.loads((self._step_dir(step) / META / META_FILE).read_text())
      self._set_score(step, (meta.get("metrics") or {}).get(self.best_metric))
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("checkpoint step %d: cannot read its metrics (%s)", step, _reason(e))

  def _set_score(self, step: int, value):
    self._scores.pop(step, None)
    if value is not None and math.isfinite(float(value)):
      self._scores[step] = float(value)

  # --- saving ---

  def save(self, step: int, state, metrics: Optional[dict] = None, force: bool = False) -> bool:
    """Saves ``state`` as ``step``; False when this instance already saved or restored it.

    Async unless ``force``: with ``force`` (preemption) it and earlier saves are committed on
    return. A step left on disk by an earlier run (we resumed from an older one) is moved to
    ``quarantine/`` first.
    """
    step = int(step)
    if step in self._written:
      if force:
        self.wait()
      return False
    self.wait()  # surfaces an earlier async failure here, attributed to its own step
    if step in self._mngr.all_steps():
      logging.warning("checkpoint step %d already exists in %s (from an earlier run); "
                      "moving it aside before saving the new one", step, self.directory)
      self._set_aside([step], "replaced")
      if step in self._mngr.all_steps():
        raise CheckpointError(f"cannot save step {step}: {self._step_dir(step)} is in the way")
    self._check_space(step, state)
    metrics = None if metrics is None else {str(k): float(v) for k, v in metrics.items()}
    meta = {"step": step, "metrics": metrics, "fingerprint": fingerprint(state)}
    self._set_score(step, (metrics or {}).get(self.best_metric))  # the policy reads it
    self._pending = step
    try:
      self._mngr.save(step, args=ocp.args.Composite(**{
          STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}), force=True)
    except Exception as e:  # pylint: disable=broad-except
      self._save_failed(e)
    except BaseException:
      self._scores.pop(step, None)
      self._mngr.reload()
      raise
    self._written.add(step)
    if force:
      self.wait()
    return True

  def _check_space(self, step, state):
    """Raises DiskFullError before writing when the next step cannot fit (local folders)."""
    if not self.space_check:
      return
    if self._last_size is None:
      latest = self.latest_step()
      if latest is not None:
        inventory = _read_json(self._step_dir(latest) / INVENTORY)
        if isinstance(inventory, dict):
          self._last_size = sum(int(v[0]) for v in inventory.values())
    need = self._last_size or sum(int(x.nbytes) for x in jax.tree.leaves(state)
                                  if hasattr(x, "nbytes"))
    need = int(need * 1.05) + (1 << 20)
    try:
      free = shutil.disk_usage(os.fspath(self.directory)).free
    except OSError:
      return
    if not _all_processes_ok(free >= need):
      raise DiskFullError(
          f"no room to save checkpoint step {step} in {self.directory}: it needs about "
          f"{_megabytes(need)}, {_megabytes(free)} are free. Nothing was written; the "
          f"committed steps {self.all_steps()} are kept. Free some space and run the same "
          f"command again to resume from step {self.latest_step()}.")

  def poll(self):
    """Raises CheckpointSaveError if the save in flight has failed (cheap; call every step)."""
    if self._pending is None:
      return
    try:
      self._mngr.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      self._save_failed(e)

  def wait(self):
    """Blocks until pending saves are committed; raises CheckpointSaveError if one failed."""
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._save_failed(e)
    if self._pending is not None:
      self._write_inventory(self._pending)
      self._pending = None

  def _write_inventory(self, step):
    """Records the committed step's files (primary process); see ``inventory.json``."""
    path = self._step_dir(step)
    if not (path / COMMIT_MARKER).exists():
      return
    if ocp.multihost.is_primary_host(0):
      try:
        inventory = _inventory(path)
        tmp = path / (INVENTORY + ".tmp")
        tmp.write_text(json.dumps(inventory))
        tmp.rename(path / INVENTORY)
        self._last_size = sum(v[0] for v in inventory.values())
      except OSError as e:  # the step is committed; only the damage report loses detail
        logging.warning("could not write %s: %s", path / INVENTORY, _reason(e))

  def _save_failed(self, error):
    """A save failed: remove its partial folder, keep the committed ones, raise one line."""
    step, self._pending = self._pending, None
    try:
      self._mngr.wait_until_finished()  # the failed save's other writes end first
    except Exception:  # pylint: disable=broad-except
      pass
    if step is not None:
      self._scores.pop(step, None)
      if ocp.multihost.is_primary_host(0):
        for partial in self.directory.glob(f"{step}{TMP_SUFFIX}*"):
          shutil.rmtree(os.fspath(partial), ignore_errors=True)
    self._mngr.reload()
    kept = self.all_steps()
    latest = f"resume from step {kept[-1]}" if kept else "start again"
    where = f"checkpoint step {step}" if step is not None else "a checkpoint"
    if _is_disk_full(error):
      try:
        free = _megabytes(shutil.disk_usage(os.fspath(self.directory)).free)
      except OSError:
        free = "?"
      size = f"about {_megabytes(self._last_size)}" if self._last_size else "more"
      raise DiskFullError(
          f"saving {where} in {self.directory} failed: the disk is full (a checkpoint needs "
          f"{size}, {free} are free). The partial save was removed and the committed steps "
          f"{kept} are kept; free some space and run the same command to {latest}.") from error
    raise CheckpointSaveError(
        f"saving {where} in {self.directory} failed: {_reason(error)}. The partial save was "
        f"removed and the committed steps {kept} are kept; run the same command to "
        f"{latest}.") from error

  # --- restoring ---

  def restore(self, step: int, target):
    """(step, state, metrics) of ``step``, shaped and sharded like ``target``.

    ``target``: the current state or its abstract form (``jax.ShapeDtypeStruct`` leaves).
    Raises CorruptCheckpointError when the step is partial, unreadable or altered, and
    CheckpointError when it is intact but holds another tree than ``target`` (a changed model
    configuration or state layout); restore_latest stops on the latter and moves nothing.
    """
    step = int(step)
    self.wait()  # a step still being written is not readable yet
    ok, result, error = True, None, None
    try:
      result = self._restore_checked(step, target)
    except Exception as e:  # pylint: disable=broad-except
      ok, error = False, e
    if not _all_processes_ok(ok):
      if error is None:
        error = CorruptCheckpointError("another process could not restore it")
      if isinstance(error, CorruptCheckpointError):
        raise error
      if "tree structures do not match" in str(error):  # intact, but not this run's state
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} holds a different training state "
            f"than this run builds (another model configuration or dfl-jax version): "
            f"{_reason(error)}. Use the configuration it was trained with (WORKDIR/config.json) "
            f"or a new workdir; the checkpoint is left as it is.") from error
      raise CorruptCheckpointError(_reason(error)) from error
    self._written.add(step)
    return result

  def _restore_checked(self, step, target):
    path = self._step_dir(step)
    if not (path / COMMIT_MARKER).exists():
      raise CorruptCheckpointError(f"no commit marker {COMMIT_MARKER} (partial save)")
    differences = None  # read on demand: it reads every file of the step

    def damage():
      nonlocal differences
      if differences is None:
        differences = _inventory_differences(path) or []
      return differences

    def intact_arrays():  # every state file as the inventory recorded it
      return (path / INVENTORY).exists() and not [
          d for d in damage() if d.startswith(STATE + os.sep) and "_METADATA" not in d]

    if not (path / STATE / "_METADATA").exists() and (path / STATE).is_dir():
      self._rebuild_tree_metadata(step, target)
    meta = _read_json(path / META / META_FILE)
    meta_ok = isinstance(meta, dict) and meta.get("step") == step
    if not meta_ok and not intact_arrays():
      raise CorruptCheckpointError(
          f"{META}/{META_FILE} is missing or does not describe step {step}, and without the "
          f"step's inventory ({INVENTORY}) its arrays cannot be checked"
          + _listing(damage()))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    items = {STATE: ocp.args.StandardRestore(abstract)}
    if meta_ok:
      items[META] = ocp.args.JsonRestore()
    try:
      state = self._mngr.restore(step, args=ocp.args.Composite(**items))[STATE]
    except Exception as e:  # pylint: disable=broad-except
      if "tree structures do not match" in str(e):
        raise
      raise CorruptCheckpointError(_reason(e) + _listing(damage())) from e
    now = fingerprint(state)
    if not meta_ok:  # the arrays match the inventory: rebuild the metadata from them
      meta = {"step": step, "metrics": None, "fingerprint": now, "rebuilt": True}
      if ocp.multihost.is_primary_host(0):
        (path / META).mkdir(parents=True, exist_ok=True)
        (path / META / META_FILE).write_text(json.dumps(meta))
      logging.warning("checkpoint step %d: %s/%s was missing; rebuilt from its arrays, which "
                      "match the step's inventory (its evaluation metrics are lost)",
                      step, META, META_FILE)
    saved = meta.get("fingerprint") or {}
    bad = [k for k in saved if k in now and now[k] != saved[k]]
    if bad:
      raise CorruptCheckpointError(
          f"array data differs from what was saved in leaves {', '.join(bad[:5])}"
          + _listing(damage()))
    return step, state, meta.get("metrics")

  def _rebuild_tree_metadata(self, step, target):
    """Puts back orbax's ``state/_METADATA`` (the tree's structure, the same for every step of
    a run): copied from another step, else written anew by saving ``target`` (the state the
    run's configuration builds) to a scratch folder. The restored arrays are then checked
    against the step's fingerprint as usual."""
    dest = self._step_dir(step) / STATE / "_METADATA"
    for other in self.all_steps():
      source = self._step_dir(other) / STATE / "_METADATA"
      if other != step and source.exists():
        break
    else:
      source = None
    concrete = all(isinstance(x, (jax.Array, np.ndarray)) for x in jax.tree.leaves(target))
    if ocp.multihost.is_primary_host(0):
      if source is not None:
        dest.write_bytes(source.read_bytes())
      elif concrete:
        scratch = self.directory / f".rebuild-{step}"
        shutil.rmtree(os.fspath(scratch), ignore_errors=True)
        with ocp.StandardCheckpointer() as writer:
          writer.save(scratch, target)
        dest.write_bytes((scratch / "_METADATA").read_bytes())
        shutil.rmtree(os.fspath(scratch), ignore_errors=True)
      else:
        return
    logging.warning("checkpoint step %d: %s/_METADATA (orbax's tree metadata) was missing; "
                    "rebuilt from %s", step, STATE,
                    f"step {other}" if source is not None else "the run's configuration")

  def restore_latest(self, target):
    """(step, state, metrics) of the newest usable step, or None when there is none.

    Unusable steps are reported (warning with step and reason) and skipped; when an older
    step restores, the newer unusable ones are moved to ``quarantine/``. Raises
    CheckpointError listing every step when none is usable.
    """
    failures = []
    for step in reversed(self.all_steps()):
      try:
        result = self.restore(step, target)
      except CorruptCheckpointError as e:
        logging.warning("checkpoint step %d in %s is unusable: %s; trying the previous one",
                        step, self.directory, e)
        failures.append((step, str(e)))
        continue
      if failures:
        self._set_aside([s for s, _ in failures], "corrupt")
        logging.warning("resumed from checkpoint step %d; unusable newer steps %s were moved "
                        "to %s", step, [s for s, _ in failures], self.directory / QUARANTINE)
      return result
    if failures:
      raise CheckpointError(f"no usable checkpoint in {self.directory}: " + "; ".join(
          f"step {s}: {why}" for s, why in failures))
    return None

  def restore_best(self, target):
    """(step, state, metrics) of ``best_step()``, or None when no step has the metric."""
    step = self.best_step()
    return None if step is None else self.restore(step, target)

  # --- housekeeping ---

  def _set_aside(self, steps, why: str):
    """Moves step folders to ``quarantine/`` (primary process), so orbax no longer lists them."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    if ocp.multihost.is_primary_host(0):
      for step in steps:
        dest = self.directory / QUARANTINE / f"{step}-{why}-{stamp}"
        try:
          dest.parent.mkdir(parents=True, exist_ok=True)
          self._step_dir(step).rename(dest)
        except Exception as e:  # pylint: disable=broad-except
          logging.error("could not move checkpoint step %d to %s: %s", step, dest, _reason(e))
    self._barriers += 1
    ocp.multihost.sync_global_processes(f"dfl_checkpointing_set_aside_{self._barriers}")
    self._mngr.reload()
    for step in steps:
      self._scores.pop(step, None)
      self._written.discard(step)

  def close(self):
    """Waits for pending saves and releases orbax's resources."""
    if self._mngr is not None:
      try:
        self.wait()
      finally:
        self._mngr.close()
        self._mngr = None

  def abandon(self):
    """Releases orbax's resources after an error, letting a save in flight end, raising
    nothing (the error being handled is the one to report)."""
    if self._mngr is not None:
      try:
        self.wait()
      except Exception as e:  # pylint: disable=broad-except
        logging.error("%s", e)
      finally:
        self._mngr.close()
        self._mngr = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class PreemptionGuard:
  """Context manager: SIGTERM / SIGINT set ``requested`` instead of killing the process.

  The loop checks ``guard.requested`` each step (``guard.sync()`` on multi-host, so every
  process stops at the same step), saves with ``force=True`` and exits. A second SIGINT raises
  KeyboardInterrupt as usual. The previous handlers come back on exit.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = tuple(signals)
    self.requested = False
    self.signum = None
    self._sigints = 0
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      self._sigints += 1
      if self._sigints > 1:
        raise KeyboardInterrupt
    self.requested, self.signum = True, signum
    logging.warning("received %s: saving a checkpoint and stopping after this step%s",
                    signal.Signals(signum).name,
                    " (Ctrl-C again quits at once)" if signum == signal.SIGINT else "")

  def sync(self) -> bool:
    """``requested`` on any process; a collective, so call it at the same step everywhere."""
    if jax.process_count() > 1:
      self.requested = bool(np.any(multihost_utils.process_allgather(
          np.asarray(self.requested))))
    return self.requested

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      logging.warning("PreemptionGuard: not in the main thread; signal handlers not installed")
      return self
    for sig in self.signals:
      self._previous[sig] = signal.getsignal(sig)
      signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    self._previous.clear()
    return False
