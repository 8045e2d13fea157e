"""Discrete information: numpy's histogram binning, plug-in mutual information, entropy.

The shared core of MIG, modularity, unit alignment and the pairwise-MI score. Everything
follows disentanglement_lib (``evaluation/metrics/utils.py``):

* **binning** (:func:`histogram_bins`): each code dimension on its own is cut into
  ``num_bins`` equal-width bins between its minimum and maximum, exactly as
  ``np.digitize(x, np.histogram(x, num_bins)[1][:-1]) - 1`` with float64 edges (a value on an
  edge goes to the upper bin, the maximum to the last bin, a constant dimension to one bin).
  We return 0-based bin ids; dlib's are 1-based, which changes no mutual information.
* **mutual information** (:func:`mutual_info_matrix`): the plug-in estimate in nats,
  ``sklearn.metrics.mutual_info_score`` for every pair of columns, all pairs at once.
* **entropy** (:func:`entropy`): ``mutual_info_score(y, y)``, the plug-in entropy in nats.

How the counting runs. Joint counts ``n[k, a, v]`` (code ``k`` in bin ``a``, factor value
``v``) are a matmul of one-hot matrices, ``onehot(y)^T @ onehot(x)``, for all codes and
factors at once (jit-compiled). Three things make it cheap:

* *packing*: the code side is the big operand (``N x K*A``, one non-zero per ``A`` columns),
  so ``P`` adjacent bins share one float32 column with weights ``1, 2^b, 2^2b`` (``b = 24/P``).
  Over a chunk of fewer than ``2^b`` samples every partial sum is an integer below 2^24, so
  float32 accumulation is exact and ``divmod`` recovers the counts. The weights are powers
  of two, exact in bfloat16 and TF32 too, so any matmul precision is exact. ``P = 3`` on CPU
  (chunks of 255 samples), ``P = 2`` on accelerators (chunks of 4095).
* *fewer factor columns*: each factor's last value is counted as the total minus the
  others, against one all-ones column (``sum(V) - F + 1`` columns instead of ``sum(V)``).
* *fused binning*: the packed one-hot is built from the codes and their float32 bin edges
  in the same fusion that feeds the matmul; no bin-id array is written.

How the logarithms stay accurate in float32. Each term is ``p log q`` with
``q = n n_av / (n_a n_v)``. Where ``q >= 1/2`` we evaluate ``log1p(d / (n_a n_v))`` with
``d = n n_av - n_a n_v`` computed exactly in int32 limbs, so the term keeps float32 relative
accuracy even when ``q`` is within rounding of 1 (the dominant value of an unbalanced factor,
where a naive ``log(q)`` would lose everything to cancellation); elsewhere ``|log q| > log 2``
and the direct ratio is accurate. Sums run over values, then bins (short float32 sums).
The result agrees with sklearn's float64 computation to about 1e-6 of the entropies
involved (tests check 1e-5 on random and adversarial inputs).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_MAX_SAMPLES = 1 << 24  # counts must be exact in float32 for the logarithms

# --------------------------------------------------------------------------------------
# input checks (host side)
# --------------------------------------------------------------------------------------


def _shape_of(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_matrix(x, name: str, *, rows: int | None = None, what: str = "[N, K]") -> None:
    """Raises ValueError unless ``x`` is 2-D (with ``rows`` rows when given)."""
    shape = _shape_of(x)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array {what}, got shape {shape}")
    if rows is not None and shape[0] != rows:
        raise ValueError(f"{name} has {shape[0]} rows but the codes have {rows}: "
                         f"expected one row per sample")
    if shape[0] == 0:
        raise ValueError(f"{name} has no rows: expected at least one sample")
    if shape[1] == 0:
        raise ValueError(f"{name} has no columns: expected at least one")


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
    if y.shape[0] >= _MAX_SAMPLES:
        raise ValueError(f"{name} has {y.shape[0]} samples: at most {_MAX_SAMPLES - 1} are "
                         "supported (joint counts must be exact in float32)")
    ids, sizes = np.empty(y.shape, np.int32), []
    for j in range(y.shape[1]):
        uniq, inv = np.unique(y[:, j], return_inverse=True)
        ids[:, j] = inv.reshape(-1)
        sizes.append(len(uniq))
    return ids, tuple(sizes)


# --------------------------------------------------------------------------------------
# binning
# --------------------------------------------------------------------------------------


def numpy_bin_edges(lo_K: np.ndarray, hi_K: np.ndarray, num_bins: int) -> np.ndarray:
    """``np.histogram(x, num_bins)[1]`` for every column from its min and max: float64 ``[K, B+1]``.

    Restates numpy's ``_get_outer_edges`` (a constant column gets ``[c - 0.5, c + 0.5]``) and
    ``np.linspace`` (``i * step + lo`` with ``step = (hi - lo) / B``; ``i / B * delta + lo``
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
def _count_edges_below(x_NxK, e_KxE):
    # bin id = number of inner edges <= x (np.digitize with right=False also counts the
    # first edge, the minimum, which every x passes: our ids are 0-based).
    return (x_NxK[:, :, None] >= e_KxE[None, :, :]).sum(axis=-1, dtype=jnp.int32)


def on_one_device(x):
    """``x`` itself, or for an array spread over several devices a copy on the first of them.

    The metrics are global reductions over samples; a data-parallel array (e.g. codes
    sharded over a mesh) is gathered once rather than pushed through sharded loops.
    """
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        device = min(x.sharding.device_set, key=lambda d: d.id)
        return jax.device_put(x, jax.sharding.SingleDeviceSharding(device))
    return x


def _dtype_of(x) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


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
    _check_samples(_shape_of(codes_NxK)[0])
    on_device = dtype in (np.float32, np.float16, jnp.bfloat16)
    if on_device:
        x = on_one_device(jnp.asarray(codes_NxK)).astype(jnp.float32)
        lo, hi = (np.asarray(v, np.float64) for v in _column_min_max(x))
    else:
        x = np.asarray(codes_NxK, np.float64)
        lo, hi = x.min(axis=0), x.max(axis=0)
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"codes[:, {k}] has a non-finite value (range [{lo[k]}, {hi[k]}]): "
                         "expected finite codes")
    edges = numpy_bin_edges(lo, hi, num_bins)
    narrow = (edges[:, :-1] >= edges[:, 1:]).any(axis=1)
    if narrow.any():
        k = int(np.argmax(narrow))
        raise ValueError(f"codes[:, {k}] spans [{lo[k]!r}, {hi[k]!r}], too narrow for "
                         f"{num_bins} distinct float64 bin edges (numpy.histogram refuses it "
                         "too)")
    inner = edges[:, 1:-1]
    if on_device:
        return x, interval_edges(_ceil_to_float32(inner))
    bins = np.empty(x.shape, np.float32)
    for k in range(x.shape[1]):  # searchsorted 'right' is digitize: numpy's own comparisons
        bins[:, k] = np.searchsorted(inner[k], x[:, k], side="right")
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


