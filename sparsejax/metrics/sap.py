"""SAP score (Kumar et al. 2018) as disentanglement_lib computes it (``sap_score.py``).

A score matrix ``S [K, F]`` rates how well each single code predicts each factor:

* discrete factors (dlib's default): test accuracy of
  ``LinearSVC(C=0.01, class_weight="balanced")`` trained on code ``k`` alone;
* continuous factors: ``cov(z_k, v_j)^2 / (var z_k var v_j)`` on the training sample
  (0 for a code with variance <= 1e-12, and for a constant factor, where dlib divides by 0).

SAP is the mean over factors of the gap between the two highest scores. With the discrete
scores this fits ``K x F`` SVMs (3,000 for 500 codes and 6 factors, each one-vs-rest over the
factor's classes): minutes at dlib's 10,000 / 5,000 samples.
"""

# Shape letters: N samples, K codes, F factors.

from __future__ import annotations

import warnings

import jax
import numpy as np

from sparsejax.metrics import sampling


def sap_score_matrix(train, test, *, continuous_factors: bool = False, seed: int = 0) -> np.ndarray:
    """dlib's ``compute_score_matrix``: ``[K, F]`` from checked ``(codes, factors)`` pairs."""
    from sklearn import exceptions, svm  # on use: sklearn adds ~1 s to start-up

    (x_tr, y_tr), (x_te, y_te) = train, test
    k, f = x_tr.shape[1], y_tr.shape[1]
    if continuous_factors:
        xc, yc = x_tr - x_tr.mean(axis=0), y_tr - y_tr.mean(axis=0)
        n = x_tr.shape[0]
        cov = xc.T @ yc / (n - 1)
        var_x, var_y = xc.var(axis=0, ddof=1), yc.var(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = cov**2 / (var_x[:, None] * var_y[None, :])
        return np.where((var_x[:, None] > 1e-12) & (var_y[None, :] > 0), s, 0.0)
    s = np.zeros((k, f))
    for code in range(k):
        for factor in range(f):
            clf = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with warnings.catch_warnings():  # a near-constant code does not converge; dlib too
                warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
                clf.fit(x_tr[:, code:code + 1], y_tr[:, factor])
            s[code, factor] = np.mean(clf.predict(x_te[:, code:code + 1]) == y_te[:, factor])
    return s


def top_two_gap(score_KxF) -> float:
    """Mean over factors of the largest minus the second-largest score."""
    s = np.sort(np.asarray(score_KxF, np.float64), axis=0)
    if s.shape[0] < 2:
        raise ValueError(f"SAP needs at least 2 codes, got a score matrix of shape {s.shape}")
    return float(np.mean(s[-1] - s[-2]))


def sap(codes_train, factors_train, codes_test, factors_test, *,
        continuous_factors: bool = False, seed: int = 0) -> dict:
    """SAP from a train and a test sample: ``{"SAP_score": float}``.

    Args:
      codes_train, codes_test: ``[N, K]`` codes, ``K >= 2``.
      factors_train, factors_test: integer ``[N, F]`` factor labels.
      continuous_factors: score with the squared correlation instead of SVM accuracy.
      seed: ``random_state`` of the SVMs.
    """
    train = sampling.labelled_codes(codes_train, factors_train, "train")
    test = sampling.labelled_codes(codes_test, factors_test, "test")
    sampling.check_split_pair(train, test)
    if train[0].shape[1] < 2:
        raise ValueError(f"SAP needs at least 2 codes, got codes of shape {train[0].shape}")
    s = sap_score_matrix(train, test, continuous_factors=continuous_factors, seed=seed)
    return {"SAP_score": top_two_gap(s)}


def sap_on_dataset(representation_fn: sampling.RepresentationFn, dataset, key,
                   num_train: int = 10_000, num_test: int = 5_000, *,
                   continuous_factors: bool = False, batch_size: int = 256) -> dict:
    """SAP of a representation on fresh samples (dlib defaults: 10,000 / 5,000, discrete)."""
    k_data, k_model = jax.random.split(sampling.prng_key(key))
    split = sampling.sample_train_test(representation_fn, dataset, k_data, num_train, num_test,
                                       batch_size)
    return sap(*split, continuous_factors=continuous_factors, seed=sampling.sklearn_seed(k_model))
