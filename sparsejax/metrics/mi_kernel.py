"""The jit-compiled plug-in estimators: mutual information from packed exact joint counts,
and entropy from value counts.

How the counting runs. Joint counts ``n[k, a, v]`` (code ``k`` in bin ``a``, factor value
``v``) are a matmul of one-hot matrices, ``onehot(y)^T @ onehot(x)``, for all codes and
factors at once. Three things make it cheap:

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

# Shape letters: N samples (a chunk's, inside the scan), K codes, F factors (columns of y),
# A bins per code, E = A + 1 bin edges, H = ceil(A / P) packed columns per code, V one-hot
# columns of all factors (sum of sizes), U of them kept (all but each factor's last: V - F),
# W = U + 1 counted columns (all-ones first), B codes per block, C chunks of samples.

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax.metrics.inputs import check_samples, on_one_device, shape_of


def _packed_intervals(x_NxK, e_KxE, num_bins: int, pack: int):
    """Packed one-hot of interval membership: ``[N, K * H]``, ``H = ceil(num_bins / pack)``.

    Column ``(k, h)`` covers bins ``pack*h .. pack*h + pack-1`` of code ``k``; a sample in the
    ``p``-th of them contributes ``2^(bits * p)``, ``bits = 24 // pack``. Edges past
    ``num_bins`` are ``+inf``, so the padding bins stay empty.
    """
    n, k = x_NxK.shape
    bits, h = 24 // pack, -(-num_bins // pack)
    e = jnp.pad(e_KxE, ((0, 0), (0, h * pack + 1 - e_KxE.shape[1])), constant_values=jnp.inf)
    x = x_NxK[:, :, None]
    inside = (x >= e[:, 0:-1:pack]) & (x < e[:, pack::pack])  # [N, K, H]
    weight = jnp.float32(1)
    for p in range(1, pack):  # bins inside a group are ordered: the last edge passed wins
        weight = jnp.where(x >= e[:, p:-1:pack], jnp.float32(1 << (bits * p)), weight)
    return jnp.where(inside, weight, 0.0).reshape(n, k * h)


def _unpack_counts(m_WxKH, num_codes: int, num_bins: int, pack: int):
    """Inverse of the packing for a product ``[W, K*H]``: int32 counts ``[K, A, W]``."""
    bits = 24 // pack
    m = m_WxKH.astype(jnp.int32)  # exact: every entry is an integer below 2^24
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
    """0/1 ``[V, F]``: which column of ``y`` each one-hot column belongs to."""
    return np.repeat(np.eye(len(sizes), dtype=np.float32), sizes, axis=0)


def _onehot_columns(y_NxF, sizes: Sequence[int]):
    """Concatenated one-hot of every column of dense ids: float32 ``[N, V]``."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    cols = y_NxF.astype(jnp.int32) + jnp.asarray(offsets)
    return (cols[:, :, None] == jnp.arange(sum(sizes))).any(axis=1).astype(jnp.float32)


