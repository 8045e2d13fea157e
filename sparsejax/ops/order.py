"""Order keys and the threshold form of a row-wise Top-k, shared by every Top-k path.

``order_key`` maps floats to int32 keys whose signed order is the IEEE-754 total order, the
order ``lax.top_k`` ranks by. A Top-k is then described per row by a threshold key ``t`` and
a tie cut ``j``: an entry is kept iff ``key > t or (key == t and index < j)``, so ties go to
the lower indices, as in ``lax.top_k``. The ``lax`` path (:mod:`sparsejax.ops.topk`) and the
Pallas kernel (:mod:`sparsejax.ops.pallas_topk`) both produce that pair.
"""

# Shape letters: B rows, N units (a row: the top-k axis).

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def order_key(x: jax.Array) -> jax.Array:
    """int32 keys whose signed order is the IEEE total order of ``x`` (same shape).

    Positive floats keep their bits; negative ones flip the magnitude bits so that a larger
    magnitude sorts lower. NaN sits beyond +-inf by its sign bit, -0.0 just below +0.0.
    """
    bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    return bits ^ ((bits >> 31) & jnp.int32(0x7FFFFFFF))


SIGN = jnp.uint32(1 << 31)  # xor with it maps the signed key order to the unsigned order


def unsigned_key(x: jax.Array) -> jax.Array:
    """uint32 keys whose unsigned order is the IEEE total order of ``x`` (same shape)."""
    return lax.bitcast_convert_type(order_key(x), jnp.uint32) ^ SIGN


def kth_key(key_u: jax.Array, count: jax.Array, *, axis: int | None = None,
            axis_name: str | None = None) -> jax.Array:
    """The ``count``-th largest of the unsigned keys ``key_u``: the largest t with
    ``#{key >= t} >= count``, settled one bit at a time from the most significant (a radix
    select: 32 compare-and-count passes, no sort). ``axis=None``: over all entries (and
    over every device of ``axis_name``), a uint32 scalar; ``axis=-1``: per row, ``[B]``
    for keys ``[B, N]`` and ``count`` a scalar or ``[B]``. ``count`` must be in
    ``[1, entries counted]``."""
    if axis not in (None, -1):
        raise ValueError(f"kth_key axis={axis!r}: expected None (all entries) or -1 (rows)")
    shape = () if axis is None else key_u.shape[:-1]

    def settle_bit(i, t):
        cand = t | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
        c = cand if axis is None else jnp.expand_dims(cand, axis)
        n = jnp.sum(key_u >= c, axis=axis, dtype=jnp.int32)
        if axis_name is not None:
            n = lax.psum(n, axis_name)
        return jnp.where(n >= count, cand, t)

    return lax.fori_loop(0, 32, settle_bit, jnp.zeros(shape, jnp.uint32))


def threshold_radix(x_BxN: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(threshold key t ``[B]``, tie cut j ``[B]``) of each row's top ``k`` (k in ``[0, N]``,
    traced) by :func:`kth_key`, the pair ``lax.top_k`` gives: the j-th index is the one
    after the last tie at t that the top k takes (ties to the lower indices)."""
    key_BxN = unsigned_key(x_BxN)
    k1 = jnp.clip(k, 1, x_BxN.shape[-1])
    t_B = kth_key(key_BxN, k1, axis=-1)
    # the top k takes every key above t and the first `need` of the ties at t
    need_B = k1 - jnp.sum(key_BxN > t_B[:, None], -1, dtype=jnp.int32)
    ties_BxN = jnp.cumsum((key_BxN == t_B[:, None]).astype(jnp.int32), -1)
    j_B = jnp.sum(ties_BxN < need_B[:, None], -1, dtype=jnp.int32) + 1
    t_B = lax.bitcast_convert_type(t_B ^ SIGN, jnp.int32)
    return jnp.where(k > 0, t_B, jnp.iinfo(jnp.int32).max), jnp.where(k > 0, j_B, 0)


def keep_from_threshold(x_BxN: jax.Array, t_B: jax.Array, j_B: jax.Array) -> jax.Array:
    """The bool keep mask ``[B, N]`` of (threshold key t ``[B]``, tie cut j ``[B]``)."""
    key_BxN = order_key(x_BxN)
    idx_BxN = lax.broadcasted_iota(jnp.int32, x_BxN.shape, x_BxN.ndim - 1)
    t_Bx1, j_Bx1 = t_B[..., None], j_B[..., None]
    return (key_BxN > t_Bx1) | ((key_BxN == t_Bx1) & (idx_BxN < j_Bx1))
