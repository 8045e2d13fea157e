import chex
import jax
import numpy as np

from sparsejax.data import get_dataset
from sparsejax.train import memory
from sparsejax.train.mesh import make_mesh
from sparsejax.train.state import abstract_state


def test_step_bytes_holds_the_state_and_grows_with_the_runs(tiny):
    ds = get_dataset("dsprites", "procedural")
    # all four devices, one seed and two vmapped: the programs the loop's and the step's
    # tests train, so the suite compiles them once (tests/conftest.py's SHARED_PROGRAMS)
    mesh = make_mesh()
    sizes = {}
    for s in (1, 2):
        cfg = tiny(num_seeds=s, seed_map="vmap" if s > 1 else "auto")
        state = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state(cfg, 1)))
        sizes[s] = memory.step_bytes(cfg, ds, mesh)
        # the donated state is read and written in place: at least its bytes, plus the batch
        # and the activations (8 images of 64x64 through the conv stack)
        assert sizes[s] > state + 8 * 64 * 64 * 4, s
    chex.assert_scalar_positive(sizes[2] - sizes[1])
    np.testing.assert_array_less(sizes[2], 2.5 * sizes[1])


def test_device_free_bytes_reads_the_allocator_and_is_none_on_cpu():
    class Dev:
        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    assert memory.device_free_bytes(Dev({"bytes_limit": 1000, "bytes_in_use": 300})) == 700
    assert memory.device_free_bytes(Dev(None)) is None
    assert memory.device_free_bytes(Dev({"bytes_in_use": 3})) is None
    if jax.default_backend() == "cpu":
        assert memory.device_free_bytes() is None
