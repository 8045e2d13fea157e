"""sparse_decode against the dense decode of the scattered code, values and gradients.

Each test runs the op under test and its jnp reference (gradients included) in one jitted
call: eager, every op compiles its own XLA program (the unrolled decode has k slots).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.ops import dense_decode, sparse_decode, topk_encode, topk_values_indices


def np_dense_code(v, i, n):
    code = np.zeros((v.shape[0], n), np.float64)
    for b in range(v.shape[0]):
        for j in range(v.shape[1]):
            if 0 <= i[b, j] < n:
                code[b, i[b, j]] += v[b, j]
    return code


def loss_of(decode, g):
    return lambda v, W, bias, i: jnp.sum(g * decode(v, i, W, bias))


@pytest.mark.parametrize("b,k,n,d", [(1, 1, 1, 1), (7, 5, 40, 9), (16, 32, 300, 24),
                                     (4, 80, 100, 8)])  # k > 64: the fori_loop path
def test_equals_dense_decode_with_grads(b, k, n, d, rng):
    v = rng.standard_normal((b, k)).astype(np.float32)
    i = rng.integers(0, n, size=(b, k)).astype(np.int32)  # duplicates included
    W = rng.standard_normal((n, d)).astype(np.float32)
    bias = rng.standard_normal(d).astype(np.float32)
    g = rng.standard_normal((b, d)).astype(np.float32)

    @jax.jit
    def run(v, W, bias, i):
        return (sparse_decode(v, i, W, bias),
                jax.grad(loss_of(sparse_decode, g), argnums=(0, 1, 2))(v, W, bias, i),
                jax.grad(loss_of(dense_decode, g), argnums=(0, 1, 2))(v, W, bias, i))

    y, (gv, gW, gb), ref = run(v, W, bias, i)
    code = np_dense_code(v, i, n)
    np.testing.assert_allclose(y, code @ W + bias, rtol=1e-5, atol=1e-5)
    # gradients: d/dv = (g W^T) at i; d/dW = code^T g; d/db = sum g
    np.testing.assert_allclose(gv, (g @ W.T)[np.arange(b)[:, None], i], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gW, code.T @ g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, g.sum(0), rtol=1e-5, atol=1e-5)
    # and the jnp dense reference agrees under autodiff
    for a, r in zip((gv, gW, gb), ref):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def test_out_of_range_indices_contribute_nothing(rng):
    W = rng.standard_normal((6, 3)).astype(np.float32)
    v = np.array([[1.0, 2.0, 3.0]], np.float32)
    i = np.array([[6, -1, 2]], np.int32)
    bias = np.zeros(3, np.float32)
    y, gW = jax.jit(lambda W: (sparse_decode(v, i, W, bias),
                               jax.grad(lambda W: sparse_decode(v, i, W, bias).sum())(W)))(W)
    np.testing.assert_allclose(y, 3 * W[2:3], rtol=1e-6)
    np.testing.assert_allclose(gW, np.zeros((6, 3)) + (np.arange(6) == 2)[:, None] * 3.0)


def test_with_topk_code_under_jit_and_vmap(rng):
    pre = jnp.asarray(rng.standard_normal((3, 8, 50)), jnp.float32)
    W = jnp.asarray(rng.standard_normal((50, 6)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(6), jnp.float32)

    def sparse(pre, W):
        v, i = topk_values_indices(pre, 4, impl="lax")
        return jnp.sum(sparse_decode(v, i, W, bias) ** 2)

    def dense(pre, W):
        v, i = topk_values_indices(pre, 4, impl="lax")
        return jnp.sum(dense_decode(v, i, W, bias) ** 2)

    f = jax.jit(jax.vmap(jax.value_and_grad(sparse, argnums=(0, 1)), in_axes=(0, None)))
    r = jax.vmap(jax.value_and_grad(dense, argnums=(0, 1)), in_axes=(0, None))
    got, ref = jax.jit(lambda pre, W: (f(pre, W), r(pre, W)))(pre, W)  # one program
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bad_shapes():
    ones = lambda *shape, dtype=np.float32: np.ones(shape, dtype)  # noqa: E731 (no XLA program)
    W, bias = ones(5, 3), ones(3)
    with pytest.raises(ValueError, match=r"one shape \[B, k\]"):
        sparse_decode(ones(2, 3), ones(2, 4, dtype=np.int32), W, bias)
    with pytest.raises(TypeError, match="integers"):
        sparse_decode(ones(2, 3), ones(2, 3), W, bias)
    with pytest.raises(ValueError, match=r"b_dec of shape \[d\] = \[3\]"):
        sparse_decode(ones(2, 3), ones(2, 3, dtype=np.int32), W, ones(4))


def dense_encode(x, off, W, b, k, mask, k_aux):
    """Reference: the dense pre-activations and two plain top-k's (autodiff does the rest)."""
    pre = (x - off) @ W + b
    v, i = topk_values_indices(pre, k, impl="lax")
    va, ia = topk_values_indices(jnp.where(mask, pre, -jnp.inf), k_aux, impl="lax")
    return v, i, jnp.where(mask[ia], va, 0), ia


