"""DCI: dlib's published importance-matrix cases, the identity checks, and restatements."""

import importlib

import numpy as np
import pytest
from sklearn import ensemble, linear_model

import dlib_restated as dlib
from dlib_restated import flatten
from sparsejax import metrics

dci_lib = importlib.import_module("sparsejax.metrics.dci")  # the package exports the function dci

DIAG = np.diag(5.0 * np.ones(5))
EMPTY_CODE = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
ONE_CODE_TWO_FACTORS = 1.0 - np.log(2) / np.log(10)


def test_dlib_disentanglement_cases():
    assert metrics.disentanglement(DIAG) == pytest.approx(1.0)
    assert metrics.disentanglement(EMPTY_CODE) == pytest.approx(1.0)
    assert metrics.disentanglement(np.zeros((10, 10))) == pytest.approx(0.0)
    assert metrics.disentanglement(np.vstack([DIAG, DIAG])) == pytest.approx(1.0)
    assert metrics.disentanglement(DIAG[:2, :]) == pytest.approx(1.0)
    assert metrics.disentanglement(np.hstack([DIAG, DIAG])) == pytest.approx(ONE_CODE_TWO_FACTORS)


def test_dlib_completeness_cases():
    assert metrics.completeness(DIAG) == pytest.approx(1.0)
    assert metrics.completeness(EMPTY_CODE) == pytest.approx(1.0)
    assert metrics.completeness(np.zeros((10, 10))) == pytest.approx(0.0, abs=1e-7)
    assert metrics.completeness(np.vstack([DIAG, DIAG])) == pytest.approx(ONE_CODE_TWO_FACTORS)
    assert metrics.completeness(DIAG[:2, :]) == pytest.approx(1.0)
    assert metrics.completeness(np.hstack([DIAG, DIAG])) == pytest.approx(1.0)


def test_matches_restatement_on_random_importances(rng):
    for _ in range(5):
        r = rng.random((int(rng.integers(2, 20)), int(rng.integers(2, 8))))
        r[rng.random(r.shape) < 0.3] = 0.0
        assert metrics.disentanglement(r) == pytest.approx(dlib.disentanglement(r), abs=1e-12)
        assert metrics.completeness(r) == pytest.approx(dlib.completeness(r), abs=1e-12)


def _identity(rng, n, num_factors=10):
    f = rng.integers(1, 11, (n, num_factors))
    return f.astype(np.float64), f


def test_dlib_identity_and_duplicated_with_trees(rng):
    # dlib's DCITest at 1,000 / 1,000 points over 10 factors takes ~40 s with trees here;
    # 3 factors and 300 points keep the same expectations in a few seconds.
    x_tr, f_tr = _identity(rng, 300, 3)
    x_te, f_te = _identity(rng, 300, 3)
    s = metrics.dci(x_tr, f_tr, x_te, f_te)
    assert 0.9 <= s["disentanglement"] <= 1.0 and 0.9 <= s["completeness"] <= 1.0
    assert s["importance_model"] == "gbt"
    d = metrics.dci(np.hstack([x_tr, x_tr]), f_tr, np.hstack([x_te, x_te]), f_te)
    assert 0.9 <= d["disentanglement"] <= 1.0
    target = 1.0 - np.log(2) / np.log(6)  # 2 x 3 codes: the completeness base is K = 6
    assert target - 0.1 <= d["completeness"] <= target + 0.1


def test_dlib_identity_and_duplicated_with_l1_logistic(rng):
    x_tr, f_tr = _identity(rng, 1000)
    x_te, f_te = _identity(rng, 1000)
    s = metrics.dci(x_tr, f_tr, x_te, f_te, importance="l1_logistic")
    assert 0.9 <= s["disentanglement"] <= 1.0 and 0.9 <= s["completeness"] <= 1.0
    assert s["importance_model"].startswith("l1_logistic")
    d = metrics.dci(np.hstack([x_tr, x_tr]), f_tr, np.hstack([x_te, x_te]), f_te,
                    importance="l1_logistic")
    assert 0.9 <= d["disentanglement"] <= 1.0
    assert ONE_CODE_TWO_FACTORS - 0.1 <= d["completeness"] <= ONE_CODE_TWO_FACTORS + 0.1


