"""The optimiser factory every model trains with."""

from __future__ import annotations

import optax


def make_optimizer(learning_rate: float, *, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam. The defaults are disentanglement_lib's (and optax's); SAE practice (Gao et al.
    2024) uses ``eps = 6.25e-10``."""
    return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
