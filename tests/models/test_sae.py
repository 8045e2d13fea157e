"""The standalone SAE model: init, forward against a dense numpy reference, gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.models import sae


def np_forward(p, x, k):
    """Dense reference: z = ReLU(TopK((x - b_dec) W_enc + b_enc)), x_hat = z W_dec + b_dec."""
    p = jax.tree.map(np.asarray, p)
    pre = (x - p.b_dec) @ p.W_enc + p.b_enc
    z = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    np.put_along_axis(z, idx, np.take_along_axis(pre, idx, 1), 1)
    return np.maximum(z, 0), np.maximum(z, 0) @ p.W_dec + p.b_dec, z != 0


def test_init_unit_decoder_and_tied_encoder():
    cfg = sae.SAEConfig(d_in=12, n_latents=40, k=4)
    p = sae.init_params(jax.random.key(0), cfg, b_dec=jnp.ones(12))
    np.testing.assert_allclose(np.linalg.norm(p.W_dec, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(p.W_enc, p.W_dec.T)
    assert p.W_enc.unsafe_buffer_pointer() != p.W_dec.unsafe_buffer_pointer()
    np.testing.assert_array_equal(p.b_dec, 1.0)
    np.testing.assert_array_equal(p.b_enc, 0.0)


@pytest.fixture(autouse=True)
def exact_float32_matmuls():
    """The references multiply in full float32 (GPUs default to TF32)."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.parametrize("activation", ["topk", "relu"])
def test_forward_and_grads_match_dense_reference(activation, rng):
    cfg = sae.SAEConfig(d_in=10, n_latents=30, k=5, activation=activation, impl="lax")
    p = sae.init_params(jax.random.key(1), cfg, b_dec=jnp.asarray(rng.standard_normal(10)))
    p = p._replace(b_enc=jax.device_put((rng.standard_normal(30) * 0.1).astype(np.float32)))
    x = rng.standard_normal((8, 10)).astype(np.float32)
    if activation == "topk":
        z_ref, recon_ref, mask = np_forward(p, x, 5)
    else:
        z_ref = np.maximum((x - p.b_dec) @ p.W_enc + p.b_enc, 0)
        recon_ref = z_ref @ p.W_dec + p.b_dec
        mask = None

    def dense_loss(p, x):  # autodiff through a dense top-k mask: the independent reference
        pre = (x - p.b_dec) @ p.W_enc + p.b_enc
        if activation == "topk":  # the reference's top-k positions, held fixed
            zz = jax.nn.relu(jnp.where(mask, pre, 0))
        else:
            zz = jax.nn.relu(pre)
        return jnp.sum((zz @ p.W_dec + p.b_dec - x) ** 2)

    def loss(p, x):
        return jnp.sum((sae.forward(p, x, 5, cfg).recon - x) ** 2)

    @jax.jit  # the forward, its statistics and both gradients in one program
    def run(p, x):
        out = sae.forward(p, x, 5, cfg)
        return (out, sae.dense_code(out.code, 30), sae.l0(out.code), sae.fired(out.code, 30),
                jax.grad(loss)(p, x), jax.grad(dense_loss)(p, x))

    out, z, l0, fired, g, g_ref = run(p, x)
    np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.recon, recon_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(l0, (z_ref > 0).sum(1))
    np.testing.assert_array_equal(fired, (z_ref > 0).any(0))
    chex.assert_trees_all_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_batchtopk_and_jumprelu_codes_match_numpy(rng):
    """BatchTopK keeps the k B largest pre-activations of the batch in training and cuts
    at its threshold at evaluation; JumpReLU cuts each latent at exp(lr_scale u)."""
    d, n, k, b = 10, 30, 4, 8
    x = rng.standard_normal((b, d)).astype(np.float32)
    for activation in ("batchtopk", "jumprelu"):
        cfg = sae.SAEConfig(d_in=d, n_latents=n, k=k, activation=activation, jump_lr_scale=3.0)
        p = sae.init_params(jax.random.key(2), cfg, b_dec=jnp.asarray(rng.standard_normal(d)))
        chex.assert_shape(p.threshold, () if activation == "batchtopk" else (n,))
        theta = (0.3 if activation == "batchtopk"
                 else rng.uniform(0.05, 1.0, n).astype(np.float32))
        u = theta if activation == "batchtopk" else np.log(theta) / 3.0
        p = p._replace(b_enc=jnp.asarray(rng.standard_normal(n) * 0.1, jnp.float32),
                       threshold=jnp.asarray(u, jnp.float32))
        q = jax.tree.map(np.asarray, p)
        pre = (x - q.b_dec) @ q.W_enc + q.b_enc
        run = jax.jit(lambda p, x, train: sae.forward(p, x, k, cfg, train=train),
                      static_argnums=2)
        evaluated = run(p, x, False)
        np.testing.assert_allclose(evaluated.code, np.where(pre > theta, np.maximum(pre, 0), 0),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(evaluated.recon, evaluated.code @ q.W_dec + q.b_dec,
                                   rtol=1e-5, atol=1e-5)
        if activation == "batchtopk":
            trained = np.asarray(run(p, x, True).code)
            cut = np.sort(pre.reshape(-1))[::-1][k * b - 1]
            np.testing.assert_allclose(trained, np.where(pre >= cut, np.maximum(pre, 0), 0),
                                       rtol=1e-5, atol=1e-6)
            assert np.count_nonzero(trained) == min(k * b, np.count_nonzero(pre > 0))
            np.testing.assert_array_equal(sae.l0(trained), (trained > 0).sum(1))
        else:  # JumpReLU's code does not depend on train
            np.testing.assert_array_equal(run(p, x, True).code, evaluated.code)


def test_config_errors():
    with pytest.raises(ValueError, match="k=0 must be in"):
        sae.SAEConfig(d_in=4, n_latents=8, k=0)
    with pytest.raises(ValueError, match="activation='gelu'"):
        sae.SAEConfig(d_in=4, n_latents=8, activation="gelu")
    with pytest.raises(ValueError, match="AuxK needs activation='topk'"):
        sae.SAEConfig(d_in=4, n_latents=8, k=2, activation="relu", k_aux=2)
    with pytest.raises(ValueError, match="pre-activation loss needs activation='jumprelu'"):
        sae.SAEConfig(d_in=4, n_latents=8, k=2, preact_coef=1.0)
    with pytest.raises(ValueError, match="SAEConfig: remedy jump_lr_scale must be a finite"):
        sae.SAEConfig(d_in=4, n_latents=8, k=2, activation="jumprelu", jump_lr_scale=0)
    with pytest.raises(ValueError, match="b_dec must have shape"):
        sae.init_params(jax.random.key(0), sae.SAEConfig(d_in=4, n_latents=8, k=2), jnp.ones(5))
