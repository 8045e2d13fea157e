"""Sampling codes from a representation function over a FactorDataset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlib_restated import flatten, identity_dataset
from sparsejax import metrics


def test_codes_follow_the_factors_and_the_key(identity_data):
    codes, factors = metrics.sample_codes(flatten, identity_data, jax.random.key(3), 1000,
                                          batch_size=128)
    np.testing.assert_array_equal(np.asarray(codes), np.asarray(factors, np.float32))
    np.testing.assert_array_equal(np.asarray(factors),
                                  np.asarray(identity_data.sample_factors(jax.random.key(3), 1000)))
    again, _ = metrics.sample_codes(flatten, identity_data, 3, 1000, batch_size=1000)
    np.testing.assert_array_equal(np.asarray(codes), np.asarray(again))


def test_train_test_are_independent(identity_data):
    c_tr, f_tr, c_te, f_te = metrics.sample_train_test(flatten, identity_data, 0, 300, 200)
    assert c_tr.shape == (300, 10) and c_te.shape == (200, 10)
    assert not np.array_equal(np.asarray(f_tr[:200]), np.asarray(f_te))


def test_numpy_representation_and_host_dataset():
    ds = identity_dataset(num_factors=3, size=4)
    host = type(ds)("identity", "file", ds.space, (1, 1, 3),
                    lambda f: np.asarray(f, np.float32)[:, None, None, :], on_device=False)
    codes = metrics.encode(lambda x: np.asarray(x).reshape(len(x), -1) * 2.0, host,
                           np.array([[0, 1, 2], [3, 2, 1]]), batch_size=1)
    assert isinstance(codes, np.ndarray)
    np.testing.assert_array_equal(codes, [[0, 2, 4], [6, 4, 2]])


def test_errors(identity_data):
    with pytest.raises(ValueError, match=r"codes \[B, K\]"):
        metrics.sample_codes(lambda x: jnp.zeros((3,)), identity_data, 0, 10)
    with pytest.raises(ValueError, match="num_points"):
        metrics.sample_codes(flatten, identity_data, 0, 0)
    with pytest.raises(TypeError):
        metrics.sample_codes(flatten, identity_data, "seed", 10)
