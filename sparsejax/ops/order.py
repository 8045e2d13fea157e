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


def keep_from_threshold(x_BxN: jax.Array, t_B: jax.Array, j_B: jax.Array) -> jax.Array:
    """The bool keep mask ``[B, N]`` of (threshold key t ``[B]``, tie cut j ``[B]``)."""
    key_BxN = order_key(x_BxN)
    idx_BxN = lax.broadcasted_iota(jnp.int32, x_BxN.shape, x_BxN.ndim - 1)
    t_Bx1, j_Bx1 = t_B[..., None], j_B[..., None]
    return (key_BxN > t_Bx1) | ((key_BxN == t_Bx1) & (idx_BxN < j_Bx1))