def test_bad_representation_scores_low(rng):
    x_tr, f_tr = _identity(rng, 1000)
    x_te, f_te = _identity(rng, 1000)
    shuffle = lambda x: np.stack([rng.permutation(row) for row in x])
    s = metrics.dci(shuffle(x_tr), f_tr, shuffle(x_te), f_te, importance="l1_logistic")
    assert s["disentanglement"] <= 0.2 and s["completeness"] <= 0.2


def test_trees_match_dlib_procedure(rng):
    n, k = 300, 4
    f_tr, f_te = (np.stack([rng.integers(0, s, n) for s in (2, 3)], axis=1) for _ in range(2))
    mix = rng.standard_normal((2, k))
    x_tr, x_te = f_tr @ mix + rng.standard_normal((n, k)), f_te @ mix + rng.standard_normal((n, k))
    r = np.zeros((k, 2))
    acc_tr, acc_te = [], []
    for j in range(2):  # dlib compute_importance_gbt, with the same seed
        model = ensemble.GradientBoostingClassifier(random_state=7).fit(x_tr, f_tr[:, j])
        r[:, j] = np.abs(model.feature_importances_)
        acc_tr.append(np.mean(model.predict(x_tr) == f_tr[:, j]))
        acc_te.append(np.mean(model.predict(x_te) == f_te[:, j]))
    got = metrics.dci(x_tr, f_tr, x_te, f_te, seed=7)
    assert got["disentanglement"] == pytest.approx(dlib.disentanglement(r), abs=1e-12)
    assert got["completeness"] == pytest.approx(dlib.completeness(r), abs=1e-12)
    assert got["informativeness_train"] == pytest.approx(np.mean(acc_tr))
    assert got["informativeness_test"] == pytest.approx(np.mean(acc_te))


def _objective(z, y, w_KxV, b_V, lam):
    logits = z @ w_KxV + b_V
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y]) + lam * np.abs(w_KxV).sum()


def test_l1_logistic_reaches_sklearns_optimum(rng):
    n, k, lam = 500, 6, 0.01
    y = np.stack([rng.integers(0, 3, n), rng.integers(0, 5, n)], axis=1)
    z = y @ rng.standard_normal((2, k)) + rng.standard_normal((n, k))
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    w, b = dci_lib.l1_logistic_fit(z.astype(np.float32), y.astype(np.int32), np.float32(lam),
                                   sizes=(3, 5), steps=2000)
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    for j, v in enumerate((3, 5)):
        ref = linear_model.LogisticRegression(l1_ratio=1.0, solver="saga", C=1 / (lam * n),
                                              tol=1e-10, max_iter=20_000).fit(z, y[:, j])
        ours = _objective(z, y[:, j], w[:, j, :v], b[j, :v], lam)
        theirs = _objective(z, y[:, j], ref.coef_.T, ref.intercept_, lam)
        assert ours <= theirs + 1e-5
        np.testing.assert_allclose(np.abs(w[:, j, :v]).sum(axis=1), np.abs(ref.coef_).sum(axis=0),
                                   atol=2e-2)


def test_on_dataset_identity(identity_data):
    out = metrics.dci_on_dataset(flatten, identity_data, 0, num_train=1000, num_test=500,
                                 importance="l1_logistic")
    assert out["disentanglement"] >= 0.9 and out["completeness"] >= 0.9


def test_errors(rng):
    x, f = rng.standard_normal((20, 3)), rng.integers(0, 2, (20, 2))
    with pytest.raises(ValueError, match="importance model"):
        metrics.dci(x, f, x, f, importance="forest")
    with pytest.raises(ValueError, match="non-negative"):
        metrics.disentanglement(-np.ones((2, 2)))
    with pytest.raises(ValueError, match="integer"):
        metrics.dci(x, f + 0.5, x, f)
