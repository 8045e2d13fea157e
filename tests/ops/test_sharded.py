"""Top-k on 4 simulated CPU devices: batch-sharded, latent-sharded, and the split-axis guard.

Values and gradients come from one jitted call per test: each eager op (an eager gradient
is dozens) would compile its own XLA program.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sparsejax.ops import topk, topk_latent_sharded, topk_sharded, topk_values_indices

IMPLS = ["lax", "approx", "pallas"]


@pytest.fixture(scope="module")
def mesh4():
    assert jax.device_count() == 4, "tests/conftest.py sets 4 simulated CPU devices"
    return jax.make_mesh((4,), ("data",))


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_sharded_jit_matches_reference(impl, mesh4, rng, np_topk):
    x = jnp.asarray(rng.standard_normal((16, 130)), jnp.float32)
    xs = jax.device_put(x, NamedSharding(mesh4, P("data", None)))
    with jax.set_mesh(mesh4):
        y, (v, i), g = jax.jit(lambda x, k: (
            topk(x, k, impl=impl, k_max=16), topk_values_indices(x, 9, impl=impl),
            jax.grad(lambda x: jnp.sum(topk(x, 9, impl=impl) ** 2))(x)))(xs, jnp.int32(9))
    ref = np_topk(x, 9)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(v, -np.sort(-ref, axis=1)[:, :9])
    np.testing.assert_array_equal(g, 2 * ref)
    assert y.sharding.spec[0] == "data"


@pytest.mark.parametrize("impl", ["lax", "pallas"])
def test_topk_sharded_shard_map(impl, mesh4, rng, np_topk):
    x = jnp.asarray(rng.standard_normal((8, 100)), jnp.float32)
    # traced k: one program for every k, and the gradient (static k) in it too
    f = jax.jit(lambda x, k: (topk_sharded(x, k, mesh4, impl=impl, k_max=12),
                              jax.grad(lambda x: topk_sharded(x, 5, mesh4, impl=impl).sum())(x)))
    for k in (0, 5, 12):
        y, g = f(x, jnp.int32(k))
        np.testing.assert_array_equal(y, np_topk(x, k))
    np.testing.assert_array_equal(g, np_topk(x, 5) != 0)


@pytest.mark.parametrize("shape,mesh_shape", [((8, 64), (1, 4)), ((6, 40), (2, 2))])
def test_latent_sharded_exact(shape, mesh_shape, rng, np_topk):
    mesh = jax.make_mesh(mesh_shape, ("data", "model"))
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    f = jax.jit(lambda x, k: (
        topk_latent_sharded(x, k, mesh, batch_axis="data", k_max=20),
        jax.grad(lambda x: topk_latent_sharded(x, 7, mesh, batch_axis="data").sum())(x)))
    for k in (0, 1, 7, 20):
        y, g = f(x, jnp.int32(k))
        np.testing.assert_array_equal(y, np_topk(x, k))
    np.testing.assert_array_equal(g, np_topk(x, 7) != 0)


def test_latent_sharded_ties_span_devices(mesh4, np_topk):
    mesh = jax.make_mesh((4,), ("model",))
    # every shard holds ties at the threshold: lax keeps the lowest global indices
    x = np.tile(np.array([[3.0, 1.0, 1.0, 0.0]], np.float32), (2, 4))  # [2, 16], 4 per device
    x[1, 13], x[1, 2] = np.nan, -np.inf
    x = jnp.asarray(x)
    f = jax.jit(lambda x, k: topk_latent_sharded(x, k, mesh, k_max=16))
    for k in range(17):
        y = f(x, jnp.int32(k))
        np.testing.assert_array_equal(np.isnan(y), np.isnan(np_topk(x, k)))
        np.testing.assert_array_equal(np.nan_to_num(y), np.nan_to_num(np_topk(x, k)))


def test_split_topk_axis_is_refused(mesh4, rng):
    x = jnp.asarray(rng.standard_normal((4, 16)), jnp.float32)
    xs = jax.device_put(x, NamedSharding(mesh4, P(None, "data")))
    with jax.set_mesh(mesh4), pytest.raises(ValueError, match="top-k axis .* is sharded"):
        jax.jit(lambda x: topk(x, 3, impl="lax"))(xs)
    with pytest.raises(ValueError, match="does not divide"):
        topk_latent_sharded(np.ones((2, 10), np.float32), 2, jax.make_mesh((4,), ("model",)))
    with pytest.raises(ValueError, match="not in the mesh"):
        topk_sharded(x, 2, mesh4, batch_axis="batch")