# --------------------------------------------------------------------------------------
# joint counts and mutual information (device side)
# --------------------------------------------------------------------------------------


def interval_edges(lo_edges_KxA: np.ndarray) -> np.ndarray:
    """Half-open bins ``[E[k, a], E[k, a+1])`` from the lower edges of bins ``1 .. A-1``.

    ``lo_edges_KxA[:, a-1]`` is the smallest value of bin ``a``; bin 0 reaches down to
    ``-inf`` and bin ``A-1`` up to ``+inf``. Returns float32 ``[K, A+1]``.
    """
    k = lo_edges_KxA.shape[0]
    inf = np.full((k, 1), np.inf, np.float32)
    return np.concatenate([-inf, lo_edges_KxA.astype(np.float32), inf], axis=1)


def label_edges(num_values: int, num_columns: int) -> np.ndarray:
    """:func:`interval_edges` for integer ids ``0 .. num_values-1`` held as float32."""
    inner = np.arange(1, num_values, dtype=np.float32)
    return interval_edges(np.broadcast_to(inner, (num_columns, num_values - 1)))


def _packed_intervals(x_NxC, e_CxE, num_bins: int, pack: int):
    """Packed one-hot of interval membership: ``[N, C * H]``, ``H = ceil(num_bins / pack)``.

    Column ``(c, h)`` covers bins ``pack*h .. pack*h + pack-1`` of code ``c``; a sample in the
    ``p``-th of them contributes ``2^(bits * p)``, ``bits = 24 // pack``. Edges past
    ``num_bins`` are ``+inf``, so the padding bins stay empty.
    """
    n, c = x_NxC.shape
    bits, h = 24 // pack, -(-num_bins // pack)
    e = jnp.pad(e_CxE, ((0, 0), (0, h * pack + 1 - e_CxE.shape[1])), constant_values=jnp.inf)
    x = x_NxC[:, :, None]
    inside = (x >= e[:, 0:-1:pack]) & (x < e[:, pack::pack])  # [N, C, H]
    weight = jnp.float32(1)
    for p in range(1, pack):  # bins inside a group are ordered: the last edge passed wins
        weight = jnp.where(x >= e[:, p:-1:pack], jnp.float32(1 << (bits * p)), weight)
    return jnp.where(inside, weight, 0.0).reshape(n, c * h)


