"""sparsejax.ops.topk against lax.top_k (the oracle) and a numpy reference of the contract.

Each test computes the op under test and its lax reference (gradients included) in one
jitted call: on XLA:CPU every eager op compiles its own program, and those compiles, not
the top-k's, were the cost of this file.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sparsejax import ops
from sparsejax.ops import topk, topk_values_indices

IMPLS = ["lax", "approx", "pallas", "radix"]


def lax_dense(x, k):
    v, i = lax.top_k(x, k)
    return jnp.zeros_like(x).at[..., :].set(0).at[
        tuple(jnp.indices(i.shape)[:-1]) + (i,)].set(v)


SHAPES = [((1, 1), 1), ((3, 7), 3), ((5, 64), 8), ((2, 3, 100), 10), ((16, 500), 50),
          ((8, 1000), 1), ((4, 257), 256), ((9, 130), 130)]


def test_matches_lax_top_k(rng):
    xs = [jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape, _ in SHAPES]

    @jax.jit  # every shape and impl in one program, the lax reference computed once per shape
    def run(xs):
        return [((lax_dense(x, k), lax.top_k(x, k)),
                 {impl: (topk(x, k, impl=impl), topk_values_indices(x, k, impl=impl))
                  for impl in IMPLS})
                for x, (_, k) in zip(xs, SHAPES)]

    for (shape, k), ((y_ref, (v_ref, i_ref)), got) in zip(SHAPES, run(xs)):
        for impl, (y, (v, i)) in got.items():
            msg = f"impl={impl} shape={shape} k={k}"
            np.testing.assert_array_equal(y, y_ref, err_msg=msg)
            np.testing.assert_array_equal(v, v_ref, err_msg=msg)
            np.testing.assert_array_equal(i, i_ref, err_msg=msg)  # no ties in continuous draws


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_match_lax(impl, rng):
    x = jnp.asarray(rng.standard_normal((6, 40)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((6, 40)), jnp.float32)
    w5 = jnp.asarray(rng.standard_normal((6, 5)), jnp.float32)

    @jax.jit
    def grads(x, w, w5):
        return (jax.grad(lambda x: jnp.sum(w * topk(x, 5, impl=impl)))(x),
                jax.grad(lambda x: jnp.sum(w * lax_dense(x, 5)))(x),
                jax.grad(lambda x: jnp.sum(w5 * topk_values_indices(x, 5, impl=impl)[0]))(x),
                jax.grad(lambda x: jnp.sum(w5 * lax.top_k(x, 5)[0]))(x))

    g, g_ref, g_vi, g_vi_ref = grads(x, w, w5)
    np.testing.assert_array_equal(g, g_ref)
    np.testing.assert_array_equal(g_vi, g_vi_ref)


@pytest.mark.parametrize("impl", IMPLS)
def test_ties_keep_lower_index(impl):
    x = jnp.array([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])

    @jax.jit
    def run(x):
        # the gradient of sum(topk) is the vjp of ones: one top-k gives y and the gradient
        y, vjp = jax.vjp(lambda x: topk(x, 2, impl=impl), x)
        return y, topk_values_indices(x, 3, impl=impl)[1], vjp(jnp.ones_like(y))[0]

    y, i, g = run(x)
    np.testing.assert_array_equal(y, [[0, 2, 2, 0, 0, 0], [0] * 6])
    np.testing.assert_array_equal(i, [[1, 2, 3], [0, 1, 2]])
    # gradient goes to the chosen tie members only
    np.testing.assert_array_equal(g, [[0, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])


def test_special_values_approx(np_topk):
    """approx agrees on +-inf; its NaN and signed-zero order is unspecified (documented)."""
    inf = jnp.inf
    x = jnp.array([[1.0, -inf, 3.0, inf, -2.0, -inf]])
    ys = jax.jit(lambda x: [topk(x, k, impl="approx") for k in range(7)])(x)
    for k, y in enumerate(ys):
        np.testing.assert_array_equal(y, np_topk(x, k), err_msg=f"k={k}")


@pytest.mark.parametrize("impl", ["lax", "pallas", "radix"])
def test_special_values(impl, np_topk):
    nan, inf = jnp.nan, jnp.inf
    x = jnp.array([[1.0, nan, 3.0, -nan, inf, -0.0, 0.0, -inf]])

    @jax.jit
    def run(x):
        return (lax.top_k(x, 8), topk_values_indices(x, 8, impl=impl),
                *(topk(x, k, impl=impl) for k in (2, 7, 6)))

    (ref_v, ref_i), (v, i), y2, y7, y6 = jax.tree.map(np.asarray, run(x))
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(np.signbit(v), np.signbit(ref_v))
    # +NaN ranks first and propagates; -NaN ranks last; -inf only kept when k reaches it
    assert np.isnan(y2[0, 1]) and y2[0, 4] == inf and np.sum(y2 != 0) == 2
    assert y7[0, 7] == -inf and y7[0, 3] == 0
    np.testing.assert_array_equal(np.signbit(y6), np.signbit(np_topk(x, 6)))


@pytest.mark.parametrize("impl", IMPLS)
def test_k_zero_full_and_longer_than_row(impl, rng):
    x = jnp.asarray(rng.standard_normal((3, 10)), jnp.float32)

    @jax.jit
    def run(x):
        g = jax.grad(lambda x: topk(x, 10, impl=impl).sum())(x)
        return (topk(x, 0, impl=impl), topk(x, 10, impl=impl),
                topk(x, 25, impl=impl),  # k clipped to the row length
                topk_values_indices(x, 25, impl=impl)[0], lax.top_k(x, 10)[0],
                topk_values_indices(x, 0, impl=impl)[0], g)

    y0, y10, y25, v25, v_ref, v0, g = run(x)
    np.testing.assert_array_equal(y0, np.zeros(x.shape))
    np.testing.assert_array_equal(y10, x)
    np.testing.assert_array_equal(y25, x)
    assert v25.shape == (3, 10)
    np.testing.assert_array_equal(v25, v_ref)
    assert v0.shape == (3, 0)
    np.testing.assert_array_equal(g, np.ones(x.shape))


@pytest.mark.parametrize("impl", IMPLS)
def test_traced_k_does_not_recompile(impl, rng, np_topk):
    x = jnp.asarray(rng.standard_normal((4, 50)), jnp.float32)
    traces = []

    @jax.jit
    def f(x, k):
        traces.append(1)
        return topk(x, k, impl=impl, k_max=20), topk_values_indices(x, k, impl=impl, k_max=20)

    v_ref, i_ref = map(np.asarray, lax.top_k(x, 20))
    for k in [0, 1, 7, 20, 35]:  # 35 > k_max: clipped to 20 at run time
        y, (v, i) = f(x, jnp.int32(k))
        v = np.asarray(v)
        kk = min(k, 20)
        np.testing.assert_array_equal(y, np_topk(x, kk))
        assert v.shape == (4, 20)
        np.testing.assert_array_equal(v[:, :kk], v_ref[:, :kk])
        np.testing.assert_array_equal(v[:, kk:], 0)
        np.testing.assert_array_equal(i, i_ref)  # unused slots too
    assert len(traces) == 1
    # default bound for a traced k is the row length
    y = jax.jit(lambda x, k: topk(x, k, impl=impl))(x, jnp.int32(49))
    np.testing.assert_array_equal(y, np_topk(x, 49))


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_with_per_example_k(impl, rng, np_topk):
    x_np = rng.standard_normal((3, 5, 33)).astype(np.float32)
    ks = [1, 4, 9]

    @jax.jit
    def run(x, ks):
        y = jax.vmap(lambda x, k: topk(x, k, impl=impl, k_max=9))(x, ks)
        return y, jax.vmap(jax.grad(lambda x: topk(x, 4, impl=impl).sum()))(x)

    y, g = run(jnp.asarray(x_np), jnp.array(ks, jnp.int32))
    for b in range(3):
        np.testing.assert_array_equal(y[b], np_topk(x_np[b], ks[b]))
    np.testing.assert_array_equal(g, np_topk(x_np, 4) != 0)


def test_bfloat16_rows(rng, np_topk):
    x = jnp.asarray(rng.standard_normal((4, 300)), jnp.bfloat16)
    ys = jax.jit(lambda x: [topk(x, 17, impl=impl) for impl in IMPLS])(x)
    ref = np_topk(np.asarray(x, np.float32), 17)
    for impl, y in zip(IMPLS, ys):
        assert y.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(y, np.float32), ref, err_msg=impl)


def test_bad_input_errors():
    x = np.ones((2, 5), np.float32)  # numpy: the checks run before anything is traced
    with pytest.raises(ValueError, match="impl='fast'"):
        topk(x, 2, impl="fast")
    with pytest.raises(ValueError, match="k=-1"):
        topk(x, -1)
    with pytest.raises(ValueError, match="k=4 exceeds its static bound k_max=3"):
        topk(x, 4, k_max=3)
    with pytest.raises(TypeError, match="floating-point"):
        topk(np.ones((2, 5), np.int32), 2)
    with pytest.raises(TypeError, match="integer scalar"):
        topk(x, 2.5)
    with pytest.raises(ValueError, match="ndim >= 1"):
        topk(jnp.float32(1.0), 1)


def test_auto_resolves_and_says_which(caplog):
    assert ops.resolve_impl("auto", backend="cpu") == "radix"
    # radix where the bound k_max is a large share of the row, lax.top_k's partial sort below
    assert ops.resolve_impl("auto", backend="cpu", n=500, k_max=500) == "radix"
    assert ops.resolve_impl("auto", backend="cpu", n=4096, k_max=64) == "lax"
    assert ops.resolve_impl("auto", backend="cpu", n=500, op="values_indices") == "lax"
    assert ops.resolve_impl("auto", backend="tpu") == "pallas"
    assert ops.resolve_impl("auto", backend="gpu", n=500) == "lax"
    assert ops.resolve_impl("auto", backend="gpu", n=4096) == "pallas"
    assert ops.resolve_impl("auto", backend="gpu", n=4096, op="values_indices") == "lax"
    assert ops.resolve_impl("auto", backend="gpu", n=16384, op="values_indices") == "pallas"
    assert ops.resolve_impl("lax") == "lax"
    with pytest.raises(ValueError, match="op='dense'"):
        ops.resolve_impl("auto", op="dense")


def test_radix_threshold_equals_lax_on_heavy_ties(rng):
    """(t, j) of the radix select against lax.top_k's pair, on rows drawn from 3 values (every
    cut falls inside a run of ties), k from 0 to N."""
    from sparsejax.ops.order import threshold_radix
    from sparsejax.ops.topk import _threshold_lax

    x = jnp.asarray(rng.integers(-1, 2, (6, 40)), jnp.float32)
    ks = jnp.asarray([0, 1, 7, 20, 39, 40], jnp.int32)
    got, want = jax.jit(lambda x: (
        jax.vmap(lambda k: threshold_radix(x, k))(ks),
        jax.vmap(lambda k: _threshold_lax(x, k, 40))(ks)))(x)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
