"""Checkpointer (orbax) and PreemptionGuard: round trip, retention, damaged steps, signals."""

import gc
import os
import shutil
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dfl_jax.training import checkpointing
from dfl_jax.training.checkpointing import Checkpointer, CheckpointError, PreemptionGuard

# A failed read of a damaged step leaves orbax's other read coroutines unfinished; their
# clean-up is reported as unraisable. Collect them inside the test, where this filter applies.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_garbage():
  yield
  gc.collect()


def make_state(seed: int, size: int = 64):
  """A small train state: params, adam state after one update, batch stats, step, rng."""
  key = jax.random.PRNGKey(seed)
  params = {"dense": {"kernel": jax.random.normal(key, (size, size)),
                      "bias": jnp.arange(size, dtype=jnp.float32) + seed},
            "scale": jnp.ones(())}
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  updates, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
  return {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
          "batch_stats": {"mean": jnp.full((size,), float(seed))},
          "step": jnp.asarray(seed, jnp.int32),
          "rng": jax.random.key_data(jax.random.fold_in(jax.random.key(0), seed))}


def assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def save_steps(directory, steps, max_to_keep=3, mpjpe=None):
  with Checkpointer(directory, max_to_keep=max_to_keep) as ckpt:
    for s in steps:
      ckpt.save(s, make_state(s), None if mpjpe is None else {"mpjpe_all": mpjpe[s]})


def biggest_state_file(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir / "state") for f in fs]
  return max(files, key=os.path.getsize)


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def flip_bit(path):
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    data[len(data) // 2] ^= 0x01
    f.seek(0)
    f.write(data)


def test_round_trip(tmp_path):
  state = make_state(7)
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.restore_latest(state) is None
    assert ckpt.latest_step() is None and ckpt.best_step() is None
    assert ckpt.save(7, state, {"mpjpe_all": 12.5, "mpjpe_single": 10.0})
    assert not ckpt.save(7, state)  # already saved here
    ckpt.wait()
    step, restored, metrics = ckpt.restore_latest(make_state(0))
  assert step == 7 and metrics == {"mpjpe_all": 12.5, "mpjpe_single": 10.0}
  assert_same(restored, state)
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)

  # a fresh process, restoring into an abstract target
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    step, restored, _ = ckpt.restore_latest(abstract)
  assert step == 7
  assert_same(restored, state)


def test_round_trip_flax_struct(tmp_path):
  @flax.struct.dataclass
  class TrainState:
    step: Any
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: Any

  s = make_state(3)
  state = TrainState(step=s["step"], params=s["params"], batch_stats={},
                     opt_state=s["opt_state"], rng=s["rng"])
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, state)
    _, restored, metrics = ckpt.restore_latest(state)
  assert isinstance(restored, TrainState) and metrics is None
  assert_same(restored, state)


def test_keeps_latest_and_best(tmp_path):
  mpjpe = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 6.0, 6: 7.0, 7: 0.5}
  save_steps(tmp_path, range(1, 7), max_to_keep=2, mpjpe=mpjpe)
  with Checkpointer(tmp_path, max_to_keep=2) as ckpt:  # a restart reads the metrics back
    assert ckpt.all_steps() == [2, 5, 6]
    assert ckpt.latest_step() == 6 and ckpt.best_step() == 2
    step, state, metrics = ckpt.restore_best(make_state(0))
    assert step == 2 and metrics == {"mpjpe_all": 1.0}
    assert_same(state, make_state(2))
    ckpt.save(7, make_state(7), {"mpjpe_all": mpjpe[7]})
    ckpt.save(8, make_state(8))  # no metrics: kept only as one of the latest
    ckpt.wait()
    assert ckpt.all_steps() == [7, 8] and ckpt.best_step() == 7
  assert sorted(p.name for p in tmp_path.iterdir()) == ["7", "8"]


def test_best_mode_max(tmp_path):
  with Checkpointer(tmp_path, max_to_keep=1, best_metric="pck", best_mode="max") as ckpt:
    for s, v in [(1, 0.2), (2, 0.9), (3, 0.5), (4, 0.1)]:
      ckpt.save(s, make_state(s, size=4), {"pck": v})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 4] and ckpt.best_step() == 2


def test_force_save_is_committed_on_return(tmp_path):
  ckpt = Checkpointer(tmp_path)
  ckpt.save(1, make_state(1))
  ckpt.save(2, make_state(2), force=True)
  for s in (1, 2):
    assert (tmp_path / str(s) / checkpointing.COMMIT_MARKER).exists()
  ckpt.close()


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip_bit"])
def test_damaged_latest_falls_back(tmp_path, caplog, damage):
  save_steps(tmp_path, [1, 2, 3], mpjpe={1: 3.0, 2: 2.0, 3: 1.0})
  path = biggest_state_file(tmp_path / "3")
  {"delete": os.remove, "truncate": truncate, "flip_bit": flip_bit}[damage](path)

  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 3
    step, state, metrics = ckpt.restore_latest(make_state(0))
    assert step == 2 and metrics == {"mpjpe_all": 2.0}
    assert_same(state, make_state(2))
    assert "checkpoint step 3" in caplog.text and "unusable" in caplog.text
    # the report names the leaf and the file (from the step's inventory)
    assert "dense" in caplog.text and "kernel" in caplog.text
    damaged = os.path.relpath(path, tmp_path / "3")
    assert damaged in caplog.text
    assert {"delete": "missing", "truncate": "bytes, was", "flip_bit": "altered"}[damage] \
        in caplog.text
    # kept for inspection, out of the way of the resumed run
    assert ckpt.all_steps() == [1, 2] and ckpt.best_step() == 2
    assert [p.name.split("-")[:2] for p in (tmp_path / "quarantine").iterdir()] == [
        ["3", "corrupt"]]
    assert not ckpt.save(2, state)  # the step it resumed from
    assert ckpt.save(3, make_state(30), {"mpjpe_all": 1.5})
    assert ckpt.save(4, make_state(4))
  with Checkpointer(tmp_path) as ckpt:
    step, state, _ = ckpt.restore_latest(make_state(0))
    assert step == 4
    assert_same(state, make_state(4))
    assert ckpt.restore(3, make_state(0))[2] == {"mpjpe_all": 1.5}
    assert ckpt.best_step() == 3


