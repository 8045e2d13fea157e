"""Shared pieces of the engine tests: the smoke preset shrunk to seconds."""

import pytest

from sparsejax.train import preset


def tiny_config(**overrides):
    """The smoke preset cut down: 32 units, batch 8, 3 steps per epoch, 64 eval samples."""
    base = dict(num_units=32, schedule={"start": 32, "end": 8, "length": 2}, batch_size=8,
                epochs=2, steps_per_epoch=3, eval_size=64, eval_batch=32, log_every=2)
    base.update(overrides)
    return preset("smoke", **base)


@pytest.fixture
def tiny():
    return tiny_config
