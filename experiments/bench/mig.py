"""MIG: ``sparsejax.metrics.mig`` beside disentanglement_lib's procedure, same inputs, one run.

The peer is dlib's discrete MIG restated here with numpy + sklearn exactly as dlib runs it:
``np.digitize(x, np.histogram(x, 20)[1][:-1])`` per code, then
``sklearn.metrics.mutual_info_score`` for every (code, factor) pair and every factor with
itself, then the entropy-normalised top-two gap. Inputs are 10,000 samples of 6 Shapes3D
factors and 500 float32 codes shaped like a sparse layer (ReLU of noisy factor mixtures,
50 dead units).

The floor is the counting matmul our kernel issues at the measured dense matmul rate:
``2 N K ceil(20/P) (sum(V) - F + 1)`` FLOPs with ``P`` bins packed per float32 column
(``onehot_floor_seconds``: the plain one-hot product, ``2 N K 20 sum(V)``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import mutual_info_score

from experiments.bench.timing import matmul_flops_per_s, seconds_per_call
from sparsejax import metrics
from sparsejax.metrics import mi_kernel

N, K, BINS = 10_000, 500, 20
SIZES = (10, 10, 10, 8, 4, 15)  # Shapes3D
DEAD = 50


def dlib_mig(codes_NxK: np.ndarray, factors_NxF: np.ndarray, num_bins: int = BINS) -> float:
    """disentanglement_lib ``_compute_mig`` with the histogram discretiser (dlib's layout)."""
    mus, ys = codes_NxK.T, factors_NxF.T
    discretized = np.zeros_like(mus)
    for i in range(mus.shape[0]):
        discretized[i, :] = np.digitize(mus[i, :], np.histogram(mus[i, :], num_bins)[1][:-1])
    m = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            m[i, j] = mutual_info_score(ys[j, :], discretized[i, :])
    entropy = np.array([mutual_info_score(ys[j, :], ys[j, :]) for j in range(ys.shape[0])])
    sorted_m = np.sort(m, axis=0)[::-1]
    return float(np.mean(np.divide(sorted_m[0, :] - sorted_m[1, :], entropy[:])))


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, s, N) for s in SIZES], axis=1).astype(np.int32)
    mix = rng.standard_normal((len(SIZES), K)) * (rng.random((len(SIZES), K)) < 0.3)
    pre = (factors / np.array(SIZES)) @ mix + 0.3 * rng.standard_normal((N, K)) - 0.5
    codes = np.maximum(pre, 0.0).astype(np.float32)
    codes[:, :DEAD] = 0.0
    return jnp.asarray(codes), jnp.asarray(factors)


def bench_mig():
    codes, factors = _inputs()
    ours = metrics.mig(codes, factors)
    seconds = seconds_per_call(lambda: metrics.mig(codes, factors), min_time=1.0)

    # The peer runs ~5 s on a 2-core CPU: one timed call, on the float64 view of the same
    # codes (our contract is numpy's float64 edges).
    codes64, factors_np = np.asarray(codes, np.float64), np.asarray(factors)
    t0 = time.perf_counter()
    peer = dlib_mig(codes64, factors_np)
    peer_seconds = time.perf_counter() - t0

    pack = mi_kernel._plan(K, BINS, N).pack
    flops = 2 * N * K * -(-BINS // pack) * (sum(SIZES) - len(SIZES) + 1)
    onehot_flops = 2 * N * K * BINS * sum(SIZES)
    rate = matmul_flops_per_s()
    yield {"n": N, "codes": K, "factors": len(SIZES), "seconds": round(seconds, 5),
           "peer_seconds": round(peer_seconds, 3), "ratio": round(peer_seconds / seconds, 1),
           "same_value": abs(ours - peer) <= 1e-5, "abs_diff": abs(ours - peer),
           "floor_seconds": round(flops / rate, 5), "floor_gflop": round(flops / 1e9, 2),
           "onehot_floor_seconds": round(onehot_flops / rate, 5), "mig": round(ours, 6),
           "pack": pack, "backend": jax.default_backend()}


CASES = {"mig": bench_mig}
