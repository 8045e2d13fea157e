"""Shared pieces of the engine tests: the smoke preset shrunk to seconds."""

import pytest

from sparsejax.train import preset

# 32 units, batch 8, 3 steps per epoch, 64 evaluation samples, k 32 -> 8 over 2 epochs.
# The engine's tests run a few steps, so compiling is most of their cost. They use the CPU
# default convolutions ("auto": the phase form): under the suite's XLA flags (LLVM's
# optimisations off, tests/conftest.py) XLA's own "lax" convolutions compile faster but run
# about 9x slower, and lose after three steps. "lax" (the accelerators' path) is checked
# against the phase form, outputs and gradients, in tests/models/test_conv.py.
TINY = dict(num_units=32, schedule={"start": 32, "end": 8, "length": 2}, batch_size=8,
            epochs=2, steps_per_epoch=3, eval_size=64, eval_batch=32, log_every=2,
            conv_impl="auto")


@pytest.fixture(scope="session")
def tiny():
    """``tiny(**overrides)``: the smoke preset cut down to :data:`TINY`."""
    return lambda **overrides: preset("smoke", **{**TINY, **overrides})
