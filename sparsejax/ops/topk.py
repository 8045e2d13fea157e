"""Row-wise Top-k: keep the k largest entries of each row, zero the rest.

Contract (every ``impl`` gives the same answer; ``lax`` is the oracle):

* Shapes. ``x`` is ``[..., N]`` floating point; the top-k axis is the last one.
  ``topk`` returns ``[..., N]``; ``topk_values_indices`` returns ``[..., k_max]`` values
  (descending) and int32 indices.
* Traced k. ``k`` may be a Python int or a traced int32 scalar, so a schedule that moves k
  every epoch does not recompile. Shapes depend only on the static bound ``k_max``
  (default: ``min(k, N)`` for a Python int k, else ``N``); the runtime k is clipped to
  ``[0, k_max]``. A concrete k outside ``[0, k_max]`` is an error.
* Rows shorter than k. k is clipped to N: ``topk(x, k)`` with ``k >= N`` returns ``x``.
* k = 0 returns zeros; in ``topk_values_indices`` slots at or beyond the runtime k hold
  value 0 and a valid index distinct from the others in the row (which one is
  implementation-defined), so a decoder may read them safely: a zero contributes nothing.
* Order. Values are ranked by the IEEE-754 total order, as ``lax.top_k`` ranks them:
  ``-NaN < -inf < ... < -0.0 < +0.0 < ... < +inf < +NaN``. Ties keep the lower index.
  Consequences, documented rather than an error (an error would need a host sync):
  a +NaN is always kept and so propagates into the output (training loops see it in
  the loss and stop); -inf entries are kept (as -inf) only when k exceeds the number of
  larger entries.
* Gradient. A ``jax.custom_vjp``: the cotangent flows to the kept positions only
  (``topk``: ``where(keep, g, 0)``, saving the keep mask or the per-row threshold;
  ``topk_values_indices``: a scatter of the k value cotangents to their indices).

Implementations (``impl``):

* ``"lax"``: ``lax.top_k`` (sorts on CPU/GPU); the reference all others are tested against.
* ``"approx"``: ``lax.approx_max_k`` with ``recall_target`` 0.95; fast on TPU only,
  elsewhere XLA falls back to an exact sort, so off TPU it equals ``"lax"`` on finite
  inputs (+-inf included). Its order of NaN and of -0.0 vs +0.0 is unspecified (XLA's
  comparator there varies with k and backend). On TPU it may miss true top-k entries.
* ``"pallas"``: a Pallas kernel (``sparsejax.ops.pallas_topk``) that finds each row's k-th
  largest value by bisection on its 32-bit order key, never sorting the row; TPU (Mosaic)
  and GPU (Triton); on CPU it runs in interpret mode, so tests exercise the same code.
* ``"auto"``: ``resolve_impl("auto")`` picks per backend (see ``AUTO_IMPL``) and logs it.
"""

from __future__ import annotations

import functools
import logging
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

log = logging.getLogger(__name__)

IMPLS = ("auto", "lax", "approx", "pallas")

# Fastest exact-or-approximate path per backend, from experiments/bench/topk.py
# (lax.top_k's sort is hard to beat on CPU; the bisection kernel avoids the sort on
# GPU/TPU). approx is exact only where it sorts, so "auto" never picks it.
AUTO_IMPL = {"cpu": "lax", "gpu": "pallas", "cuda": "pallas", "rocm": "lax", "tpu": "pallas"}

APPROX_RECALL = 0.95


@functools.cache
def _announce(backend: str, impl: str) -> None:
    log.info("sparsejax.ops.topk: impl='auto' resolves to %r on backend %r", impl, backend)


def resolve_impl(impl: str = "auto", backend: str | None = None) -> str:
    """The concrete implementation ``impl`` stands for on ``backend`` (default backend if None)."""
    if impl not in IMPLS:
        raise ValueError(f"topk impl={impl!r} is not known; expected one of {IMPLS}")
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    chosen = AUTO_IMPL.get(backend, "lax")
    _announce(backend, chosen)
    return chosen


