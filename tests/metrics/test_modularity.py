"""Modularity and explicitness: dlib's published cases and a numpy + sklearn restatement."""

import jax
import numpy as np
import pytest
from sklearn import linear_model, metrics as sk_metrics, preprocessing

import dlib_restated as dlib
from dlib_restated import flatten
from sparsejax import metrics
from sparsejax.metrics import information as info


def test_dlib_modularity_cases():
    diag = np.diag(5.0 * np.ones(5))
    assert metrics.modularity(diag) == pytest.approx(1.0)
    empty_code = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert metrics.modularity(empty_code) == pytest.approx(2 / 3)
    assert metrics.modularity(np.zeros((10, 10))) == pytest.approx(0.0)
    assert metrics.modularity(np.vstack([diag, diag])) == pytest.approx(1.0)
    assert metrics.modularity(diag[:2, :]) == pytest.approx(1.0)
    assert metrics.modularity(np.hstack([diag, diag])) == pytest.approx(1 - 1 / 9)


def test_modularity_matches_restatement(rng):
    for _ in range(5):
        m = rng.random((int(rng.integers(1, 30)), int(rng.integers(2, 8))))
        m[rng.random(m.shape[0]) < 0.3] = 0.0  # dead codes
        assert metrics.modularity(m) == pytest.approx(dlib.modularity(m), abs=1e-12)
    assert metrics.modularity(np.array([[0.5], [0.0]])) == 0.5  # one factor: no 0/0


def _identity_modularity(codes, factors):
    return metrics.modularity(np.asarray(info.mutual_info_matrix(codes, factors)))


def test_dlib_metric_cases_with_identity_discretiser(rng):
    factors = rng.integers(1, 11, (3000, 10))
    assert 0.9 <= _identity_modularity(factors, factors) <= 1.0
    assert 0.9 <= _identity_modularity(np.hstack([factors, factors]), factors) <= 1.0
    many = rng.integers(1, 11, (20_000, 10))
    permuted = np.stack([rng.permutation(row) for row in many])  # each code a random factor
    assert 0.0 <= _identity_modularity(permuted, many) <= 0.2


def _dlib_explicitness(x_tr, y_tr, x_te, y_te):
    # dlib: normalize_data with the training stats, then per factor LogisticRegression and
    # roc_auc_score over MultiLabelBinarizer indicators.
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    tr, te = [], []
    for j in range(y_tr.shape[1]):
        clf = linear_model.LogisticRegression().fit(x_tr, y_tr[:, j])
        mlb = preprocessing.MultiLabelBinarizer()
        auc = lambda x, y: sk_metrics.roc_auc_score(mlb.fit_transform(y[:, j:j + 1]),
                                                     clf.predict_proba(x))
        tr.append(auc(x_tr, y_tr))
        te.append(auc(x_te, y_te))
    return np.mean(tr), np.mean(te)


def test_explicitness_matches_restatement(rng):
    n, k = 600, 5
    f_tr, f_te = (np.stack([rng.integers(0, s, n) for s in (2, 3, 5)], axis=1) for _ in range(2))
    mix = rng.standard_normal((3, k))
    x_tr = f_tr @ mix + rng.standard_normal((n, k))
    x_te = f_te @ mix + rng.standard_normal((n, k))
    got = metrics.explicitness(x_tr, f_tr, x_te, f_te)
    np.testing.assert_allclose(got, _dlib_explicitness(x_tr, f_tr, x_te, f_te), atol=1e-12)
    scores = metrics.modularity_explicitness(x_tr, f_tr, x_te, f_te)
    assert scores["explicitness_score_test"] == pytest.approx(got[1])
    assert scores["modularity_score"] == pytest.approx(
        dlib.modularity(dlib.discrete_mutual_info(dlib.histogram_discretize(x_tr), f_tr)), abs=1e-6)


def test_explicitness_guards_dead_codes_and_missing_classes(rng):
    n = 400
    f_tr = rng.integers(0, 4, (n, 2))
    x_tr = np.hstack([f_tr + rng.normal(0, 0.3, f_tr.shape), np.zeros((n, 1))])
    f_te = f_tr.copy()
    f_te[:, 1] = np.minimum(f_te[:, 1], 2)  # class 3 missing from the test split
    tr, te = metrics.explicitness(x_tr, f_tr, x_tr, f_te)
    assert np.isfinite(tr) and np.isfinite(te) and te > 0.8


def test_on_dataset_identity(identity_data):
    out = metrics.modularity_explicitness_on_dataset(flatten, identity_data, jax.random.key(1),
                                                     num_train=2000, num_test=1000)
    assert 0.9 <= out["modularity_score"] <= 1.0
    assert out["explicitness_score_test"] > 0.9


def test_errors(rng):
    with pytest.raises(ValueError, match=r"\[K, F\]"):
        metrics.modularity(np.zeros(3))
    x, f = rng.standard_normal((10, 2)), rng.integers(0, 2, (10, 2))
    with pytest.raises(ValueError, match="samples"):
        metrics.explicitness(x, f[:9], x, f)
    with pytest.raises(ValueError, match="integer"):
        metrics.explicitness(x, f * 1.0, x, f)
    with pytest.raises(ValueError, match="test has"):
        metrics.explicitness(x, f, x[:, :1], f)
