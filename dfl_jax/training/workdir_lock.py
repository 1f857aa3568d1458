"""One training run per workdir: ``WORKDIR/run.lock``, taken before anything else is written.

    with workdir_lock.hold(workdir):      # raises WorkdirBusyError naming the holder
      ...train...

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFS
v3 and later), holding JSON: host, PID, the process's start time, the command line, and a random
token. While the run lives, a daemon thread touches the file every ``HEARTBEAT_S`` seconds.

A lock is stale, and is taken over with a warning, when

  * its host is this host and its PID is gone (or is another process than the one that wrote
    it: the kernel's start time of that PID differs), or
  * its host is another one and its heartbeat is older than ``STALE_AFTER_S`` (a host that
    crashed cannot clear its lock; a live run touches it every ``HEARTBEAT_S`` seconds), or
  * it is empty or unreadable and older than ``STALE_AFTER_S`` (a run killed between creating
    and writing it).

Taking over renames the stale file aside first (``run.lock.stale-<token>``, deleted right
after), so of two runs that both found it stale only one wins; the other sees the winner's lock.
A multi-host run takes the lock once, on process 0; every process raises if process 0 could not
take it.
"""

import contextlib
import json
import os
import pathlib
import socket
import sys
import threading
import time
import uuid

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from dfl_jax import errors

LOCK_FILE = "run.lock"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0


class WorkdirBusyError(errors.EnvironmentFault):
  """Another live run holds the workdir."""


def _process_start(pid: int):
  """The kernel's start time of ``pid`` (clock ticks since boot), None where unknown."""
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      text = f.read()
    return int(text.rpartition(")")[2].split()[19])
  except (OSError, ValueError, IndexError):
    return None


def _alive(pid: int, start) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  now_start = _process_start(pid)
  return start is None or now_start is None or now_start == start


def _describe(holder: dict, path) -> str:
  started = holder.get("started_unix")
  when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)) if started else "?"
  return (f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, started {when}"
          f" ({path})")


class WorkdirLock:
  """The lock of one workdir; ``acquire`` / ``release``, or ``hold`` as a context manager."""

  def __init__(self, workdir, heartbeat_s: float = HEARTBEAT_S,
               stale_after_s: float = STALE_AFTER_S):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
    self.token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread = None
    self.held = False

  def _record(self) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "process_start": _process_start(os.getpid()), "started_unix": time.time(),
            "argv": sys.argv, "token": self.token}

  def read(self):
    """The holder's record, {} for an empty or unreadable file, None when there is no lock."""
    try:
      text = self.path.read_text(encoding="utf-8")
    except FileNotFoundError:
      return None
    except OSError:
      return {}
    try:
      holder = json.loads(text)
      return holder if isinstance(holder, dict) else {}
    except json.JSONDecodeError:
      return {}

  def _stale_reason(self, holder: dict):
    """Why the lock ``holder`` is stale, or None while its run may be alive."""
    try:
      age = time.time() - self.path.stat().st_mtime
    except FileNotFoundError:
      return "it was just released"
    if not holder:
      return (f"it is empty or unreadable and {age:.0f} s old"
              if age > self.stale_after_s else None)
    if holder.get("host") == socket.gethostname():
      pid = holder.get("pid")
      if not isinstance(pid, int) or not _alive(pid, holder.get("process_start")):
        return f"its process {pid} on this host is gone"
      return None
    if age > self.stale_after_s:
      return f"its heartbeat stopped {age:.0f} s ago (host {holder.get('host')})"
    return None

  def acquire(self):
    """Takes the lock or raises WorkdirBusyError naming the holder; creates the workdir."""
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise errors.EnvironmentFault(
          f"cannot create the workdir {self.path.parent}: {e.strerror or e}") from e
    for _ in range(5):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self.read()
        if holder is None:
          continue  # released meanwhile: try again
        why = self._stale_reason(holder)
        if why is None:
          raise WorkdirBusyError(
              f"the workdir {self.path.parent} is in use by another training run "
              f"({_describe(holder, self.path)}); wait for it to end, or use another "
              f"--workdir. If that run is gone for good, delete {self.path}.") from None
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{self.token}")
        try:
          os.rename(self.path, aside)
        except FileNotFoundError:
          continue  # another run took it over first
        aside.unlink(missing_ok=True)
        logging.warning("taking over the stale lock of %s: %s", self.path,
                        why if not holder else f"{why} ({_describe(holder, self.path)})")
        continue
      except PermissionError as e:
        raise errors.EnvironmentFault(
            f"cannot write in the workdir {self.path.parent}: {e.strerror}") from e
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(self._record(), f)
        f.flush()
        os.fsync(f.fileno())
      self.held = True
      self._thread = threading.Thread(target=self._beat, name="workdir-lock", daemon=True)
      self._thread.start()
      return self
    raise WorkdirBusyError(f"could not take the lock {self.path}: other runs keep taking it")

  def _beat(self):
    while not self._stop.wait(self.heartbeat_s):
      holder = self.read()
      if not holder or holder.get("token") != self.token:
        logging.error("the workdir lock %s is no longer this run's (%s); another run may be "
                      "writing into %s", self.path,
                      "removed" if holder is None else _describe(holder, self.path),
                      self.path.parent)
        return
      try:
        os.utime(self.path)
      except OSError as e:
        logging.warning("could not refresh the workdir lock %s: %s", self.path, e)

  def release(self):
    """Removes the lock if it is still this run's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    if self.held:
      holder = self.read()
      if holder and holder.get("token") == self.token:
        self.path.unlink(missing_ok=True)
      self.held = False


@contextlib.contextmanager
def hold(workdir, **kwargs):
  """The workdir's lock for the duration (process 0 of a multi-host run takes it)."""
  lock, error = None, None
  if jax.process_index() == 0:
    lock = WorkdirLock(workdir, **kwargs)
    try:
      lock.acquire()
    except errors.UserError as e:
      error = e
  if jax.process_count() > 1:
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not int(ok) and error is None:
      error = WorkdirBusyError(f"process 0 could not take the lock of {workdir}")
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()
