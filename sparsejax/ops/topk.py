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
  value 0 and the index ``lax.top_k(x, k_max)`` puts there (valid and distinct), so a
  decoder may read them safely: a zero contributes nothing.
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
* ``"radix"``: the pallas kernel's bisection written in plain XLA ops
  (:func:`sparsejax.ops.order.threshold_radix`: 32 compare-and-count passes over each
  row's order keys, then the tie cut); the dense op only, ``topk_values_indices`` is
  ``lax``'s (ordered values need a sort). On CPU the fastest exact dense path where the
  bound k_max is a large share of the row (a traced k: k_max = N); ``lax`` below that.
* ``"auto"``: ``resolve_impl("auto", n=N, op=...)`` picks per backend and row length (see
  ``AUTO_IMPL``) and logs its choice once per (backend, choice).
"""

# Shape letters: B rows (the leading dims of x flattened), N units (a row: the top-k axis),
# k slots (the static bound k_max on the runtime k).

from __future__ import annotations

import functools
import logging
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from sparsejax.ops.order import keep_from_threshold, order_key, threshold_radix

log = logging.getLogger(__name__)

IMPLS = ("auto", "lax", "approx", "pallas", "radix")

# The fastest exact path per backend: (impl, least row length N at which it is used for
# the dense op, and for values/indices), else "lax". From experiments/bench/topk.py on an
# H100: pallas beats lax.top_k by 1.2x at N=4096 and 1.5-1.8x from N=16384 on the dense
# op; for values/indices (its compaction costs a prefix sum) only from N=16384. TPU:
# unmeasured here; the kernel avoids XLA:TPU's sort. approx is exact only where it sorts,
# so "auto" never picks it. CPU (the Pallas kernel would run interpreted): radix for the
# dense op where the bound k_max is large (RADIX_K_FRACTION), values/indices by lax.top_k
# (they must be ordered).
AUTO_IMPL = {"cpu": ("radix", 0, 0), "gpu": ("pallas", 4096, 16384),
             "cuda": ("pallas", 4096, 16384), "rocm": ("lax", 0, 0), "tpu": ("pallas", 0, 0)}
# radix's 32 passes cost the same at any k; lax.top_k's cost grows with k_max, up to a full
# sort at k_max = N (a traced k, as in the models). On a 2-core CPU (python -m experiments
# bench --only topk_traced_k), radix over lax: at [64, 500] 5.95x with k_max = N, 2.84x at
# N / 4, 0.31x at N / 64; at [1024, 4096] 2.59x, 2.29x, 0.36x (and at [4096, 16384] 2.6x
# at N, 0.36x at k_max = 256, timed apart). So radix from k_max >= N / RADIX_K_FRACTION:
# conservative, it leaves some wins to lax (a static k = 50 at [64, 500]: radix 1.66x in
# the topk bench), never a measured loss to radix.
RADIX_K_FRACTION = 8

APPROX_RECALL = 0.95


@functools.cache
def _announce(backend: str, impl: str) -> None:
    log.info("sparsejax.ops.topk: impl='auto' resolves to %r on backend %r", impl, backend)


def resolve_impl(impl: str = "auto", backend: str | None = None, *, n: int | None = None,
                 op: str = "topk", k_max: int | None = None) -> str:
    """The implementation ``impl`` stands for on ``backend`` (default: the default backend)
    for rows of length ``n`` (None: long rows), ``op`` ("topk" or "values_indices") and the
    static bound ``k_max`` on k (None: unknown, taken as large)."""
    if impl not in IMPLS:
        raise ValueError(f"topk impl={impl!r} is not known; expected one of {IMPLS}")
    if op not in ("topk", "values_indices"):
        raise ValueError(f"resolve_impl op={op!r}; expected 'topk' or 'values_indices'")
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    fast, n_dense, n_vi = AUTO_IMPL.get(backend, ("lax", 0, 0))
    least = n_dense if op == "topk" else n_vi
    chosen = fast if n is None or n >= least else "lax"
    if chosen == "radix" and (op == "values_indices" or (
            n is not None and k_max is not None and k_max * RADIX_K_FRACTION < n)):
        chosen = "lax"
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


# ----------------------------------------------------------------------------- backends
# A dense top-k is described per row by a threshold key t and a tie cut j (see
# sparsejax.ops.order). Everything row-wise is written without cross-row scatters (vmap
# instead), so that it keeps the batch sharding of x under an explicit mesh.


def _slot_mask(k, k_max):
    return jnp.arange(k_max, dtype=jnp.int32) < jnp.clip(k, 0, k_max)


def _vi_lax(x_BxN, k_max):
    return lax.top_k(x_BxN, k_max)


def _vi_approx(x_BxN, k_max):
    v_Bxk, i_Bxk = lax.approx_max_k(x_BxN, k_max, recall_target=APPROX_RECALL)
    return v_Bxk, i_Bxk.astype(jnp.int32)


def _threshold_lax(x_BxN, k, k_max):
    """(t, j) from lax.top_k: slot k-1 holds the k-th key and, among ties, the last index kept."""
    v_Bxk, i_Bxk = _vi_lax(x_BxN, k_max)
    slot = jnp.maximum(k - 1, 0)
    t_B = order_key(v_Bxk[:, slot])
    j_B = i_Bxk[:, slot] + 1
    return jnp.where(k > 0, t_B, jnp.iinfo(jnp.int32).max), jnp.where(k > 0, j_B, 0)


def _row_scatter(n, fill, i_Bxk, upd_Bxk, add=False):
    """``out[b, i[b, j]] = upd[b, j]`` (or +=) into ``[B, n]`` filled with ``fill``.

    ``upd`` is ``[B, k]`` or one ``[k]`` row for all. Written per row under vmap so that
    the batch sharding of i carries over to the result.
    """
    def scatter_row(i_k, upd_k):
        ref = jnp.full((n,), fill, upd_k.dtype).at[i_k]
        return ref.add(upd_k, mode="drop") if add else ref.set(upd_k, mode="drop")

    return jax.vmap(scatter_row, in_axes=(0, 0 if upd_Bxk.ndim == 2 else None))(i_Bxk, upd_Bxk)


def _dense_fwd(x_BxN, k, k_max, impl):
    """``(where(keep, x, 0), residual)``; the residual is what the backward pass needs."""
    if k_max == 0:
        return jnp.zeros_like(x_BxN), (jnp.zeros(x_BxN.shape, bool),)
    if impl == "pallas":
        from sparsejax.ops import pallas_topk  # on first use: importing Pallas takes ~0.6 s

        y_BxN, t_B, j_B = pallas_topk.topk_threshold(x_BxN, k)
        return y_BxN, (x_BxN, t_B, j_B)  # O(B) beside x, which the caller holds anyway
    if impl in ("lax", "radix"):
        pair = _threshold_lax(x_BxN, k, k_max) if impl == "lax" else threshold_radix(x_BxN, k)
        keep_BxN = keep_from_threshold(x_BxN, *pair)
    else:  # approx: its (possibly approximate) indices define the set
        _, i_Bxk = _vi_approx(x_BxN, k_max)
        keep_BxN = _row_scatter(x_BxN.shape[1], False, i_Bxk, _slot_mask(k, k_max))
    return jnp.where(keep_BxN, x_BxN, 0), (keep_BxN,)  # a bool mask: 1 byte per entry


def _values_indices(x_BxN, k, k_max, impl):
    if impl == "pallas":
        from sparsejax.ops import pallas_topk

        # Select the top k_max (the static bound), not k: its first k slots in value order
        # are the top k, and the rest are what lax.top_k(x, k_max) puts there too.
        _, t_B, j_B = pallas_topk.topk_threshold(x_BxN, jnp.int32(k_max), write_values=False)
        v_Bxk, i_Bxk = _compact(x_BxN, keep_from_threshold(x_BxN, t_B, j_B), k_max)
    else:
        v_Bxk, i_Bxk = (_vi_approx if impl == "approx" else _vi_lax)(x_BxN, k_max)
    return jnp.where(_slot_mask(k, k_max), v_Bxk, 0), i_Bxk


def _compact(x_BxN, keep_BxN, k_max):
    """(values, indices) ``[B, k]`` of a mask with exactly k_max kept entries per row, in
    lax.top_k's order (descending value, ties to the lower index).

    No sort of the row and no N-wide scatter: a prefix count of the mask, then a binary
    search per slot for where the count reaches it (O(N + k log N) per row); only the k
    candidates are ordered by value.
    """
    count_BxN = jnp.cumsum(keep_BxN, axis=-1, dtype=jnp.int32)
    want_k = jnp.arange(1, k_max + 1, dtype=jnp.int32)
    i_Bxk = jax.vmap(lambda count_N: jnp.searchsorted(count_N, want_k, side="left",
                                                      method="scan"))(count_BxN).astype(jnp.int32)
    v_Bxk = jnp.take_along_axis(x_BxN, i_Bxk, axis=-1)
    # Candidates are in index order, so a stable top-k on their keys breaks ties by index.
    _, perm_Bxk = lax.top_k(order_key(v_Bxk), k_max)
    return (jnp.take_along_axis(v_Bxk, perm_Bxk, axis=-1),
            jnp.take_along_axis(i_Bxk, perm_Bxk, axis=-1))


# ----------------------------------------------------------------------------- custom VJPs


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _topk_dense(x_BxN, k, k_max, impl):
    return _dense_fwd(x_BxN, k, k_max, impl)[0]


def _topk_dense_bwd(k_max, impl, res, g_BxN):
    keep_BxN = keep_from_threshold(*res) if len(res) == 3 else res[0]
    return jnp.where(keep_BxN, g_BxN, 0), None


_topk_dense.defvjp(_dense_fwd, _topk_dense_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _topk_vi(x_BxN, k, k_max, impl):
    return _values_indices(x_BxN, k, k_max, impl)


def _topk_vi_fwd(x_BxN, k, k_max, impl):
    v_Bxk, i_Bxk = _values_indices(x_BxN, k, k_max, impl)
    # The empty array carries N and the dtype to the backward pass.
    return (v_Bxk, i_Bxk), (i_Bxk, k, jnp.zeros((0, x_BxN.shape[1]), x_BxN.dtype))


def _topk_vi_bwd(k_max, impl, res, g):
    i_Bxk, k, like_0xN = res
    gv_Bxk = jnp.where(_slot_mask(k, k_max), g[0], 0).astype(like_0xN.dtype)
    return _row_scatter(like_0xN.shape[1], 0, i_Bxk, gv_Bxk, add=True), None


_topk_vi.defvjp(_topk_vi_fwd, _topk_vi_bwd)


# ----------------------------------------------------------------------------- public API


def _check_unsplit(x):
    """Refuse a top-k axis sharded over devices (explicit sharding): a per-device top-k
    there would be silently wrong, and gathering the rows should be a visible choice."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    if spec is not None and x.ndim and len(spec) == x.ndim and spec[-1] is not None:
        raise ValueError(
            f"topk: the top-k axis (last) of x {jax.typeof(x)} is sharded over mesh axis "
            f"{spec[-1]!r}; expected it unsharded. Use sparsejax.ops.topk_latent_sharded "
            "for rows split over devices, or reshard x to P(..., None).")


def _per_device(fn, x_BxN, k):
    """Run ``fn(x_BxN, k)`` per device via shard_map when rows are sharded explicitly.

    A Pallas kernel has no sharding rule: handed a sharded operand it would be gathered.
    The top-k axis is unsharded (checked), so the kernel runs on each device's rows as is.
    """
    sharding = getattr(jax.typeof(x_BxN), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is None or len(spec) != 2 or spec[0] is None:
        return fn(x_BxN, k)
    row_spec = P(spec[0], None)
    # check_vma=False: pallas_call's outputs carry no varying-axes annotation.
    return jax.shard_map(fn, mesh=sharding.mesh, in_specs=(row_spec, P()),
                         out_specs=row_spec, check_vma=False)(x_BxN, k)


def _prepare(x, k, impl, k_max, op):
    n, k_max = _static_bounds(x, k, k_max)
    _check_unsplit(x)
    impl = resolve_impl(impl, n=n, op=op, k_max=k_max)
    whole_row = _is_concrete(k) and k_max == n and int(k) >= n
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, k_max)
    return x.reshape(-1, n), k, k_max, impl, whole_row


def topk(x: jax.Array, k: Any, impl: str = "auto", *, k_max: int | None = None) -> jax.Array:
    """Keep the k largest entries of each row of x ``[..., N]``, zero the rest.

    Args:
      x: float ``[..., N]``; rows along the last axis.
      k: int or traced int32 scalar, clipped to ``[0, min(k_max, N)]`` at run time.
      impl: ``"auto" | "lax" | "approx" | "pallas" | "radix"`` (see the module docstring).
      k_max: static upper bound on k (default ``k`` for a Python int, else N).

    Returns:
      ``[..., N]`` with x at the kept positions and 0 elsewhere.
    """
    x_BxN, k, k_max, impl, whole_row = _prepare(x, k, impl, k_max, "topk")
    if whole_row:
        return x  # k >= N keeps the whole row; identity (and its gradient) is exact
    fn = functools.partial(_topk_dense, k_max=k_max, impl=impl)
    y_BxN = _per_device(fn, x_BxN, k) if impl == "pallas" else fn(x_BxN, k)
    return y_BxN.reshape(x.shape)


def topk_values_indices(x: jax.Array, k: Any, impl: str = "auto", *,
                        k_max: int | None = None) -> tuple[jax.Array, jax.Array]:
    """The k largest entries of each row of x ``[..., N]`` and where they are.

    Returns:
      ``(values [..., k_max], indices [..., k_max] int32)``, values in descending order
      (ties: lower index first). Slots at or beyond the runtime k have value 0. The
      gradient w.r.t. x is the value cotangent scattered to ``indices``.
    """
    x_BxN, k, k_max, impl, _ = _prepare(x, k, impl, k_max, "values_indices")
    if k_max == 0:
        empty = x.shape[:-1] + (0,)
        return jnp.zeros(empty, x.dtype), jnp.zeros(empty, jnp.int32)
    fn = functools.partial(_topk_vi, k_max=k_max, impl=impl)
    v_Bxk, i_Bxk = _per_device(fn, x_BxN, k) if impl == "pallas" else fn(x_BxN, k)
    out_shape = x.shape[:-1] + (k_max,)
    return v_Bxk.reshape(out_shape), i_Bxk.reshape(out_shape)
