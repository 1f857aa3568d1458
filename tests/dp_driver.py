"""Runs a few training steps of the tiny model on a fixed global batch; used by test_train.py.

    python tests/dp_driver.py --devices N --out FILE.npz [--process_id I --num_processes P
                              --port PORT] [--steps 3]

Every process builds the same global batch and feeds its own rows (the data-parallel contract);
process 0 writes the final parameters.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--devices", type=int, required=True, help="devices in the mesh (all hosts)")
  ap.add_argument("--out", required=True)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--process_id", type=int, default=0)
  ap.add_argument("--num_processes", type=int, default=1)
  ap.add_argument("--port", type=int, default=0)
  args = ap.parse_args()
  if args.num_processes > 1:
    jax.distributed.initialize(coordinator_address=f"localhost:{args.port}",
                               num_processes=args.num_processes, process_id=args.process_id)
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from configs import tiny
  from dfl_jax import parallel
  from dfl_jax.training.state import create_train_state
  from dfl_jax.training.step import make_train_step

  config = tiny.get_config()
  config.data.image_size = 64
  config.train.batch_size = 8
  mesh = Mesh(np.array(jax.devices()[:args.devices]), (parallel.AXIS,))
  # SGD, not Adam: Adam normalises the gradient's scale away, so it would hide a data-parallel
  # step whose gradient is N times too large (docs/jax_notes.md); SGD shows it directly.
  tx = optax.sgd(1e-4)
  model, state = create_train_state(config, jax.random.key(0), tx)
  state = jax.device_put(state, NamedSharding(mesh, P()))
  step = make_train_step(model, tx, config.loss, mesh)

  r = np.random.RandomState(0)
  n, s = config.train.batch_size, config.data.image_size
  batch = {
      "images": r.randint(0, 255, (n, s, s, 3)).astype(np.uint8),
      "joints": np.concatenate([r.uniform(4, s - 4, (n, 42, 2)),
                                r.uniform(100, 156, (n, 42, 1))], -1).astype(np.float32),
      # Validity differs across devices: the global normalisation must still agree.
      "joint_valid": (r.rand(n, 42) > 0.3).astype(np.float32),
      "segmentation": r.randint(0, 33, (n, s // 4, s // 4)).astype(np.int32),
      "segmentation_valid": np.ones(n, np.float32),
      "hand_presence": (r.rand(n, 2) > 0.5).astype(np.float32),
      "hand_presence_valid": np.ones(n, np.float32),
      "rel_root_depth": r.uniform(100, 156, n).astype(np.float32),
      "rel_root_depth_valid": (r.rand(n) > 0.5).astype(np.float32),
  }
  per = n // jax.process_count()
  local = {k: v[jax.process_index() * per:(jax.process_index() + 1) * per]
           for k, v in batch.items()}
  init = jax.tree.map(np.asarray, jax.device_get(state.params))
  for _ in range(args.steps):
    state, metrics = step(state, parallel.to_global(local, mesh))
  flat = {jax.tree_util.keystr(k): np.asarray(jax.device_get(v))
          for k, v in jax.tree_util.tree_flatten_with_path(state.params)[0]}
  moved = max(float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(init), jax.tree.leaves(jax.device_get(state.params))))
  if jax.process_index() == 0:
    np.savez(args.out, loss=float(metrics["loss"]), moved=moved, **flat)


if __name__ == "__main__":
  main()
