"""The remedies' sparsifiers: BatchTopK's count and threshold, JumpReLU's gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.models.sparse_layer import BatchTopK, JumpReLU, SparseLayer, make_sparsifier


@pytest.mark.parametrize("name", ["topk", "l1", "batchtopk", "jumprelu"])
def test_make_sparsifier_names(name):
    sp = make_sparsifier(name, 12)
    h = nnx.jit(lambda sp, x, k: sp(x, k))(sp, np.ones((3, 12), np.float32), np.int32(2))
    chex.assert_shape(h, (3, 12))
    with pytest.raises(ValueError, match="no sparsifier"):
        make_sparsifier("gated", 12)


def test_batchtopk_keeps_exactly_k_times_b_of_the_batch(rng):
    b, n, k = 6, 20, 3
    pre = rng.permutation(np.arange(1, b * n + 1)).reshape(b, n) * rng.uniform(0.5, 1.5)
    pre = pre.astype(np.float32)
    h = np.asarray(jax.jit(lambda p, k: BatchTopK(n)(p, k))(pre, np.int32(k)))
    assert np.count_nonzero(h) == k * b
    # numpy reference: the k B largest values of the flattened batch, kept in place
    keep = pre >= np.sort(pre.ravel())[-k * b]
    np.testing.assert_array_equal(h, np.where(keep, pre, 0))
    # rows may hold more or fewer than k (the batch, not each row, has k per example)
    assert np.count_nonzero(h, axis=1).sum() == k * b


def test_batchtopk_threshold_estimate_and_evaluation(rng):
    sp = BatchTopK(8, decay=0.9)
    h1 = jnp.asarray(np.abs(rng.standard_normal((4, 8))) * (rng.uniform(size=(4, 8)) > 0.5),
                     jnp.float32)
    least = float(np.min(np.asarray(h1)[np.asarray(h1) > 0]))
    # the estimates in one program (eager, each op compiles on its own)
    theta, theta2, theta3 = jax.jit(lambda h1: (
        t1 := sp.estimate(jnp.float32(0), h1),  # the first batch sets it
        t2 := sp.estimate(t1, h1 * 2),
        sp.estimate(t2, jnp.zeros((4, 8)))))(h1)
    np.testing.assert_allclose(theta, least, rtol=1e-6)
    np.testing.assert_allclose(theta2, 0.9 * least + 0.1 * 2 * least, rtol=1e-6)
    assert theta3 == theta2  # nothing fired: unchanged
    sp.threshold[...] = jax.device_put(np.float32(0.5))
    sp.deterministic = True  # what model.eval() sets
    pre = rng.standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_array_equal(nnx.jit(lambda sp, p, k: sp(p, k))(sp, pre, np.int32(1)),
                                  np.where(pre > 0.5, pre, 0))


def test_jumprelu_thresholds_get_the_pseudo_derivative(rng):
    n, b, eps, scale = 10, 64, 0.2, 3.0
    sp = JumpReLU(n, init_threshold=0.3, bandwidth=eps, lr_scale=scale)
    np.testing.assert_allclose(sp.threshold(), 0.3, rtol=1e-6)
    sp.log_threshold_u[...] = jnp.asarray(np.log(rng.uniform(0.2, 0.6, n)) / scale,
                                          jnp.float32)
    pre = jnp.asarray(rng.uniform(-0.2, 1.0, (b, n)), jnp.float32)
    graphdef, params = nnx.split(sp, nnx.Param)

    def l0(params):
        return jnp.sum(nnx.merge(graphdef, params).penalty(pre))

    def out_sum(params):
        return jnp.sum(nnx.merge(graphdef, params)(pre, jnp.int32(0)))

    # both gradients, the forward and the penalty in one program (eager: one per op)
    g_l0, g_out, h, penalty = jax.jit(lambda p: (
        jax.grad(l0)(p)["log_threshold_u"][...], jax.grad(out_sum)(p)["log_threshold_u"][...],
        nnx.merge(graphdef, p)(pre, jnp.int32(0)), nnx.merge(graphdef, p).penalty(pre)))(params)
    g_l0, g_out = np.asarray(g_l0), np.asarray(g_out)
    # numpy reference (Rajamanoharan et al. 2024, eqs. 11-12, rectangle kernel), chained
    # through theta = exp(scale u): d theta / d u = scale theta
    theta = np.exp(scale * np.asarray(params["log_threshold_u"][...]))
    window = (np.abs(np.asarray(pre) - theta) < eps / 2).sum(0)
    np.testing.assert_allclose(g_l0, -window / eps * scale * theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_out, -(theta / eps) * window * scale * theta, rtol=1e-5,
                               atol=1e-6)
    assert np.all(window > 0) and np.all(g_l0 < 0)  # the L0 penalty pushes every theta up
    # forward: pre where above theta; the penalty counts them
    np.testing.assert_array_equal(np.asarray(h), np.where(np.asarray(pre) > theta, pre, 0))
    np.testing.assert_array_equal(penalty, (np.asarray(pre) > theta).sum(1))


def test_whitened_layer_reconstructs_in_the_input_space(rng):
    d, n = 6, 9
    layer = SparseLayer(d, n, make_sparsifier("l1", n), rngs=nnx.Rngs(0), whiten=True)
    A = rng.standard_normal((d, d))
    m = rng.standard_normal(d)
    layer.whiten.mean[...] = jnp.asarray(m, jnp.float32)
    layer.whiten.P[...] = jnp.asarray(A, jnp.float32)
    layer.whiten.P_inv[...] = jnp.asarray(np.linalg.inv(A), jnp.float32)
    f = rng.standard_normal((4, d)).astype(np.float32)
    out = nnx.jit(lambda l, f, k: l(f, k))(layer, f, np.int32(0))  # one program
    W, b = np.asarray(layer.enc.kernel[...]), np.asarray(layer.enc.bias[...])
    V, c = np.asarray(layer.dec.kernel[...]), np.asarray(layer.dec.bias[...])
    pre = (f - m) @ A @ W + b
    np.testing.assert_allclose(out.pre, pre, rtol=1e-4, atol=1e-5)
    h = np.maximum(pre, 0)
    np.testing.assert_allclose(out.recon, (h @ V + c) @ np.linalg.inv(A) + m, rtol=1e-4,
                               atol=1e-4)