def _unpack_counts(m_VxCH, num_codes: int, num_bins: int, pack: int):
    """Inverse of the packing for a product ``[V, C*H]``: int32 counts ``[C, A, V]``."""
    bits = 24 // pack
    m = m_VxCH.astype(jnp.int32)  # exact: every entry is an integer below 2^24
    slots = [(m >> (bits * p)) & ((1 << bits) - 1) for p in range(pack)]
    counts = jnp.stack(slots, axis=-1).reshape(m.shape[0], num_codes, -1)[:, :, :num_bins]
    return jnp.transpose(counts, (1, 2, 0))


def _exact_cross_difference(a, b, c, d):
    """``a*b - c*d`` for int32 counts in ``[0, 2^24)``, exact, then rounded once to float32.

    12-bit limbs keep every partial product in int32; carries bring the value to
    ``hi * 2^24 + low`` with ``0 <= low < 2^24`` before the one conversion to float.
    """
    m = (1 << 12) - 1
    a1, a0, b1, b0 = a >> 12, a & m, b >> 12, b & m
    c1, c0, d1, d0 = c >> 12, c & m, d >> 12, d & m
    hi = a1 * b1 - c1 * d1
    mid = a1 * b0 + a0 * b1 - c1 * d0 - c0 * d1
    lo = a0 * b0 - c0 * d0
    mid = mid + (lo >> 12)  # arithmetic shifts floor, so the remainders below are >= 0
    lo = lo & m
    hi = hi + (mid >> 12)
    mid = mid & m
    low = (mid << 12) | lo
    return hi.astype(jnp.float32) * jnp.float32(1 << 24) + low.astype(jnp.float32)


def _plugin_terms(n_av, n_a, n_v, n):
    """``(n_av / n) log(n n_av / (n_a n_v))`` in float32, 0 where ``n_av == 0``.

    Arguments are broadcastable int32 counts; ``n`` is the number of samples.
    """
    f = lambda t: t.astype(jnp.float32)
    n = jnp.broadcast_to(n, n_av.shape)
    den = f(n_a) * f(n_v)
    near_one = f(n_av) * f(n) >= 0.5 * den  # q >= 1/2: log1p of an exact numerator
    x = _exact_cross_difference(n_av, n, n_a, n_v) / jnp.where(near_one, den, 1.0)
    q = (f(n_av) / jnp.maximum(f(n_a), 1.0)) * (f(n) / jnp.maximum(f(n_v), 1.0))
    log_q = jnp.where(near_one, jnp.log1p(x), jnp.log(jnp.where(n_av > 0, q, 1.0)))
    return jnp.where(n_av > 0, f(n_av) / f(n) * log_q, 0.0)


def _segment_matrix(sizes: Sequence[int]) -> np.ndarray:
    """0/1 ``[sum(sizes), F]``: which column of ``y`` each one-hot column belongs to."""
    return np.repeat(np.eye(len(sizes), dtype=np.float32), sizes, axis=0)


