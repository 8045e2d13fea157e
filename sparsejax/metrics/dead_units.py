"""Dead units, firing statistics and revival, from activations or accumulated firing counts.

Definitions (as arXiv 2603.18056 counts dead units): a unit *fires* on a sample when its
activation is ``> tau``; it is *dead* at threshold ``tau`` when it fires on no sample of a
fixed evaluation set. All thresholds in ``DEAD_THRESHOLDS`` are reported; records key
them by :func:`tau_key` (``"0"``, ``"1e-06"``, ``"0.001"``, ``"0.01"``).

The API the training engine calls
---------------------------------
During evaluation (inside the jitted step, on the device)::

    counts_TxU += firing_counts(h_BxU, thresholds)        # int32 [T, U], T thresholds

after the ``num_samples`` evaluation samples (on the host, once per evaluation)::

    stats = firing_stats(counts_TxU, num_samples, thresholds)   # FiringStats
    dead_TxU = stats.dead_TxU
    death_epoch_TxU = update_death_epochs(death_epoch_TxU, dead_TxU, epoch)  # start: -1
    change = revival(previous_dead_TxU, dead_TxU)                # units back / newly dead

``FiringStats`` fields (``T`` thresholds, ``U`` units, ``D`` dense cut-offs, ``B`` bins):

* ``frequency_TxU``: fraction of samples on which each unit fires (its firing density,
  its expected contribution to L0).
* ``dead_TxU`` / ``dead_T``: never fires / fraction of units that never fire.
* ``rare_T``: fraction of units that fire on fewer than ``min_frequency`` of the samples
  (dead by frequency; includes the dead units).
* ``dense_TxD``: fraction of units that fire on more than ``dense_frequencies[d]``
  (default 10% and 50%).
* ``mean_l0_T``: mean number of units firing per sample (``sum(counts) / num_samples``).
* ``density_hist_TxB`` with ``density_edges``: histogram over the units that fire at all of
  ``log10(frequency)``; bins are ``[e_b, e_{b+1})``, the last one closed, and frequencies
  below the first edge are counted in the first bin. Dead units are not in the histogram
  (they are ``dead_T * U``).

``firing_counts`` and ``dead_fraction`` are JAX (jit-able); the per-evaluation statistics are
small numpy computations in float64 on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DEAD_THRESHOLDS = (0.0, 1e-6, 1e-3, 1e-2)
DENSE_FREQUENCIES = (0.1, 0.5)
MIN_FREQUENCY = 1e-3  # "dead by frequency": fewer than 10 firings in 10,000 samples
DENSITY_EDGES = np.linspace(-6.0, 0.0, 25)  # log10 firing density, quarter decades


def tau_key(tau: float) -> str:
    """The record key of threshold ``tau``: ``"0"`` for 0, else ``repr(float(tau))``."""
    return repr(float(tau)) if tau else "0"


TAU_KEYS = tuple(tau_key(t) for t in DEAD_THRESHOLDS)


def _check_activations(a, name: str = "activations") -> None:
    if np.ndim(a) != 2:
        raise ValueError(f"{name} must be [N, units], got shape {np.shape(a)}")


def dead_fraction(activations_NxU, threshold: float = 0.0) -> jax.Array:
    """Fraction of units never above ``threshold`` (``activation > threshold``) over ``N`` samples.

    Args:
      activations_NxU: ``[N, units]``.
      threshold: a unit fires on a sample when its activation is ``> threshold``.

    Returns:
      float32 scalar (jit-able).
    """
    _check_activations(activations_NxU)
    fires_U = jnp.any(jnp.asarray(activations_NxU) > threshold, axis=0)
    return jnp.mean(~fires_U, dtype=jnp.float32)


def firing_counts(activations_NxU, thresholds: Sequence[float] = DEAD_THRESHOLDS) -> jax.Array:
    """Per threshold and unit, the samples with ``activation > threshold``: int32 ``[T, U]``.

    Additive over batches: the engine sums it over the evaluation set (jit-able).
    """
    _check_activations(activations_NxU)
    tau_T = jnp.asarray(thresholds, jnp.float32)
    a = jnp.asarray(activations_NxU)
    return (a[None, :, :] > tau_T[:, None, None].astype(a.dtype)).sum(axis=1, dtype=jnp.int32)


class FiringStats(NamedTuple):
    """Firing statistics of ``U`` units at ``T`` thresholds (see the module docstring)."""

    thresholds_T: np.ndarray
    frequency_TxU: np.ndarray
    dead_TxU: np.ndarray
    dead_T: np.ndarray
    rare_T: np.ndarray
    dense_TxD: np.ndarray
    mean_l0_T: np.ndarray
    density_hist_TxB: np.ndarray
    density_edges: np.ndarray
    num_samples: int
    min_frequency: float
    dense_frequencies_D: np.ndarray

    def summary(self) -> dict:
        """JSON-friendly dict: per threshold (keyed by :func:`tau_key`), the scalar statistics
        and the histogram."""
        out = {}
        for t, tau in enumerate(self.thresholds_T):
            out[tau_key(tau)] = {
                "dead_fraction": float(self.dead_T[t]),
                "rare_fraction": float(self.rare_T[t]),
                **{f"dense_fraction_{d:g}": float(self.dense_TxD[t, i])
                   for i, d in enumerate(self.dense_frequencies_D)},
                "mean_l0": float(self.mean_l0_T[t]),
                "log10_density_hist": self.density_hist_TxB[t].tolist(),
            }
        out["log10_density_edges"] = self.density_edges.tolist()
        out["num_samples"] = self.num_samples
        out["min_frequency"] = self.min_frequency
        return out


def firing_stats(counts_TxU, num_samples: int, thresholds: Sequence[float] = DEAD_THRESHOLDS, *,
                 min_frequency: float = MIN_FREQUENCY,
                 dense_frequencies: Sequence[float] = DENSE_FREQUENCIES,
                 density_edges: np.ndarray = DENSITY_EDGES) -> FiringStats:
    """Statistics of accumulated firing counts (host side, float64).

    Args:
      counts_TxU: int ``[T, U]``, samples on which each unit fired at each threshold (the sum
        of :func:`firing_counts` over the evaluation set).
      num_samples: size of the evaluation set (``N``).
      thresholds: the ``T`` thresholds the counts were taken at (for labelling).
      min_frequency: a unit firing on fewer than this fraction of samples is "rare".
      dense_frequencies: cut-offs for the dense fractions (fires on more than this fraction).
      density_edges: increasing log10 edges of the density histogram.
    """
    counts = np.asarray(counts_TxU)
    if counts.ndim != 2 or counts.shape[1] == 0:
        raise ValueError(f"counts must be [thresholds, units] with units >= 1, got shape "
                         f"{counts.shape}")
    if counts.shape[0] != len(thresholds):
        raise ValueError(f"counts has {counts.shape[0]} rows but {len(thresholds)} thresholds "
                         f"were given: expected one row per threshold")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if (counts < 0).any() or (counts > num_samples).any():
        raise ValueError(f"counts must lie in [0, num_samples={num_samples}], got range "
                         f"[{counts.min()}, {counts.max()}]")
    edges = np.asarray(density_edges, np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"density_edges must be an increasing 1-D array, got {edges}")
    freq = counts.astype(np.float64) / num_samples
    dead = counts == 0
    cutoffs_D = np.asarray(dense_frequencies, np.float64)
    dense = (freq[:, None, :] > cutoffs_D[None, :, None]).mean(axis=2)
    hist = np.zeros((counts.shape[0], len(edges) - 1), np.int64)
    for t in range(counts.shape[0]):
        logd = np.log10(freq[t][~dead[t]])
        hist[t] = np.histogram(np.clip(logd, edges[0], edges[-1]), edges)[0]
    return FiringStats(
        thresholds_T=np.asarray(thresholds, np.float64), frequency_TxU=freq, dead_TxU=dead,
        dead_T=dead.mean(axis=1), rare_T=(freq < min_frequency).mean(axis=1),
        dense_TxD=dense,
        mean_l0_T=counts.sum(axis=1) / num_samples, density_hist_TxB=hist, density_edges=edges,
        num_samples=int(num_samples), min_frequency=float(min_frequency),
        dense_frequencies_D=np.asarray(dense_frequencies, np.float64))


def update_death_epochs(death_epoch, dead, epoch: int) -> np.ndarray:
    """Epoch at which each unit's current dead streak began; ``-1`` for units alive now.

    Args:
      death_epoch: int array (any shape, e.g. ``[T, U]``), the previous result; start with
        ``np.full(shape, -1)``.
      dead: bool array of the same shape, dead at this evaluation.
      epoch: the epoch of this evaluation.
    """
    death_epoch, dead = np.asarray(death_epoch), np.asarray(dead, bool)
    if death_epoch.shape != dead.shape:
        raise ValueError(f"death_epoch has shape {death_epoch.shape} but dead has {dead.shape}")
    return np.where(dead, np.where(death_epoch >= 0, death_epoch, epoch), -1)


class Revival(NamedTuple):
    """What changed between two evaluations (arrays have the shape of the masks)."""

    revived: np.ndarray  # dead before, alive now
    died: np.ndarray  # alive before, dead now
    num_revived: np.ndarray  # per leading index (e.g. per threshold), or a scalar for 1-D
    num_died: np.ndarray


def revival(dead_before, dead_after) -> Revival:
    """Units that came back (and units that died) between two evaluations.

    Args:
      dead_before, dead_after: bool masks of the same shape, ``[U]`` or ``[T, U]``.
    """
    before, after = np.asarray(dead_before, bool), np.asarray(dead_after, bool)
    if before.shape != after.shape:
        raise ValueError(f"dead_before has shape {before.shape} but dead_after has {after.shape}")
    revived, died = before & ~after, ~before & after
    return Revival(revived, died, revived.sum(axis=-1), died.sum(axis=-1))
