"""AuxK (detached residual, decoder bias once), dead-latent mask, Anthropic resampling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.models import sae
from sparsejax.sparsity import remedies


def _setup(rng, n=20, d=6, b=5):
    cfg = sae.SAEConfig(d_in=d, n_latents=n, k=3, k_aux=4, impl="lax")
    p = sae.init_params(jax.random.key(0), cfg, b_dec=jnp.asarray(rng.standard_normal(d)))
    x = jnp.asarray(rng.standard_normal((b, d)), jnp.float32)
    return cfg, p, x


def test_auxk_matches_formula_bias_once_and_residual_detached(rng):
    cfg, p, x = _setup(rng)
    dead = np.arange(20) % 3 == 0

    def aux_of(p):
        o = sae.forward(p, x, 3, cfg, jnp.asarray(dead))
        return (remedies.auxk_loss(p.W_dec, x, o.recon, o.code.aux_values, o.code.aux_indices),
                o)

    @jax.jit  # the loss, the code and the gradient in one program
    def loss_code_grad(p):
        (loss, out), g = jax.value_and_grad(aux_of, has_aux=True)(p)
        code = out.code
        z_aux = sae.dense_code(code._replace(values=code.aux_values,
                                             indices=code.aux_indices), 20)
        return loss, out.recon, z_aux, g

    loss, recon, z_aux, g = loss_code_grad(p)
    # independent reference in numpy: e_hat = z_aux W_dec (no b_dec), normalised MSE
    e = np.asarray(x) - np.asarray(recon)
    z_aux = np.asarray(z_aux)
    assert set(np.nonzero(z_aux)[1]) <= set(np.nonzero(dead)[0])
    e_hat = z_aux @ np.asarray(p.W_dec)
    ref = np.sum((e - e_hat) ** 2) / np.sum((e - e.mean(0)) ** 2)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)

    # detached residual: AuxK's gradient reaches only the dead latents' encoder/decoder
    # rows; were e attached, the main code's (alive) decoder rows would get gradient too
    alive_rows = ~np.asarray(dead)
    np.testing.assert_array_equal(np.asarray(g.W_dec)[alive_rows], 0)
    np.testing.assert_array_equal(np.asarray(g.W_enc)[:, alive_rows], 0)
    assert np.abs(np.asarray(g.W_dec)[~alive_rows]).sum() > 0


def test_dead_mask():
    last = np.array([0, 5, 9, 10])
    np.testing.assert_array_equal(jax.jit(remedies.dead_mask, static_argnums=2)(
        last, np.int32(10), 5), [1, 1, 0, 0])


def test_resample_dead_rows_only(rng):
    cfg, p, x = _setup(rng, b=64)
    opt = optax.adam(1e-3)
    dead = np.arange(20) < 4

    @jax.jit  # optimiser set-up, forward pass and resampling in one program
    def resample(key, p, x):
        state = opt.init(p)
        g = jax.tree.map(jnp.ones_like, p)
        _, state = opt.update(g, state, p)  # nonzero moments
        recon = sae.forward(p, x, 3, cfg).recon
        return remedies.resample_dead(key, p, state, opt, dead, x, recon)

    new, new_state = resample(jax.random.key(1), p, x)
    d = np.asarray(dead)
    np.testing.assert_array_equal(np.asarray(new.W_dec)[~d], np.asarray(p.W_dec)[~d])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(new.W_dec)[d], axis=1), 1, rtol=1e-5)
    # each new decoder row is a (centred, unit) input from the batch
    cand = np.array(x - p.b_dec)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    assert np.all(np.max(np.asarray(new.W_dec)[d] @ cand.T, axis=1) > 1 - 1e-5)
    enc_norm = np.linalg.norm(np.asarray(new.W_enc), axis=0)
    alive_norm = np.linalg.norm(np.asarray(p.W_enc), axis=0)[~d].mean()
    np.testing.assert_allclose(enc_norm[d], 0.2 * alive_norm, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(new.b_enc)[d], 0)
    mu = new_state[0].mu
    np.testing.assert_array_equal(np.asarray(mu.W_dec)[d], 0)
    np.testing.assert_array_equal(np.asarray(mu.W_enc)[:, d], 0)
    assert np.all(np.asarray(mu.W_dec)[~d] != 0)


def _dead_after_training(k_aux, x, init, steps=500, k=4):
    """Dead fraction (no firing in the last 20 steps) of a standalone Top-k SAE trained
    from ``init`` on ``x`` (8 batches of 64, cycled)."""
    from sparsejax.train import make_mesh
    from sparsejax.train import sae as sae_train

    cfg = sae.SAEConfig(d_in=x.shape[1], n_latents=init.W_dec.shape[0], k=k, k_aux=k_aux,
                        aux_coef=1.0, impl="lax")
    tcfg = sae_train.SAETrainConfig(batch_size=64, lr=3e-3, dead_after=20)
    step = sae_train.make_train_step(cfg, tcfg, make_mesh(jax.devices()[:1]))
    init = jax.tree.map(jnp.copy, init)  # the step donates its state
    state = sae_train.init_state(jax.random.key(0), cfg, tcfg)._replace(
        params=init, opt_state=sae_train.optimizer(tcfg).init(init))
    for t in range(steps):
        state, metrics = step(state, x[(t % 8) * 64:(t % 8 + 1) * 64], jnp.int32(k))
    return float(metrics["dead_fraction"])


def test_auxk_revives_latents_that_plain_topk_leaves_dead(rng):
    # three clusters on the axes of R^3, k = 1; latent 0 reads axis 0, latent 1 reads all
    # three (so it wins clusters 1 and 2), latents 2 and 3 read axes 1 and 2 at 1/80 of
    # latent 1's weight: plain Top-k never selects them, so they get no gradient and stay
    # dead; AuxK trains them on the residual of clusters 1 and 2, where they take over
    x = np.zeros((512, 3), np.float32)
    x[np.arange(512), rng.integers(0, 3, 512)] = rng.uniform(1, 2, 512)
    W = np.array([[1, 0, 0], [0.8, 0.8, 0.8], [0, 0.01, 0], [0, 0, 0.01]], np.float32)
    init = sae.SAEParams(W_enc=jnp.asarray(W.T), b_enc=jnp.zeros(4),
                         W_dec=jnp.asarray(W / np.linalg.norm(W, axis=1, keepdims=True)),
                         b_dec=jnp.zeros(3))
    plain = _dead_after_training(0, jnp.asarray(x), init, steps=300, k=1)
    auxk = _dead_after_training(2, jnp.asarray(x), init, steps=300, k=1)
    assert plain == 0.5  # latents 2 and 3 never fire
    assert auxk <= 0.25, (plain, auxk)
