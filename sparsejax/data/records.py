"""Record-backed sources (real files, TFDS copies): mapping grid points to stored records.

A real copy stores one record per factor tuple, in some order (the files in row-major
order, TFDS in a shuffled order). ``point_to_row`` is the bridge: for every grid point
(row-major index over the factor grid) the record that holds its image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sparsejax.data.factors import FactorSpace


class DataFileError(ValueError):
    """A real dataset copy is missing, unreadable, truncated or of the wrong shape."""


def point_to_row(space: FactorSpace, classes_RxF: np.ndarray, where: str) -> np.ndarray | None:
    """Record row of every grid point: int64 ``[M]``, or None when rows are already in grid order.

    Raises DataFileError when a class index is out of range, a factor tuple repeats, or
    the records do not cover the whole grid (a truncated or partial copy).
    """
    classes_RxF = np.asarray(classes_RxF)
    try:
        space.validate(classes_RxF, what=f"class labels of {where}")
    except ValueError as e:
        raise DataFileError(str(e)) from None
    num_rows, num_points = classes_RxF.shape[0], space.num_points
    index_R = space.factors_to_index(classes_RxF.astype(np.int64))
    if num_rows == num_points and np.array_equal(index_R, np.arange(num_points)):
        return None
    rows_M = np.full(num_points, -1, np.int64)
    rows_M[index_R] = np.arange(num_rows)
    covered = int((rows_M >= 0).sum())
    if covered < num_rows:
        raise DataFileError(f"{where}: {num_rows - covered} records repeat a factor tuple; "
                            f"expected each of the {num_points} tuples exactly once")
    if covered < num_points:
        raise DataFileError(f"{where}: holds {num_rows} records covering {covered} of the "
                            f"{num_points} factor tuples ({dict(zip(space.names, space.sizes))}); "
                            "the copy is truncated or partial")
    return rows_M


def rows_for(factors_NxF: np.ndarray, space: FactorSpace, rows_M: np.ndarray | None) -> np.ndarray:
    index_N = space.factors_to_index(np.asarray(factors_NxF, np.int64))
    return index_N if rows_M is None else rows_M[index_N]


def read_rows(array, rows_N: np.ndarray) -> np.ndarray:
    """``array[rows_N]`` for arrays that only take increasing indices (h5py); keeps the order."""
    uniq, inverse = np.unique(rows_N, return_inverse=True)
    return np.asarray(array[uniq])[inverse]


def cache_path(source: Path, suffix: str) -> Path:
    """Where to cache something derived from ``source``: beside it if writable, else ~/.cache."""
    beside = source.with_name(source.name + suffix)
    if os.access(source.parent, os.W_OK):
        return beside
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sparsejax"
    root.mkdir(parents=True, exist_ok=True)
    return root / beside.name
