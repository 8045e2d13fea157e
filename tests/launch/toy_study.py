"""A tiny data-parallel trainer for developing the multi-process harness without the engine.

``python -m launch.worker [...] --module tests.launch.toy_study -- toy --steps N --out DIR``
trains a 2-layer MLP with SGD on batches drawn on the device from (seed, step), data parallel
over every device of every process through one jitted step and a global mesh, and writes
``DIR/params.npz`` and ``DIR/losses.json`` from process 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    assert argv and argv[0] == "toy", argv
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv[1:])

    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"w1": jax.random.normal(k1, (8, 32)) * 0.3, "w2": jax.random.normal(k2, (32, 1)) * 0.3}
    params = jax.device_put(params, replicated)

    def loss_fn(params, x, y):
        return jnp.mean((jnp.tanh(x @ params["w1"]) @ params["w2"] - y) ** 2)

    @jax.jit
    def step(params, i):
        key = jax.random.fold_in(jax.random.key(1), i)  # the batch depends on (seed, step) only
        x = jax.lax.with_sharding_constraint(jax.random.normal(key, (args.batch, 8)), sharded)
        y = jnp.sin(x.sum(axis=1, keepdims=True))
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        return jax.lax.with_sharding_constraint(params, replicated), loss

    losses = []
    for i in range(args.steps):
        params, loss = step(params, jnp.int32(i))
        losses.append(float(loss))
    if jax.process_index() == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "params.npz", **{k: np.asarray(v) for k, v in params.items()})
        (out / "losses.json").write_text(json.dumps({"losses": losses,
                                                     "devices": jax.device_count(),
                                                     "processes": jax.process_count()}))
    return 0
