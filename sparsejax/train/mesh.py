"""The device mesh every model trains on, and how arrays are placed on it.

One 1-D mesh with axis ``"data"`` over all devices (1 CPU device, 4 simulated ones, a GPU,
a TPU slice, several hosts): the train state is replicated, batches are sharded along their
batch dimension. ``jax.jit`` with these named shardings inserts the collectives; a model
whose per-device code needs local arrays (a Pallas kernel, a scatter) wraps it in
``jax.shard_map`` over :data:`DATA_AXIS`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def device_label() -> str:
    """``"platform:kind xCOUNT"`` of the default devices, as results and bench rows record
    them (e.g. ``"cpu:cpu x4"``)."""
    d = jax.devices()[0]
    return f"{d.platform}:{d.device_kind} x{jax.device_count()}"


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, *, seed_axis: bool = False) -> NamedSharding:
    """Sharding of a batch ``[B, ...]`` (or ``[S, B, ...]`` with ``seed_axis``) over "data"."""
    return NamedSharding(mesh, P(None, DATA_AXIS) if seed_axis else P(DATA_AXIS))


def global_array(x, sharding: NamedSharding) -> jax.Array:
    """A global array from host data that every process holds in full (the fixed
    evaluation set, a host-read batch). Each process places only its own devices' shards,
    which a multi-process ``jit`` needs: it refuses numpy inputs with a sharded layout."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def check_batch(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    """Raises ValueError unless ``batch_size`` splits evenly over the mesh's devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{what} = {batch_size} must be divisible by the number of devices "
                         f"({n}) to shard the batch over them")
