"""The Pallas threshold-search kernel (interpret mode on CPU) against lax.top_k.

The kernel, its keep mask and the lax.top_k reference run in one jitted call per test (each
eager op would compile its own XLA program).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sparsejax.ops import pallas_topk
from sparsejax.ops.order import keep_from_threshold


def lax_keep(x, k):
    _, i = lax.top_k(x, k)
    return jnp.zeros(x.shape, bool).at[jnp.arange(x.shape[0])[:, None], i].set(True)


def kernel_and_reference(x, k, ks_ref=None, **kw):
    """(y, keep of (t, j), lax keep) in one program; the lax keep is per row for ks_ref."""
    y, t, j = pallas_topk.topk_threshold(x, k, **kw)
    if ks_ref is None:
        ref = lax_keep(x, k)
    else:
        ref = jnp.concatenate([lax_keep(x[r:r + 1], kr) for r, kr in enumerate(ks_ref)])
    return y, keep_from_threshold(x, t, j), ref


CASES = [
    (5, 500, 50, None, None),     # padded row (512) and padded rows (8)
    (3, 500, 50, 128, 2),         # streamed: 4 chunks per row
    (4, 1024, 1, 256, 4),
    (2, 300, 299, 64, 1),         # k near N, 5 chunks
    (7, 96, 0, 32, None),
]


def test_kernel_matches_lax(rng):
    xs = [jnp.asarray(rng.standard_normal((b, n)), jnp.float32) for b, n, *_ in CASES]

    @jax.jit  # every case in one program
    def run(xs):
        return [kernel_and_reference(x, k, chunk=chunk, block_rows=rows)
                for x, (_, _, k, chunk, rows) in zip(xs, CASES)]

    for x, case, (y, keep, keep_ref) in zip(xs, CASES, run(xs)):
        msg = f"(b, n, k, chunk, rows)={case}"
        np.testing.assert_array_equal(y, np.where(keep_ref, x, 0), err_msg=msg)
        np.testing.assert_array_equal(keep, keep_ref, err_msg=msg)


@pytest.mark.parametrize("chunk", [None, 32])
def test_kernel_ties_and_per_row_k(chunk, rng):
    # heavy ties: integers in a small range, ties broken to the lowest index like lax
    x = jnp.asarray(rng.integers(-3, 3, size=(6, 128)), jnp.float32)
    ks = [0, 1, 5, 64, 127, 128]
    y, keep, keep_ref = jax.jit(lambda x, ks_arr: kernel_and_reference(
        x, ks_arr, ks_ref=ks, chunk=chunk, block_rows=2))(x, jnp.array(ks, jnp.int32))
    for r, k in enumerate(ks):
        np.testing.assert_array_equal(keep[r], keep_ref[r], err_msg=f"row {r}, k={k}")
        np.testing.assert_array_equal(y[r], np.where(keep_ref[r], x[r], 0), err_msg=f"k={k}")


def test_kernel_bfloat16_and_specials():
    x = jnp.array([[1.0, jnp.nan, 3.0, -jnp.nan, jnp.inf, -0.0, 0.0, -jnp.inf]], jnp.bfloat16)
    # k is traced by the jitted kernel: one executable for every k; references in one program
    outs = [pallas_topk.topk_threshold(x, k) for k in range(9)]
    keeps, keep_refs = jax.jit(lambda x, tjs: (
        [keep_from_threshold(x, t, j) for t, j in tjs],
        [lax_keep(x, k) for k in range(9)]))(x, [(t, j) for _, t, j in outs])
    for k, ((y, _, _), keep, keep_ref) in enumerate(zip(outs, keeps, keep_refs)):
        np.testing.assert_array_equal(keep, keep_ref, err_msg=f"k={k}")
        assert y.dtype == jnp.bfloat16


def test_kernel_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        pallas_topk.topk_threshold(jnp.ones((2, 3, 4)), 1)
    with pytest.raises(TypeError, match="16- or 32-bit float"):
        pallas_topk.topk_threshold(jnp.ones((2, 3), jnp.float64 if jax.config.x64_enabled
                                            else jnp.int32), 1)


def test_kernel_threshold_only(rng):
    x = jnp.asarray(rng.standard_normal((3, 200)), jnp.float32)

    @jax.jit
    def run(x):
        y, t, j = pallas_topk.topk_threshold(x, 7, write_values=False)
        return y, keep_from_threshold(x, t, j), lax_keep(x, 7)

    y, keep, keep_ref = run(x)
    assert y is None
    np.testing.assert_array_equal(keep, keep_ref)
