"""BatchTopK's batch-wide selection against a numpy sort, on one device and across four."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sparsejax.ops import batch_topk


def test_one_device_matches_sort_at_every_count(rng, np_batch_topk):
    x = rng.standard_normal((6, 20)).astype(np.float32)  # distinct, both signs
    x[0, :3] = [np.inf, -np.inf, -0.0]
    select = jax.jit(batch_topk)
    for count in (1, 7, 60, 119, 120):
        got = np.asarray(select(x, np.int32(count)))
        np.testing.assert_array_equal(got, np_batch_topk(x, count))
    assert select._cache_size() == 1  # the count is traced
    np.testing.assert_array_equal(select(x, np.int32(0)), np.zeros_like(x))


def test_ties_at_the_cut_are_all_kept():
    x = np.array([[3.0, 2.0, 2.0, 1.0], [2.0, 0.5, -1.0, 2.0]], np.float32)
    got = np.asarray(jax.jit(batch_topk)(x, 2))
    np.testing.assert_array_equal(got, np.where(x >= 2.0, x, 0))


@pytest.mark.parametrize("skew", [False, True])
def test_four_devices_select_the_whole_batch(skew, rng, np_batch_topk):
    """Sharded over 4 devices, the cut is the global batch's, even when one device holds
    more than its share of the winners (there a per-device Top-k would be wrong)."""
    mesh = jax.make_mesh((4,), ("data",))
    x = rng.standard_normal((16, 32)).astype(np.float32)
    if skew:
        x[:4] += 10.0  # device 0's rows hold every winner
    count = 3 * 16

    @jax.jit
    def sharded(x, count):
        return jax.shard_map(lambda xs, c: batch_topk(xs, c, axis_name="data"), mesh=mesh,
                             in_specs=(P("data", None), P()), out_specs=P("data", None))(x, count)

    xs = jax.device_put(x, jax.NamedSharding(mesh, P("data", None)))
    got = np.asarray(sharded(xs, np.int32(count)))
    ref = np_batch_topk(x, count)
    np.testing.assert_array_equal(got, ref)
    assert np.count_nonzero(got) == count
    if skew:
        assert np.count_nonzero(got[:4]) == count


def test_gradient_is_the_cotangent_at_the_kept_entries(rng, np_batch_topk):
    x = rng.standard_normal((5, 9)).astype(np.float32)
    g = rng.standard_normal((5, 9)).astype(np.float32)
    grad = jax.jit(jax.grad(lambda x, g: jnp.sum(batch_topk(x, 11) * g)))(x, g)
    keep = np_batch_topk(x, 11) != 0
    chex.assert_trees_all_close(grad, np.where(keep, g, 0))


def test_rank_checked():
    with pytest.raises(ValueError, match=r"shape \[B, N\]"):
        batch_topk(jnp.ones((2, 3, 4)), 2)