def _onehot_columns(y_NxF, sizes: Sequence[int]):
    """Concatenated one-hot of every column of dense ids: float32 ``[N, sum(sizes)]``."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    cols = y_NxF.astype(jnp.int32) + jnp.asarray(offsets)
    return (cols[:, :, None] == jnp.arange(sum(sizes))).any(axis=1).astype(jnp.float32)


def _reduced_columns(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index maps for counting against fewer one-hot columns.

    Each column of ``y`` partitions the samples, so its last value's count is the total
    minus the others: the product is taken against ``[1, every value but each column's
    last]`` (``sum(sizes) - F + 1`` columns instead of ``sum(sizes)``). Returns ``(kept,
    last, seg)``: the one-hot columns kept, each column's last one-hot column, and the 0/1
    ``[len(kept), F]`` map of kept columns to their ``y`` column.
    """
    ends = np.cumsum(sizes) - 1
    kept = np.setdiff1d(np.arange(sum(sizes)), ends)
    seg = _segment_matrix(sizes)[kept]
    return kept, ends, seg


def _entropy_terms(n_V, n):
    # H = sum_v p_v log(n / n_v) = sum_v p_v log1p((n - n_v) / n_v): exact numerator.
    f = lambda t: t.astype(jnp.float32)
    return jnp.where(n_V > 0, f(n_V) / f(n) * jnp.log1p(f(n - n_V) / jnp.maximum(f(n_V), 1.0)),
                     0.0)


class _Plan(NamedTuple):
    pack: int  # bins per float32 column
    block: int  # codes per lax.map step


