"""Dead fractions and firing statistics against direct recomputation from stored activations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import metrics
from sparsejax.metrics import dead_units as du


def _sparse_activations(rng, n=3000, u=64):
    # ReLU units with rates from never to always, some tiny positive values near thresholds.
    rate = np.concatenate([[0.0, 0.0, 1e-4, 5e-4, 0.2, 0.6, 1.0], rng.uniform(0, 1, u - 7)])
    fire = rng.random((n, u)) < rate
    scale = rng.choice([1e-7, 5e-4, 5e-3, 0.5, 2.0], u)
    a = np.where(fire, rng.random((n, u)) * scale * 2, 0.0).astype(np.float32)
    a[:, 1] = -1.0  # a unit that is negative everywhere is dead too
    a[0, 3] = 1e-6  # exactly on a threshold: not above it
    return a


def test_dead_fraction_matches_recomputation(rng):
    a = _sparse_activations(rng)
    for tau in du.DEAD_THRESHOLDS:
        want = np.mean([not np.any(a[:, j] > tau) for j in range(a.shape[1])])
        got = metrics.dead_fraction(a, tau)
        chex.assert_shape(got, ())
        assert float(got) == pytest.approx(want, abs=1e-7)
    assert float(jax.jit(metrics.dead_fraction)(a)) == float(metrics.dead_fraction(a))


def test_firing_counts_accumulate_over_batches(rng):
    a = _sparse_activations(rng)
    want = np.array([[np.sum(a[:, j] > tau) for j in range(a.shape[1])]
                     for tau in du.DEAD_THRESHOLDS])
    step = jax.jit(lambda c, h: c + metrics.firing_counts(h))
    counts = jnp.zeros((4, a.shape[1]), jnp.int32)
    for batch in np.array_split(a, 7):
        counts = step(counts, batch)
    chex.assert_trees_all_equal(np.asarray(counts), want)


def test_firing_stats_match_recomputation(rng):
    a = _sparse_activations(rng)
    n, u = a.shape
    counts = np.asarray(metrics.firing_counts(a))
    s = metrics.firing_stats(counts, n)
    for t, tau in enumerate(du.DEAD_THRESHOLDS):
        fires = a > tau
        freq = fires.mean(axis=0)
        np.testing.assert_allclose(s.frequency_TxU[t], freq)
        np.testing.assert_array_equal(s.dead_TxU[t], ~fires.any(axis=0))
        assert s.dead_T[t] == pytest.approx(float(metrics.dead_fraction(a, tau)))
        assert s.rare_T[t] == pytest.approx(np.mean(freq < 1e-3))
        assert s.dense_TxD[t, 0] == pytest.approx(np.mean(freq > 0.1))
        assert s.dense_TxD[t, 1] == pytest.approx(np.mean(freq > 0.5))
        assert s.mean_l0_T[t] == pytest.approx(fires.sum(axis=1).mean())
        alive = freq[freq > 0]
        hist = np.histogram(np.clip(np.log10(alive), -6, 0), np.linspace(-6, 0, 25))[0]
        np.testing.assert_array_equal(s.density_hist_TxB[t], hist)
        assert s.density_hist_TxB[t].sum() + s.dead_TxU[t].sum() == u
    summary = s.summary()
    assert summary["0"]["dead_fraction"] == s.dead_T[0]
    assert len(summary["log10_density_edges"]) == 25


def test_density_exactly_on_a_decade_goes_up():
    counts = np.array([[1, 10, 100, 1000, 10_000, 0]])
    s = metrics.firing_stats(counts, 10_000, thresholds=(0.0,))
    edges = s.density_edges
    for c in counts[0, :-1]:
        b = np.searchsorted(edges, np.log10(c / 10_000), side="right") - 1
        assert s.density_hist_TxB[0, min(b, len(edges) - 2)] >= 1


def test_death_epochs_and_revival():
    shape = (2, 5)
    death = np.full(shape, -1)
    history = [np.array([[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool),
               np.array([[0, 1, 0, 1, 0], [1, 1, 1, 0, 0]], bool),
               np.array([[1, 1, 1, 1, 0], [1, 0, 1, 0, 0]], bool)]
    for epoch, dead in enumerate(history):
        death = metrics.update_death_epochs(death, dead, epoch)
    np.testing.assert_array_equal(death, [[2, 0, 2, 1, -1], [0, -1, 1, -1, -1]])
    r = metrics.revival(history[0], history[1])
    np.testing.assert_array_equal(r.revived, [[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(r.died, [[0, 0, 0, 1, 0], [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(r.num_revived, [1, 0])
    np.testing.assert_array_equal(r.num_died, [1, 1])


def test_errors():
    with pytest.raises(ValueError, match=r"\[N, units\]"):
        metrics.dead_fraction(np.zeros(5))
    with pytest.raises(ValueError, match="one row per threshold"):
        metrics.firing_stats(np.zeros((3, 4), int), 10)
    with pytest.raises(ValueError, match="num_samples"):
        metrics.firing_stats(np.full((4, 4), 11), 10)
    with pytest.raises(ValueError, match="shape"):
        metrics.revival(np.zeros(3, bool), np.zeros(4, bool))
