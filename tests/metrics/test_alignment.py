"""Unit alignment against a per-unit restatement with sklearn's mutual_info_score."""

import numpy as np
import pytest

import dlib_restated as dlib
from sparsejax import metrics


def _sparse_code(rng, n=3000):
    f = np.stack([rng.integers(0, s, n) for s in (3, 6, 10)], axis=1)
    u = [np.maximum(f[:, 0] - 0.5, 0),  # specific to factor 0
         np.maximum(f[:, 1] - 2.5 + 0.2 * rng.standard_normal(n), 0),  # factor 1
         np.maximum(f[:, 2] - 4.5 + 0.2 * rng.standard_normal(n), 0),  # factor 2
         # mixes all three factors
         np.maximum(f[:, 0] / 2 + f[:, 1] / 5 + f[:, 2] / 9 - 1 + 0.1 * rng.standard_normal(n), 0),
         np.zeros(n),  # dead
         np.maximum(rng.standard_normal(n) - 1, 0),  # alive noise
         np.maximum(f[:, 2] - 4.5, 0) * 2]  # a second unit for factor 2
    return np.stack(u, axis=1).astype(np.float32), f


def test_matches_restatement(rng):
    codes, f = _sparse_code(rng)
    a = metrics.unit_alignment(codes, f)
    mi = dlib.discrete_mutual_info(dlib.histogram_discretize(codes), f)
    h = dlib.discrete_entropy(f)
    np.testing.assert_allclose(a.mi_KxF, mi, atol=2e-6)
    np.testing.assert_allclose(a.normalized_mi_KxF, mi / h, atol=5e-6)
    total = mi.sum(axis=1)
    sel = np.array([mi[k].max() / total[k] if total[k] > 0 else 0.0 for k in range(len(mi))])
    np.testing.assert_allclose(a.selectivity_K, sel, atol=1e-5)
    alive = (codes > 0).any(axis=0)
    np.testing.assert_array_equal(a.alive_K, alive)
    specific = [alive[k] and sel[k] >= 0.5 and mi[k].max() / h[mi[k].argmax()] >= 0.05
                for k in range(len(mi))]
    np.testing.assert_array_equal(a.specific_K, specific)
    np.testing.assert_array_equal(a.specific_units_F,
                                  [sum(s and mi[k].argmax() == j for k, s in enumerate(specific))
                                   for j in range(3)])
    np.testing.assert_array_equal(a.informative_units_F, (alive[:, None] & (mi / h >= 0.05)).sum(0))


def test_interpretation(rng):
    codes, f = _sparse_code(rng)
    a = metrics.unit_alignment(codes, f)
    np.testing.assert_array_equal(a.best_factor_K[[0, 1, 2, 6]], [0, 1, 2, 2])
    assert a.specific_K[[0, 1, 2, 6]].all()
    assert not a.specific_K[4] and not a.alive_K[4] and a.selectivity_K[4] == 0.0
    assert not a.specific_K[5]  # alive noise: too little information
    assert not a.specific_K[3] and a.selectivity_K[3] < 0.5  # mixes three factors
    np.testing.assert_array_equal(a.specific_units_F, [1, 1, 2])
    s = a.summary(["shape", "scale", "orientation"])
    assert s["alive_units"] == 6 and s["specific_units_per_factor"]["orientation"] == 2


def test_errors():
    with pytest.raises(ValueError, match="expected mi"):
        metrics.alignment_from_mi(np.zeros((3, 2)), np.zeros(3), np.ones(3, bool))
