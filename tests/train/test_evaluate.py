"""The end-of-epoch evaluation (one program over every chunk, the set kept on the device)
against an independent forward pass of the whole set, padding included."""

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.data import get_dataset
from sparsejax.models.vae import loss_terms
from sparsejax.train import hybrid as Hy
from sparsejax.train import mesh as Me
from sparsejax.train import state as St
from sparsejax.train.evaluate import eval_factors, make_evaluator


def test_one_program_over_the_set_equals_a_direct_forward(tiny):
    # 50 samples in chunks of 32 over 4 devices: two chunks, the second padded by 14 rows
    cfg = tiny(num_seeds=2)
    ds = get_dataset("dsprites", "procedural")
    mesh = Me.make_mesh()
    gd = Hy.model_graphdef(cfg, 1)
    params = St.init_state(cfg, 1, Me.replicated(mesh)).params
    n, k = 50, 12
    ev = make_evaluator(cfg, gd, ds, mesh)(params, k, n)

    factors = eval_factors(ds, cfg, n)
    np.testing.assert_array_equal(ev.factors, factors)
    # the noise of the first n rows of the padded set (2 chunks of 32)
    eps = jax.random.normal(jax.random.key(cfg.eval_seed + 1), (64, cfg.num_latents))[:n]
    model = Hy.HybridModel(cfg, 1, gd)

    @jax.jit
    def direct(params_S):
        x = ds.render(jnp.asarray(factors))

        def one(p):
            out = model.apply(p, x, eps, jnp.int32(k))
            return out.mu, out.h, loss_terms(out, x, reduce=False)

        return jax.lax.map(one, params_S)

    mu, h, terms = jax.device_get(direct(params))
    np.testing.assert_allclose(ev.mu, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ev.h, h, rtol=1e-5, atol=1e-6)
    counts = np.stack([(h > t).sum(1) for t in cfg.thresholds], 1)  # [S, T, N]
    np.testing.assert_array_equal(ev.counts, counts)
    for name in ("recon", "kl", "sae", "l0"):
        np.testing.assert_allclose(ev.terms[name], terms[name].mean(1), rtol=1e-5)
    assert ev.k == k and ev.run(1).dead_fraction()["0"] == np.mean(counts[1, 0] == 0)