def _plan(num_codes: int, num_bins: int, num_samples: int) -> _Plan:
    # CPU: three bins per column (a third of the one-hot FLOPs; chunks of 255 samples keep
    # the packed operand of all codes in cache). Accelerators: two bins per column, chunks of
    # 4095 samples, blocks sized so one chunk's operand stays under ~256 MB.
    if jax.default_backend() == "cpu":
        return _Plan(pack=3, block=min(num_codes, 512))
    h = -(-num_bins // 2)
    per_code = 4 * h * min(num_samples, (1 << 12) - 1)
    return _Plan(pack=2, block=max(1, min(num_codes, (256 << 20) // per_code)))


@functools.partial(jax.jit, static_argnames=("num_bins", "sizes", "plan"))
def _mutual_info_intervals(x_NxK, e_KxE, y_NxF, *, num_bins: int, sizes: tuple[int, ...],
                           plan: _Plan):
    n, k = x_NxK.shape
    pack, block = plan
    kept, last, seg = _reduced_columns(sizes)
    y_NxV = _onehot_columns(y_NxF, sizes)
    n_V = y_NxV.sum(axis=0).astype(jnp.int32)
    # Count against [1, kept values]: column 0 yields the bin totals n_a.
    y_NxW = jnp.concatenate([jnp.ones((n, 1), jnp.float32), y_NxV[:, kept]], axis=1)

    chunks = -(-n // ((1 << (24 // pack)) - 1))
    chunk = -(-n // chunks)
    blocks = -(-k // block)
    x = jnp.pad(x_NxK.astype(jnp.float32), ((0, chunks * chunk - n), (0, blocks * block - k)),
                constant_values=jnp.nan)  # NaN is in no interval
    x = x.reshape(chunks, chunk, blocks, block).transpose(2, 0, 1, 3)
    e = jnp.pad(e_KxE, ((0, blocks * block - k), (0, 0))).reshape(blocks, block, -1)
    y = jnp.pad(y_NxW, ((0, chunks * chunk - n), (0, 0))).reshape(chunks, chunk, -1)
    order = np.argsort(np.concatenate([kept, last]))  # [kept..., last...] -> one-hot order

    def mi_of_block(args):
        x_CxNxB, e_BxE = args

        def add_chunk(n_BxAxW, xy):
            x_NxB, y_NxW = xy
            m_WxBH = jnp.einsum("nw,nm->wm", y_NxW, _packed_intervals(x_NxB, e_BxE, num_bins, pack))
            return n_BxAxW + _unpack_counts(m_WxBH, block, num_bins, pack), None

        zero = jnp.zeros((block, num_bins, y.shape[-1]), jnp.int32)
        n_BxAxW, _ = lax.scan(add_chunk, zero, (x_CxNxB, y))
        n_BxA, kept_BxAxW = n_BxAxW[:, :, 0], n_BxAxW[:, :, 1:]
        last_BxAxF = n_BxA[:, :, None] - jnp.einsum("baw,wf->baf", kept_BxAxW,
                                                    jnp.asarray(seg, jnp.int32))
        n_BxAxV = jnp.concatenate([kept_BxAxW, last_BxAxF], axis=-1)[:, :, order]
        terms = _plugin_terms(n_BxAxV, n_BxA[:, :, None], n_V, jnp.int32(n))
        # float sums: full float32 (a GPU's default TF32 keeps only 10 mantissa bits)
        return jnp.matmul(terms.sum(axis=1), jnp.asarray(_segment_matrix(sizes)),
                          precision=lax.Precision.HIGHEST)  # bins, then values

    mi = lax.map(mi_of_block, (x, e)).reshape(blocks * block, len(sizes))[:k]
    return jnp.maximum(mi, 0.0)  # as sklearn: rounding noise never makes MI negative


def _check_samples(n: int) -> None:
    if n >= _MAX_SAMPLES:
        raise ValueError(f"{n} samples: at most {_MAX_SAMPLES - 1} are supported (joint counts "
                         "must be exact in float32)")


def mutual_info_intervals(x_NxK, e_KxE, y_NxF, sizes: Sequence[int]) -> jax.Array:
    """Plug-in MI (nats) between interval-discretised ``x`` columns and ``y`` ids: ``[K, F]``.

    The jit-compiled core shared by every MI in this package.

    Args:
      x_NxK: float32 ``[N, K]``; column ``k`` is in bin ``a`` when
        ``e_KxE[k, a] <= x < e_KxE[k, a+1]``.
      e_KxE: float32 ``[K, A+1]`` non-decreasing edges (``-inf`` first, ``+inf`` last), as
        from :func:`interval_edges` or :func:`label_edges`.
      y_NxF: dense int ids ``[N, F]``, ``0 <= y[:, j] < sizes[j]`` (see :func:`dense_labels`).
      sizes: number of values of each ``y`` column.
    """
    sizes = tuple(int(s) for s in sizes)
    n = _shape_of(x_NxK)[0]
    if _shape_of(y_NxF)[0] != n:
        raise ValueError(f"x has {n} samples but y has {_shape_of(y_NxF)[0]}")
    _check_samples(n)
    k, num_bins = _shape_of(x_NxK)[1], int(np.shape(e_KxE)[1]) - 1
    x, y = (on_one_device(jnp.asarray(v)) for v in (x_NxK, y_NxF))
    return _mutual_info_intervals(x.astype(jnp.float32), jnp.asarray(e_KxE, jnp.float32), y,
                                  num_bins=num_bins, sizes=sizes,
                                  plan=_plan(k, num_bins, n))


@functools.partial(jax.jit, static_argnames=("sizes",))
def _entropy_ids(y_NxF, *, sizes):
    n_V = _onehot_columns(y_NxF, sizes).sum(axis=0).astype(jnp.int32)
    return jnp.matmul(_entropy_terms(n_V, jnp.int32(y_NxF.shape[0])),
                      jnp.asarray(_segment_matrix(sizes)), precision=lax.Precision.HIGHEST)


def entropy_ids(y_NxF, sizes: Sequence[int]) -> jax.Array:
    """Plug-in entropy (nats) of each column of dense ids ``[N, F]``: ``[F]`` (jit core)."""
    return _entropy_ids(on_one_device(jnp.asarray(y_NxF)), sizes=tuple(int(s) for s in sizes))


# --------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------


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
    check_matrix(y_NxF, "y", rows=_shape_of(x_NxK)[0], what="[N, F] integer labels")
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
