"""Unsupervised scores: dlib's published cases, the dead-code guard, and restatements."""

import numpy as np
import pytest
import scipy.linalg

import dlib_restated as dlib
from sparsejax import metrics


def _kl_gaussians(mean0, cov0, mean1, cov1, k):
    # dlib's kl_gaussians_numerically_unstable
    inv1 = np.linalg.inv(cov1)
    return 0.5 * (np.trace(inv1 @ cov0) + (mean1 - mean0) @ inv1 @ (mean1 - mean0) - k
                  + np.log(np.linalg.det(cov1) / np.linalg.det(cov0)))


def test_dlib_cases():
    assert abs(metrics.gaussian_total_correlation(np.eye(5))) <= 0.01
    cov = np.array([[1, 0.9], [0.9, 1.0]], np.float32)
    want = _kl_gaussians(np.zeros(2), cov, np.zeros(2), np.diag(np.diag(cov)), 2)
    assert metrics.gaussian_total_correlation(cov) == pytest.approx(want, abs=0.01)
    assert abs(metrics.gaussian_wasserstein_correlation(np.eye(5))) <= 0.01
    diag = np.diag(np.diag(cov))
    want = np.trace(cov + diag - 2 * scipy.linalg.sqrtm(cov @ diag))
    assert metrics.gaussian_wasserstein_correlation(cov) == pytest.approx(want, abs=0.01)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_scores_match_restatement_and_guard_dead_codes(rng):
    n, k = 2000, 6
    z = rng.standard_normal((n, k)) @ rng.standard_normal((k, k))
    z[:, 2] = 0.0  # dead
    s = metrics.unsupervised_scores(z)
    live = np.array([True, True, False, True, True, True])
    cov = np.cov(z.T)
    assert s["num_live_codes"] == 5
    assert s["gaussian_total_correlation"] == pytest.approx(
        0.5 * (np.sum(np.log(np.diag(cov)[live])) - np.linalg.slogdet(cov[np.ix_(live, live)])[1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(metrics.gaussian_total_correlation(cov))  # dlib's formula on all codes
    wc = 2 * np.trace(cov) - 2 * np.trace(scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])).real
    assert s["gaussian_wasserstein_correlation"] == pytest.approx(wc)
    assert s["gaussian_wasserstein_correlation_norm"] == pytest.approx(wc / np.trace(cov))
    mi = dlib.discrete_mutual_info(dlib.histogram_discretize(z), dlib.histogram_discretize(z))
    np.fill_diagonal(mi, 0)
    assert s["mutual_info_score"] == pytest.approx(mi.sum() / (k * k - k), abs=2e-6)


def test_pairwise_mi_blocks(rng, monkeypatch):
    import importlib

    unsup = importlib.import_module("sparsejax.metrics.unsupervised")
    z = rng.standard_normal((500, 7)).astype(np.float32)
    z[:, 1] = z[:, 0] ** 2
    whole = metrics.mean_pairwise_mutual_info(z)
    monkeypatch.setattr(unsup, "_PAIRWISE_BLOCK", 3)
    assert metrics.mean_pairwise_mutual_info(z) == pytest.approx(whole, abs=1e-7)
    assert metrics.mean_pairwise_mutual_info(z[:, :1]) == 0.0


def test_all_dead_and_errors():
    s = metrics.unsupervised_scores(np.zeros((100, 3)))
    assert s["gaussian_total_correlation"] == 0.0 and s["num_live_codes"] == 0
    assert s["gaussian_wasserstein_correlation_norm"] == 0.0 and s["mutual_info_score"] == 0.0
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.unsupervised_scores(np.zeros(5))
