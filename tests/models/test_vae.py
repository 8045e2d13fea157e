"""The sparse layer, the VAE-SAE hybrid and the dense VAE against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.models.sparse_layer import ReLU, SparseLayer, TopK, make_sparsifier
from sparsejax.models.vae import VAE, VAEOutputs, loss_terms, total_loss


def _np_relu_topk(pre, k):
    out = np.zeros_like(pre)
    for r in range(pre.shape[0]):
        idx = np.argsort(-pre[r], kind="stable")[:k]
        out[r, idx] = pre[r, idx]
    return np.maximum(out, 0)


def test_topk_sparsifier_matches_numpy_for_traced_k(rng):
    pre = rng.normal(size=(5, 40)).astype(np.float32)
    f = jax.jit(lambda p, k: TopK(40)(p, k))
    for k in (40, 17, 3, 1):
        np.testing.assert_array_equal(f(pre, np.int32(k)), _np_relu_topk(pre, k))
    assert f._cache_size() == 1  # one compilation for every k


def test_relu_sparsifier_ignores_k(rng):
    pre = rng.normal(size=(3, 7)).astype(np.float32)
    np.testing.assert_array_equal(ReLU()(jnp.asarray(pre), 2), np.maximum(pre, 0))
    with pytest.raises(ValueError, match="sparsifier"):
        make_sparsifier("dense", 7)


def test_sparse_layer_against_numpy(rng, numpy_init):
    layer = numpy_init(lambda: SparseLayer(6, 12, TopK(12), rngs=nnx.Rngs(0)))
    f = rng.normal(size=(4, 6)).astype(np.float32)
    out = nnx.jit(lambda l, f: l(f, 3))(layer, f)  # one program (eager: one per op)
    W, b = np.asarray(layer.enc.kernel[...]), np.asarray(layer.enc.bias[...])
    Wd, bd = np.asarray(layer.dec.kernel[...]), np.asarray(layer.dec.bias[...])
    pre = f @ W + b
    h = _np_relu_topk(pre, 3)
    np.testing.assert_allclose(out.pre, pre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.h, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.recon, h @ Wd + bd, rtol=1e-5, atol=1e-5)


def test_topk_gradient_reaches_kept_units_only(rng, numpy_init):
    layer = numpy_init(lambda: SparseLayer(6, 12, TopK(12), rngs=nnx.Rngs(0)))
    f = rng.normal(size=(4, 6)).astype(np.float32)

    @nnx.jit  # one program (eager: one per op)
    def run(layer, f):
        pre = layer(f, 3).pre
        return pre, jax.grad(lambda p: jnp.sum(TopK(12)(p, 3) * jnp.arange(1.0, 13.0)))(pre)

    pre, g = run(layer, f)
    kept = np.asarray(_np_relu_topk(np.asarray(pre), 3) > 0)
    np.testing.assert_array_equal(np.asarray(g) != 0, kept)


def _np_reader_norms(model, placement):
    """Per sparse unit, the L2 norm of every weight that reads it, from the raw kernels."""
    ws = [np.asarray(model.sparse.dec.kernel[...], np.float64)]
    if placement == "hidden":
        ws += [np.asarray(model.mean.kernel[...], np.float64),
               np.asarray(model.logvar.kernel[...], np.float64)]
    return np.sqrt((np.concatenate(ws, axis=1) ** 2).sum(1))


def _np_losses(out, x, scale=None):
    logits, xb = np.asarray(out.logits, np.float64), np.asarray(x, np.float64)
    p = 1 / (1 + np.exp(-logits))
    recon = -(xb * np.log(p) + (1 - xb) * np.log(1 - p)).reshape(len(x), -1).sum(1)
    mu, lv = np.asarray(out.mu, np.float64), np.asarray(out.logvar, np.float64)
    kl = 0.5 * (mu**2 + np.exp(lv) - lv - 1).sum(1)
    h = np.asarray(out.h, np.float64)
    sae = ((np.asarray(out.sae_recon, np.float64) - np.asarray(out.sae_target)) ** 2).sum(1)
    return {"recon": recon.mean(), "kl": kl.mean(), "sae": sae.mean(),
            "l1": (np.abs(h) * (1.0 if scale is None else scale)).sum(1).mean(),
            "l0": (h != 0).sum(1).mean()}


@pytest.mark.parametrize("method,placement,channels",
                         [("topk", "hidden", 1), ("l1", "latent", 3), ("dense", "hidden", 1)])
def test_forward_exposes_intermediates_and_losses_match_numpy(method, placement, channels, rng,
                                                              numpy_init):
    model = numpy_init(lambda: VAE(channels, method=method, num_units=32, placement=placement,
                                   rngs=nnx.Rngs(0)))
    x = (rng.uniform(size=(3, 64, 64, channels)) > 0.5).astype(np.float32)
    eps = rng.normal(size=(3, 10)).astype(np.float32)

    @nnx.jit  # forward and losses in one program (eager, every op compiles alone)
    def run(model, x, eps, k):
        out = model(x, eps, k)
        terms = loss_terms(out, x)
        return (out, terms, loss_terms(out, x, reduce=False),
                total_loss(terms, beta=2.0, sae_weight=0.5, l1_coef=0.1))

    out, terms, per_example, total = run(model, x, eps, np.int32(5))  # k traced
    assert isinstance(out, VAEOutputs)
    assert out.logits.shape == x.shape and out.mu.shape == (3, 10) and out.f.shape == (3, 256)
    if method == "dense":
        assert out.h is None and float(terms["sae"]) == float(terms["l0"]) == 0.0
        return
    assert out.pre.shape == out.h.shape == (3, 32)
    if method == "topk":
        assert np.all(np.sum(np.asarray(out.h) != 0, 1) <= 5)
    centre = out.mu if placement == "hidden" else out.sae_recon
    np.testing.assert_allclose(out.z, centre + np.exp(0.5 * out.logvar) * eps, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out.sae_target, out.f if placement == "hidden" else out.mu)
    want = _np_losses(out, x, _np_reader_norms(model, placement))
    for name, v in want.items():
        np.testing.assert_allclose(float(terms[name]), v, rtol=1e-4, atol=1e-4, err_msg=name)
    assert per_example["recon"].shape == (3,)
    np.testing.assert_allclose(float(total), want["recon"] + 2 * want["kl"] + 0.5 * want["sae"]
                               + 0.1 * want["l1"], rtol=1e-5)


@pytest.mark.parametrize("placement", ["hidden", "latent"])
def test_sae_target_is_stop_gradiented(placement, rng, numpy_init):
    """The SAE reconstructs stop_gradient(f): the term cannot shrink f through its target
    (it still trains the encoder through its input h, as any layer on the path does)."""
    model = numpy_init(lambda: VAE(1, method="topk", num_units=32, placement=placement,
                                   rngs=nnx.Rngs(0)))
    gd, params = nnx.split(model)
    x = rng.uniform(size=(2, 64, 64, 1)).astype(np.float32)

    def probe(field):
        def f(p):
            out = nnx.merge(gd, p)(x, jnp.zeros((2, 10)), 8)
            return jnp.sum(getattr(out, field) * jnp.arange(1.0, getattr(out, field).shape[1] + 1))
        return jax.grad(f)(params)["encoder"]

    # one compiled program for both probes (eager, every primitive compiles on its own)
    target, path = jax.jit(lambda: (probe("sae_target"),
                                    probe("f" if placement == "hidden" else "mu")))()
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(target))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(path))


def test_unknown_method_or_placement():
    with pytest.raises(ValueError, match="method"):
        VAE(1, method="topq", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="placement"):
        VAE(1, placement="middle", rngs=nnx.Rngs(0))


def test_topk_without_relu_keeps_exactly_k(rng):
    pre = (rng.normal(size=(6, 20)) - 1.0).astype(np.float32)  # mostly negative
    h, h_relu = jax.jit(lambda p, k: (TopK(20, relu=False)(p, k), TopK(20)(p, k)))(pre,
                                                                              np.int32(7))
    h = np.asarray(h)
    np.testing.assert_array_equal((h != 0).sum(1), 7)
    ref = np.where(np.asarray(pre) >= np.sort(np.asarray(pre), 1)[:, -7:-6], pre, 0.0)
    np.testing.assert_allclose(h, ref)
    assert np.asarray(h_relu).min() >= 0  # the default keeps the ReLU


def test_l1_penalty_cannot_be_dodged_by_rescaling(rng, numpy_init):
    """Shrink the sparse layer's encoder by a and grow every reader of h by a: the model's
    function is unchanged (ReLU and Top-k commute with a > 0) and so is the weighted L1."""
    model = numpy_init(lambda: VAE(1, method="l1", num_units=16, rngs=nnx.Rngs(1)))
    x = (rng.uniform(size=(2, 64, 64, 1)) > 0.5).astype(np.float32)
    eps = np.zeros((2, 10), np.float32)
    terms = nnx.jit(lambda m, k: loss_terms(m(x, eps, k), x))  # one compile for both
    before = terms(model, np.int32(16))
    a = 4.0

    @nnx.jit  # the rescaling in place, one program
    def rescale(model):
        for layer in (model.sparse.enc,):
            layer.kernel[...] = layer.kernel[...] / a
            layer.bias[...] = layer.bias[...] / a
        for layer in (model.sparse.dec, model.mean, model.logvar):
            layer.kernel[...] = layer.kernel[...] * a

    rescale(model)
    after = terms(model, np.int32(16))
    for name in ("recon", "kl", "l1", "l0"):
        np.testing.assert_allclose(float(after[name]), float(before[name]), rtol=1e-4,
                                   err_msg=name)


def test_bfloat16_compute_is_finite_and_tracks_float32(rng, numpy_init):
    """Mixed precision: the same params, data and 5 Adam steps (lr 1e-3) with the encoder's
    and decoder's convs and matmuls in bfloat16 stay finite, keep float32 parameters,
    Adam state and loss, and give losses within 1% of float32 (bfloat16 keeps 8
    significant bits: about 0.4% per product, averaged over thousands of terms)."""
    import optax

    x = (rng.uniform(size=(8, 64, 64, 1)) < 0.2).astype(np.float32)
    eps = rng.normal(size=(8, 10)).astype(np.float32)
    opt = optax.adam(1e-3)
    float32_model = numpy_init(lambda: VAE(1, rngs=nnx.Rngs(0)))
    runs = {}
    for dtype in ("float32", "bfloat16"):
        model = numpy_init(lambda: VAE(1, compute_dtype=dtype, rngs=nnx.Rngs(0)), float32_model)
        gd, params = nnx.split(model, nnx.Param)

        def loss_fn(p, x, eps):
            out = nnx.merge(gd, p)(x, eps, 50)
            assert out.logits.dtype == out.h.dtype == out.f.dtype == jnp.float32
            return total_loss(loss_terms(out, x))

        @jax.jit  # the optimiser's init and the 5 steps in one program
        def train(p, x, eps):
            def step(carry, _):
                p, s = carry
                loss, g = jax.value_and_grad(loss_fn)(p, x, eps)
                upd, s = opt.update(g, s, p)
                return (optax.apply_updates(p, upd), s), loss

            (p, s), losses = jax.lax.scan(step, (p, opt.init(p)), length=5)
            return p, s, losses

        params, opt_state, losses = train(params, x, eps)
        assert all(v.dtype == jnp.float32 for v in jax.tree.leaves((params, opt_state, losses))
                   if hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating))
        runs[dtype] = np.asarray(losses)
    assert np.all(np.isfinite(runs["bfloat16"]))
    np.testing.assert_allclose(runs["bfloat16"], runs["float32"], rtol=1e-2)
    assert runs["float32"][-1] < runs["float32"][0]  # it trains
