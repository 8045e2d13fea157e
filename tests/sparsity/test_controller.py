"""The L1 coefficient controller: its update rule by hand, and closed-loop tracking."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.sparsity.controller import ControllerState, L1Controller


def test_one_update_matches_the_formula():
    c = L1Controller(init_coef=0.1, gain=0.5, ema=0.9)
    s0 = c.init()
    assert math.isclose(float(c.coef(s0)), 0.1, rel_tol=1e-6)
    s1 = c.update(s0, jnp.float32(99.0), jnp.int32(49))
    assert math.isclose(float(c.coef(s1)), 0.1 * (100 / 50) ** 0.5, rel_tol=1e-5)
    assert float(s1.l0_ema) == 99.0  # first measurement initialises the average
    s2 = c.update(s1, jnp.float32(49.0), jnp.int32(49))
    assert math.isclose(float(c.coef(s2)), float(c.coef(s1)), rel_tol=1e-6)  # on target
    assert math.isclose(float(s2.l0_ema), 0.9 * 99 + 0.1 * 49, rel_tol=1e-6)


def test_clipping_and_zero_gain():
    c = L1Controller(init_coef=1.0, gain=10.0, min_coef=0.5, max_coef=2.0)
    s = c.update(c.init(), jnp.float32(1000.0), 10)
    assert math.isclose(float(c.coef(s)), 2.0, rel_tol=1e-6)
    s = c.update(s, jnp.float32(0.0), 500)
    assert math.isclose(float(c.coef(s)), 0.5, rel_tol=1e-6)
    frozen = L1Controller(gain=0.0)
    assert float(frozen.coef(frozen.update(frozen.init(), 300.0, 50))) == pytest.approx(1e-2)


def test_closed_loop_tracks_a_falling_target():
    """Plant: L0(c) = 500 exp(-c / 0.2) (more penalty, fewer active units). The controller,
    run as a jitted scan, settles on each plateau of the target at the inverse c*."""
    c = L1Controller(init_coef=1e-2, gain=0.2)
    targets = jnp.repeat(jnp.asarray([400, 200, 50], jnp.int32), 300)

    def body(s: ControllerState, k):
        l0 = 500.0 * jnp.exp(-c.coef(s) / 0.2)
        return c.update(s, l0, k), l0

    _, l0 = jax.jit(lambda s: jax.lax.scan(body, s, targets))(c.init())
    l0 = np.asarray(l0)
    for i, k in enumerate((400, 200, 50)):
        assert abs(l0[300 * i + 299] - k) / k < 0.02


def test_bad_controller_config():
    with pytest.raises(ValueError, match="min_coef"):
        L1Controller(init_coef=1e-6)
    with pytest.raises(ValueError, match="gain"):
        L1Controller(gain=-1.0)
    with pytest.raises(ValueError, match="ema"):
        L1Controller(ema=1.0)
