"""``train_hybrid``: training throughput of the VAE-SAE hybrid, beside its FLOP floor.

One row per setting: the whole jitted step (draw factors, render dSprites on the device,
forward, backward, Adam, firing counts) at batch 64, k = 50. Beside each figure, the floor
``floor_images_per_s``: images per second if the step's FLOPs (XLA's cost analysis of the
compiled step) ran at the device's measured dense matmul rate. Rows: one seed; S seeds
vmapped in one program; and the peer, the same step with the plain strided and transposed
convolutions (``conv_impl="lax"``) that the phase form replaces on CPU.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from experiments.bench import timing
from sparsejax.data import get_dataset
from sparsejax.models.conv import resolve_conv_impl
from sparsejax.train import preset
from sparsejax.train.hybrid import model_graphdef
from sparsejax.train.mesh import make_mesh, replicated
from sparsejax.train.seeds import resolve_seed_map
from sparsejax.train.state import init_state
from sparsejax.train.step import make_train_step

BATCH, K = 64, 50
SEEDS = 3  # the flagship study's seeds per cell


def measure(dataset: str = "dsprites", method: str = "topk", seeds: int = 1,
            conv_impl: str = "auto", min_time: float = 3.0, batch: int = BATCH) -> dict:
    """Images/s of the train step (all seeds), its FLOPs per step and the FLOP floor.

    Cached: a second bench (``paper_estimate``) or the collapse dry run in the same process
    reuses the timing of the same setting instead of repeating it."""
    return dict(_measure(dataset, method, seeds, conv_impl, float(min_time), batch))


@functools.cache
def _measure(dataset, method, seeds, conv_impl, min_time, batch) -> dict:
    cfg = preset("paper", dataset=dataset, method=method, num_seeds=seeds, batch_size=batch,
                 conv_impl=conv_impl)
    ds = get_dataset(dataset, "procedural")
    mesh = make_mesh()
    channels = ds.observation_shape[-1]
    step = make_train_step(cfg, model_graphdef(cfg, channels), ds, mesh)
    state = init_state(cfg, channels, replicated(mesh))
    k = jnp.int32(K)
    compiled = step.lower(state, k).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    for _ in range(3):  # warm up (first calls allocate)
        state, m = compiled(state, k)
    jax.block_until_ready(m)
    steps, t0 = 0, time.perf_counter()
    while True:
        for _ in range(5):
            state, m = compiled(state, k)
        steps += 5
        jax.block_until_ready(m)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            break
    images = steps * batch * seeds
    rate = timing.matmul_flops_per_s()
    return {"dataset": dataset, "method": method, "k": K, "batch": batch, "seeds": seeds,
            "conv_impl": resolve_conv_impl(conv_impl), "seed_map": resolve_seed_map(cfg.seed_map)
            if seeds > 1 else None, "images_per_s": round(images / elapsed, 1),
            "ms_per_step": round(1e3 * elapsed / steps, 2), "flops_per_step": flops,
            "floor_images_per_s": round(rate / flops * batch * seeds, 1),
            "matmul_flops_per_s": rate}


def train_hybrid():
    yield measure()
    yield measure(seeds=SEEDS)  # unrolled on CPU (vmapped convs are grouped convs there)
    if jax.default_backend() == "cpu":  # the peer: the plain Flax formulation
        yield measure(conv_impl="lax", min_time=2.0)


CASES = {"train_hybrid": train_hybrid}
