"""MIG against dlib's published expectations and a slow numpy + sklearn restatement."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dlib_restated as dlib
from dlib_restated import flatten
from sparsejax import metrics
from sparsejax.metrics import information as info


def _identity_discretiser_mig(codes, factors):
    # dlib's tests bind the discretiser to the identity: codes are already discrete labels.
    score, _ = metrics.mig_from_mi(info.mutual_info_matrix(codes, factors), info.entropy(factors))
    return float(score)


def test_dlib_identity_zeros_duplicated_with_identity_discretiser(rng):
    factors = rng.integers(1, 11, (3000, 10))  # IdentityObservationsData, 3,000 points
    assert 0.9 <= _identity_discretiser_mig(factors, factors) <= 1.0
    assert 0.0 <= _identity_discretiser_mig(np.zeros_like(factors), factors) <= 0.2
    assert 0.0 <= _identity_discretiser_mig(np.hstack([factors, factors]), factors) <= 0.1


def test_dlib_cases_with_the_histogram_discretiser(rng):
    factors = rng.integers(1, 11, (3000, 10))
    x = factors.astype(np.float32)
    assert 0.9 <= metrics.mig(x, factors) <= 1.0
    assert metrics.mig(np.zeros_like(x), factors) == 0.0
    assert metrics.mig(np.hstack([x, x]), factors) == 0.0


def test_dead_units_cannot_lower_mig(rng):
    factors = rng.integers(0, 10, (3000, 10))
    x = factors.astype(np.float32) + rng.normal(0, 0.3, factors.shape).astype(np.float32)
    padded = np.hstack([x, np.zeros((3000, 40), np.float32)])
    assert metrics.mig(x, factors) == metrics.mig(padded, factors)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_dlib_on_random_inputs(rng, dtype):
    n, k = int(rng.integers(500, 4000)), int(rng.integers(2, 30))
    sizes = rng.integers(2, 41, int(rng.integers(1, 7)))
    factors = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    noise = rng.standard_normal((n, k)) * rng.uniform(0.1, 3, k)
    codes = factors @ rng.standard_normal((len(sizes), k)) + noise
    codes[:, 0] = np.round(codes[:, 0])  # ties and values on bin edges
    codes[:, -1] = 3.0  # a dead unit
    codes = codes.astype(dtype)
    num_bins = int(rng.choice([5, 20, 33]))
    got = metrics.mig(codes, factors, num_bins)
    assert abs(got - dlib.mig(codes, factors, num_bins)) <= 1e-5
    d = metrics.mig_details(codes, factors, num_bins)
    ref_mi = dlib.discrete_mutual_info(dlib.histogram_discretize(codes, num_bins), factors)
    np.testing.assert_allclose(d.mi_KxF, ref_mi, atol=2e-6)
    np.testing.assert_allclose(d.entropy_F, dlib.discrete_entropy(factors), atol=2e-6)
    chex.assert_shape([d.mi_KxF, d.gap_F], [(k, len(sizes)), (len(sizes),)])


def test_matches_dlib_at_the_default_size(rng):
    n, k = 10_000, 50
    sizes = (10, 10, 10, 8, 4, 15)
    factors = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    codes = (factors / np.array(sizes)) @ rng.standard_normal((6, k))
    codes = jnp.asarray(codes + 0.3 * rng.standard_normal((n, k)), jnp.float32)
    got = metrics.mig(codes, jnp.asarray(factors))
    assert abs(got - dlib.mig(np.asarray(codes), factors)) <= 1e-5


def test_constant_factor_is_left_out_not_nan(rng):
    n = 2000
    factors = np.stack([rng.integers(0, 5, n), np.full(n, 3), rng.integers(0, 3, n)], axis=1)
    codes = factors + rng.normal(0, 0.5, factors.shape)
    d = metrics.mig_details(codes, factors)
    ref = dlib.mig_from_discrete(dlib.histogram_discretize(codes), factors)  # NaN at factor 1
    assert np.isnan(ref[1]) and np.isfinite(d.score)
    np.testing.assert_array_equal(d.varying_F, [True, False, True])
    assert d.gap_F[1] == 0.0
    assert abs(d.score - np.mean(ref[[0, 2]])) <= 1e-5
    assert metrics.mig(codes, np.full((n, 2), 7)) == 0.0


def test_sharded_codes(rng):
    n = 4000
    factors = rng.integers(0, 6, (n, 3))
    codes = (factors + rng.normal(0, 0.5, factors.shape)).astype(np.float32)
    mesh = jax.make_mesh((4,), ("data",))
    sharded = jax.device_put(codes, jax.NamedSharding(mesh, jax.P("data")))
    assert metrics.mig(sharded, factors) == metrics.mig(codes, factors)


def test_errors(rng):
    codes = rng.standard_normal((100, 3))
    factors = rng.integers(0, 3, (100, 2))
    with pytest.raises(ValueError, match="at least 2 code"):
        metrics.mig(codes[:, :1], factors)
    with pytest.raises(ValueError, match="rows"):
        metrics.mig(codes, factors[:99])
    with pytest.raises(ValueError, match="integer"):
        metrics.mig(codes, factors.astype(np.float32))
    with pytest.raises(ValueError, match="2-D"):
        metrics.mig(codes[:, 0], factors)


def test_on_dataset_identity_representation(identity_data):
    out = metrics.mig_on_dataset(flatten, identity_data, jax.random.key(0), num_train=2000)
    assert 0.9 <= out["discrete_mig"] <= 1.0
    again = metrics.mig_on_dataset(flatten, identity_data, 0, num_train=2000)
    assert out == again  # an int seed is jax.random.key(seed)
