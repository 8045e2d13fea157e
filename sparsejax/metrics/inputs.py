"""Host-side handling of metric inputs: shape checks, the sample limit, dense relabelling of
integer labels, and gathering a sharded array to one device.
"""

# Shape letters: N samples, K codes, F factors (label columns).

from __future__ import annotations

import jax
import numpy as np

MAX_SAMPLES = 1 << 24  # counts must be exact in float32 for the logarithms


def shape_of(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_matrix(x, name: str, *, rows: int | None = None, what: str = "[N, K]") -> None:
    """Raises ValueError unless ``x`` is 2-D (with ``rows`` rows when given)."""
    shape = shape_of(x)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array {what}, got shape {shape}")
    if rows is not None and shape[0] != rows:
        raise ValueError(f"{name} has {shape[0]} rows but the codes have {rows}: "
                         f"expected one row per sample")
    if shape[0] == 0:
        raise ValueError(f"{name} has no rows: expected at least one sample")
    if shape[1] == 0:
        raise ValueError(f"{name} has no columns: expected at least one")


def check_samples(n: int) -> None:
    """Raises ValueError for ``n >= MAX_SAMPLES`` samples."""
    if n >= MAX_SAMPLES:
        raise ValueError(f"{n} samples: at most {MAX_SAMPLES - 1} are supported (joint counts "
                         "must be exact in float32)")


def dense_labels(labels_NxF, name: str = "factors") -> tuple[np.ndarray, tuple[int, ...]]:
    """Relabels each column of integer labels to ``0 .. size-1`` (host side).

    Args:
      labels_NxF: integer (or bool) array ``[N, F]``; any values, e.g. 1..10.
      name: what the labels are, for error messages.

    Returns:
      ``(ids_NxF int32, sizes)`` where ``sizes[j]`` is the number of distinct values in
      column ``j``. Mutual information depends only on this partition of the samples.
    """
    check_matrix(labels_NxF, name, what="[N, F]")
    y = np.asarray(labels_NxF)
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise ValueError(f"{name} must be integer class labels, got dtype {y.dtype}; "
                         "discretise continuous values first (e.g. histogram_bins)")
    if y.shape[0] >= MAX_SAMPLES:
        raise ValueError(f"{name} has {y.shape[0]} samples: at most {MAX_SAMPLES - 1} are "
                         "supported (joint counts must be exact in float32)")
    ids, sizes = np.empty(y.shape, np.int32), []
    for col in range(y.shape[1]):
        uniq, inv = np.unique(y[:, col], return_inverse=True)
        ids[:, col] = inv.reshape(-1)
        sizes.append(len(uniq))
    return ids, tuple(sizes)


def on_one_device(x):
    """``x`` itself, or for an array spread over several devices a copy on the first of them.

    The metrics are global reductions over samples; a data-parallel array (e.g. codes
    sharded over a mesh) is gathered once rather than pushed through sharded loops.
    """
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        device = min(x.sharding.device_set, key=lambda d: d.id)
        return jax.device_put(x, jax.sharding.SingleDeviceSharding(device))
    return x