def _is_concrete(k) -> bool:
    return not isinstance(k, jax.core.Tracer)


def _static_bounds(x, k, k_max) -> tuple[int, int]:
    """Validated (N, k_max) for a row length N; k_max is clipped to N."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"topk expects a floating-point x, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"topk expects x of shape [..., N] with ndim >= 1, got shape {x.shape}")
    n = x.shape[-1]
    if k_max is not None:
        k_max = operator.index(k_max)
        if k_max < 0:
            raise ValueError(f"topk k_max={k_max} must be >= 0")
    if _is_concrete(k):
        k_arr = np.asarray(k)
        if k_arr.ndim != 0 or not np.issubdtype(k_arr.dtype, np.integer):
            raise TypeError(f"topk k must be an integer scalar, got {k!r}")
        k_int = int(k_arr)
        if k_int < 0:
            raise ValueError(f"topk k={k_int} must be >= 0")
        if k_max is None:
            k_max = k_int
        elif k_int > k_max:
            raise ValueError(f"topk k={k_int} exceeds its static bound k_max={k_max}")
    else:
        if jnp.ndim(k) != 0 or not jnp.issubdtype(k.dtype, jnp.integer):
            raise TypeError(f"topk k must be an integer scalar, got {k.dtype}{list(k.shape)}")
        if k_max is None:
            k_max = n
    return n, min(k_max, n)


# ----------------------------------------------------------------------------- order keys


def order_key(x: jax.Array) -> jax.Array:
    """int32 keys whose signed order is the IEEE total order of ``x`` (same shape).

    Positive floats keep their bits; negative ones flip the magnitude bits so that a larger
    magnitude sorts lower. NaN sits beyond +-inf by its sign bit, -0.0 just below +0.0.
    """
    bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    return bits ^ ((bits >> 31) & jnp.int32(0x7FFFFFFF))


# ----------------------------------------------------------------------------- backends
# Each backend maps (x_BxN, k, k_max) to (values_Bxk, indices_Bxk) with slots >= k zeroed
# (values_indices), or to the keep mask (dense). B is flattened leading dims.


def _slot_mask(k, k_max):
    return jnp.arange(k_max, dtype=jnp.int32) < jnp.clip(k, 0, k_max)


def _vi_lax(x_BxN, k, k_max):
    v_Bxk, i_Bxk = lax.top_k(x_BxN, k_max)
    return v_Bxk, i_Bxk


def _vi_approx(x_BxN, k, k_max):
    v_Bxk, i_Bxk = lax.approx_max_k(x_BxN, k_max, recall_target=APPROX_RECALL)
    return v_Bxk, i_Bxk.astype(jnp.int32)


def _keep_from_indices(i_Bxk, slot_k, n):
    """Dense bool [B, N] mask with True at the first k (runtime) slots' indices."""
    b = i_Bxk.shape[0]
    rows_Bx1 = jnp.arange(b, dtype=jnp.int32)[:, None]
    return jnp.zeros((b, n), bool).at[rows_Bx1, i_Bxk].set(
        jnp.broadcast_to(slot_k, i_Bxk.shape), mode="drop", unique_indices=True)


def _keep(x_BxN, k, k_max, impl):
    """The bool keep mask of the top-k of each row (no gradient flows through it)."""
    if k_max == 0:
        return jnp.zeros(x_BxN.shape, bool)
    if impl == "pallas":
        from sparsejax.ops import pallas_topk

        return pallas_topk.topk_keep(x_BxN, k)
    vi = _vi_lax if impl == "lax" else _vi_approx
    _, i_Bxk = vi(x_BxN, k, k_max)
    return _keep_from_indices(i_Bxk, _slot_mask(k, k_max), x_BxN.shape[-1])


