"""Top-k: every implementation the device runs natively against ``lax.top_k``.

One row per (op, impl, batch, N, k), forward, beside its peer ``lax`` timed in the same
run and its memory floor (bytes the op must move over the measured copy bandwidth), and
``topk_traced_k``: the dense op at a traced k beside ``lax`` (where ``radix`` pays):

* ``op="topk"``: the dense op (``sparsejax.ops.topk``): read x, write the masked x;
* ``op="values_indices"``: ``topk_values_indices`` (what the SAE's encoder uses): read x,
  write k values and indices.

Pallas on a CPU backend would run in interpret mode, which is never timed: that row
says so instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.bench.timing import copy_bandwidth_bytes_per_s, seconds_per_call
from sparsejax import ops

# (batch, N, k) from the (64, 500, 50) to (4096, 65536, 64); a CPU gets three
# points so that the whole bench stays within its shared five-minute budget.
GRID_ACCEL = [(64, 500, 50), (256, 4096, 64), (1024, 16384, 32), (4096, 16384, 64),
              (4096, 65536, 64)]
GRID_CPU = [(64, 500, 50), (1024, 4096, 64), (4096, 16384, 32)]


def grid() -> list[tuple[int, int, int]]:
    return GRID_CPU if jax.default_backend() == "cpu" else GRID_ACCEL


def native_impls() -> list[str]:
    """Implementations that run compiled (not interpreted) on the default backend."""
    return ["lax", "approx", "pallas", "radix"]


def bench_topk():
    backend = jax.default_backend()
    bw = copy_bandwidth_bytes_per_s()
    for (b, n, k), op in ((shape, op) for shape in grid() for op in ("topk", "values_indices")):
        auto = ops.resolve_impl("auto", n=n, op=op, k_max=k)
        x = jax.random.normal(jax.random.key(0), (b, n), jnp.float32)
        fn = ops.topk if op == "topk" else ops.topk_values_indices
        nbytes = x.size * 4 + (x.size * 4 if op == "topk" else b * k * 8)
        floor_ms = 1e3 * nbytes / bw
        fns = {impl: jax.jit(lambda x, impl=impl: fn(x, k, impl=impl))
               for impl in native_impls()}
        peer_ms = 1e3 * seconds_per_call(fns["lax"], x)
        for impl in native_impls():
            row = {"op": op, "impl": impl, "batch": b, "n": n, "k": k, "auto": impl == auto,
                   "peer": "lax", "peer_ms": round(peer_ms, 3), "bytes": nbytes,
                   "floor_ms": round(floor_ms, 3)}
            if impl == "pallas" and backend == "cpu":
                yield {**row, "ms": None, "note": "interpret mode on CPU: not timed"}
                continue
            ms = peer_ms if impl == "lax" else 1e3 * seconds_per_call(fns[impl], x)
            if impl == "approx" and backend != "tpu":
                row["note"] = "approx_max_k sorts off TPU"
            if impl == "radix" and op == "values_indices":
                row["note"] = "radix orders its values by lax.top_k"
            yield {**row, "ms": round(ms, 3), "speedup_vs_peer": round(peer_ms / ms, 2),
                   "x_floor": round(ms / floor_ms, 1)}


def bench_topk_traced_k():
    """The dense op with a traced k (the models' case: the static bound is k_max = N, so
    ``lax.top_k`` sorts the row) and at a quarter and a sixty-fourth of N, radix beside
    its peer ``lax``: where ``resolve_impl`` switches (``RADIX_K_FRACTION``). The grid's
    first two shapes (the third's full sort takes seconds a call on a CPU)."""
    for b, n, _ in grid()[:2]:
        x = jax.random.normal(jax.random.key(0), (b, n), jnp.float32)
        for k_max in (n, n // 4, max(n // 64, 1)):
            k = jnp.int32(min(50, k_max))
            ms = {impl: 1e3 * seconds_per_call(jax.jit(
                lambda x, k, impl=impl, k_max=k_max: ops.topk(x, k, impl=impl, k_max=k_max)),
                x, k) for impl in ("lax", "radix")}
            yield {"op": "topk", "impl": "radix", "batch": b, "n": n, "k_max": k_max,
                   "auto": ops.resolve_impl("auto", n=n, k_max=k_max), "peer": "lax",
                   "peer_ms": round(ms["lax"], 3), "ms": round(ms["radix"], 3),
                   "speedup_vs_peer": round(ms["lax"] / ms["radix"], 2)}


CASES = {"topk": bench_topk, "topk_traced_k": bench_topk_traced_k}
