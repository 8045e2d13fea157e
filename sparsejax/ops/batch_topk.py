"""BatchTopK's selection: the ``count`` largest entries of a whole batch, possibly sharded.

BatchTopK (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders") keeps the ``k B``
largest pre-activations of a batch of B rows, not k per row. Under data parallelism the
batch is split over devices, and one device's part may hold more than ``k b`` of the
batch's winners, so a per-device Top-k is not the batch's. Here the cut is found by a
radix select on the order keys (:func:`sparsejax.ops.order.order_key`), bit by bit from
the most significant: 32 passes, each a compare-and-count over the local entries and one
``psum`` of a scalar over ``axis_name``. Every device ends with the same exact threshold
key, at O(1) communication per pass, without gathering or sorting the batch.
"""

# Shape letters: B rows (this device's, inside shard_map), N units.

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sparsejax.ops.order import kth_key, unsigned_key


def batch_topk(x_BxN: jax.Array, count, *, axis_name: str | None = None) -> jax.Array:
    """``x`` at its batch's ``count`` largest entries, 0 elsewhere (same shape), over every
    device of ``axis_name`` inside ``shard_map``.

    Exactly ``count`` entries are kept when the batch's values are distinct; ties at the
    cut are all kept. ``count`` may be traced (a schedule that moves k does not
    recompile); ``count <= 0`` keeps nothing. The gradient is the cotangent at the kept
    entries (the selection itself is piecewise constant).
    """
    if x_BxN.ndim != 2:
        raise ValueError(f"batch_topk expects x of shape [B, N], got {x_BxN.shape}")
    count = jnp.asarray(count, jnp.int32)
    total = x_BxN.size if axis_name is None else x_BxN.size * lax.psum(1, axis_name)
    key_BxN = unsigned_key(lax.stop_gradient(x_BxN))  # once: the select and the mask
    t = kth_key(key_BxN, jnp.clip(count, 1, total), axis_name=axis_name)
    return jnp.where((key_BxN >= t) & (count > 0), x_BxN, jnp.zeros_like(x_BxN))