def _values_indices(x_BxN, k, k_max, impl):
    if impl == "pallas":
        from sparsejax.ops import pallas_topk

        keep_BxN = pallas_topk.topk_keep(x_BxN, k)
        return _compact(x_BxN, keep_BxN, k, k_max)
    vi = _vi_lax if impl == "lax" else _vi_approx
    v_Bxk, i_Bxk = vi(x_BxN, k, k_max)
    return jnp.where(_slot_mask(k, k_max), v_Bxk, 0), i_Bxk


def _compact(x_BxN, keep_BxN, k, k_max):
    """(values, indices) [B, k_max] of the kept entries in lax.top_k's order, from a mask.

    The kept entries are gathered in index order by a prefix sum (O(N), no sort of the
    row), then the k_max candidates are ordered by value; ties stay in index order, which
    is lax.top_k's tie rule. Unused slots take the largest dropped entries' indices so
    that, like lax, every slot names a distinct valid index.
    """
    b, n = x_BxN.shape
    kept_Bxk_idx = _first_true_indices(keep_BxN, k_max)
    # Unused slots (runtime k < k_max): fill with distinct indices of dropped entries.
    drop_Bxk_idx = _first_true_indices(~keep_BxN, k_max)
    slot_k = _slot_mask(k, k_max)
    n_kept_Bx1 = keep_BxN.sum(-1, keepdims=True, dtype=jnp.int32)
    slot_Bxk = jnp.broadcast_to(jnp.arange(k_max, dtype=jnp.int32), (b, k_max))
    fill_Bxk = jnp.take_along_axis(drop_Bxk_idx, jnp.clip(slot_Bxk - n_kept_Bx1, 0, k_max - 1),
                                   axis=-1)
    i_Bxk = jnp.where(slot_Bxk < n_kept_Bx1, kept_Bxk_idx, fill_Bxk)
    v_Bxk = jnp.take_along_axis(x_BxN, i_Bxk, axis=-1)
    # Order the kept slots by value (a sort of k_max, not N); dropped fill slots go last.
    key_Bxk = jnp.where(slot_Bxk < n_kept_Bx1, order_key(v_Bxk), jnp.iinfo(jnp.int32).min)
    _, perm_Bxk = lax.top_k(key_Bxk, k_max)
    i_Bxk = jnp.take_along_axis(i_Bxk, perm_Bxk, axis=-1)
    v_Bxk = jnp.take_along_axis(v_Bxk, perm_Bxk, axis=-1)
    return jnp.where(slot_k, v_Bxk, 0), i_Bxk


def _first_true_indices(mask_BxN, m):
    """Indices of the first m True entries of each row, in index order ([B, m], -1 if absent)."""
    b, n = mask_BxN.shape
    pos_BxN = jnp.cumsum(mask_BxN, axis=-1, dtype=jnp.int32) - 1
    pos_BxN = jnp.where(mask_BxN & (pos_BxN < m), pos_BxN, m)  # m: dropped by the scatter
    rows_Bx1 = jnp.arange(b, dtype=jnp.int32)[:, None]
    cols_BxN = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    return jnp.full((b, m), -1, jnp.int32).at[rows_Bx1, pos_BxN].set(cols_BxN, mode="drop")


# ----------------------------------------------------------------------------- custom VJPs


def _topk_dense_fwd(x_BxN, k, k_max, impl):
    """Forward pass and its residual: the keep mask, or for pallas the per-row threshold."""
    if impl == "pallas" and k_max > 0:
        from sparsejax.ops import pallas_topk

        y_BxN, t_B, j_B = pallas_topk.topk_threshold(x_BxN, k)
        return y_BxN, (x_BxN, t_B, j_B)  # O(B) residual beside x, which the caller holds
    keep_BxN = _keep(x_BxN, k, k_max, impl)
    return jnp.where(keep_BxN, x_BxN, 0), (keep_BxN,)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _topk_dense(x_BxN, k, k_max, impl):
    return _topk_dense_fwd(x_BxN, k, k_max, impl)[0]