def _reduced_columns(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index maps for counting against fewer one-hot columns.

    Each column of ``y`` partitions the samples, so its last value's count is the total
    minus the others: the product is taken against ``[1, every value but each column's
    last]`` (``W = V - F + 1`` columns instead of ``V``). Returns ``(kept_U, last_F,
    seg_UxF)``: the one-hot columns kept, each column's last one-hot column, and the 0/1 map
    of kept columns to their ``y`` column.
    """
    last_F = np.cumsum(sizes) - 1
    kept_U = np.setdiff1d(np.arange(sum(sizes)), last_F)
    seg_UxF = _segment_matrix(sizes)[kept_U]
    return kept_U, last_F, seg_UxF


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
    kept_U, last_F, seg_UxF = _reduced_columns(sizes)
    y_NxV = _onehot_columns(y_NxF, sizes)
    n_V = y_NxV.sum(axis=0).astype(jnp.int32)
    # Count against [1, kept values]: column 0 yields the bin totals n_a.
    y_NxW = jnp.concatenate([jnp.ones((n, 1), jnp.float32), y_NxV[:, kept_U]], axis=1)

    chunks = -(-n // ((1 << (24 // pack)) - 1))
    chunk = -(-n // chunks)
    blocks = -(-k // block)
    x = jnp.pad(x_NxK.astype(jnp.float32), ((0, chunks * chunk - n), (0, blocks * block - k)),
                constant_values=jnp.nan)  # NaN is in no interval
    x = x.reshape(chunks, chunk, blocks, block).transpose(2, 0, 1, 3)  # [blocks, C, N, B]
    e = jnp.pad(e_KxE, ((0, blocks * block - k), (0, 0))).reshape(blocks, block, -1)
    y = jnp.pad(y_NxW, ((0, chunks * chunk - n), (0, 0))).reshape(chunks, chunk, -1)
    order_V = np.argsort(np.concatenate([kept_U, last_F]))  # [kept..., last...] -> one-hot order

    def mi_of_block(args):
        x_CxNxB, e_BxE = args

        def add_chunk(n_BxAxW, xy):
            x_NxB, y_NxW = xy
            m_WxBH = jnp.einsum("nw,nm->wm", y_NxW, _packed_intervals(x_NxB, e_BxE, num_bins, pack))
            return n_BxAxW + _unpack_counts(m_WxBH, block, num_bins, pack), None

        zero = jnp.zeros((block, num_bins, y.shape[-1]), jnp.int32)
        n_BxAxW, _ = lax.scan(add_chunk, zero, (x_CxNxB, y))
        n_BxA, kept_BxAxU = n_BxAxW[:, :, 0], n_BxAxW[:, :, 1:]
        last_BxAxF = n_BxA[:, :, None] - jnp.einsum("bau,uf->baf", kept_BxAxU,
                                                    jnp.asarray(seg_UxF, jnp.int32))
        n_BxAxV = jnp.concatenate([kept_BxAxU, last_BxAxF], axis=-1)[:, :, order_V]
        terms = _plugin_terms(n_BxAxV, n_BxA[:, :, None], n_V, jnp.int32(n))
        # float sums: full float32 (a GPU's default TF32 keeps only 10 mantissa bits)
        return jnp.matmul(terms.sum(axis=1), jnp.asarray(_segment_matrix(sizes)),
                          precision=lax.Precision.HIGHEST)  # bins, then values

    mi = lax.map(mi_of_block, (x, e)).reshape(blocks * block, len(sizes))[:k]
    return jnp.maximum(mi, 0.0)  # as sklearn: rounding noise never makes MI negative


def mutual_info_intervals(x_NxK, e_KxE, y_NxF, sizes: Sequence[int]) -> jax.Array:
    """Plug-in MI (nats) between interval-discretised ``x`` columns and ``y`` ids: ``[K, F]``.

    The jit-compiled core shared by every MI in this package.

    Args:
      x_NxK: float32 ``[N, K]``; column ``k`` is in bin ``a`` when
        ``e_KxE[k, a] <= x < e_KxE[k, a+1]``.
      e_KxE: float32 ``[K, A+1]`` non-decreasing edges (``-inf`` first, ``+inf`` last), as
        from ``binning.interval_edges`` or ``binning.label_edges``.
      y_NxF: dense int ids ``[N, F]``, ``0 <= y[:, j] < sizes[j]`` (see ``dense_labels``).
      sizes: number of values of each ``y`` column.
    """
    sizes = tuple(int(s) for s in sizes)
    n = shape_of(x_NxK)[0]
    if shape_of(y_NxF)[0] != n:
        raise ValueError(f"x has {n} samples but y has {shape_of(y_NxF)[0]}")
    check_samples(n)
    k, num_bins = shape_of(x_NxK)[1], int(np.shape(e_KxE)[1]) - 1
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