def test_partial_saves_are_skipped(tmp_path, caplog):
  save_steps(tmp_path, [1, 2, 3])
  os.remove(tmp_path / "3" / checkpointing.COMMIT_MARKER)  # committed marker missing
  tmp = tmp_path / "4.orbax-checkpoint-tmp"  # a save killed before its commit
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "junk").write_bytes(b"\0" * 100)

  with Checkpointer(tmp_path) as ckpt:
    assert 4 not in ckpt.all_steps()
    step, state, _ = ckpt.restore_latest(make_state(0))
    assert step == 2
    assert_same(state, make_state(2))
    assert "step 3" in caplog.text and checkpointing.COMMIT_MARKER in caplog.text
    assert ckpt.save(3, make_state(3)) and ckpt.save(4, make_state(4))
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3, 4]
    step, state, _ = ckpt.restore_latest(make_state(0))
  assert step == 4
  assert_same(state, make_state(4))


def test_no_usable_checkpoint_raises_and_keeps_them(tmp_path, caplog):
  save_steps(tmp_path, [1, 2])
  for s in (1, 2):
    truncate(biggest_state_file(tmp_path / str(s)))
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match=r"step 2: .*step 1: "):
      ckpt.restore_latest(make_state(0))
    assert ckpt.all_steps() == [1, 2]
  assert not (tmp_path / "quarantine").exists()


def test_wrong_target_moves_nothing(tmp_path):
  """A target of another structure (changed model config or state layout) is not corruption:
  the newest step's message says so, and every step stays where it is."""
  save_steps(tmp_path, [1, 2])
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match=r"step 2 .*different training state"):
      ckpt.restore_latest({"something": jnp.zeros((3,))})
    assert ckpt.all_steps() == [1, 2]
  assert not (tmp_path / "quarantine").exists()


def wait_for(predicate, seconds=5.0):
  end = time.time() + seconds
  while not predicate() and time.time() < end:
    time.sleep(0.01)
  return predicate()


def test_preemption_guard_sigterm():
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  with PreemptionGuard() as guard:
    assert not guard.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert wait_for(lambda: guard.requested)
    assert guard.signum == signal.SIGTERM and guard.sync()
  assert {s: signal.getsignal(s) for s in before} == before


def test_preemption_guard_second_sigint_interrupts():
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run as a background job (CI)
  with PreemptionGuard() as guard:
    os.kill(os.getpid(), signal.SIGINT)
    assert wait_for(lambda: guard.requested)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(5)
  assert signal.getsignal(signal.SIGINT) is before


def test_a_step_missing_only_its_metadata_is_rebuilt_and_restored(tmp_path, caplog):
  save_steps(tmp_path, [1, 2], mpjpe={1: 3.0, 2: 2.0})
  os.remove(tmp_path / "2" / "meta" / checkpointing.META_FILE)
  with Checkpointer(tmp_path) as ckpt:
    step, state, metrics = ckpt.restore_latest(make_state(0))
    assert step == 2 and metrics is None  # the arrays are back; the metrics were in the file
    assert_same(state, make_state(2))
    assert "rebuilt" in caplog.text
  assert not (tmp_path / "quarantine").exists()
  with Checkpointer(tmp_path) as ckpt:  # the rebuilt file carries the fingerprint again
    flip_bit(biggest_state_file(tmp_path / "2"))
    os.remove(tmp_path / "2" / checkpointing.INVENTORY)
    with pytest.raises(checkpointing.CorruptCheckpointError, match="differs from what was saved"):
      ckpt.restore(2, make_state(0))


def test_missing_metadata_without_an_inventory_is_quarantined(tmp_path):
  save_steps(tmp_path, [1, 2])
  os.remove(tmp_path / "2" / "meta" / checkpointing.META_FILE)
  os.remove(tmp_path / "2" / checkpointing.INVENTORY)
  with Checkpointer(tmp_path) as ckpt:
    step, _, _ = ckpt.restore_latest(make_state(0))
  assert step == 1
  assert [p.name.split("-")[0] for p in (tmp_path / "quarantine").iterdir()] == ["2"]


@pytest.mark.parametrize("steps", [[1, 2], [2]])
def test_missing_tree_metadata_is_rebuilt(tmp_path, caplog, steps):
  """From another step of the run, or (no other step) from the state the config builds."""
  save_steps(tmp_path, steps)
  os.remove(tmp_path / "2" / "state" / "_METADATA")
  with Checkpointer(tmp_path) as ckpt:
    step, state, _ = ckpt.restore_latest(make_state(0))
  assert step == 2
  assert_same(state, make_state(2))
  assert "_METADATA" in caplog.text and "rebuilt" in caplog.text
  assert not any(p.name.startswith(".rebuild") for p in tmp_path.iterdir())


def test_a_save_that_cannot_fit_stops_before_writing(tmp_path, monkeypatch):
  save_steps(tmp_path, [1])
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(checkpointing.shutil, "disk_usage",
                      lambda path: usage._replace(free=1000))
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpointing.DiskFullError, match=r"step 2 .*needs about .*committed "
                                                          r"steps \[1\] are kept"):
      ckpt.save(2, make_state(2))
    assert ckpt.all_steps() == [1]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
