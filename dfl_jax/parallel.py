"""Data parallelism over every device of every host: the mesh, global batches, local rows.

One 1-D mesh with axis ``batch`` over ``jax.devices()``; batches become global arrays split over
it with ``jax.make_array_from_process_local_data`` (each process passes its own rows), and the
state is replicated. docs/jax_notes.md says why the step is ``jax.jit(jax.shard_map(...))`` and
what that means for gradients.
"""

import os

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from dfl_jax import errors

AXIS = "batch"


def maybe_initialize_distributed(config):
  """jax.distributed.initialize() when config.distributed.enabled or DFL_DISTRIBUTED=1."""
  d = config.get("distributed", {})
  if not (d.get("enabled", False) or os.environ.get("DFL_DISTRIBUTED") == "1"):
    return
  kwargs = {k: d.get(k) for k in ("coordinator_address", "num_processes", "process_id")
            if d.get(k) not in (None, "", -1)}
  jax.distributed.initialize(**kwargs)


def make_mesh():
  """A 1-D mesh over every device of every process."""
  # Auto axes: XLA propagates shardings inside jit (the default of newer JAX, Explicit, would
  # make every reshape of a batch-sharded array in the model name its output sharding).
  return jax.make_mesh((jax.device_count(),), (AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, num_devices: int | None = None):
  """A ConfigError (a ValueError) unless the global batch divides by the devices."""
  n = num_devices or jax.device_count()
  if global_batch % n:
    raise errors.ConfigError(f"config.train.batch_size={global_batch} (the global batch) does "
                             f"not divide by the {n} devices; choose a multiple of {n}")


def to_global(batch, mesh, keys=None):
  """Host-local NumPy batch -> global arrays of ``keys`` (default: all) split over the mesh's
  batch axis."""
  sharding = NamedSharding(mesh, P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k]))
          for k in (batch if keys is None else keys)}


def local_rows(x):
  """This process's rows of a global array split over the batch axis, in order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards], axis=0)
