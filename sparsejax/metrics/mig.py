"""Mutual information gap, disentanglement_lib's discrete estimator ("discrete_mig").

For each factor j, the gap between the two codes most informative about it, normalised
by the factor's entropy, averaged over factors (dlib ``evaluation/metrics/mig.py``)::

    MIG = mean_j (m[k1(j), j] - m[k2(j), j]) / H(v_j)

with ``m = histogram_mutual_info(codes, factors, 20)`` (plug-in MI in nats of each
20-bin histogram-discretised code with each factor) and ``H`` the factor entropies.

A factor that takes a single value in the sample (``H = 0``) carries no information to
capture: dlib's ``0 / 0`` would make the score NaN. Here such a factor gets gap 0 and is
left out of the mean, so the score is the MIG over the factors that vary (0 if none does).

This is not Chen et al.'s original estimator (from q(z|x) over the whole dataset).

A dead unit is constant: its MI with every factor is 0, so it never enters a factor's top
two, and adding dead units cannot lower MIG (so MIG can stay stable while units die, as
arXiv 2603.18056 reports).
"""

# Shape letters: N samples, K codes, F factors.

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.metrics import sampling
from sparsejax.metrics.information import histogram_mutual_info


class MIGDetails(NamedTuple):
    """MIG and what it is made of.

    score: MIG over the factors that vary (float).
    gap_F: normalised gap of each factor, ``[F]`` (0 for a constant factor).
    mi_KxF: plug-in MI of each binned code with each factor, nats, ``[K, F]``.
    entropy_F: plug-in entropy of each factor, nats, ``[F]``.
    varying_F: bool ``[F]``, the factors that take more than one value (``H > 0``).
    """

    score: float
    gap_F: np.ndarray
    mi_KxF: np.ndarray
    entropy_F: np.ndarray
    varying_F: np.ndarray


@jax.jit
def mig_from_mi(mi_KxF, entropy_F):
    """MIG from an MI matrix ``[K, F]`` (nats) and factor entropies ``[F]``: ``(score, gap_F)``.

    Pure JAX (jit-able). Needs ``K >= 2``. Factors with ``entropy == 0`` get gap 0 and are
    left out of the mean (score 0 when no factor varies).
    """
    if mi_KxF.shape[0] < 2:
        raise ValueError(f"MIG needs at least 2 code dimensions, got mi of shape {mi_KxF.shape}")
    top2_Fx2 = jax.lax.top_k(mi_KxF.T, 2)[0]
    varying_F = entropy_F > 0
    gap_F = jnp.where(varying_F, (top2_Fx2[:, 0] - top2_Fx2[:, 1])
                      / jnp.where(varying_F, entropy_F, 1.0), 0.0)
    score = gap_F.sum() / jnp.maximum(varying_F.sum(), 1)
    return score, gap_F


def mig_details(codes_NxK, factors_NxF, num_bins: int = 20) -> MIGDetails:
    """dlib's discrete MIG with the MI matrix and entropies it came from.

    Args:
      codes_NxK: real codes ``[N, K]``, ``K >= 2`` (float32 stays on the device).
      factors_NxF: integer factor labels ``[N, F]``.
      num_bins: equal-width histogram bins per code (dlib: 20).
    """
    mi_KxF, entropy_F = histogram_mutual_info(codes_NxK, factors_NxF, num_bins)
    if mi_KxF.shape[0] < 2:
        raise ValueError(f"MIG needs at least 2 code dimensions, got codes of shape "
                         f"{np.shape(codes_NxK)}")
    score, gap_F = mig_from_mi(mi_KxF, entropy_F)
    entropy_F = np.asarray(entropy_F)
    return MIGDetails(float(score), np.asarray(gap_F), np.asarray(mi_KxF), entropy_F,
                      entropy_F > 0)


def mig(codes_NxK, factors_NxF, num_bins: int = 20) -> float:
    """dlib's discrete MIG: codes float ``[N, K]``, factors int ``[N, F]`` -> float in [0, 1].

    Bins each code into ``num_bins`` equal-width bins exactly as numpy does (float64 edges),
    computes the plug-in MI (nats) of every code with every factor at once, and averages the
    entropy-normalised top-two gap over the factors that vary. See :func:`mig_details`.

    Call it outside ``jit``: the per-code ranges come to the host once (the float64 bin
    edges are computed there) and the factors are relabelled there; the counting and the
    MI run jit-compiled on the device of the codes (gathered to one device if sharded).
    """
    return mig_details(codes_NxK, factors_NxF, num_bins).score


def mig_on_dataset(representation_fn: sampling.RepresentationFn, dataset, key,
                   num_train: int = 10_000, num_bins: int = 20, batch_size: int = 256) -> dict:
    """MIG of a representation on ``num_train`` i.i.d. samples (dlib ``mig.gin`` defaults).

    Returns ``{"discrete_mig": float, "num_train": int}``.
    """
    codes, factors = sampling.sample_codes(representation_fn, dataset, key, num_train, batch_size)
    return {"discrete_mig": mig(codes, factors, num_bins), "num_train": num_train}
