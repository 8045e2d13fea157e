"""Device memory: what one train-step program needs, and what a device has free.

A study that packs several runs into one program (``TrainConfig.group``, vmapped seeds)
sizes its programs from these two numbers: XLA's buffer assignment of the compiled step
(``Compiled.memory_analysis``, per device under SPMD) against the allocator's limit
(``Device.memory_stats``; GPU and TPU report it, XLA:CPU does not).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sparsejax.data import FactorDataset
from sparsejax.train.config import TrainConfig
from sparsejax.train.hybrid import model_graphdef
from sparsejax.train.mesh import batch_sharding, make_mesh, replicated
from sparsejax.train.state import abstract_state
from sparsejax.train.step import make_train_step, scan_length


def device_free_bytes(device: jax.Device | None = None) -> int | None:
    """Bytes the allocator of ``device`` (default: the first local device) can still hand
    out: its limit less what is in use now; None where the backend does not say (CPU)."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except (NotImplementedError, RuntimeError):
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def step_bytes(cfg: TrainConfig, dataset: FactorDataset, mesh=None) -> int:
    """Peak bytes per device of one dispatch of ``cfg``'s train step over all its runs (the
    ``scan_steps`` scan where the config scans device data), from the compiled program's
    buffer assignment: arguments + outputs - donated aliases + temporaries. Compiles the
    program once from abstract shapes; allocates nothing."""
    mesh = mesh or make_mesh()
    rep = replicated(mesh)
    scan = scan_length(cfg, dataset)
    channels = dataset.observation_shape[-1]
    step = make_train_step(cfg, model_graphdef(cfg, channels), dataset, mesh, scan_steps=scan)
    args = [abstract_state(cfg, channels, rep),
            jax.ShapeDtypeStruct(() if scan is None else (scan,), jnp.int32, sharding=rep)]
    if not dataset.on_device:  # host-fed images [S, B, H, W, C]
        args.append(jax.ShapeDtypeStruct(
            (cfg.num_runs, cfg.batch_size, *dataset.observation_shape), jnp.float32,
            sharding=batch_sharding(mesh, seed_axis=True)))
    m = step.lower(*args).compile().memory_analysis()
    # the sum, not ``peak_memory_in_bytes``: XLA:CPU leaves the temporaries out of that one
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)
