"""Unsupervised scores of a code (dlib ``unsupervised_metrics.py``): no factors needed.

* Gaussian total correlation: the KL divergence between a Gaussian with the codes'
  covariance and the product of its marginals, ``0.5 (sum_k log S_kk - log det S)``.
  A dead (constant) code has ``S_kk = 0``, which makes dlib's value ``-inf - (-inf) = NaN``.
  A constant is independent of everything, so it adds nothing to the total correlation:
  we compute it over the live codes (variance > 0) only, which is the value the formula
  takes in the limit, and report how many codes were live. Perfectly dependent live codes
  (e.g. a duplicated unit) give ``+inf``, the right Gaussian answer.
* Gaussian Wasserstein correlation: ``2 tr S - 2 tr sqrtm(S diag(S))``, and the same over
  ``tr S`` (over all codes: dead ones contribute 0; the normalised score is 0 when all are
  dead).
* Mean pairwise mutual information: the plug-in MI (nats) between every pair of distinct
  20-bin histogram-discretised codes, averaged (``sum_{k != l} / (K^2 - K)``; 0 for one code).
"""

from __future__ import annotations

import warnings

import numpy as np

from sparsejax.metrics import sampling
from sparsejax.metrics.binning import histogram_intervals, interval_ids
from sparsejax.metrics.mi_kernel import mutual_info_intervals

_PAIRWISE_BLOCK = 64  # codes per block of the pairwise-MI target side (bounds its one-hot)


def gaussian_total_correlation(cov_KxK) -> float:
    """``0.5 (sum log diag(S) - logdet S)`` of a covariance matrix (dlib's formula as is)."""
    cov = np.asarray(cov_KxK, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov_KxK) -> float:
    """``2 tr S - 2 tr sqrtm(S * diag(S)[:, None])`` (dlib's formula)."""
    import scipy.linalg  # on use: it adds ~0.3 s to start-up

    cov = np.asarray(cov_KxK, np.float64)
    with warnings.catch_warnings():  # dead codes make it singular; its square root still exists
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])
    return float(2 * np.trace(cov) - 2 * np.real(np.trace(root)))


def mean_pairwise_mutual_info(codes_NxK, num_bins: int = 20) -> float:
    """Mean plug-in MI (nats) between distinct histogram-discretised codes."""
    x, e = histogram_intervals(codes_NxK, num_bins)
    k = x.shape[1]
    if k < 2:
        return 0.0
    bins = np.asarray(interval_ids(x, e))
    blocks = []
    for start in range(0, k, _PAIRWISE_BLOCK):
        cols = bins[:, start:start + _PAIRWISE_BLOCK]
        blocks.append(np.asarray(mutual_info_intervals(x, e, cols, (num_bins,) * cols.shape[1])))
    mi = np.concatenate(blocks, axis=1)
    np.fill_diagonal(mi, 0.0)
    return float(mi.sum() / (k * k - k))


def unsupervised_scores(codes_NxK, num_bins: int = 20) -> dict:
    """dlib's unsupervised scores of a code sample ``[N, K]`` (with the live-code guard)."""
    if np.ndim(codes_NxK) != 2 or np.shape(codes_NxK)[0] < 2:
        raise ValueError(f"codes must be [N, K] with N >= 2, got shape {np.shape(codes_NxK)}")
    z = np.asarray(codes_NxK, np.float64)
    if not np.isfinite(z).all():
        raise ValueError("codes have non-finite values: expected finite codes")
    cov = np.atleast_2d(np.cov(z, rowvar=False))
    live = np.diag(cov) > 0
    tc = gaussian_total_correlation(cov[np.ix_(live, live)]) if live.any() else 0.0
    wc = gaussian_wasserstein_correlation(cov)
    trace = np.trace(cov)
    return {"gaussian_total_correlation": tc,
            "gaussian_wasserstein_correlation": wc,
            "gaussian_wasserstein_correlation_norm": wc / trace if trace > 0 else 0.0,
            "mutual_info_score": mean_pairwise_mutual_info(codes_NxK, num_bins),
            "num_live_codes": int(live.sum())}


def unsupervised_on_dataset(representation_fn: sampling.RepresentationFn, dataset, key,
                            num_train: int = 10_000, num_bins: int = 20,
                            batch_size: int = 256) -> dict:
    """The unsupervised scores of a representation on ``num_train`` i.i.d. samples."""
    codes, _ = sampling.sample_codes(representation_fn, dataset, key, num_train, batch_size)
    return unsupervised_scores(codes, num_bins)
