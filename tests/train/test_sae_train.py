"""SAE train step: 4 simulated devices give the single-device step; the engine trains and
resumes it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.models import sae
from sparsejax.train import ConfigError, RunExistsError, TrainingDiverged, make_mesh
from sparsejax.train import sae as sae_train


def _cfgs(k_aux=0, **sae_fields):
    cfg = sae.SAEConfig(d_in=8, n_latents=32, k=4, k_aux=k_aux, impl="lax", **sae_fields)
    return cfg, sae_train.SAETrainConfig(batch_size=16, lr=1e-2, dead_after=1, log_every=2)


# JumpReLU with a kernel wide enough that a batch of 16 reaches its thresholds' gradients
JUMP = {"activation": "jumprelu", "jump_bandwidth": 0.5, "jump_init": 0.2, "l0_coef": 0.05,
        "preact_coef": 0.1}


@pytest.mark.parametrize("k_aux,fields", [(0, {}), (6, {}), (0, {"activation": "batchtopk"}),
                                          (0, JUMP)], ids=["topk", "auxk", "batchtopk",
                                                           "jumprelu"])
def test_four_devices_equal_one(k_aux, fields, rng):
    """Data parallel over 4 devices = one device: no double-counted gradient (pmean pitfall);
    BatchTopK's cut and threshold are the global batch's."""
    cfg, tcfg = _cfgs(k_aux, **fields)
    x = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:4]):
        mesh = make_mesh(devices)
        state = sae_train.init_state(jax.random.key(0), cfg, tcfg)
        # step 5 > dead_after: all latents start dead, so AuxK runs on the first step
        state = jax.device_put(state._replace(step=jnp.int32(5)),
                               jax.NamedSharding(mesh, jax.P()))
        step = sae_train.make_train_step(cfg, tcfg, mesh)
        for _ in range(3):
            state, metrics = step(state, jax.device_put(
                x, jax.NamedSharding(mesh, jax.P("data"))), jnp.int32(4))
        results.append((state, metrics))
    (s1, m1), (s4, m4) = results
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s4)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    for name in m1:
        np.testing.assert_allclose(m1[name], m4[name], rtol=1e-4, atol=1e-7)
    if k_aux:
        assert float(m1["aux_loss"]) > 0
    if fields.get("activation") == "batchtopk":
        assert float(m4["l0"]) == 4.0  # k B of the batch's B N (about half are positive)
        assert float(s4.params.threshold) > 0


def test_batchtopk_threshold_is_the_moving_average_of_the_least_kept(rng):
    cfg, tcfg = _cfgs(activation="batchtopk", batchtopk_decay=0.5)
    mesh = make_mesh(jax.devices()[:4])
    rep, rows = jax.NamedSharding(mesh, jax.P()), jax.NamedSharding(mesh, jax.P("data"))
    state = jax.device_put(sae_train.init_state(jax.random.key(0), cfg, tcfg), rep)
    step = sae_train.make_train_step(cfg, tcfg, mesh)
    theta = 0.0
    for _ in range(3):
        x = rng.standard_normal((16, 8)).astype(np.float32)
        p = jax.tree.map(np.asarray, state.params)
        pre = (x - p.b_dec) @ p.W_enc + p.b_enc
        least = np.sort(pre.reshape(-1))[::-1][4 * 16 - 1]  # the (k B)-th largest, > 0
        theta = least if theta == 0 else 0.5 * theta + 0.5 * least
        state, _ = step(state, jax.device_put(x, rows), jnp.int32(4))
        np.testing.assert_allclose(state.params.threshold, theta, rtol=1e-5)


def test_jumprelu_thresholds_receive_the_l0_gradient(rng):
    """The L0 penalty's straight-through gradient reaches the thresholds: Adam's first step
    with it raises every threshold it touches at least as far as the same step without it
    (by 2 lr where the penalty outweighs the reconstruction's pull)."""
    x = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)
    mesh = make_mesh(jax.devices()[:1])
    rep = jax.NamedSharding(mesh, jax.P())
    u = {}
    for coef in (0.0, 1.0):
        cfg, tcfg = _cfgs(**{**JUMP, "l0_coef": coef, "preact_coef": 0.0})
        state = jax.device_put(sae_train.init_state(jax.random.key(0), cfg, tcfg), rep)
        state, _ = sae_train.make_train_step(cfg, tcfg, mesh)(state, x, jnp.int32(4))
        u[coef] = np.asarray(state.params.threshold)
    u0 = np.asarray(sae.init_params(jax.random.key(0), cfg).threshold)
    moved = u[1.0] - u[0.0]
    assert np.all(moved >= -1e-7) and np.count_nonzero(moved > 1e-4) >= 16
    assert np.any(u[1.0] != u0)


def test_step_keeps_decoder_unit_norm_and_k_is_traced(rng):
    cfg, tcfg = _cfgs()
    mesh = make_mesh(jax.devices()[:1])
    step = sae_train.make_train_step(cfg, tcfg, mesh)
    state = jax.device_put(sae_train.init_state(jax.random.key(0), cfg, tcfg),
                           jax.NamedSharding(mesh, jax.P()))
    x = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)
    for k in (4, 2, 3):
        state, m = step(state, x, jnp.int32(k))
        assert float(m["l0"]) <= k
    assert step._cache_size() == 1
    np.testing.assert_allclose(np.linalg.norm(state.params.W_dec, axis=1), 1, rtol=1e-5)


def test_train_loop_reduces_loss_and_reports_nan(rng, tmp_path):
    cfg, tcfg = _cfgs(k_aux=4)
    d = rng.standard_normal((16, 8))
    codes = (rng.random((512, 16)) < 0.2) * rng.random((512, 16))
    acts = (codes @ d).astype(np.float32)
    tcfg = sae_train.SAETrainConfig(batch_size=32, lr=5e-3, epochs=3, log_every=8,
                                    resample_every=16, dead_after=8)
    state, hist, status, _ = sae_train.train(acts, cfg, tcfg, tmp_path / "a", progress=False)
    assert status == "done" and hist.steps[-1] == 3 * 16 and int(state.step) == 48
    assert hist.metrics[-1]["fvu"] < 0.6 * hist.metrics[0]["fvu"]
    # resume: a run cut after one epoch, continued, reproduces the straight run exactly
    sae_train.train(acts, cfg, dataclasses.replace(tcfg, epochs=1), tmp_path / "b",
                    progress=False)
    resumed = sae_train.train(acts, cfg, tcfg, tmp_path / "b", resume=True, progress=False)
    assert resumed.start_step == 16 and resumed.history.steps == hist.steps
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="cannot resume.*dead_after.*only epochs, log_every, "
                                          "lr may change"):
        sae_train.train(acts, cfg, dataclasses.replace(tcfg, dead_after=9), tmp_path / "b",
                        resume=True, progress=False)
    with pytest.raises(RunExistsError):
        sae_train.train(acts, cfg, tcfg, tmp_path / "b", progress=False)
    bad = acts.copy()
    bad[3] = np.nan
    with pytest.raises(TrainingDiverged, match="at step 0 "):
        sae_train.train(bad, cfg, tcfg, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match=r"shape \[M, d_in=8\]"):
        sae_train.train(acts[:, :5], cfg, tcfg, tmp_path / "d", progress=False)
