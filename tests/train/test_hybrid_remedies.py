"""The remedies wired into the hybrid: resampling touches only dead rows and their
optimiser state; tied, subspace and whitened starts at step 0; AuxK's gradient."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.train.hybrid import HybridModel
from sparsejax.train.state import optimizer

N = 16  # sparse units


@pytest.fixture(scope="module")
def setup(tiny_module):
    cfg = tiny_module
    model = HybridModel(cfg, 1)
    params = model.init(jax.random.key(3))
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.uniform(size=(12, 64, 64, 1)) > 0.7, jnp.float32)
    eps = jnp.zeros((12, cfg.num_latents), jnp.float32)
    return cfg, model, params, x, eps


@pytest.fixture(scope="module")
def tiny_module():
    from sparsejax.train import preset

    return preset("smoke", num_units=N, schedule={"start": N, "end": 4, "length": 2},
                  batch_size=8, epochs=2, steps_per_epoch=3, eval_size=64, eval_batch=32,
                  conv_impl="lax")  # a few steps: the fastest to compile (tests/train/conftest.py)


def _leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_resampling_touches_only_dead_rows_and_their_optimiser_state(setup, rng):
    cfg, model, params, x, eps = setup
    tx = optimizer(cfg)
    opt = tx.init(params)
    _, opt = tx.update(jax.tree.map(jnp.ones_like, params), opt, params)  # nonzero moments
    dead = jnp.asarray(rng.permutation(N) < 5)
    new, new_opt = jax.jit(lambda p, o: model.resample(jax.random.key(0), p, o, tx, dead, x,
                                                       eps, jnp.int32(4)))(params, opt)
    before, after = _leaves(params), _leaves(new)
    d = np.asarray(dead)
    touched = {"enc']['kernel": (slice(None), d), "enc']['bias": (d,),
               "dec']['kernel": (d, slice(None)), "mean']['kernel": (d, slice(None)),
               "logvar']['kernel": (d, slice(None))}
    for path, v in before.items():
        hit = next((ix for key, ix in touched.items() if key in path and "sparse" in path
                    or key in path and key.startswith(("mean", "logvar"))), None)
        if hit is None:
            np.testing.assert_array_equal(after[path], v, err_msg=path)
            continue
        alive_ix = tuple(~i if isinstance(i, np.ndarray) else i for i in hit)
        np.testing.assert_array_equal(after[path][alive_ix], v[alive_ix], err_msg=path)
        if "sparse" in path and "kernel" in path:  # the rewritten rows did change
            assert not np.array_equal(after[path][hit], v[hit]), path
    # the head no longer reads a resampled unit; the encoder bias restarts at 0
    sp = nnx.merge(model.graphdef, new)
    np.testing.assert_array_equal(np.asarray(sp.mean.kernel[...])[d], 0)
    np.testing.assert_array_equal(np.asarray(sp.sparse.enc.bias[...])[d], 0)
    # new encoder columns point along the new decoder rows (Anthropic: both from one input)
    W, V = np.asarray(sp.sparse.enc.kernel[...])[:, d], np.asarray(sp.sparse.dec.kernel[...])[d]
    cos = np.sum(W.T * V, 1) / np.linalg.norm(W, axis=0) / np.linalg.norm(V, axis=1)
    np.testing.assert_allclose(cos, 1, rtol=1e-4)
    # optimiser: moments zero on the rewritten rows, untouched elsewhere
    mu_b, mu_a = _leaves(opt[0].mu), _leaves(new_opt[0].mu)
    for path, v in mu_b.items():
        if "sparse']['enc']['kernel" in path:
            np.testing.assert_array_equal(mu_a[path][:, d], 0)
            np.testing.assert_array_equal(mu_a[path][:, ~d], v[:, ~d])
        elif "sparse']['dec']['kernel" in path or "mean']['kernel" in path:
            np.testing.assert_array_equal(mu_a[path][d], 0)
            np.testing.assert_array_equal(mu_a[path][~d], v[~d])
        elif "sparse']['dec']['bias" in path or "encoder" in path:
            np.testing.assert_array_equal(mu_a[path], v, err_msg=path)


def _f(model, params, x):
    return np.asarray(jax.jit(lambda p: nnx.merge(model.graphdef, p).encode(
        x, jnp.int32(N)).f)(params))


def test_tied_and_subspace_starts(setup, tiny_module):
    cfg, _, params, x, _ = setup
    tied = HybridModel(cfg.replace(sparse_init="tied"), 1)
    p, mask = jax.jit(lambda p: tied.prepare(jax.random.key(1), p, x, jnp.int32(N)))(params)
    m = nnx.merge(tied.graphdef, p)
    np.testing.assert_array_equal(m.sparse.enc.kernel[...], m.sparse.dec.kernel[...].T)
    assert bool(jnp.all(nnx.merge(tied.graphdef, mask).sparse.enc.kernel[...]))
    assert not bool(jnp.any(nnx.merge(tied.graphdef, mask).sparse.dec.kernel[...]))

    sub = HybridModel(cfg.replace(sparse_init="subspace"), 1)
    p, _ = jax.jit(lambda p: sub.prepare(jax.random.key(1), p, x, jnp.int32(N)))(params)
    m = nnx.merge(sub.graphdef, p)
    f = _f(sub, params, x)
    mean = f.mean(0)
    # independent reference: numpy PCA of the same inputs, 99% of the variance
    vals, vecs = np.linalg.eigh(np.cov((f - mean).T))
    vals, vecs = vals[::-1], vecs[:, ::-1]
    r = int(np.sum(np.cumsum(vals) / vals.sum() < 0.99)) + 1
    W = np.asarray(m.sparse.enc.kernel[...])
    chex.assert_shape(W, (f.shape[1], N))
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1, rtol=1e-5)
    outside = W - vecs[:, :r] @ (vecs[:, :r].T @ W)
    assert np.abs(outside).max() < 1e-3  # every direction inside the active subspace
    np.testing.assert_allclose(m.sparse.enc.bias[...], -mean @ W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.sparse.dec.bias[...], mean, rtol=1e-4, atol=1e-7)


def test_whitening_start_keeps_the_function_and_whitens(setup):
    cfg, _, params, x, eps = setup
    wcfg = cfg.replace(sparse_input="whiten")
    wm = HybridModel(wcfg, 1)
    wparams = wm.init(jax.random.key(3))  # same seed: the same weights, identity whitening
    apply = jax.jit(lambda p: wm.apply(p, x, eps, jnp.int32(N)))
    before = apply(wparams)
    p, _ = jax.jit(lambda p: wm.prepare(jax.random.key(1), p, x, jnp.int32(N)))(wparams)
    after = apply(p)
    scale = np.abs(np.asarray(before.pre)).max()
    np.testing.assert_allclose(after.pre, before.pre, atol=2e-3 * scale)
    np.testing.assert_allclose(after.sae_recon, before.sae_recon, atol=2e-3 * np.abs(
        np.asarray(before.sae_recon)).max())
    m = nnx.merge(wm.graphdef, p)
    f = np.asarray(before.f)
    z = (f - np.asarray(m.sparse.whiten.mean[...])) @ np.asarray(m.sparse.whiten.P[...])
    cov = np.cov(z.T)
    var_f = np.linalg.eigvalsh(np.cov(f.T))
    big = var_f > 1e-2 * var_f.mean()
    # the directions that carry variance come out with (about) the mean variance of f: the
    # whitened input keeps the raw one's scale
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(cov))[::-1][:big.sum()],
                               var_f.mean(), rtol=0.05)


def test_auxk_gradient_reaches_only_dead_units(setup, rng):
    cfg, _, params, x, eps = setup
    model = HybridModel(cfg.replace(remedy={"k_aux": 4}), 1)
    dead = jnp.asarray(rng.permutation(N) < 6)

    def aux(p):
        out = nnx.merge(model.graphdef, p)(x, eps, jnp.int32(4))
        return model._auxk(nnx.merge(model.graphdef, p), out, dead)

    g = jax.jit(jax.grad(aux))(params)
    gm = nnx.merge(model.graphdef, g)
    d = np.asarray(dead)
    gdec = np.asarray(gm.sparse.dec.kernel[...])
    np.testing.assert_array_equal(gdec[~d], 0)  # the residual is detached
    assert np.abs(gdec[d]).sum() > 0
    loss, (terms, _) = jax.jit(lambda p: model.loss(p, (x, eps, dead), (
        jnp.int32(4), jnp.float32(0))))(params)
    assert float(terms["aux"]) > 0 and np.isfinite(float(loss))
