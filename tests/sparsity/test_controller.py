"""The L1 coefficient controller: its update rule against a numpy restatement, the
anti-windup rules, and closed-loop tracking of a lagging plant (the closed loop with the
real hybrid is in tests/train/test_l1_closed_loop.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.sparsity.controller import L1Controller


def reference_run(c: L1Controller, l0s, ks):
    """The controller's law restated in float64 numpy, one step at a time."""
    integral = log_c = math.log(c.init_coef)
    a_fast, a_slow = c.ema, 1 - 1 / c.horizon
    m = slow = k_prev = None
    out = []
    for l0, k in zip(l0s, ks):
        m = l0 if m is None else a_fast * m + (1 - a_fast) * l0
        slow = l0 if slow is None else a_slow * slow + (1 - a_slow) * l0
        e = math.log((m + 1) / (k + 1))
        falling = k_prev is None or k < k_prev
        # trend: the gap of the averages over the gap of their ramp lags a / (1 - a)
        trend = math.log((m + 1) / (slow + 1)) / (a_slow / (1 - a_slow) - a_fast / (1 - a_fast))
        approaching = e * trend < 0 and abs(trend) * c.horizon >= abs(e)
        d = 0.0 if ((e < 0 and falling) or approaching) else c.gain * e
        lo, hi = math.log(c.min_coef), math.log(c.max_coef)
        integral = min(max(integral + d, lo), hi)
        log_c = min(max(integral + c.p_gain * e, lo), hi)
        k_prev = k
        out.append(math.exp(log_c))
    return np.asarray(out)


def test_updates_match_the_numpy_restatement(rng):
    c = L1Controller(init_coef=0.05, gain=0.3, p_gain=0.7, max_coef=5.0, ema=0.8, horizon=10.0)
    l0s = rng.uniform(0, 300, 60)
    ks = np.concatenate([np.linspace(400, 20, 30).round(), np.full(30, 20.0)])
    s, got = c.init(), []
    for l0, k in zip(l0s, ks):
        s = c.update(s, jnp.float32(l0), jnp.int32(k))
        got.append(float(c.coef(s)))
    np.testing.assert_allclose(got, reference_run(c, l0s, ks), rtol=2e-5)


def test_first_update_by_hand():
    c = L1Controller(init_coef=0.1, gain=0.5, p_gain=0.0, ema=0.9)
    assert math.isclose(float(c.coef(c.init())), 0.1, rel_tol=1e-6)
    s1 = c.update(c.init(), jnp.float32(99.0), jnp.int32(49))
    assert math.isclose(float(c.coef(s1)), 0.1 * (100 / 50) ** 0.5, rel_tol=1e-5)
    assert float(s1.l0_ema) == 99.0  # the first measurement initialises the average
    s2 = c.update(s1, jnp.float32(49.0), jnp.int32(49))
    assert math.isclose(float(s2.l0_ema), 0.9 * 99 + 0.1 * 49, rel_tol=1e-6)


def test_no_windup_while_the_target_falls_above_the_plant():
    """k falls from 500 while L0 sits at 250: the error is negative for 100 steps, yet the
    coefficient never leaves its start (a plain integrator would drive it to its floor)."""
    c = L1Controller(init_coef=0.01, gain=0.5, p_gain=0.0, ema=0.0)
    s = c.init()
    for k in np.linspace(500, 260, 100).round():
        s = c.update(s, jnp.float32(250.0), jnp.int32(k))
        assert math.isclose(float(c.coef(s)), 0.01, rel_tol=1e-5)
    # held target below L0: the coefficient rises; held above: it comes back down
    for _ in range(20):
        s = c.update(s, jnp.float32(250.0), jnp.int32(50))
    high = float(c.coef(s))
    assert high > 0.1
    for _ in range(5):
        s = c.update(s, jnp.float32(10.0), jnp.int32(50))
    assert float(c.coef(s)) < high
    # held above for long, it goes below its start, down to its floor
    for _ in range(50):
        s = c.update(s, jnp.float32(10.0), jnp.int32(50))
    assert math.isclose(float(c.coef(s)), c.min_coef, rel_tol=1e-4)


def test_clipping_and_zero_gains():
    c = L1Controller(init_coef=1.0, min_coef=0.5, gain=10.0, p_gain=0.0, max_coef=2.0, ema=0.0)
    s = c.update(c.init(), jnp.float32(1000.0), 10)
    assert math.isclose(float(c.coef(s)), 2.0, rel_tol=1e-6)
    s = c.update(s, jnp.float32(0.0), 10)  # k held, L0 far below: down to the floor
    assert math.isclose(float(c.coef(s)), 0.5, rel_tol=1e-6)
    frozen = L1Controller(gain=0.0, p_gain=0.0)
    s = frozen.update(frozen.init(), 300.0, 50)
    assert float(frozen.coef(s)) == pytest.approx(frozen.init_coef)


def test_closed_loop_tracks_a_falling_target_through_a_lagging_plant():
    """Plant with the real layer's traits: ReLU alone gives L0 = 250; the equilibrium
    L0*(c) = 250 / (1 + (c / 0.3)^0.8); L0 follows it with a 25-step lag. The target falls
    500 -> 50 over 150 steps, then holds for 150: at the end L0 is within 10% of k."""
    c = L1Controller(init_coef=0.1, gain=0.05, p_gain=1.0, ema=0.9, horizon=25.0)  # its lag
    ks = jnp.concatenate([jnp.linspace(500, 50, 150).round(), jnp.full(150, 50.0)])

    def body(carry, k):
        s, l0 = carry
        target = 250.0 / (1.0 + (c.coef(s) / 0.3) ** 0.8)
        l0 = l0 + (target - l0) / 25.0
        return (c.update(s, l0, k), l0), l0

    (_, _), l0 = jax.jit(lambda s: jax.lax.scan(body, (s, jnp.float32(250.0)), ks))(c.init())
    l0 = np.asarray(l0)
    assert abs(l0[-50:] - 50).max() / 50 < 0.10, l0[-50:]
    # while k is above what the plant gives, the coefficient stays at its start
    floor = 250.0 / (1.0 + (c.init_coef / 0.3) ** 0.8)
    assert l0[:100].min() > 0.99 * floor


def test_bad_controller_config():
    with pytest.raises(ValueError, match="init_coef"):
        L1Controller(init_coef=0.0)
    with pytest.raises(ValueError, match="min_coef"):
        L1Controller(init_coef=0.1, min_coef=0.2)
    with pytest.raises(ValueError, match="max_coef"):
        L1Controller(init_coef=1.0, max_coef=0.5)
    with pytest.raises(ValueError, match="gain"):
        L1Controller(gain=-1.0)
    with pytest.raises(ValueError, match="p_gain"):
        L1Controller(p_gain=float("nan"))
    with pytest.raises(ValueError, match="ema"):
        L1Controller(ema=1.0)
    with pytest.raises(ValueError, match="horizon must be 0 or longer"):
        L1Controller(ema=0.9, horizon=8.0)
