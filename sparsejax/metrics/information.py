"""Discrete information: plug-in mutual information and entropy, as disentanglement_lib has it.

The shared core of MIG, modularity, unit alignment and the pairwise-MI score. Everything
follows disentanglement_lib (``evaluation/metrics/utils.py``):

* **binning** (:func:`sparsejax.metrics.binning.histogram_bins`): each code dimension cut
  into ``num_bins`` equal-width bins exactly as numpy's histogram with float64 edges.
* **mutual information** (:func:`mutual_info_matrix`, :func:`histogram_mutual_info`): the
  plug-in estimate in nats, ``sklearn.metrics.mutual_info_score`` for every pair of columns,
  all pairs at once.
* **entropy** (:func:`entropy`): ``mutual_info_score(y, y)``, the plug-in entropy in nats.

Labels are relabelled on the host (:mod:`sparsejax.metrics.inputs`); counting and logarithms
run in one jit-compiled kernel with exact counts (:mod:`sparsejax.metrics.mi_kernel`).
"""

# Shape letters: N samples, K codes (columns of x), F factors (columns of y).

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.metrics.binning import histogram_intervals, label_edges
from sparsejax.metrics.inputs import check_matrix, dense_labels, shape_of
from sparsejax.metrics.mi_kernel import entropy_ids, mutual_info_intervals


def histogram_mutual_info(codes_NxK, factors_NxF,
                          num_bins: int = 20) -> tuple[jax.Array, jax.Array]:
    """dlib's MI matrix: histogram-binned codes against discrete factors.

    Args:
      codes_NxK: real codes ``[N, K]``.
      factors_NxF: integer factor labels ``[N, F]`` (any values).
      num_bins: equal-width bins per code (dlib: 20).

    Returns:
      ``(mi_KxF, entropy_F)`` in nats: ``mi[k, j] = mutual_info_score(factor_j, bins_k)``
      and ``entropy[j] = mutual_info_score(factor_j, factor_j)``.
    """
    x, e = histogram_intervals(codes_NxK, num_bins)
    check_matrix(factors_NxF, "factors", rows=x.shape[0], what="[N, F] integer labels")
    ids, sizes = dense_labels(factors_NxF, "factors")
    y = jnp.asarray(ids)
    return mutual_info_intervals(x, e, y, sizes), entropy_ids(y, sizes)


def mutual_info_matrix(x_NxK, y_NxF) -> jax.Array:
    """Plug-in mutual information (nats) of every pair of discrete columns: ``[K, F]``.

    ``mi[k, j] == sklearn.metrics.mutual_info_score(y[:, j], x[:, k])``. Both inputs are
    integer labels with any values (relabelled on the host first).
    """
    check_matrix(x_NxK, "x", what="[N, K] integer labels")
    check_matrix(y_NxF, "y", rows=shape_of(x_NxK)[0], what="[N, F] integer labels")
    x_ids, x_sizes = dense_labels(x_NxK, "x")
    y_ids, y_sizes = dense_labels(y_NxF, "y")
    num_values = max(x_sizes)
    return mutual_info_intervals(x_ids.astype(np.float32), label_edges(num_values, len(x_sizes)),
                                 y_ids, y_sizes)


def entropy(y_NxF) -> jax.Array:
    """Plug-in entropy (nats) of each column of integer labels: ``[F]``.

    ``h[j] == sklearn.metrics.mutual_info_score(y[:, j], y[:, j])`` (dlib's
    ``discrete_entropy``); 0 for a constant column.
    """
    ids, sizes = dense_labels(y_NxF, "y")
    return entropy_ids(ids, sizes)
