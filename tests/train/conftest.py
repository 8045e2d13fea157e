"""Shared pieces of the engine tests: the smoke preset shrunk to seconds."""

import pytest

from sparsejax.train import preset

# 32 units, batch 8, 3 steps per epoch, 64 evaluation samples, k 32 -> 8 over 2 epochs.
# The engine's tests run a few steps, so compiling is most of their cost: they use XLA's own
# convolutions ("lax", the accelerators' path), which compile in about 70% of the time of
# the CPU default "phase_mm". That one is checked against "lax" (outputs and gradients) in
# tests/models/test_conv.py and trains in the collapse study's end-to-end test.
TINY = dict(num_units=32, schedule={"start": 32, "end": 8, "length": 2}, batch_size=8,
            epochs=2, steps_per_epoch=3, eval_size=64, eval_batch=32, log_every=2,
            conv_impl="lax")


@pytest.fixture(scope="session")
def tiny():
    """``tiny(**overrides)``: the smoke preset cut down to :data:`TINY`."""
    return lambda **overrides: preset("smoke", **{**TINY, **overrides})
