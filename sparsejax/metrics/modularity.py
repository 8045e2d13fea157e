"""Modularity and explicitness (Ridgeway & Mozer 2018) as disentanglement_lib computes them.

``modularity_explicitness.py`` in dlib: modularity from the MIG matrix ``m`` (plug-in MI of
20-bin histogram codes with factors, on the training sample)::

    delta_k = (sum_j m_kj^2 - max_j m_kj^2) / (max_j m_kj^2 (F - 1)),   modularity_k = 1 - delta_k

with ``modularity_k = 0`` where a code has no MI (so dead codes lower the mean), averaged over
codes. With one factor, every informative code is trivially modular (1; dlib divides 0 by 0).

Explicitness: codes standardised with the training mean and standard deviation (a constant
code is left at 0 instead of dlib's division by zero), one ``LogisticRegression()`` (sklearn
defaults) per factor, one-vs-rest ROC-AUC of its class probabilities averaged over classes
("macro"), then over factors. Classes are binarised against the classifier's classes, and
only classes with both positives and negatives in a split enter that split's average (dlib
raises where a test split lacks a class). Factors constant in the training sample are left
out.
"""

# Shape letters: N samples, K codes, F factors, C classes of one factor.

from __future__ import annotations

import numpy as np

from sparsejax.metrics import sampling
from sparsejax.metrics.information import histogram_mutual_info


def modularity(mi_KxF) -> float:
    """Mean modularity of the codes from an MI matrix ``[K, F]`` (nats, or any importance)."""
    sq = np.square(np.asarray(mi_KxF, np.float64))
    if sq.ndim != 2 or sq.shape[0] == 0 or sq.shape[1] == 0:
        raise ValueError(f"mi must be [K, F] with K, F >= 1, got shape {sq.shape}")
    top = sq.max(axis=1)
    if sq.shape[1] == 1:
        return float(np.mean(top > 0))
    delta = np.divide(sq.sum(axis=1) - top, top * (sq.shape[1] - 1.0),
                      out=np.zeros_like(top), where=top > 0)
    return float(np.mean(np.where(top > 0, 1.0 - delta, 0.0)))


def _standardise(train_NxK, test_NxK):
    mean, std = train_NxK.mean(axis=0), train_NxK.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train_NxK - mean) / std, (test_NxK - mean) / std


def _macro_auc(y_N, proba_NxC, classes_C) -> float:
    onehot = y_N[:, None] == classes_C[None, :]
    valid = onehot.any(axis=0) & ~onehot.all(axis=0)
    if not valid.any():
        return float("nan")
    from sklearn import metrics as sk_metrics  # on use, as in explicitness()

    return float(sk_metrics.roc_auc_score(onehot[:, valid], proba_NxC[:, valid], average="macro"))


def explicitness(codes_train, factors_train, codes_test, factors_test) -> tuple[float, float]:
    """Mean one-vs-rest ROC-AUC of a logistic regression per factor: ``(train, test)``."""
    from sklearn import linear_model  # on use: sklearn adds ~1 s to start-up

    train = sampling.labelled_codes(codes_train, factors_train, "train")
    test = sampling.labelled_codes(codes_test, factors_test, "test")
    sampling.check_split_pair(train, test)
    x_tr, x_te = _standardise(train[0], test[0])
    scores = []
    for factor in range(train[1].shape[1]):
        y_tr, y_te = train[1][:, factor], test[1][:, factor]
        if len(np.unique(y_tr)) < 2:
            continue
        clf = linear_model.LogisticRegression().fit(x_tr, y_tr)
        scores.append((_macro_auc(y_tr, clf.predict_proba(x_tr), clf.classes_),
                       _macro_auc(y_te, clf.predict_proba(x_te), clf.classes_)))
    if not scores:
        return 0.0, 0.0
    s = np.asarray(scores)
    return float(np.nanmean(s[:, 0])), float(np.nanmean(s[:, 1]))


def modularity_explicitness(codes_train, factors_train, codes_test, factors_test,
                            num_bins: int = 20) -> dict:
    """dlib's ``modularity_explicitness`` scores on a train and a test sample."""
    mi, _ = histogram_mutual_info(codes_train, factors_train, num_bins)
    train_auc, test_auc = explicitness(codes_train, factors_train, codes_test, factors_test)
    return {"modularity_score": modularity(np.asarray(mi)),
            "explicitness_score_train": train_auc, "explicitness_score_test": test_auc}


def modularity_explicitness_on_dataset(representation_fn: sampling.RepresentationFn, dataset, key,
                                       num_train: int = 10_000, num_test: int = 5_000,
                                       num_bins: int = 20, batch_size: int = 256) -> dict:
    """The scores of a representation on fresh samples (dlib defaults: 10,000 / 5,000)."""
    split = sampling.sample_train_test(representation_fn, dataset, key, num_train, num_test,
                                       batch_size)
    return modularity_explicitness(*split, num_bins=num_bins)
