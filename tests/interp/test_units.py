"""Unit statistics, rule extraction, sweeps, feature visualisation and the dashboard files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.interp import units as U


def test_unit_stats_exact():
    f = np.array([[0, 0], [1, 1], [0, 2], [1, 0], [1, 2], [0, 1]])
    codes = np.stack([f[:, 0] * 2.0, np.zeros(6), f[:, 1] + 1.0], 1)
    s = U.unit_stats(codes, f, (2, 3))
    np.testing.assert_allclose(s["density"], [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(s["alive"], [True, False, True])
    np.testing.assert_allclose(s["response"][0, 0, :2], [0.0, 2.0])
    assert np.isnan(s["response"][0, 0, 2])
    np.testing.assert_allclose(s["response"][2, 1], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(s["response"][2, 0, :2], [2.0, 2.0])
    np.testing.assert_array_equal(s["best_factor"], [0, -1, 1])
    np.testing.assert_allclose(s["nmi"][0, 0], 1.0, atol=1e-5)
    np.testing.assert_array_equal(U.top_activating(codes, 2)[2], [2, 4])


def test_surrogate_trees_and_sweeps():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 3, size=(200, 2))
    codes = np.concatenate([f * 1.0, rng.normal(size=(200, 3))], 1)
    trees = U.surrogate_trees(codes, f, ("a", "b"))
    assert trees["a"]["fidelity"] == 1.0 and trees["b"]["fidelity"] == 1.0
    assert trees["a"]["units"] == [0] and "unit0" in trees["a"]["rules"]
    sweep = U.factor_sweeps(lambda x: x, lambda t: t.astype(np.float32), [1, 0], (2, 3))
    np.testing.assert_array_equal(sweep[1, :, 1], [0, 1, 2])
    np.testing.assert_array_equal(sweep[1, :, 0], [1, 1, 1])
    assert np.isnan(sweep[0, 2]).all() and np.array_equal(sweep[0, :2, 0], [0, 1])


def test_activation_maximisation_raises_the_unit():
    unit = lambda x: x[:, :3, :3].mean((1, 2, 3)) - x[:, 5:, 5:].mean((1, 2, 3))  # noqa: E731

    @jax.jit  # the optimisation, the unit's value and both total variations in one program
    def run(x0, key):
        x = U.activation_maximisation(unit, x0, key=key, steps=40, lr=0.1, l2=0.0, tv=0.0,
                                      jitter=0, blur_every=0)
        return (unit(x), U.total_variation(jnp.zeros((1, 4, 4, 1)))[0],
                U.total_variation(jnp.eye(4)[None, :, :, None])[0])

    value, tv_flat, tv_eye = run(np.full((2, 8, 8, 1), 0.5, np.float32), jax.random.key(0))
    np.testing.assert_allclose(value, 1.0, atol=1e-6)
    assert float(tv_flat) == 0.0
    assert float(tv_eye) == pytest.approx(1.0)


class _TinyHybrid:
    """What the dashboards read of a hybrid: ``encode(x, k).h`` (a ReLU code of 6 units)."""

    def __init__(self):
        self.w = jax.random.normal(jax.random.key(0), (64 * 64, 6))

    def encode(self, x, k):
        from types import SimpleNamespace

        return SimpleNamespace(h=jax.nn.relu(x.reshape(x.shape[0], -1) @ self.w))


def test_dashboards_files(tmp_path):
    from experiments import units as study
    from sparsejax.data import get_dataset

    ds = get_dataset("dsprites", "procedural")
    res = study.dashboards(_TinyHybrid(), ds, 4, tmp_path, units=2, samples=16, top=2,
                           act_steps=1, batch=16)
    assert len(res["shown"]) == 2 and res["units"] == 6
    page = (tmp_path / "units.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "src=\"http" not in page
    for u in res["shown"]:
        assert (tmp_path / f"unit_{u}.png").stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="config.json"):
        study.main(["--from", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
