"""Test session set-up: four simulated CPU devices, set before JAX initialises.

The suite runs on two pytest-xdist workers per default (``-n 2 --dist loadfile`` in
pyproject: each test file stays in one worker, so module fixtures are built once).

Every sharded code path is exercised on a laptop CPU this way. Tests that need a
single device build a one-device mesh (``jax.devices()[:1]``) or run a subprocess
with ``JAX_NUM_CPU_DEVICES=1``.
"""

import os
import zlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# References are float32/float64 numpy: on a GPU, full-precision matmuls instead of TF32.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ["JAX_NUM_CPU_DEVICES"] = "4"
# One persistent compilation cache for every process of the session (both xdist workers,
# and the subprocesses of the CLI and multi-process tests inherit it): a program that
# several tests build is compiled once. Entries are keyed by the program and the flags.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (must come after the environment is set)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)


@pytest.fixture
def rng(request):
    """A fresh numpy Generator per test, seeded from the test's name (reproducible, not
    constant)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
