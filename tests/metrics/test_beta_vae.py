"""BetaVAE score: dlib's published case and the features/classifier against a restatement."""

import jax
import numpy as np
import pytest
from sklearn import linear_model

from dlib_restated import flatten
from sparsejax import metrics


def test_dlib_identity_case(identity_data):
    out = metrics.beta_vae_score(flatten, identity_data, jax.random.key(0), batch_size=5,
                                 num_train=2000, num_eval=2000)
    assert 0.9 <= out["train_accuracy"] <= 1.0 and 0.9 <= out["eval_accuracy"] <= 1.0


def test_matches_restatement(rng):
    t, s, k = 300, 8, 5
    a, b = rng.standard_normal((2, t, s, k))
    labels = rng.integers(0, 3, t)
    b[np.arange(t), :, labels] = a[np.arange(t), :, labels]  # the shared factor's code agrees
    feats = np.asarray(metrics.beta_vae_features(a.astype(np.float32), b.astype(np.float32)))
    want = np.mean(np.abs(a - b), axis=1)
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)
    got = metrics.beta_vae(want[:200], labels[:200], want[200:], labels[200:], seed=4)
    model = linear_model.LogisticRegression(random_state=4).fit(want[:200], labels[:200])
    train_acc = np.mean(model.predict(want[:200]) == labels[:200])
    assert got["train_accuracy"] == pytest.approx(train_acc)
    assert got["eval_accuracy"] == pytest.approx(model.score(want[200:], labels[200:]))


def test_errors(rng):
    x = rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match="labels"):
        metrics.beta_vae(x, np.zeros(9), x, np.zeros(10))
    with pytest.raises(ValueError, match="single factor"):
        metrics.beta_vae(x, np.zeros(10), x, np.zeros(10))
