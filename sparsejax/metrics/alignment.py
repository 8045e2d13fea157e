"""Unit-factor alignment: what each surviving unit of a sparse code means.

MIG summarises a code by the two most informative units per factor, so it cannot see how
many units carry a factor or what the rest do. This module keeps the whole MIG matrix over
the sparse code (the plug-in MI of every 20-bin histogram-discretised unit with every
ground-truth factor, exactly as :func:`sparsejax.metrics.mig` computes it) and reads off:

* ``selectivity_K``: the share of a unit's MI that goes to its best factor,
  ``max_j mi[k, j] / sum_j mi[k, j]`` (``1/F`` for a unit spread evenly, 1 for a unit that
  informs about one factor only; 0 for a unit with no MI at all, e.g. a dead one).
* ``specific_K``: alive units that are specific to one factor: selectivity at least
  ``selectivity_cutoff`` (default **0.5**: the best factor gets more than all the others
  together) *and* the MI with that factor at least ``min_normalized_mi`` (default **0.05**)
  of the factor's entropy. The second condition keeps noise out: the plug-in estimate of a
  unit independent of a factor is biased up by about ``(bins - 1)(values - 1) / (2 N)``
  nats (0.037 nats for 20 bins, 40 values, N = 10,000, i.e. 1% of ``log 40``).
* ``specific_units_F``: per factor, the specific units whose best factor it is.
* ``informative_units_F``: per factor, the alive units whose MI with it is at least
  ``min_normalized_mi`` of its entropy (a unit may count for several factors).

"Alive" is the dead-unit definition: fires (``> threshold``) on at least one sample. The best
factor is the one with the most MI in nats (the information the unit carries), and
selectivity is measured in nats too.
"""

# Shape letters: N samples, K units (codes), F factors.

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from sparsejax.metrics.information import histogram_mutual_info

SELECTIVITY_CUTOFF = 0.5
MIN_NORMALIZED_MI = 0.05


class UnitAlignment(NamedTuple):
    """Per-unit and per-factor alignment (numpy; ``K`` units, ``F`` factors)."""

    mi_KxF: np.ndarray  # nats
    normalized_mi_KxF: np.ndarray  # mi / H(factor); 0 for a constant factor
    entropy_F: np.ndarray  # nats
    alive_K: np.ndarray  # bool
    best_factor_K: np.ndarray  # int, argmax_j mi[k, j]
    selectivity_K: np.ndarray  # share of the unit's MI on its best factor
    specific_K: np.ndarray  # bool
    specific_units_F: np.ndarray  # int
    informative_units_F: np.ndarray  # int
    selectivity_cutoff: float
    min_normalized_mi: float

    def summary(self, factor_names=None) -> dict:
        """JSON-friendly counts and means (per factor keyed by name when given)."""
        names = list(factor_names) if factor_names is not None else [
            str(factor) for factor in range(len(self.entropy_F))]
        alive = self.alive_K
        return {
            "units": int(len(alive)),
            "alive_units": int(alive.sum()),
            "specific_units": int(self.specific_K.sum()),
            "specific_fraction_of_alive": float(self.specific_K.sum() / max(alive.sum(), 1)),
            "mean_selectivity_alive": (float(self.selectivity_K[alive].mean())
                                       if alive.any() else 0.0),
            "specific_units_per_factor": dict(zip(names, self.specific_units_F.tolist())),
            "informative_units_per_factor": dict(zip(names, self.informative_units_F.tolist())),
            "selectivity_cutoff": self.selectivity_cutoff,
            "min_normalized_mi": self.min_normalized_mi,
        }


def alignment_from_mi(mi_KxF, entropy_F, alive_K, *, selectivity_cutoff: float = SELECTIVITY_CUTOFF,
                      min_normalized_mi: float = MIN_NORMALIZED_MI) -> UnitAlignment:
    """Alignment statistics from MI ``[K, F]`` (nats), entropies ``[F]`` and alive mask ``[K]``."""
    mi = np.asarray(mi_KxF, np.float64)
    h = np.asarray(entropy_F, np.float64)
    alive = np.asarray(alive_K, bool)
    if mi.ndim != 2 or h.shape != (mi.shape[1],) or alive.shape != (mi.shape[0],):
        raise ValueError(f"expected mi [K, F], entropy [F], alive [K]; got {mi.shape}, "
                         f"{h.shape}, {alive.shape}")
    norm = np.divide(mi, h, out=np.zeros_like(mi), where=h > 0)
    total = mi.sum(axis=1)
    best = mi.argmax(axis=1)
    top = mi[np.arange(len(mi)), best]
    selectivity = np.divide(top, total, out=np.zeros_like(top), where=total > 0)
    specific = (alive & (selectivity >= selectivity_cutoff)
                & (norm[np.arange(len(mi)), best] >= min_normalized_mi))
    num_factors = mi.shape[1]
    return UnitAlignment(
        mi_KxF=mi, normalized_mi_KxF=norm, entropy_F=h, alive_K=alive, best_factor_K=best,
        selectivity_K=selectivity, specific_K=specific,
        specific_units_F=np.bincount(best[specific], minlength=num_factors),
        informative_units_F=(alive[:, None] & (norm >= min_normalized_mi)).sum(axis=0),
        selectivity_cutoff=float(selectivity_cutoff), min_normalized_mi=float(min_normalized_mi))


def unit_alignment(codes_NxK, factors_NxF, *, num_bins: int = 20, threshold: float = 0.0,
                   selectivity_cutoff: float = SELECTIVITY_CUTOFF,
                   min_normalized_mi: float = MIN_NORMALIZED_MI) -> UnitAlignment:
    """Per-unit MI with every factor and the alignment statistics of a sparse code.

    Args:
      codes_NxK: unit activations ``[N, K]`` (e.g. the sparse layer on the evaluation set).
      factors_NxF: integer factor labels ``[N, F]``.
      num_bins: histogram bins per unit (dlib: 20), as in MIG.
      threshold: a unit is alive when some activation is ``> threshold``.
      selectivity_cutoff, min_normalized_mi: see the module docstring.
    """
    mi, h = histogram_mutual_info(codes_NxK, factors_NxF, num_bins)
    alive = np.asarray(jnp.any(jnp.asarray(codes_NxK) > threshold, axis=0))
    return alignment_from_mi(np.asarray(mi), np.asarray(h), alive,
                             selectivity_cutoff=selectivity_cutoff,
                             min_normalized_mi=min_normalized_mi)
