"""Test session set-up: four simulated CPU devices, set before JAX initialises.

The suite runs on two pytest-xdist workers per default (``-n 2 --dist loadfile`` in
pyproject): each test file stays in one worker, so module fixtures are built once, and
files that build the same programs (:data:`SHARED_PROGRAMS`) share a worker.

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
# XLA:CPU without LLVM's optimisations (the HLO passes still run): the tests' tiny programs
# run a few steps each, so compiling is most of their cost, and it takes about 25% less
# (the phase-form convolutions, matmuls in Eigen, run about 1.6x slower per step). Every
# process of the session, subprocesses included, compiles with the same flags. The bench
# measures with XLA's defaults.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# ... except for the few programs a test runs hundreds of times, which compile at XLA's
# default level (LLVM's -O3) through their own compiler options: the ``optimized`` fixture.

import jax  # noqa: E402  (must come after the environment is set)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)


# Files whose tests compile the same programs (the same tiny configs) run in one worker, one
# after the other, so the later ones load them from the persistent cache instead of
# compiling them at the same time in the other worker. Every other file is a unit of its
# own, as under ``--dist loadfile``. (xdist's own ``xdist_group`` marks reach the scheduler
# through node ids, which pytest 9 no longer lets a plugin rewrite.)
SHARED_PROGRAMS = {
    "tests/experiments/test_collapse.py": "tiny_study",  # the remedies grid is collapse's
    "tests/experiments/test_remedies_study.py": "tiny_study",
    **{f"tests/train/test_{name}.py": "tiny_engine"  # tests/train/conftest.py's TINY
       for name in ("evaluate", "loop", "memory", "step")},
}


def unit_of(path: str) -> str:
    """The scheduling unit of a test file: its SHARED_PROGRAMS group, else the file."""
    return SHARED_PROGRAMS.get(path, path)


# The longest units, measured cold on 2 cores (seconds of test time), are handed out first,
# so that neither worker is left running a long one alone at the end (the
# longest-processing-time-first rule). The rest follow in collection order.
LONGEST_FIRST = (
    "tests/train/test_step.py",  # tiny_engine with test_loop, ...: about 100
    "tests/experiments/test_collapse.py",  # tiny_study with the remedies study: about 95
    "tests/test_distributed.py",  # 35-50
    "tests/launch/test_sweep.py",  # about 37
    "tests/experiments/test_sae_study.py",  # 18-32
    "tests/train/test_l1_closed_loop.py",  # 13-29
)


def pytest_collection_modifyitems(config, items):
    order = {unit_of(path): i for i, path in enumerate(LONGEST_FIRST)}
    # stable: files and tests keep their order within a rank
    items.sort(key=lambda item: order.get(unit_of(item.nodeid.split("::")[0]), len(order)))


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the suite also runs without xdist
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None  # the scheduler asked for on the command line
    from xdist.scheduler import LoadFileScheduling

    class SharedPrograms(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(super()._split_scope(nodeid))

    return SharedPrograms(config, log)


@pytest.fixture(scope="session")
def optimized():
    """Compiler options for a program run many times: ``jax.jit(f, compiler_options=...)``
    or ``f.lower(...).compile(...)``. XLA's default optimisation level, which this session
    turns off for every other program (the XLA_FLAGS above)."""
    return {"xla_backend_optimization_level": 3}


@pytest.fixture
def rng(request):
    """A fresh numpy Generator per test, seeded from the test's name (reproducible, not
    constant)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
