"""Top-k under a device mesh.

Two layouts:

* ``topk_sharded``: rows sharded over a batch axis, each row whole on one device. Every
  device runs ``topk`` on its rows inside ``shard_map`` (so a Pallas kernel sees plain
  local arrays); the top-k axis is replicated by construction, never split.
* ``topk_latent_sharded``: each row split over a model axis (a dictionary too wide for one
  device). Exact, with O(k) communication per row instead of gathering N:
  every global top-k entry is in its own shard's top-k (at most k-1 entries outrank it
  anywhere), so each device sends its local top-k order keys, all devices find the global
  k-th key t, and each keeps its entries above t plus its share of the ties at t, which
  go to the lowest global indices (devices hold consecutive column blocks), as lax.top_k.

The gradient of both is the cotangent at the kept positions (``where(keep, g, 0)``).
Both place x on the mesh themselves (``jax.reshard``); as for any op on explicitly
sharded arrays, eager (un-jitted) use needs ``jax.set_mesh(mesh)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sparsejax.ops.order import order_key
from sparsejax.ops.topk import topk


def _axis_size(mesh: Mesh, axis) -> int:
    names = axis if isinstance(axis, tuple) else (axis,)
    for name in names:
        if name not in mesh.axis_names:
            raise ValueError(f"mesh axis {name!r} not in the mesh's axes {mesh.axis_names}")
    size = 1
    for name in names:
        size *= mesh.shape[name]
    return size


def _place(x, mesh: Mesh, spec: P) -> jax.Array:
    """x laid out as ``spec`` on ``mesh`` (a no-op when it already is)."""
    return jax.reshard(x, NamedSharding(mesh, spec))


def topk_sharded(x: jax.Array, k, mesh: Mesh, *, batch_axis="data", impl: str = "auto",
                 k_max: int | None = None) -> jax.Array:
    """``topk`` of x ``[B, N]`` with rows sharded over ``batch_axis`` of ``mesh``.

    B must divide by the size of ``batch_axis``; k may be traced (it is replicated).
    """
    if x.ndim != 2:
        raise ValueError(f"topk_sharded expects x of shape [B, N], got {x.shape}")
    n_dev = _axis_size(mesh, batch_axis)
    if x.shape[0] % n_dev:
        raise ValueError(f"topk_sharded: batch {x.shape[0]} does not divide over mesh axis "
                         f"{batch_axis!r} of size {n_dev}")
    if k_max is None:  # k enters shard_map as a traced value: bound it by the static k
        k_max = x.shape[1] if isinstance(k, jax.core.Tracer) else int(k)
    if k_max < 0:
        raise ValueError(f"topk_sharded k={k_max} must be >= 0")

    def local(x_bxN, k):
        return topk(x_bxN, k, impl=impl, k_max=k_max)

    spec = P(batch_axis, None)
    # check_vma=False: a pallas_call's outputs carry no varying-axes annotation.
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, P()), out_specs=spec,
                         check_vma=False)(_place(x, mesh, spec), jnp.asarray(k, jnp.int32))


def topk_latent_sharded(x: jax.Array, k, mesh: Mesh, *, axis="model", batch_axis=None,
                        k_max: int | None = None) -> jax.Array:
    """``topk`` of x ``[B, N]`` whose rows are split over mesh axis ``axis`` (exact).

    Args:
      x: float ``[B, N]``; N divides over ``axis``, B over ``batch_axis`` (if given).
      k: int or traced int32 scalar, clipped to ``[0, k_max]``.
      k_max: static bound on k (default: k for a Python int, else N); each device sends
        ``min(k_max, N_local)`` keys per row to the others.

    Returns:
      ``[B, N]`` sharded like x: the global top-k kept, the rest zero.
    """
    if x.ndim != 2:
        raise ValueError(f"topk_latent_sharded expects x of shape [B, N], got {x.shape}")
    n_dev = _axis_size(mesh, axis)
    if batch_axis is not None and x.shape[0] % _axis_size(mesh, batch_axis):
        raise ValueError(f"topk_latent_sharded: batch {x.shape[0]} does not divide over mesh "
                         f"axis {batch_axis!r}")
    b, n = x.shape
    if n % n_dev:
        raise ValueError(f"topk_latent_sharded: row length N={n} does not divide over mesh "
                         f"axis {axis!r} of size {n_dev}")
    traced = isinstance(k, jax.core.Tracer)
    if not traced and int(k) < 0:
        raise ValueError(f"topk_latent_sharded k={int(k)} must be >= 0")
    if k_max is None:
        k_max = n if traced else int(k)
    if not traced and int(k) > k_max:
        raise ValueError(f"topk_latent_sharded k={int(k)} exceeds its static bound "
                         f"k_max={k_max}")
    k_max = min(k_max, n)
    n_loc = n // n_dev
    k_loc = min(k_max, n_loc)

    def local(x_bxn, k):
        k = jnp.clip(k, 0, k_max)
        key_bxn = order_key(x_bxn)
        # Global k-th largest key from the union of per-device top-k keys.
        cand_bxc = lax.top_k(key_bxn, k_loc)[0] if k_loc else key_bxn[:, :0]
        cand_bxC = lax.all_gather(cand_bxc, axis, axis=1, tiled=True)
        if k_max:
            top_bxK = lax.top_k(cand_bxC, k_max)[0]
            t_bx1 = jnp.take_along_axis(top_bxK, jnp.maximum(k - 1, 0)[None, None], axis=1)
        else:
            t_bx1 = jnp.zeros((x_bxn.shape[0], 1), jnp.int32)
        # k = 0 keeps nothing: no key is above INT32_MAX and no tie share is granted.
        t_bx1 = jnp.where(k > 0, t_bx1, jnp.iinfo(jnp.int32).max)
        gt_bxn, eq_bxn = key_bxn > t_bx1, key_bxn == t_bx1
        n_gt_bx1 = lax.psum(gt_bxn.sum(1, keepdims=True, dtype=jnp.int32), axis)
        n_eq_bxD = lax.all_gather(eq_bxn.sum(1, dtype=jnp.int32), axis, axis=1)
        me = lax.axis_index(axis)
        eq_before_bx1 = jnp.sum(jnp.where(jnp.arange(n_dev) < me, n_eq_bxD, 0), 1, keepdims=True)
        share_bx1 = k - n_gt_bx1 - eq_before_bx1  # ties this device may keep, lowest first
        tie_rank_bxn = jnp.cumsum(eq_bxn, axis=1, dtype=jnp.int32)
        keep_bxn = gt_bxn | (eq_bxn & (tie_rank_bxn <= share_bx1))
        return jnp.where(keep_bxn, x_bxn, 0)

    spec = P(batch_axis, axis)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, P()), out_specs=spec)(
        _place(x, mesh, spec), jnp.asarray(k, jnp.int32))
