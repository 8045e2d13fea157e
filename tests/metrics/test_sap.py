"""SAP: dlib's published cases and a restatement with one sklearn LinearSVC per pair."""

import numpy as np
import pytest
from sklearn import svm

from dlib_restated import flatten
from sparsejax import metrics


def _identity(rng, n=3000):
    f = rng.integers(1, 11, (n, 10))
    return f.astype(np.float64), f


def test_dlib_cases_continuous(rng):
    x_tr, f_tr = _identity(rng)
    x_te, f_te = _identity(rng)
    ident = metrics.sap(x_tr, f_tr, x_te, f_te, continuous_factors=True)["SAP_score"]
    assert 0.9 <= ident <= 1.0
    zeros = metrics.sap(np.zeros_like(x_tr), f_tr, np.zeros_like(x_te), f_te,
                        continuous_factors=True)["SAP_score"]
    assert 0.0 <= zeros <= 0.2
    dup = metrics.sap(np.hstack([x_tr, x_tr]), f_tr, np.hstack([x_te, x_te]), f_te,
                      continuous_factors=True)["SAP_score"]
    assert 0.0 <= dup <= 0.2


def _dlib_score_matrix(x_tr, y_tr, x_te, y_te, continuous, seed):
    s = np.zeros((x_tr.shape[1], y_tr.shape[1]))
    for i in range(x_tr.shape[1]):
        for j in range(y_tr.shape[1]):
            if continuous:
                c = np.cov(x_tr[:, i], y_tr[:, j], ddof=1)
                s[i, j] = c[0, 1] ** 2 / (c[0, 0] * c[1, 1]) if c[0, 0] > 1e-12 else 0.0
            else:
                clf = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
                clf.fit(x_tr[:, i:i + 1], y_tr[:, j])
                s[i, j] = np.mean(clf.predict(x_te[:, i:i + 1]) == y_te[:, j])
    s = np.sort(s, axis=0)
    return np.mean(s[-1] - s[-2])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("continuous", [True, False])
def test_matches_restatement(rng, continuous):
    n, k = 300, 4
    f_tr, f_te = (np.stack([rng.integers(0, s, n) for s in (2, 4, 6)], axis=1) for _ in range(2))
    mix = rng.standard_normal((3, k))
    x_tr, x_te = f_tr @ mix + rng.standard_normal((n, k)), f_te @ mix + rng.standard_normal((n, k))
    x_tr[:, 3] = x_te[:, 3] = 0.0  # a dead code
    got = metrics.sap(x_tr, f_tr, x_te, f_te, continuous_factors=continuous, seed=3)["SAP_score"]
    want = _dlib_score_matrix(x_tr, f_tr, x_te, f_te, continuous, 3)
    assert got == pytest.approx(want, abs=1e-12)


def test_on_dataset_identity(identity_data):
    out = metrics.sap_on_dataset(flatten, identity_data, 0, num_train=2000, num_test=1000,
                                 continuous_factors=True)
    assert 0.9 <= out["SAP_score"] <= 1.0


def test_errors(rng):
    x, f = rng.standard_normal((20, 3)), rng.integers(0, 2, (20, 2))
    with pytest.raises(ValueError, match="at least 2 codes"):
        metrics.sap(x[:, :1], f, x[:, :1], f)
    with pytest.raises(ValueError, match="samples"):
        metrics.sap(x, f[:10], x, f)