def _topk_dense_bwd(k_max, impl, res, g_BxN):
    if len(res) == 3:
        from sparsejax.ops import pallas_topk

        keep_BxN = pallas_topk.keep_from_threshold(*res)
    else:
        (keep_BxN,) = res
    return jnp.where(keep_BxN, g_BxN, 0), None


_topk_dense.defvjp(_topk_dense_fwd, _topk_dense_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _topk_vi(x_BxN, k, k_max, impl):
    return _values_indices(x_BxN, k, k_max, impl)


def _topk_vi_fwd(x_BxN, k, k_max, impl):
    v_Bxk, i_Bxk = _values_indices(x_BxN, k, k_max, impl)
    # The zeros carry N and the dtype to the backward pass without a static argument.
    return (v_Bxk, i_Bxk), (i_Bxk, k, jnp.zeros((0, x_BxN.shape[1]), x_BxN.dtype))


def _topk_vi_bwd(k_max, impl, res, g):
    i_Bxk, k, like_0xN = res
    gv_Bxk = jnp.where(_slot_mask(k, k_max), g[0], 0).astype(like_0xN.dtype)
    b, n = i_Bxk.shape[0], like_0xN.shape[1]
    rows_Bx1 = jnp.arange(b, dtype=jnp.int32)[:, None]
    gx_BxN = jnp.zeros((b, n), like_0xN.dtype).at[rows_Bx1, i_Bxk].add(
        gv_Bxk, unique_indices=True)
    return gx_BxN, None


_topk_vi.defvjp(_topk_vi_fwd, _topk_vi_bwd)


# ----------------------------------------------------------------------------- public API


def _prepare(x, k, impl, k_max):
    n, k_max = _static_bounds(x, k, k_max)
    impl = resolve_impl(impl)
    whole_row = _is_concrete(k) and k_max == n and int(k) >= n
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, k_max)
    return x.reshape(-1, n), k, k_max, impl, whole_row


def topk(x: jax.Array, k: Any, impl: str = "auto", *, k_max: int | None = None) -> jax.Array:
    """Keep the k largest entries of each row of x ``[..., N]``, zero the rest.

    Args:
      x: float ``[..., N]``; rows along the last axis.
      k: int or traced int32 scalar, clipped to ``[0, min(k_max, N)]`` at run time.
      impl: ``"auto" | "lax" | "approx" | "pallas"`` (see the module docstring).
      k_max: static upper bound on k (default ``k`` for a Python int, else N).

    Returns:
      ``[..., N]`` with x at the kept positions and 0 elsewhere.
    """
    x_BxN, k, k_max, impl, whole_row = _prepare(x, k, impl, k_max)
    if whole_row:
        return x  # k >= N keeps the whole row; identity (and its gradient) is exact
    return _topk_dense(x_BxN, k, k_max, impl).reshape(x.shape)


def topk_values_indices(x: jax.Array, k: Any, impl: str = "auto", *,
                        k_max: int | None = None) -> tuple[jax.Array, jax.Array]:
    """The k largest entries of each row of x ``[..., N]`` and where they are.

    Returns:
      ``(values [..., k_max], indices [..., k_max] int32)``, values in descending order
      (ties: lower index first). Slots at or beyond the runtime k have value 0. The
      gradient w.r.t. x is the value cotangent scattered to ``indices``.
    """
    x_BxN, k, k_max, impl, _ = _prepare(x, k, impl, k_max)
    if k_max == 0:
        empty = x.shape[:-1] + (0,)
        return jnp.zeros(empty, x.dtype), jnp.zeros(empty, jnp.int32)
    v_Bxk, i_Bxk = _topk_vi(x_BxN, k, k_max, impl)
    out_shape = x.shape[:-1] + (k_max,)
    return v_Bxk.reshape(out_shape), i_Bxk.reshape(out_shape)
