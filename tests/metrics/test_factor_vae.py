"""FactorVAE score: dlib's published cases and the votes against a numpy restatement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlib_restated import flatten, identity_dataset
from sparsejax import metrics


def test_dlib_cases(identity_data):
    # dlib: batch 5, 3,000 train votes, 2,000 eval votes, 2,500 points for the variances.
    kw = dict(batch_size=5, num_train=3000, num_eval=2000, num_variance_estimate=2500)
    good = metrics.factor_vae_score(flatten, identity_data, jax.random.key(0), **kw)
    assert 0.9 <= good["train_accuracy"] <= 1.0 and 0.9 <= good["eval_accuracy"] <= 1.0
    assert good["num_active_dims"] == 10
    bad = metrics.factor_vae_score(lambda x: jnp.zeros_like(flatten(x)), identity_data, 0, **kw)
    assert bad == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def _dlib_votes(codes_TxSxK, fixed_T, variance_K, active_K, num_factors):
    votes = np.zeros((num_factors, len(variance_K)), np.int64)
    active = np.flatnonzero(active_K)
    for codes, j in zip(codes_TxSxK, fixed_T):
        local = np.var(codes, axis=0, ddof=1)
        votes[j, active[np.argmin(local[active] / variance_K[active])]] += 1
    return votes


def test_votes_and_accuracy_match_restatement(rng):
    t, s, k, f = 200, 16, 7, 4
    codes = (rng.standard_normal((t, s, k)) * rng.uniform(0.01, 2, k)).astype(np.float32)
    fixed = rng.integers(0, f, t)
    variance = rng.uniform(0.001, 3, k)
    active = np.sqrt(variance) >= 0.05
    got = metrics.factor_vae_votes(codes, fixed, variance.astype(np.float32), active, num_factors=f)
    np.testing.assert_array_equal(np.asarray(got),
                                  _dlib_votes(codes.astype(np.float64), fixed, variance, active, f))
    train, evals = rng.integers(0, 20, (f, k)), rng.integers(0, 20, (f, k))
    cls = np.argmax(train, axis=0)
    hits = lambda v: v[cls, np.arange(k)].sum() / v.sum()
    want = (hits(train), hits(evals))
    assert metrics.factor_vae_accuracy(train, evals) == pytest.approx(want)


def test_collapsed_codes_are_pruned(rng):
    ds = identity_dataset(num_factors=3, size=5)
    rep = lambda x: jnp.concatenate([flatten(x), 0.01 * flatten(x)[:, :1]], axis=1)
    # 200 batches per call: the training and evaluation votes draw with one compiled sampler
    # (the 3-factor sampler costs seconds to compile on XLA:CPU); the training votes still
    # end in a partial call
    out = metrics.factor_vae_score(rep, ds, 1, batch_size=8, num_train=300, num_eval=200,
                                   num_variance_estimate=500, images_per_call=1600)
    assert out["num_active_dims"] == 3 and out["eval_accuracy"] > 0.9


def test_errors(identity_data):
    with pytest.raises(ValueError, match="batch_size"):
        metrics.factor_vae_score(flatten, identity_data, 0, batch_size=1)
