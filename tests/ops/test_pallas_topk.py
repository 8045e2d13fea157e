"""The Pallas threshold-search kernel (interpret mode on CPU) against lax.top_k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sparsejax.ops import pallas_topk
from sparsejax.ops.order import keep_from_threshold


def lax_keep(x, k):
    _, i = lax.top_k(x, k)
    return np.asarray(jnp.zeros(x.shape, bool).at[jnp.arange(x.shape[0])[:, None], i].set(True))


@pytest.mark.parametrize("b,n,k,chunk,rows", [
    (5, 500, 50, None, None),     # padded row (512) and padded rows (8)
    (3, 500, 50, 128, 2),         # streamed: 4 chunks per row
    (4, 1024, 1, 256, 4),
    (2, 300, 299, 64, 1),         # k near N, 5 chunks
    (7, 96, 0, 32, None),
])
def test_kernel_matches_lax(b, n, k, chunk, rows, rng):
    x = jnp.asarray(rng.standard_normal((b, n)), jnp.float32)
    y, t, j = pallas_topk.topk_threshold(x, k, chunk=chunk, block_rows=rows)
    keep = lax_keep(x, k)
    np.testing.assert_array_equal(y, np.where(keep, x, 0))
    np.testing.assert_array_equal(keep_from_threshold(x, t, j), keep)


@pytest.mark.parametrize("chunk", [None, 32])
def test_kernel_ties_and_per_row_k(chunk, rng):
    # heavy ties: integers in a small range, ties broken to the lowest index like lax
    x = jnp.asarray(rng.integers(-3, 3, size=(6, 128)), jnp.float32)
    ks = jnp.array([0, 1, 5, 64, 127, 128], jnp.int32)
    y, t, j = pallas_topk.topk_threshold(x, ks, chunk=chunk, block_rows=2)
    for r, k in enumerate(ks.tolist()):
        keep = lax_keep(x[r:r + 1], k)[0]
        np.testing.assert_array_equal(keep_from_threshold(x, t, j)[r], keep)
        np.testing.assert_array_equal(y[r], np.where(keep, x[r], 0))


def test_kernel_bfloat16_and_specials():
    x = jnp.array([[1.0, jnp.nan, 3.0, -jnp.nan, jnp.inf, -0.0, 0.0, -jnp.inf]], jnp.bfloat16)
    for k in range(9):
        y, t, j = pallas_topk.topk_threshold(x, k)
        keep = lax_keep(x, k)
        np.testing.assert_array_equal(keep_from_threshold(x, t, j), keep)
        assert y.dtype == jnp.bfloat16


def test_kernel_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        pallas_topk.topk_threshold(jnp.ones((2, 3, 4)), 1)
    with pytest.raises(TypeError, match="16- or 32-bit float"):
        pallas_topk.topk_threshold(jnp.ones((2, 3), jnp.float64 if jax.config.x64_enabled
                                            else jnp.int32), 1)


def test_kernel_threshold_only(rng):
    x = jnp.asarray(rng.standard_normal((3, 200)), jnp.float32)
    y, t, j = pallas_topk.topk_threshold(x, 7, write_values=False)
    assert y is None
    np.testing.assert_array_equal(keep_from_threshold(x, t, j), lax_keep(x, 7))
