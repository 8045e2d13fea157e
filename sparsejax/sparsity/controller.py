"""The L1 arm's coefficient controller: steer the L1 penalty so mean L0 tracks the k schedule.

A PI controller in log space on the smoothed L0, run inside the jitted step on every batch.
With ``m`` the exponential moving average of the batches' mean L0 and ``k`` the target::

    e  = log((m + 1) / (k + 1))                          (> 0: too many units active)
    I <- clip(I + k_i e, log c_min, log c_max)           (integral part)
    log c = clip(I + k_p e, log c_min, log c_max)        (the coefficient of the next step)

Multiplicative in c, so a ratio error moves c by the same factor at any scale; +1 keeps it
finite when nothing fires. Two rules keep the integral from winding up, the failure of a
plain integrator on this plant (ReLU alone gives L0 of about N / 2, so while k is above
that the error is negative for hundreds of steps and a plain integrator drives c towards
zero; when k passes below, c must climb back orders of magnitude while the layer, moved
by Adam at a small learning rate, lags behind):

- no downward integration while the target is falling (``k`` below the previous step's):
  the target itself is coming down to meet the measured L0;
- no integration while the smoothed L0 is moving towards the target fast enough to close
  the error within ``horizon`` steps at its current trend: the layer answers a change of c
  late (Adam's momentum, the network adapting), so integrating through that delay is what
  makes the coefficient overshoot by orders of magnitude. The trend is the log-ratio of two
  moving averages of L0 (``ema`` and a slower one of time constant ``horizon``),
  divided by the difference of their lags: a step-to-step difference would read the
  batches' noise as "approaching" on half the steps and stall the last few percent;
- the start ``init_coef`` is set just below the coefficient that first bites (measured on
  the hybrid at lr 1e-3: 0.3 moves L0 little within 150 steps, 3 a lot; the collapse
  study's CPU preset starts at 0.1), so the climb is short. Once the target holds, the
  coefficient may go down to ``min_coef``: a network that trains on needs less penalty
  for the same L0, and a floor at the start would pin L0 below its target.

Gains: the defaults (``gain`` 0.05, ``p_gain`` 1) are gentle because an overshoot is not
undone: on the 500-unit hybrid at lr 1e-3 with k falling 500 -> 50 in 150 steps, gains of
0.2 and 2 drove the coefficient to about 10 while L0 lagged, and the units it killed
stayed dead (L0 ended at 38 and 42 for k = 50). On that layer log L0 moves by about -0.4
per unit of log c and answers within 25-50 steps; a small layer whose units recover
tolerates the faster gains (the closed-loop test of the hybrid uses 0.2 and 2).

The state is a pytree of scalars, checkpointed with the rest of the train state.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ControllerState:
    log_coef: jax.Array  # float32 scalar: log of the L1 coefficient used by the next step
    log_integral: jax.Array  # float32 scalar: the integral part I
    l0_ema: jax.Array  # float32 scalar: moving average of measured L0 (-1: none yet)
    l0_slow: jax.Array  # float32 scalar: the slower average, time constant horizon (-1: none)
    k_prev: jax.Array  # float32 scalar: the previous step's target (-1: none yet)


@dataclasses.dataclass(frozen=True)
class L1Controller:
    """Configuration and pure update rule of the L1 coefficient controller.

    Attributes:
      init_coef: coefficient at step 0 (> 0).
      min_coef: floor of the coefficient and its integral (0 < min_coef <= init_coef).
      gain: integral gain k_i per step, in log-coefficient per unit log-ratio error (>= 0;
        0 with ``p_gain`` 0 holds the coefficient at ``init_coef``).
      p_gain: proportional gain k_p (>= 0).
      max_coef: upper clip of the coefficient (>= init_coef, finite).
      ema: smoothing of the measured L0 the controller acts on (0 <= ema < 1).
      horizon: steps; the integral holds while L0's current trend would close the error
        within this many steps (about the layer's response time; 0 turns the rule off;
        otherwise longer than the ``ema``'s time constant ``1 / (1 - ema)``).
    """

    init_coef: float = 1e-3
    min_coef: float = 1e-5
    gain: float = 0.05
    p_gain: float = 1.0
    max_coef: float = 1e2
    ema: float = 0.9
    horizon: float = 25.0

    def __post_init__(self):
        if not (0 < self.min_coef <= self.init_coef <= self.max_coef
                and math.isfinite(self.max_coef)):
            raise ValueError("L1 controller needs 0 < min_coef <= init_coef <= max_coef < inf, "
                             f"got {self.min_coef}, {self.init_coef}, {self.max_coef}")
        for name in ("gain", "p_gain", "horizon"):
            v = getattr(self, name)
            if not v >= 0 or not math.isfinite(v):
                raise ValueError(f"L1 controller {name} must be finite and >= 0, got {v}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"L1 controller ema must be in [0, 1), got {self.ema}")
        if self.horizon and not self.horizon > 1 / (1 - self.ema):
            raise ValueError(f"L1 controller horizon must be 0 or longer than the ema's time "
                             f"constant 1 / (1 - ema) = {1 / (1 - self.ema):.3g}, got "
                             f"{self.horizon}")

    def init(self) -> ControllerState:
        log_c = jnp.asarray(math.log(self.init_coef), jnp.float32)
        none = jnp.asarray(-1.0, jnp.float32)
        return ControllerState(log_c, log_c, none, none, none)

    @staticmethod
    def coef(state: ControllerState) -> jax.Array:
        """The L1 coefficient to use now (float32 scalar)."""
        return jnp.exp(state.log_coef)

    def update(self, state: ControllerState, l0: jax.Array, k_target: jax.Array
               ) -> ControllerState:
        """One step of the controller from a batch's measured mean L0 and the target k."""
        l0 = jnp.asarray(l0, jnp.float32)
        k = jnp.asarray(k_target, jnp.float32)
        m = jnp.where(state.l0_ema < 0, l0, self.ema * state.l0_ema + (1 - self.ema) * l0)
        slow_a = 1.0 - 1.0 / self.horizon if self.horizon else 0.0
        slow = jnp.where(state.l0_slow < 0, l0, slow_a * state.l0_slow + (1 - slow_a) * l0)
        err = jnp.log((m + 1.0) / (k + 1.0))
        falling = (state.k_prev < 0) | (k < state.k_prev)  # the first step counts as falling
        # L0 already moving towards the target: the layer lags the coefficient, so more
        # integral now would overshoot once it arrives. Under a ramp an average of factor a
        # lags by a / (1 - a) steps, so the gap of the two averages over the gap of their
        # lags is the trend of log L0 per step.
        lag = slow_a / (1 - slow_a) - self.ema / (1 - self.ema) if self.horizon else 1.0
        trend = jnp.log((m + 1.0) / (slow + 1.0)) / lag
        approaching = (self.horizon > 0) & (err * trend < 0) & (
            jnp.abs(trend) * self.horizon >= jnp.abs(err))
        hold = ((err < 0) & falling) | approaching
        d_integral = jnp.where(hold, 0.0, self.gain * err)
        lo, hi = math.log(self.min_coef), math.log(self.max_coef)
        integral = jnp.clip(state.log_integral + d_integral, lo, hi)
        log_coef = jnp.clip(integral + self.p_gain * err, lo, hi)
        return ControllerState(log_coef.astype(jnp.float32), integral.astype(jnp.float32),
                               m.astype(jnp.float32), slow.astype(jnp.float32), k)
