"""The jitted train step: no recompilation across k, device-count invariance, vmapped seeds,
firing counts, host-fed batches, donation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.data import FactorDataset, get_dataset
from sparsejax.models.vae import loss_terms
from sparsejax.train import hybrid as Hy
from sparsejax.train import mesh as Me
from sparsejax.train import state as St
from sparsejax.train import step as Sp
KS = (32, 20, 8)  # k changes every step: the step must not recompile


@pytest.fixture(scope="module")
def dsprites():
    return get_dataset("dsprites", "procedural")


def _counted(ds):
    """The same dataset whose render may be traced once only (chex raises on a retrace)."""
    render = chex.assert_max_traces(lambda f: ds.render(f), n=1)
    return FactorDataset(ds.name, ds.source, ds.space, ds.observation_shape, render,
                         on_device=True)


def _host(ds):
    """The same images read on the host, as the file and TFDS sources are."""
    return FactorDataset(ds.name, "file", ds.space, ds.observation_shape,
                         lambda f: np.asarray(ds.render(jnp.asarray(f))), on_device=False)


@pytest.fixture(scope="module")
def cfg(tiny):
    return tiny()


class Setup:
    def __init__(self, cfg, dataset, devices):
        self.cfg, self.dataset = cfg, dataset
        self.mesh = Me.make_mesh(devices)
        self.gd = Hy.model_graphdef(cfg, 1)
        self.step = Sp.make_train_step(cfg, self.gd, dataset, self.mesh)

    def init(self, **changes):
        return St.init_state(self.cfg.replace(**changes), 1, Me.replicated(self.mesh))

    def run(self, state, steps=len(KS), ks=KS):
        for t in range(steps):
            k = jnp.int32(ks[t % len(ks)])
            if self.dataset.on_device:
                state, m = self.step(state, k)
            else:
                images = Sp.host_batch(self.dataset, np.asarray(state.key), t,
                                       self.cfg.batch_size)
                state, m = self.step(state, k, images)
        return state, m


@pytest.fixture(scope="module")
def setups(dsprites, cfg):
    """One seed on one device; two seeds in one program on four devices, vmapped (its
    render traced once: chex raises on a retrace) and unrolled; host-fed on four."""
    two = dict(num_seeds=2)
    return {"one": Setup(cfg, dsprites, jax.devices()[:1]),
            "vmap": Setup(cfg.replace(**two, seed_map="vmap"), _counted(dsprites),
                          jax.devices()),
            "unroll": Setup(cfg.replace(**two, seed_map="unroll"), dsprites, jax.devices()),
            "host": Setup(cfg, _host(dsprites), jax.devices())}


@pytest.fixture(scope="module")
def runs(setups):
    """Seeds 0 and 1 alone on one device; seeds (0, 1) vmapped and unrolled on four;
    host-fed."""
    return {"one": setups["one"].run(setups["one"].init()),
            "seed1": setups["one"].run(setups["one"].init(seed=1)),
            "vmap": setups["vmap"].run(setups["vmap"].init()),
            "unroll": setups["unroll"].run(setups["unroll"].init()),
            "host": setups["host"].run(setups["host"].init())}


def _close(a, b, rtol=2e-4, atol=2e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                         rtol=rtol, atol=atol), a, b)


def _run(state, i):
    """Run ``i`` of a state of several runs, its leading axis kept (a one-run state)."""
    return jax.tree.map(lambda x: x[i:i + 1], state)


def test_step_does_not_recompile_across_k(setups, runs):
    # 3 steps with k in (32, 20, 8), one or two seeds: one trace (chex) and one executable
    for setup in setups.values():
        assert setup.step._cache_size() == 1


def test_one_and_four_devices_agree(runs):
    """Seed 0 alone on one device trains what it does beside seed 1 on four."""
    assert len(jax.devices()) == 4
    (s1, m1), (s4, m4) = runs["one"], runs["unroll"]
    assert s1.params["encoder"]["fc"]["kernel"][...].sharding.mesh.devices.size == 1
    assert s4.params["encoder"]["fc"]["kernel"][...].sharding.mesh.devices.size == 4
    _close(s1.params, _run(s4, 0).params)
    _close(m1["loss"], m4["loss"][:1], rtol=1e-5)
    np.testing.assert_array_equal(s1.fire, s4.fire[:1])
    assert int(s4.step[0]) == len(KS)


@pytest.mark.parametrize("mode", ["vmap", "unroll"])
def test_seeds_in_one_program_equal_separate_runs(runs, mode):
    both = runs[mode][0]
    for i, name in enumerate(("one", "seed1")):
        _close(_run(both, i).params, runs[name][0].params)
        np.testing.assert_array_equal(both.fire[i:i + 1], runs[name][0].fire)
    # and the two seeds really differ (own init and own data stream)
    kernel = both.params["encoder"]["fc"]["kernel"][...]
    assert not np.allclose(kernel[0], kernel[1])


def test_host_fed_batches_equal_device_batches(runs):
    """A dataset read on the host (file/TFDS), its batch sharded over four devices, sees
    the same (seed, step) batches as one rendered on one device."""
    _close(runs["host"][0].params, runs["one"][0].params)


@pytest.fixture(scope="module")
def l1_setup(dsprites, cfg):
    return Setup(cfg.replace(method="l1"), dsprites, jax.devices()[:1])


@pytest.mark.parametrize("method,t", [("topk", 1), ("l1", 4)])  # T in {1, 4}
def test_a_scan_of_t_steps_equals_t_single_steps(setups, l1_setup, dsprites, method, t):
    """One dispatch of T steps (k moving every step, the L1 controller carried) computes
    what T dispatches of the single step do, to float32 rounding; its metrics come back
    ``[T, S]``."""
    ks = [KS[i % len(KS)] for i in range(4)]
    s = setups["one"] if method == "topk" else l1_setup
    singles, rows = s.init(), []
    for k in ks:
        singles, m = s.step(singles, jnp.int32(k))
        rows.append(m)
    scan = Sp.make_train_step(s.cfg, s.gd, dsprites, s.mesh, scan_steps=t)
    state = s.init()
    for i in range(0, 4, t):
        state, m_T = scan(state, jnp.asarray(ks[i:i + t], jnp.int32))
        chex.assert_shape(m_T["loss"], (t, 1))
    # XLA fuses a loop body apart from the standalone step, so float32 rounding may differ
    # (seen: 3e-8 absolute, about 1e-4 of one Adam step of size lr); counts and keys agree
    atol = 1e-2 * s.cfg.learning_rate
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(singles)):
        if jnp.issubdtype(a.dtype, jnp.floating):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)
        else:
            np.testing.assert_array_equal(a, b)
    for name in m_T:
        np.testing.assert_allclose(m_T[name][-1], rows[-1][name], rtol=1e-5, atol=atol)
    if method == "l1":  # the controller moved the coefficient inside the scan
        assert len({float(r["l1_coef"][0]) for r in rows}) > 1


def test_grouped_methods_equal_separate_runs(setups, l1_setup, dsprites, cfg):
    """Top-k, L1 and Top-k held at k = 20 in one vmapped program (``group``: L1 is Top-k at
    k = N with its penalty on; a fixed-k member's k is its own), scanned 4 steps per
    dispatch as the accelerators' presets run it, train what the separate runs do step by
    step: parameters, controller, counts."""
    g = Setup(cfg.replace(group=("l1", "topk@20"), seed_map="vmap"), dsprites,
              jax.devices()[:1])
    assert g.cfg.runs == (("topk", 0), ("l1", 0), ("topk@20", 0))
    scan = Sp.make_train_step(g.cfg, g.gd, dsprites, g.mesh, scan_steps=4)
    state, m_T = scan(g.init(), jnp.asarray([KS[t % len(KS)] for t in range(4)], jnp.int32))
    chex.assert_shape(m_T["l1_coef"], (4, 3))
    for i, (s, ks) in enumerate(((setups["one"], KS), (l1_setup, KS), (setups["one"], (20,)))):
        alone, m_alone = s.run(s.init(), steps=4, ks=ks)
        run_i = _run(state, i)
        _close(run_i.params, alone.params)
        _close(run_i.ctrl, alone.ctrl, rtol=1e-5)
        np.testing.assert_array_equal(run_i.fire, alone.fire)
        for name in ("loss", "l0", "l1_coef"):
            _close(m_T[name][-1, i:i + 1], m_alone[name], rtol=1e-5)
    coefs = np.asarray(m_T["l1_coef"])  # [T, S]
    assert np.all(coefs[:, [0, 2]] == 0) and np.all(coefs[:, 1] > 0)
    assert len(set(coefs[:, 1])) > 1  # the L1 run's controller moved
    l0 = m_T["l0"][2]  # at k = 8: Top-k is cut there, the L1 run's ReLU is not, nor k = 20
    assert float(l0[0]) <= KS[2] < float(l0[1]) and KS[2] < float(l0[2]) <= 20


def test_firing_counts_and_batch_against_an_independent_forward(setups, dsprites, cfg):
    """One step's firing counts and loss equal a separate forward pass on the batch of
    (seed 0, step 0), drawn and rendered outside the step."""
    s = setups["one"]
    state0 = s.init()
    params0 = jax.tree.map(lambda x: np.asarray(x[0]), state0.params)
    key0 = np.asarray(state0.key[0])
    state1, m = s.step(state0, jnp.int32(12))

    k_data, k_eps = Sp.step_keys(jnp.asarray(key0), 0)
    x = dsprites.render(dsprites.sample_factors(k_data, cfg.batch_size))
    eps = jax.random.normal(k_eps, (cfg.batch_size, cfg.num_latents))
    out = nnx.merge(s.gd, params0)(x, eps, jnp.int32(12))
    h = np.asarray(out.h)
    np.testing.assert_array_equal(state1.fire[0], np.sum(h > 0, axis=0))
    np.testing.assert_allclose(m["recon"][0], loss_terms(out, x)["recon"], rtol=1e-5)
    assert np.sum(h > 0, axis=1).max() <= 12 and int(m["bad_step"][0]) == -1


def test_state_is_donated(setups):
    s = setups["one"]
    state = s.init()
    leaf = state.params["encoder"]["fc"]["kernel"][...]
    new, _ = s.step(state, jnp.int32(8))
    assert leaf.is_deleted()
    assert not new.params["encoder"]["fc"]["kernel"][...].is_deleted()


def test_batch_must_split_over_devices():
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        Me.check_batch(6, Me.make_mesh())
