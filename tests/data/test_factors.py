"""FactorSpace: index <-> factors, sampling, held-fixed batches, validation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.data import FactorSpace, as_key, get_dataset
from sparsejax.data.catalog import SPECS

SPACES = [SPECS["dsprites"].space, SPECS["shapes3d"].space]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: str(s.sizes))
def test_index_roundtrip_matches_numpy_ravel(space, rng):
    idx = rng.integers(0, space.num_points, 257)
    f_np = space.index_to_factors(idx)
    np.testing.assert_array_equal(f_np, np.stack(np.unravel_index(idx, space.sizes), 1))
    np.testing.assert_array_equal(space.factors_to_index(f_np), idx)
    # the jit-able path, both ways in one program
    f_jax, back = jax.jit(lambda i: (f := space.index_to_factors(i), space.factors_to_index(f))
                          )(idx.astype(np.int32))
    np.testing.assert_array_equal(f_jax, f_np)
    np.testing.assert_array_equal(back, idx)


def test_storage_order_last_factor_fastest():
    space = SPECS["dsprites"].space
    np.testing.assert_array_equal(space.index_to_factors(np.arange(3)),
                                  [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 2]])
    assert space.num_points == 737_280 and SPECS["shapes3d"].space.num_points == 480_000


@pytest.mark.parametrize("space", SPACES, ids=lambda s: str(s.sizes))
def test_sample_is_uniform_in_range_and_deterministic(space):
    f = space.sample(jax.random.key(3), 20_000)
    chex.assert_shape(f, (20_000, space.num_factors))
    chex.assert_type(f, jnp.int32)
    f = np.asarray(f)
    for j, size in enumerate(space.sizes):
        counts = np.bincount(f[:, j], minlength=size)
        assert counts.size == size  # nothing out of range
        expected = 20_000 / size
        # Chi-square test of uniformity; 1e-4 tail.
        chi2 = ((counts - expected) ** 2 / expected).sum()
        from scipy.stats import chi2 as chi2_dist

        assert chi2 < chi2_dist.ppf(1 - 1e-4, size - 1), (space.names[j], counts)
    np.testing.assert_array_equal(space.sample(jax.random.key(3), 20_000), f)
    assert not np.array_equal(space.sample(jax.random.key(4), 20_000), f)


def test_typed_and_raw_keys_agree():
    space = SPECS["shapes3d"].space
    np.testing.assert_array_equal(space.sample(jax.random.PRNGKey(7), 5),
                                  space.sample(jax.random.key(7), 5))
    with pytest.raises(TypeError, match="got the int 7"):
        as_key(7)
    with pytest.raises(TypeError, match="dtype float32"):
        as_key(jnp.zeros(2))


def test_sample_fixed_holds_chosen_factors(rng):
    space = SPECS["dsprites"].space
    fixed = [int(rng.integers(0, 5))]
    f = np.asarray(space.sample_fixed(jax.random.key(int(rng.integers(1 << 30))), 64, fixed))
    for j in range(5):
        distinct = len(np.unique(f[:, j]))
        assert (distinct == 1) if j in fixed else (distinct > 1), (j, fixed)
    # Two fixed factors, and a traced factor id inside jit.
    g = np.asarray(space.sample_fixed(jax.random.key(1), 64, (1, 3)))
    assert len(np.unique(g[:, 1])) == len(np.unique(g[:, 3])) == 1
    h = jax.jit(lambda k, j: space.sample_fixed(k, 64, j))(jax.random.key(2), 2)
    assert len(np.unique(np.asarray(h)[:, 2])) == 1
    with pytest.raises(ValueError, match=r"fixed factor ids \[5\] out of range"):
        space.sample_fixed(jax.random.key(0), 4, 5)
    with pytest.raises(ValueError, match=r"fixed factor ids \[5\] out of range"):  # in a jit
        jax.jit(lambda k: space.sample_fixed(k, 4, (1, 5)))(jax.random.key(0))


def test_validate_names_the_bad_value():
    space = SPECS["shapes3d"].space
    f = np.zeros((4, 6), np.int32)
    f[2, 4] = 4
    with pytest.raises(ValueError, match=r"factors\[2, 4\] = 4 is out of range for factor "
                                         r"'shape': expected 0 <= value < 4"):
        space.validate(f)
    with pytest.raises(ValueError, match=r"must have shape \[N, 6\]"):
        space.validate(np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="integer class indices"):
        space.validate(np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="3 factor names for 2 sizes"):
        FactorSpace(("a", "b", "c"), (2, 2))


@pytest.mark.parametrize("name", ["dsprites", "shapes3d"])
def test_render_refuses_out_of_range_factors(name):
    ds = get_dataset(name, source="procedural")
    f = np.zeros((2, ds.num_factors), np.int32)
    f[1, 0] = -1
    with pytest.raises(ValueError, match=rf"factors\[1, 0\] = -1 is out of range for factor "
                                         rf"'{ds.factor_names[0]}'"):
        ds.render(f)


@pytest.mark.parametrize("name", ["dsprites", "shapes3d"])
def test_dataset_contract(name):
    ds = get_dataset(name, source="procedural")
    assert ds.factor_names == SPECS[name].space.names
    assert ds.observation_shape == (64, 64, 1 if name == "dsprites" else 3)
    factors, images = jax.jit(ds.sample, static_argnums=1)(jax.random.key(0), 8)
    chex.assert_shape(images, (8, *ds.observation_shape))
    chex.assert_type(images, jnp.float32)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    np.testing.assert_array_equal(ds.images_at(ds.factors_to_index(np.asarray(factors))), images)
