"""Decoding a Top-k code: ``sparse_decode`` (gather-sum, scatter-add backward) against the
dense decode of the scattered code (``[B, N] @ [N, d]``), forward and forward+backward.

Rows carry the dense peer timed in the same run and the sparse op's memory floor over the
measured copy bandwidth. Bytes the op cannot avoid (float32), with R = min(N, B k) the
decoder rows a batch can touch (each read once by an ideal kernel):
forward  = read R rows of W + values/indices + write y:  4 (R d + 2 B k + B d);
fwd+bwd  adds reading g, reading the R rows again for dv, writing dv, and writing the
dense dW once:  4 (B d + R d + B k + N d).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.bench.timing import copy_bandwidth_bytes_per_s, seconds_per_call
from sparsejax.ops import dense_decode, sparse_decode

D = 768
GRID_ACCEL = [(64, 500, 50), (256, 4096, 64), (1024, 16384, 32), (4096, 16384, 64),
              (4096, 65536, 64)]
GRID_CPU = [(64, 500, 50), (1024, 4096, 64), (4096, 16384, 32)]


def _inputs(b, n, k, d):
    kv, ki, kw = jax.random.split(jax.random.key(0), 3)
    values = jax.random.normal(kv, (b, k), jnp.float32)
    indices = jax.random.randint(ki, (b, k), 0, n, jnp.int32)
    W = jax.random.normal(kw, (n, d), jnp.float32) / jnp.sqrt(d)
    return values, indices, W, jnp.zeros((d,), jnp.float32)


def bench_decode():
    bw = copy_bandwidth_bytes_per_s()
    grid = GRID_CPU if jax.default_backend() == "cpu" else GRID_ACCEL
    for b, n, k in grid:
        args = _inputs(b, n, k, D)
        rows = min(n, b * k)
        fwd_bytes = 4 * (rows * D + 2 * b * k + b * D)
        bwd_bytes = fwd_bytes + 4 * (b * D + rows * D + b * k + n * D)
        for mode, nbytes in (("fwd", fwd_bytes), ("fwd+bwd", bwd_bytes)):
            def make(decode, mode=mode):
                if mode == "fwd":
                    return jax.jit(decode)
                loss = lambda v, i, W, bias: jnp.sum(decode(v, i, W, bias) ** 2)  # noqa: E731
                return jax.jit(jax.grad(loss, argnums=(0, 2, 3)))

            ms = 1e3 * seconds_per_call(make(sparse_decode), *args)
            peer_ms = 1e3 * seconds_per_call(make(dense_decode), *args)
            floor_ms = 1e3 * nbytes / bw
            yield {"mode": mode, "batch": b, "n": n, "k": k, "d": D, "ms": round(ms, 3),
                   "peer": "dense", "peer_ms": round(peer_ms, 3),
                   "speedup_vs_peer": round(peer_ms / ms, 1), "bytes": nbytes,
                   "floor_ms": round(floor_ms, 3), "x_floor": round(ms / floor_ms, 1)}


CASES = {"decode": bench_decode}
