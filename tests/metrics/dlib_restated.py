"""disentanglement_lib's metric procedures restated with numpy + sklearn: the slow references.

Written from disentanglement_lib's ``evaluation/metrics`` (``utils.py``, ``mig.py``,
``modularity_explicitness.py``, ``dci.py``) and its tests, one pair or one code at a time as
dlib does, in float64. Arrays are ``[N, K]`` codes and ``[N, F]`` factors (dlib
stores the transposes).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.stats
from sklearn.metrics import mutual_info_score

from sparsejax.data.dataset import FactorDataset
from sparsejax.data.factors import FactorSpace


def histogram_discretize(codes_NxK, num_bins=20):
    """1-based bin ids per column: ``np.digitize(x, np.histogram(x, num_bins)[1][:-1])``."""
    x = np.asarray(codes_NxK, np.float64)
    out = np.zeros(x.shape, np.int64)
    for k in range(x.shape[1]):
        out[:, k] = np.digitize(x[:, k], np.histogram(x[:, k], num_bins)[1][:-1])
    return out


def discrete_mutual_info(x_NxK, y_NxF):
    x, y = np.asarray(x_NxK), np.asarray(y_NxF)
    return np.array([[mutual_info_score(y[:, j], x[:, k]) for j in range(y.shape[1])]
                     for k in range(x.shape[1])])


def discrete_entropy(y_NxF):
    y = np.asarray(y_NxF)
    return np.array([mutual_info_score(y[:, j], y[:, j]) for j in range(y.shape[1])])


def mig_from_discrete(x_NxK, y_NxF):
    """dlib ``_compute_mig`` after discretisation (NaN where a factor is constant)."""
    m = discrete_mutual_info(x_NxK, y_NxF)
    h = discrete_entropy(y_NxF)
    s = np.sort(m, axis=0)[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(s[0] - s[1], h)  # per factor; dlib takes the mean


def mig(codes_NxK, factors_NxF, num_bins=20):
    return float(np.mean(mig_from_discrete(histogram_discretize(codes_NxK, num_bins), factors_NxF)))


def modularity(mi_KxF):
    sq = np.square(np.asarray(mi_KxF, np.float64))
    mx = sq.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = 1.0 - (sq.sum(axis=1) - mx) / (mx * (sq.shape[1] - 1.0))
    score[mx == 0.0] = 0.0
    return float(np.mean(score))


def disentanglement(r_KxF):
    r = np.asarray(r_KxF, np.float64)
    per_code = 1.0 - scipy.stats.entropy(r.T + 1e-11, base=r.shape[1])
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per_code * r.sum(axis=1) / r.sum()))


def completeness(r_KxF):
    r = np.asarray(r_KxF, np.float64)
    per_factor = 1.0 - scipy.stats.entropy(r + 1e-11, base=r.shape[0])
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per_factor * r.sum(axis=0) / r.sum()))


def identity_dataset(num_factors: int = 10, size: int = 10) -> FactorDataset:
    """dlib ``IdentityObservationsData``: the "image" of a factor tuple is the tuple itself.

    Factors are 0..size-1 here (dlib draws 1..10); mutual information only sees the partition.
    Images are float32 ``[N, 1, 1, F]``.
    """
    space = FactorSpace(tuple(f"f{j}" for j in range(num_factors)), (size,) * num_factors)
    render = lambda f: jnp.asarray(f, jnp.float32)[:, None, None, :]
    return FactorDataset("identity", "procedural", space, (1, 1, num_factors), render,
                         on_device=True)


def flatten(images):
    """The identity representation: images ``[B, 1, 1, F]`` -> codes ``[B, F]``."""
    return images.reshape(images.shape[0], -1)