ENC_B, ENC_D, ENC_N, ENC_K, ENC_K_AUX = 6, 10, 40, 5, 8


@jax.jit  # module level, the mask an argument: the n_dead cases share one program
def encode_and_reference(x, off, W, bias, mask, wv, wa):
    k, k_aux = ENC_K, ENC_K_AUX

    def loss(enc):
        def f(x, off, W, bias):
            v, _, va, _ = enc(x, off, W, bias)
            return jnp.sum(wv * jax.nn.relu(v)) + jnp.sum(wa * va)
        return f

    sparse = lambda x, off, W, bias: tuple(  # noqa: E731
        topk_encode(x, W, bias, k, aux_mask=mask, k_aux=k_aux, impl="lax", x_offset=off))
    dense = lambda x, off, W, bias: dense_encode(x, off, W, bias, k, mask, k_aux)  # noqa: E731
    return (sparse(x, off, W, bias), dense(x, off, W, bias),
            jax.grad(loss(sparse), argnums=(0, 1, 2, 3))(x, off, W, bias),
            jax.grad(loss(dense), argnums=(0, 1, 2, 3))(x, off, W, bias))


@pytest.mark.parametrize("n_dead", [0, 3, 40])
def test_topk_encode_equals_dense_with_grads(n_dead, rng):
    b, d, n, k, k_aux = ENC_B, ENC_D, ENC_N, ENC_K, ENC_K_AUX
    x = jnp.asarray(rng.standard_normal((b, d)), jnp.float32)
    W = jnp.asarray(rng.standard_normal((d, n)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(n), jnp.float32)
    mask = jnp.asarray(rng.permutation(n) < n_dead)
    wv, wa = (jnp.asarray(rng.standard_normal((b, m)), jnp.float32) for m in (k, k_aux))

    off = jnp.asarray(rng.standard_normal(d), jnp.float32)

    got, ref, g, g_ref = encode_and_reference(x, off, W, bias, mask, wv, wa)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-5, atol=1e-5)
    valid = np.asarray(mask)[np.asarray(ref[3])]
    np.testing.assert_array_equal(np.where(valid, got[3], -1), np.where(valid, ref[3], -1))
    for a, r in zip(g, g_ref):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)


def test_topk_encode_traced_k(rng):
    x = jnp.asarray(rng.standard_normal((4, 8)), jnp.float32)
    W = jnp.asarray(rng.standard_normal((8, 30)), jnp.float32)
    bias = jnp.zeros(30)
    f = jax.jit(lambda x, k: topk_encode(x, W, bias, k, k_max=10, impl="lax").values)
    v_ref = np.asarray(jax.jit(lambda x: jax.lax.top_k(x @ W, 10)[0])(x))
    for k in (0, 3, 10):
        v = np.asarray(f(x, jnp.int32(k)))
        np.testing.assert_allclose(v[:, :k], v_ref[:, :k], rtol=1e-5)
        np.testing.assert_array_equal(v[:, k:], 0)
    with pytest.raises(ValueError, match="k_aux=31"):
        topk_encode(x, W, bias, 2, k_aux=31)


def test_batched_path_used_off_cpu(monkeypatch, rng):
    """The accelerator path (one batched gather / scatter) equals the slot-wise CPU path."""
    import importlib

    mod = importlib.import_module("sparsejax.ops.sparse_decode")
    v = jnp.asarray(rng.standard_normal((5, 7)), jnp.float32)
    i = jnp.asarray(rng.integers(0, 20, size=(5, 7)), jnp.int32)
    W = jnp.asarray(rng.standard_normal((20, 6)), jnp.float32)
    bias = jnp.zeros(6)
    f = lambda v, W: jnp.sum(jnp.sin(sparse_decode(v, i, W, bias)))  # noqa: E731
    # _slotwise() is read at trace time: two separately traced programs
    g_slot = jax.jit(jax.grad(f, argnums=(0, 1)))(v, W)
    monkeypatch.setattr(mod, "_slotwise", lambda: False)
    g_batched = jax.jit(jax.grad(f, argnums=(0, 1)))(v, W)
    for a, b in zip(g_slot, g_batched):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
