"""Histogram binning of codes as numpy and disentanglement_lib compute it, and the interval
form of the bins that the MI kernel counts from.

Each code dimension on its own is cut into ``num_bins`` equal-width bins between its minimum
and maximum, exactly as ``np.digitize(x, np.histogram(x, num_bins)[1][:-1]) - 1`` with float64
edges (dlib ``evaluation/metrics/utils.py``, ``_histogram_discretize``): a value on an edge
goes to the upper bin, the maximum to the last bin, a constant dimension to one bin. Bin ids
are 0-based; dlib's are 1-based, which changes no mutual information.

Bins are also given as half-open intervals ``[e[k, a], e[k, a+1])`` with float32 edges
(:func:`histogram_intervals`), so that the kernel bins inside its own fusion.
"""

# Shape letters: N samples, K codes, A bins per code, E = A + 1 bin edges, I = A - 1 inner
# edges (the lower edges of bins 1 .. A-1).

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.metrics.inputs import check_matrix, check_samples, on_one_device, shape_of


def numpy_bin_edges(lo_K: np.ndarray, hi_K: np.ndarray, num_bins: int) -> np.ndarray:
    """``np.histogram(x, num_bins)[1]`` for every column from its min and max: float64 ``[K, E]``.

    Restates numpy's ``_get_outer_edges`` (a constant column gets ``[c - 0.5, c + 0.5]``) and
    ``np.linspace`` (``i * step + lo`` with ``step = (hi - lo) / A``; ``i / A * delta + lo``
    where ``step`` underflows to 0; the last edge set to ``hi``), column by column.
    """
    lo = np.asarray(lo_K, np.float64)
    hi = np.asarray(hi_K, np.float64)
    same = lo == hi
    lo, hi = np.where(same, lo - 0.5, lo), np.where(same, hi + 0.5, hi)
    delta = (hi - lo)[:, None]
    step = delta / num_bins
    i = np.arange(num_bins + 1, dtype=np.float64)[None, :]
    with np.errstate(invalid="ignore", over="ignore"):
        edges = np.where(step == 0, (i / num_bins) * delta, i * step) + lo[:, None]
    edges[:, -1] = hi
    return edges


def _ceil_to_float32(x: np.ndarray) -> np.ndarray:
    """The smallest float32 >= x (elementwise). For float32 ``v``: ``v >= x  <=>  v >= ceil(x)``."""
    r = x.astype(np.float32)
    below = r.astype(np.float64) < x
    return np.where(below, np.nextafter(r, np.float32(np.inf)), r)


@jax.jit
def _column_min_max(x_NxK):
    return x_NxK.min(axis=0), x_NxK.max(axis=0)


@jax.jit
def _count_edges_below(x_NxK, inner_KxI):
    # bin id = number of inner edges <= x (np.digitize with right=False also counts the
    # first edge, the minimum, which every x passes: our ids are 0-based).
    return (x_NxK[:, :, None] >= inner_KxI[None, :, :]).sum(axis=-1, dtype=jnp.int32)


def _dtype_of(x) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def interval_edges(inner_KxI: np.ndarray) -> np.ndarray:
    """Half-open bins ``[e[k, a], e[k, a+1])`` from the lower edges of bins ``1 .. A-1``.

    ``inner_KxI[:, a-1]`` is the smallest value of bin ``a``; bin 0 reaches down to
    ``-inf`` and bin ``A-1`` up to ``+inf``. Returns float32 ``[K, E]``.
    """
    num_codes = inner_KxI.shape[0]
    inf = np.full((num_codes, 1), np.inf, np.float32)
    return np.concatenate([-inf, inner_KxI.astype(np.float32), inf], axis=1)


def label_edges(num_values: int, num_columns: int) -> np.ndarray:
    """:func:`interval_edges` for integer ids ``0 .. num_values-1`` held as float32."""
    inner_I = np.arange(1, num_values, dtype=np.float32)
    return interval_edges(np.broadcast_to(inner_I, (num_columns, num_values - 1)))


