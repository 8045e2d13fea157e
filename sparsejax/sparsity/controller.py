"""The L1 arm's coefficient controller: steer the L1 penalty so mean L0 tracks the k schedule.

An integral controller in log space, run inside the jitted step on every batch::

    log c  <-  clip(log c + gain * log((L0 + 1) / (k + 1)),  log c_min, log c_max)

where L0 is the batch's measured mean number of active units and k the schedule's target.
Too many active units raise the coefficient, too few lower it; the update is
multiplicative (a ratio error moves c by the same factor at any scale), and the +1 keeps
it finite when nothing fires. Clipping bounds the integrator (anti-windup), so a long
phase where the target cannot be met (k above what ReLU alone gives) does not leave c
stuck orders of magnitude away. ``l0_ema`` smooths the measured L0 for logging only.

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
    l0_ema: jax.Array  # float32 scalar: exponential moving average of measured L0


@dataclasses.dataclass(frozen=True)
class L1Controller:
    """Configuration and pure update rule of the L1 coefficient controller.

    Attributes:
      init_coef: coefficient at step 0 (> 0).
      gain: integral gain per step, in log-coefficient per unit log-ratio error (>= 0;
        0 holds the coefficient at ``init_coef``).
      min_coef, max_coef: clipping range of the coefficient (0 < min <= init <= max).
      ema: smoothing of the logged L0 (0 <= ema < 1).
    """

    init_coef: float = 1e-2
    gain: float = 0.02
    min_coef: float = 1e-4
    max_coef: float = 1e2
    ema: float = 0.98

    def __post_init__(self):
        if not 0 < self.min_coef <= self.init_coef <= self.max_coef:
            raise ValueError("L1 controller needs 0 < min_coef <= init_coef <= max_coef, got "
                             f"{self.min_coef}, {self.init_coef}, {self.max_coef}")
        if not self.gain >= 0 or not math.isfinite(self.gain):
            raise ValueError(f"L1 controller gain must be finite and >= 0, got {self.gain}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"L1 controller ema must be in [0, 1), got {self.ema}")

    def init(self) -> ControllerState:
        return ControllerState(jnp.asarray(math.log(self.init_coef), jnp.float32),
                               jnp.asarray(-1.0, jnp.float32))  # -1: no measurement yet

    @staticmethod
    def coef(state: ControllerState) -> jax.Array:
        """The L1 coefficient to use now (float32 scalar)."""
        return jnp.exp(state.log_coef)

    def update(self, state: ControllerState, l0: jax.Array, k_target: jax.Array
               ) -> ControllerState:
        """One step of the controller from a batch's measured mean L0 and the target k."""
        l0 = jnp.asarray(l0, jnp.float32)
        err = jnp.log((l0 + 1.0) / (jnp.asarray(k_target, jnp.float32) + 1.0))
        log_coef = jnp.clip(state.log_coef + self.gain * err,
                            math.log(self.min_coef), math.log(self.max_coef))
        ema = jnp.where(state.l0_ema < 0, l0, self.ema * state.l0_ema + (1 - self.ema) * l0)
        return ControllerState(log_coef.astype(jnp.float32), ema.astype(jnp.float32))
