"""Timing and hardware limits shared by the benches."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def block(x):
    return jax.block_until_ready(x)


def seconds_per_call(fn: Callable, *args, min_time: float = 0.5, warmup: int = 1,
                     max_calls: int = 1000) -> float:
    """Median wall time of ``fn(*args)`` (results blocked on), after ``warmup`` calls.

    Calls repeat until ``min_time`` seconds have passed (at least 3 calls).
    """
    for _ in range(warmup):
        block(fn(*args))
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_calls):
        t = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


@functools.cache
def copy_bandwidth_bytes_per_s(nbytes: int = 1 << 27) -> float:
    """Measured device memory bandwidth: bytes read + written per second by an array copy."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 1.0000001)  # forces a real read + write, not an alias
    sec = seconds_per_call(f, x, min_time=0.3)
    return 2 * nbytes / sec


@functools.cache
def matmul_flops_per_s(n: int | None = None, dtype=jnp.float32) -> float:
    """Measured dense matmul rate of the default device (FLOP/s) on an n x n x n product."""
    if n is None:
        n = 1024 if jax.devices()[0].platform == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    sec = seconds_per_call(f, a, min_time=0.3)
    return 2 * n**3 / sec
