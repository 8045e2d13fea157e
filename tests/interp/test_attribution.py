"""Attribution methods against closed forms, completeness, exact Shapley values and numpy
restatements, on tiny models."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.interp import attribution as A


def _linear(rng, d=6, c=3):
    w = rng.normal(size=(d, c)).astype(np.float32)
    b = rng.normal(size=(c,)).astype(np.float32)
    return (lambda x: x.reshape(x.shape[0], -1) @ w + b), w


def _relu_net(rng, sizes=(5, 7, 6, 3), bias=True):
    ws = [rng.normal(size=(a, b)).astype(np.float32) / math.sqrt(a)
          for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [(rng.normal(size=(b,)) * 0.3 * bias).astype(np.float32) for b in sizes[1:]]

    def f(x):
        h = x
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = h @ w + b
            if i < len(ws) - 1:
                h = jax.nn.relu(h)
        return h

    return f, ws, bs


def _np_forward(x, ws, bs):
    """Activations a_0 = x, ..., pre-activations z_1..z_L of a dense ReLU net (numpy)."""
    acts, pres = [x], []
    for i, (w, b) in enumerate(zip(ws, bs)):
        z = acts[-1] @ w + b
        pres.append(z)
        acts.append(np.maximum(z, 0) if i < len(ws) - 1 else z)
    return acts, pres


def test_linear_model_closed_forms(rng):
    f, w = _linear(rng)
    x = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    t = jnp.asarray([0, 2, 1, 2])
    xw = np.asarray(x) * w[:, np.asarray(t)].T
    chex.assert_trees_all_close(A.saliency(f, x, t), w[:, np.asarray(t)].T, atol=1e-6)
    chex.assert_trees_all_close(A.input_x_gradient(f, x, t), xw, atol=1e-5)
    for rule in A.IG_RULES:
        chex.assert_trees_all_close(A.integrated_gradients(f, x, t, steps=3, rule=rule), xw,
                                    atol=1e-5)
    # 6 features, 62 coalitions: enumeration; and a sampled design (fewer than 2^M - 2)
    chex.assert_trees_all_close(A.kernel_shap(f, x, t, key=jax.random.key(1)), xw, atol=1e-4)
    chex.assert_trees_all_close(A.kernel_shap(f, x, t, key=jax.random.key(1), samples=20), xw,
                                atol=1e-4)
    chex.assert_trees_all_close(A.lime(f, x, t, key=jax.random.key(2), ridge=1e-6), xw,
                                atol=1e-3)
    chex.assert_trees_all_close(A.shapley_sampling(f, x, t, key=jax.random.key(3),
                                                   permutations=3), xw, atol=1e-4)
    chex.assert_trees_all_close(A.deeplift(f, x, t), xw, atol=1e-5)
    # SmoothGrad of a linear model is its gradient; VarGrad is 0
    sg = A.smoothgrad(f, x, t, key=jax.random.key(4), samples=4)
    chex.assert_trees_all_close(sg, w[:, np.asarray(t)].T, atol=1e-5)
    chex.assert_trees_all_close(A.vargrad(f, x, t, key=jax.random.key(4), samples=4),
                                np.zeros_like(xw), atol=1e-8)


def test_smoothgrad_vargrad_of_a_quadratic(rng):
    # f = sum x^2: grad = 2 (x + n); mean 2x, variance 4 (sigma * span)^2
    f = lambda x: jnp.sum(x ** 2, axis=1)
    x = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    span = np.ptp(np.asarray(x), axis=1, keepdims=True)
    sg = A.smoothgrad(f, x, key=jax.random.key(0), samples=4096, sigma=0.1, chunk=2048)
    vg = A.vargrad(f, x, key=jax.random.key(0), samples=4096, sigma=0.1)
    chex.assert_trees_all_close(sg, 2 * np.asarray(x), atol=0.05 * span.max())
    np.testing.assert_allclose(vg, np.broadcast_to(4 * (0.1 * span) ** 2, vg.shape), rtol=0.1)


def test_completeness_of_ig_and_deeplift(rng):
    f, _, _ = _relu_net(rng)
    x = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    x0 = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    t = 1
    gap = np.asarray(f(x)[:, t] - f(x0)[:, t])
    ig = A.integrated_gradients(f, x, t, baseline=x0, steps=512, chunk=400)
    np.testing.assert_allclose(np.asarray(ig).sum(1), gap, atol=2e-2 * np.abs(gap).max())
    dl = A.deeplift(f, x, t, baseline=x0)
    np.testing.assert_allclose(np.asarray(dl).sum(1), gap, atol=1e-4)
    # chunked and unchunked paths agree
    chex.assert_trees_all_close(A.integrated_gradients(f, x, t, baseline=x0, steps=8),
                                A.integrated_gradients(f, x, t, baseline=x0, steps=8, chunk=5),
                                atol=1e-6)


def test_deeplift_rescale_against_numpy(rng):
    f, ws, bs = _relu_net(rng, sizes=(4, 5, 2))
    x, x0 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    (_, _), (_, _) = (None, None), (None, None)
    z, z0 = x @ ws[0] + bs[0], x0 @ ws[0] + bs[0]
    m = (np.maximum(z, 0) - np.maximum(z0, 0)) / (z - z0)  # rescale multipliers
    want = (x - x0) * ((m * ws[1][:, 0]) @ ws[0].T)
    got = A.deeplift(f, jnp.asarray(x, jnp.float32), 0, baseline=jnp.asarray(x0, jnp.float32))
    chex.assert_trees_all_close(got, want.astype(np.float32), atol=1e-4)


def _np_guided(x, ws, bs, t, kind):
    acts, pres = _np_forward(x, ws, bs)
    g = np.zeros_like(pres[-1])
    g[:, t] = 1
    for layer in range(len(ws) - 1, -1, -1):
        g = g @ ws[layer].T  # d / d a_{layer}
        if layer > 0:
            if kind == "guided":
                g = g * (pres[layer - 1] > 0) * (g > 0)
            else:
                g = np.maximum(g, 0)
    return g


@pytest.mark.parametrize("kind", ["guided", "deconvnet"])
def test_guided_backprop_and_deconvnet_against_numpy(rng, kind):
    f, ws, bs = _relu_net(rng)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    fn = A.guided_backprop if kind == "guided" else A.deconvnet
    got = fn(f, jnp.asarray(x), 2)
    chex.assert_trees_all_close(got, _np_guided(x, ws, bs, 2, kind).astype(np.float32),
                                atol=1e-4)


def _np_lrp(x, ws, bs, t, rule, eps=0.0, gamma=0.0):
    """Layer-wise LRP as in Montavon 2019, one rule for every layer (numpy)."""
    acts, pres = _np_forward(x, ws, bs)
    r = np.zeros_like(pres[-1])
    r[:, t] = pres[-1][:, t]
    for layer in range(len(ws) - 1, -1, -1):
        a, w = acts[layer], ws[layer]
        if rule == "epsilon":
            z = pres[layer]
            c = r / (z + eps * np.where(z >= 0, 1, -1))
            r = a * (c @ w.T)
        else:
            wr = np.maximum(w, 0) if rule == "zplus" else w + gamma * np.maximum(w, 0)
            z = a @ wr
            r = a * ((r / (z + 1e-9 * np.where(z >= 0, 1, -1))) @ wr.T)
    return r


def test_lrp_epsilon_to_zero_is_input_x_gradient(rng):
    f, _, _ = _relu_net(rng, bias=False)
    x = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
    chex.assert_trees_all_close(A.lrp(f, x, 1, rule="epsilon", epsilon=1e-9),
                                A.input_x_gradient(f, x, 1), atol=1e-5)


@pytest.mark.parametrize("rule,kw", [("epsilon", {"epsilon": 0.3}), ("zplus", {}),
                                     ("gamma", {"gamma": 0.5})])
def test_lrp_rules_against_numpy(rng, rule, kw):
    f, ws, bs = _relu_net(rng, bias=rule == "epsilon")
    x = np.abs(rng.normal(size=(4, 5))).astype(np.float32)  # z+ assumes inputs >= 0
    got = A.lrp(f, jnp.asarray(x), 0, rule=rule, **kw)
    want = _np_lrp(x.astype(np.float64), ws, bs, 0, rule, eps=kw.get("epsilon", 0.0),
                   gamma=kw.get("gamma", 0.0))
    chex.assert_trees_all_close(got, want.astype(np.float32), atol=1e-4, rtol=1e-4)


def _exact_shapley(g, m):
    """Exact Shapley values of a set function ``g(mask [M] bool) -> float`` (enumerated)."""
    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for k in range(m):
            for s in itertools.combinations(others, k):
                mask = np.zeros(m, bool)
                mask[list(s)] = True
                with_i = mask.copy()
                with_i[i] = True
                wgt = math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
                phi[i] += wgt * (g(with_i) - g(mask))
    return phi


def test_kernel_shap_and_sampling_against_exact_shapley(rng):
    f, ws, bs = _relu_net(rng, sizes=(4, 6, 2))
    x = rng.normal(size=(2, 4)).astype(np.float32)
    x0 = rng.normal(size=(2, 4)).astype(np.float32)
    want = np.stack([_exact_shapley(
        lambda m, b=b: _np_forward(np.where(m, x[b], x0[b])[None], ws, bs)[0][-1][0, 1], 4)
        for b in range(2)])
    ks = A.kernel_shap(f, jnp.asarray(x), 1, baseline=jnp.asarray(x0), key=jax.random.key(0))
    chex.assert_trees_all_close(ks, want.astype(np.float32), atol=1e-4)
    ss = A.shapley_sampling(f, jnp.asarray(x), 1, baseline=jnp.asarray(x0),
                            key=jax.random.key(1), permutations=400)
    np.testing.assert_allclose(ss, want, atol=0.1 * np.abs(want).max())
    gap = np.asarray(f(x)[:, 1] - f(x0)[:, 1])
    np.testing.assert_allclose(np.asarray(ss).sum(1), gap, atol=1e-4)  # efficiency, exact


def test_feature_maps_and_occlusion(rng):
    # 4x4x2 images, a linear model: a patch's occlusion effect is its sum of w x
    f, w = _linear(rng, d=32, c=2)
    x = jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
    contrib = (np.asarray(x).reshape(3, -1) * w[:, 1]).reshape(3, 4, 4, 2)
    patch_sum = contrib.reshape(3, 2, 2, 2, 2, 2).sum((2, 4, 5))  # [B, 2, 2] per patch
    # occlusion: each pixel gets its patch's effect; a feature method spreads it over the
    # patch's 8 elements
    per_pixel = np.repeat(np.repeat(patch_sum, 2, 1), 2, 2)[..., None]
    got = A.occlusion(f, x, 1, patch=2, chunk=5)
    chex.assert_trees_all_close(got, np.broadcast_to(per_pixel / 2, x.shape), atol=1e-5)
    want = per_pixel / 8
    feats = A.patch_features((4, 4), 2)
    np.testing.assert_array_equal(feats, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3],
                                          [2, 2, 3, 3]])
    ks = A.kernel_shap(f, x, 1, features=feats, key=jax.random.key(0))
    chex.assert_trees_all_close(ks, np.broadcast_to(want, x.shape), atol=1e-4)


def _cam_model(rng, h=4, k=3, c=2, pool=1):
    wc = rng.normal(size=(c, k)).astype(np.float32)
    bc = rng.normal(size=(k,)).astype(np.float32)
    w2 = rng.normal(size=(k, 2)).astype(np.float32)

    def f(x):
        a = jax.nn.relu(jnp.einsum("bhwc,ck->bhwk", x, wc) + bc)
        if pool > 1:
            b, hh, ww, kk = a.shape
            a = a.reshape(b, hh // pool, pool, ww // pool, pool, kk).mean((2, 4))
        return a.mean((1, 2)) @ w2, {"act": a, "other": a.sum(-1)}

    return f, wc, bc, w2


@pytest.mark.parametrize("pool", [1, 2])
def test_grad_cam_against_numpy(rng, pool):
    f, wc, bc, w2 = _cam_model(rng, pool=pool)
    x = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    t = np.array([0, 1, 1])
    a = np.maximum(np.einsum("bhwc,ck->bhwk", x, wc) + bc, 0)
    a = a.reshape(3, 4 // pool, pool, 4 // pool, pool, 3).mean((2, 4))
    alpha = w2[:, t].T / a.shape[1] / a.shape[2]  # d out / d A, constant over space
    want = np.maximum(np.einsum("bhwk,bk->bhw", a, alpha), 0)
    got = A.grad_cam(f, jnp.asarray(x), jnp.asarray(t), layer="act", upsample=False)
    chex.assert_trees_all_close(got, want.astype(np.float32), atol=1e-5)
    up = A.grad_cam(f, jnp.asarray(x), jnp.asarray(t), layer="act")
    chex.assert_shape(up, x.shape)
    with pytest.raises(ValueError, match="intermediates"):
        A.grad_cam(f, jnp.asarray(x), 0, layer="missing")


def test_inside_a_callers_jit(rng):
    # every method runs in the study (tests/experiments); here: nested in a caller's jit,
    # with the model's weights traced
    x = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    got = jax.jit(lambda w, x: A.lrp(lambda v: jax.nn.relu(v @ w), x, 0, "zplus"))(w, x)
    chex.assert_trees_all_close(got, A.lrp(lambda v: jax.nn.relu(v @ w), x, 0, "zplus"),
                                atol=1e-6)