def histogram_intervals(codes_NxK, num_bins: int = 20) -> tuple[jax.Array, np.ndarray]:
    """Codes and per-column bin intervals, the form the MI kernel counts from.

    Returns ``(x_NxK, e_KxE)``: float32 values ``[N, K]`` and float32 edges
    ``[K, num_bins + 1]`` such that ``e[k, a] <= x[n, k] < e[k, a+1]`` exactly when numpy puts
    ``codes[n, k]`` in bin ``a`` (see :func:`histogram_bins`).

    Float32-exact codes (float32, bfloat16, float16) stay on the device: the float64 edges are
    rounded *up* to float32, which makes ``x >= edge`` give the float64 answer for every
    float32 ``x`` (values on an edge or within float32 eps of one included). Float64 and
    integer codes, which float32 cannot hold exactly, are binned on the host with the float64
    comparisons numpy makes, and returned as bin ids with integer edges.
    """
    check_matrix(codes_NxK, "codes")
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    dtype = _dtype_of(codes_NxK)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
            or dtype in (np.bool_, jnp.bfloat16)):
        raise ValueError(f"codes must be real numbers, got dtype {dtype}")
    check_samples(shape_of(codes_NxK)[0])
    on_device = dtype in (np.float32, np.float16, jnp.bfloat16)
    if on_device:
        x = on_one_device(jnp.asarray(codes_NxK)).astype(jnp.float32)
        lo, hi = (np.asarray(v, np.float64) for v in _column_min_max(x))
    else:
        x = np.asarray(codes_NxK, np.float64)
        lo, hi = x.min(axis=0), x.max(axis=0)
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    if bad.any():
        code = int(np.argmax(bad))
        raise ValueError(f"codes[:, {code}] has a non-finite value (range [{lo[code]}, "
                         f"{hi[code]}]): expected finite codes")
    edges = numpy_bin_edges(lo, hi, num_bins)
    narrow = (edges[:, :-1] >= edges[:, 1:]).any(axis=1)
    if narrow.any():
        code = int(np.argmax(narrow))
        raise ValueError(f"codes[:, {code}] spans [{lo[code]!r}, {hi[code]!r}], too narrow for "
                         f"{num_bins} distinct float64 bin edges (numpy.histogram refuses it "
                         "too)")
    inner = edges[:, 1:-1]
    if on_device:
        return x, interval_edges(_ceil_to_float32(inner))
    bins = np.empty(x.shape, np.float32)
    for code in range(x.shape[1]):  # searchsorted 'right' is digitize: numpy's own comparisons
        bins[:, code] = np.searchsorted(inner[code], x[:, code], side="right")
    return jnp.asarray(bins), label_edges(num_bins, x.shape[1])


def histogram_bins(codes_NxK, num_bins: int = 20) -> jax.Array:
    """Equal-width histogram bin of every entry, per column, as numpy/dlib compute it.

    Args:
      codes_NxK: real codes ``[N, K]`` (float32, bfloat16, float16, float64 or integer).
      num_bins: bins per column (dlib: 20).

    Returns:
      int32 ``[N, K]`` bin ids in ``0 .. num_bins-1``, equal to
      ``np.digitize(x, np.histogram(x, num_bins)[1][:-1]) - 1`` for each column ``x`` taken
      as float64 (float32 inputs are promoted exactly; numpy itself would compute the edges
      of a float32 array in float32).

    Raises:
      ValueError: wrong rank, no samples, a non-finite value, or a column whose range is too
        narrow for ``num_bins`` distinct float64 edges (numpy refuses these too).
    """
    return interval_ids(*histogram_intervals(codes_NxK, num_bins))


def interval_ids(x_NxK, e_KxE) -> jax.Array:
    """The bin id of every entry of :func:`histogram_intervals` output: int32 ``[N, K]``."""
    return _count_edges_below(x_NxK, jnp.asarray(e_KxE[:, 1:-1]))
