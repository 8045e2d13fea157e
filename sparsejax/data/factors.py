"""The grid of ground-truth factors behind a factor dataset.

A factor dataset is the Cartesian product of F discrete factors with sizes
``sizes``; every point of the grid is one image. Points are numbered in row-major
order (the last factor varies fastest), which is the storage order of both
dSprites (position y fastest) and Shapes3D (orientation fastest).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def as_key(key) -> jax.Array:
    """Accepts a typed ``jax.random.key`` or a raw ``uint32[2]`` PRNGKey; returns a typed key."""
    if isinstance(key, int):
        raise TypeError(f"expected a jax.random.key or a raw uint32[2] key, got the int {key}; "
                        "use jax.random.key(seed)")
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
        raise TypeError(f"expected a jax.random.key or a raw uint32[2] key, got dtype {key.dtype} "
                        f"shape {key.shape}")
    return jax.random.wrap_key_data(key)


@dataclasses.dataclass(frozen=True)
class FactorSpace:
    """Names and sizes of F discrete factors; index <-> factor-tuple maps; sampling.

    Factor values are class indices ``0 .. sizes[j] - 1`` (int32).
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def __post_init__(self):
        if len(self.names) != len(self.sizes):
            raise ValueError(f"{len(self.names)} factor names for {len(self.sizes)} sizes")
        if any(s < 1 for s in self.sizes):
            raise ValueError(f"factor sizes must be positive, got {self.sizes}")

    @property
    def num_factors(self) -> int:
        return len(self.sizes)

    @property
    def num_points(self) -> int:
        """Number of grid points (images in the full dataset)."""
        return math.prod(self.sizes)

    @property
    def strides(self) -> tuple[int, ...]:
        """Row-major strides: ``index = sum_j factors[j] * strides[j]``."""
        out, acc = [], 1
        for s in reversed(self.sizes):
            out.append(acc)
            acc *= s
        return tuple(reversed(out))

    # -- index <-> factors ---------------------------------------------------------------
    def factors_to_index(self, factors_NxF):
        """Row-major grid index of each factor tuple: ``[N, F]`` int -> ``[N]`` int.

        Works on numpy (int64 result) and JAX arrays (int32, jit-able).
        """
        xp = jnp if isinstance(factors_NxF, jax.Array) else np
        factors_NxF = xp.asarray(factors_NxF)
        strides = xp.asarray(self.strides, dtype=factors_NxF.dtype if xp is jnp else np.int64)
        return (factors_NxF * strides).sum(axis=-1)

    def index_to_factors(self, index_N):
        """Inverse of :meth:`factors_to_index`: ``[N]`` int -> ``[N, F]`` int."""
        xp = jnp if isinstance(index_N, jax.Array) else np
        index_N = xp.asarray(index_N)
        strides = xp.asarray(self.strides, dtype=index_N.dtype)
        sizes = xp.asarray(self.sizes, dtype=index_N.dtype)
        return (index_N[..., None] // strides) % sizes

    # -- checks ---------------------------------------------------------------------------
    def validate(self, factors_NxF, *, what: str = "factors") -> None:
        """Raises ValueError naming the first factor out of range (host-side check).

        Skipped silently for traced values (inside jit there is nothing to check on the host).
        """
        if isinstance(factors_NxF, jax.core.Tracer):
            return
        f = np.asarray(factors_NxF)
        if f.ndim != 2 or f.shape[1] != self.num_factors:
            raise ValueError(f"{what} must have shape [N, {self.num_factors}] "
                             f"({', '.join(self.names)}), got shape {f.shape}")
        if not np.issubdtype(f.dtype, np.integer):
            raise ValueError(f"{what} must be integer class indices, got dtype {f.dtype}")
        for j, (name, size) in enumerate(zip(self.names, self.sizes)):
            col = f[:, j]
            bad = (col < 0) | (col >= size)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"{what}[{i}, {j}] = {int(col[i])} is out of range for factor "
                                 f"'{name}': expected 0 <= value < {size}")

    # -- sampling -------------------------------------------------------------------------
    def sample(self, key, n: int) -> jax.Array:
        """``n`` factor tuples drawn i.i.d. uniformly over the grid: int32 ``[n, F]``. jit-able."""
        keys = jax.random.split(as_key(key), self.num_factors)
        cols = [jax.random.randint(k, (n,), 0, s, dtype=jnp.int32) for k, s in zip(keys, self.sizes)]
        return jnp.stack(cols, axis=-1)

    def sample_fixed(self, key, n: int, fixed: int | Sequence[int] | jax.Array) -> jax.Array:
        """``n`` factor tuples where the factors ``fixed`` share one random value across the batch.

        The other factors vary i.i.d. uniformly. This is the batch the FactorVAE score
        (one factor fixed) and the BetaVAE score (pairs sharing one factor) are built from.
        ``fixed`` may be a traced int (one factor) or a static sequence of factor ids.
        Returns int32 ``[n, F]``.
        """
        # static ids are checked on the host (inside a jit, jnp.asarray of them is a tracer)
        if not isinstance(fixed, jax.core.Tracer):
            bad = [int(v) for v in np.atleast_1d(np.asarray(fixed))
                   if not 0 <= int(v) < self.num_factors]
            if bad:
                raise ValueError(f"fixed factor ids {bad} out of range: expected 0 <= id < "
                                 f"{self.num_factors} ({', '.join(self.names)})")
        k_free, k_fix = jax.random.split(as_key(key))
        free = self.sample(k_free, n)
        one = self.sample(k_fix, 1)  # [1, F]: the shared values
        fixed_arr = jnp.atleast_1d(jnp.asarray(fixed, dtype=jnp.int32))
        mask_F = (jnp.arange(self.num_factors)[:, None] == fixed_arr[None, :]).any(axis=1)
        return jnp.where(mask_F[None, :], one, free)
