"""The workdir lock: one run per workdir, the holder named, stale locks taken over."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from dfl_jax import errors
from dfl_jax.training import workdir_lock
from dfl_jax.training.workdir_lock import LOCK_FILE, WorkdirBusyError, WorkdirLock


def _write_holder(workdir, age_s=0.0, **fields):
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / LOCK_FILE
  holder = dict({"host": socket.gethostname(), "pid": os.getpid(), "started_unix": time.time(),
                 "token": "someone-else"}, **fields)
  path.write_text(json.dumps(holder))
  if age_s:
    old = time.time() - age_s
    os.utime(path, (old, old))
  return path


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
  first = WorkdirLock(tmp_path / "run").acquire()
  try:
    with pytest.raises(WorkdirBusyError) as info:
      WorkdirLock(tmp_path / "run").acquire()
    message = str(info.value)
    assert f"PID {os.getpid()}" in message and socket.gethostname() in message
    assert str(tmp_path / "run" / LOCK_FILE) in message
    assert isinstance(info.value, errors.UserError) and info.value.exit_code == 3
  finally:
    first.release()
  assert not (tmp_path / "run" / LOCK_FILE).exists()
  WorkdirLock(tmp_path / "run").acquire().release()  # free again


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  _write_holder(tmp_path, pid=int(dead.stdout))
  lock = WorkdirLock(tmp_path).acquire()
  try:
    holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["token"] == lock.token and holder["pid"] == os.getpid()
    assert "stale lock" in caplog.text and f"process {int(dead.stdout)}" in caplog.text
  finally:
    lock.release()


def test_a_reused_pid_is_not_the_holder(tmp_path):
  """Our own PID, but another process start time: the process that wrote the lock is gone."""
  start = workdir_lock._process_start(os.getpid())
  if start is None:
    pytest.skip("no /proc on this system: the PID-reuse check needs the process start time")
  _write_holder(tmp_path, process_start=start + 12345)
  WorkdirLock(tmp_path).acquire().release()
  _write_holder(tmp_path, process_start=start)  # the same process: alive, so busy
  with pytest.raises(WorkdirBusyError):
    WorkdirLock(tmp_path).acquire()


def test_another_hosts_lock_is_stale_only_once_its_heartbeat_stops(tmp_path):
  _write_holder(tmp_path, host="some-other-host", pid=1)
  with pytest.raises(WorkdirBusyError, match="some-other-host"):
    WorkdirLock(tmp_path, stale_after_s=60).acquire()
  _write_holder(tmp_path, age_s=120, host="some-other-host", pid=1)
  WorkdirLock(tmp_path, stale_after_s=60).acquire().release()


def test_an_empty_lock_file_is_stale_once_old(tmp_path):
  (tmp_path / LOCK_FILE).write_text("")
  with pytest.raises(WorkdirBusyError):
    WorkdirLock(tmp_path, stale_after_s=60).acquire()
  old = time.time() - 120
  os.utime(tmp_path / LOCK_FILE, (old, old))
  WorkdirLock(tmp_path, stale_after_s=60).acquire().release()


def test_the_heartbeat_refreshes_the_lock_and_release_keeps_anothers(tmp_path):
  lock = WorkdirLock(tmp_path, heartbeat_s=0.05).acquire()
  path = tmp_path / LOCK_FILE
  old = time.time() - 1000
  os.utime(path, (old, old))
  for _ in range(200):
    if path.stat().st_mtime > old + 500:
      break
    time.sleep(0.05)
  assert path.stat().st_mtime > old + 500, "the heartbeat never touched the lock"
  _write_holder(tmp_path)  # taken over by someone else (e.g. thought stale)
  lock.release()
  assert path.exists(), "release removed another run's lock"


def test_hold_releases_on_error(tmp_path):
  with pytest.raises(RuntimeError):
    with workdir_lock.hold(tmp_path / "w"):
      assert (tmp_path / "w" / LOCK_FILE).exists()
      raise RuntimeError("boom")
  assert not (tmp_path / "w" / LOCK_FILE).exists()
