"""Binning, plug-in MI and entropy against numpy/sklearn, including the adversarial cases."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dlib_restated as dlib
from sparsejax.metrics import binning, mi_kernel
from sparsejax.metrics import information as info


def _bins_ref(codes, num_bins=20):
    return dlib.histogram_discretize(codes, num_bins) - 1


def _assert_bins(codes, num_bins=20):
    got = np.asarray(binning.histogram_bins(codes, num_bins))
    np.testing.assert_array_equal(got, _bins_ref(codes, num_bins))


# -- binning -------------------------------------------------------------------------------

def test_dlib_histogram_discretizer_example():
    # dlib utils_test: rows there are codes, columns here.
    target = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, .5, .4, .3, .2, .1]]).T
    got = np.asarray(binning.histogram_bins(target, num_bins=3)) + 1
    np.testing.assert_array_equal(got.T, [[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bins_random(rng, dtype):
    n, k = rng.integers(50, 3000), rng.integers(1, 40)
    codes = (rng.standard_normal((n, k)) * rng.uniform(1e-3, 1e3, k) + rng.normal(0, 10, k))
    _assert_bins(codes.astype(dtype), int(rng.integers(1, 40)))


def test_bins_values_on_and_next_to_edges_float32(rng):
    # Every float64 edge, its float32 rounding and the float32 neighbours on both sides:
    # the comparisons must match numpy's float64 ones exactly.
    lo, hi = np.float32(rng.uniform(-3, -1)), np.float32(rng.uniform(1, 3))
    edges = np.histogram(np.array([lo, hi], np.float64), 20)[1]
    r = edges.astype(np.float32)
    inf = np.float32(np.inf)
    near = np.concatenate([r, np.nextafter(r, -inf), np.nextafter(r, inf)])
    col = np.clip(near, lo, hi)
    col = np.concatenate([col, [lo, hi]]).astype(np.float32)
    codes = np.stack([col, rng.permutation(col), col[::-1] * np.float32(3)], axis=1)
    _assert_bins(codes)


def test_bins_values_exactly_on_float64_edges(rng):
    # Float64 codes equal to numpy's own edges go to the upper bin; the maximum to the last.
    for _ in range(5):
        lo, hi = sorted(rng.normal(0, 5, 2))
        edges = np.histogram(np.array([lo, hi]), 20)[1]
        col = np.concatenate([edges, np.nextafter(edges, -np.inf)[1:],
                              np.nextafter(edges, np.inf)[:-1]])
        _assert_bins(np.stack([col, col[::-1]], axis=1))


def test_bins_grid_codes_and_ties(rng):
    # Codes on a regular grid (many values exactly on edges) and heavy ties.
    grid = (rng.integers(0, 21, (4000, 3)) / 20.0)
    _assert_bins(grid)
    _assert_bins(grid.astype(np.float32))
    ties = rng.choice(np.array([0.0, 0.0, 0.0, 1.5, 2.25]), (4000, 2))
    _assert_bins(ties.astype(np.float32))


def test_bins_constant_and_integer_and_low_precision(rng):
    codes = rng.standard_normal((500, 4)).astype(np.float32)
    codes[:, 1] = 7.25
    codes[:, 2] = 0.0
    _assert_bins(codes)
    assert len(np.unique(np.asarray(binning.histogram_bins(codes))[:, 1])) == 1
    ints = rng.integers(-5, 60, (500, 3))
    _assert_bins(ints)
    half = rng.standard_normal((500, 3)).astype(np.float16)
    _assert_bins(half)
    bf = jnp.asarray(rng.standard_normal((500, 3)), jnp.bfloat16)
    _assert_bins(np.asarray(bf.astype(jnp.float32)).astype(np.float64))  # reference values
    np.testing.assert_array_equal(np.asarray(binning.histogram_bins(bf)),
                                  _bins_ref(np.asarray(bf.astype(jnp.float32))))


def test_bins_large_n(rng):
    codes = rng.standard_normal((200_000, 2)).astype(np.float32)
    codes[::7, 0] = np.round(codes[::7, 0], 1)
    _assert_bins(codes)


def test_bins_errors():
    with pytest.raises(ValueError, match="2-D"):
        binning.histogram_bins(np.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        binning.histogram_bins(np.array([[0.0, 1.0], [np.nan, 2.0]], np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        binning.histogram_bins(np.array([[0.0], [np.inf]]))
    with pytest.raises(ValueError, match="too narrow"):
        binning.histogram_bins(np.array([[1.0], [np.nextafter(1.0, 2.0)]]))
    with pytest.raises(ValueError, match="num_bins"):
        binning.histogram_bins(np.zeros((3, 2)), num_bins=0)
    with pytest.raises(ValueError, match="no rows"):
        binning.histogram_bins(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="no columns"):
        binning.histogram_bins(np.zeros((3, 0)))


# -- mutual information and entropy ----------------------------------------------------------

def test_dlib_discrete_mutual_info_and_entropy_examples():
    xs = np.array([[1, 2, 1, 2], [1, 1, 2, 2]]).T
    ys = np.array([[1, 2, 1, 2], [2, 2, 1, 1]]).T
    chex.assert_trees_all_close(info.mutual_info_matrix(xs, ys),
                                np.array([[np.log(2), 0.0], [0.0, np.log(2)]]), atol=1e-6)
    target = np.array([[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]]).T
    chex.assert_trees_all_close(info.entropy(target), np.full(2, np.log(3)), atol=1e-6)


def test_mutual_info_matrix_random_labels(rng):
    n = int(rng.integers(100, 5000))
    x = np.stack([rng.integers(-3, rng.integers(-2, 30), n) * 7 for _ in range(9)], axis=1)
    x[:, 0] = 4  # a constant column
    y = np.stack([rng.integers(0, s, n) for s in (1, 2, 5, 40)], axis=1)
    y[:, 2] = (x[:, 3] + rng.integers(0, 2, n)) % 5  # a dependent pair
    mi = info.mutual_info_matrix(x, y)
    chex.assert_shape(mi, (9, 4))
    np.testing.assert_allclose(np.asarray(mi), dlib.discrete_mutual_info(x, y), rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.asarray(info.entropy(y)), dlib.discrete_entropy(y), atol=2e-6)


def test_mutual_info_unbalanced_factor_keeps_relative_accuracy(rng):
    # A factor with H ~ 1e-3 nats: MI/H must still match to 1e-5 (naive float32 logs fail).
    n = 20_000
    y = (rng.random((n, 1)) < 1e-4).astype(int)
    y[:3, 0] = 1
    x = rng.integers(0, 20, (n, 6))
    x[:, 1] = np.where(y[:, 0] == 1, 19, x[:, 1])
    h = dlib.discrete_entropy(y)
    mi = np.asarray(info.mutual_info_matrix(x, y))
    np.testing.assert_allclose(mi / h, dlib.discrete_mutual_info(x, y) / h, atol=1e-5)
    np.testing.assert_allclose(np.asarray(info.entropy(y)), h, rtol=1e-6)


@pytest.mark.parametrize("pack", [1, 2, 3])
def test_packed_counting_is_exact_at_chunk_boundaries(rng, pack):
    # Every sample in the same bin: the largest partial sums a chunk can hold.
    chunk = (1 << (24 // pack)) - 1
    for n in sorted({chunk - 1, chunk, chunk + 1, 2 * chunk + 3} - {0}):
        if n > 10_000:
            continue
        x = np.zeros((n, 5), np.float32)
        x[:, 1] = rng.integers(0, 3, n)
        y = rng.integers(0, 4, (n, 2)).astype(np.int32)
        y[:, 1] = x[:, 1]
        e = binning.label_edges(3, 5)
        plan = mi_kernel._Plan(pack=pack, block=2)
        mi = mi_kernel._mutual_info_intervals(jnp.asarray(x), jnp.asarray(e), jnp.asarray(y),
                                              num_bins=3, sizes=(4, 3), plan=plan)
        np.testing.assert_allclose(np.asarray(mi), dlib.discrete_mutual_info(x.astype(int), y),
                                   atol=2e-6)


def test_exact_cross_difference(rng):
    a, b, c, d = (rng.integers(0, 1 << 24, 10_000) for _ in range(4))
    as_int32 = lambda *vs: (jnp.asarray(v, jnp.int32) for v in vs)
    cross = mi_kernel._exact_cross_difference
    got = np.asarray(cross(*as_int32(a, b, c, d)))
    want = np.array([int(p) * int(q) - int(r) * int(s) for p, q, r, s in zip(a, b, c, d)],
                    np.float64)
    np.testing.assert_allclose(got, want, rtol=1.2e-7)
    np.testing.assert_array_equal(np.asarray(cross(*as_int32(a, b, a, b))), 0.0)


def test_histogram_mutual_info_matches_dlib(rng):
    n, k = 3000, 7
    f = np.stack([rng.integers(0, s, n) for s in (3, 6, 40)], axis=1)
    codes = (f @ rng.standard_normal((3, k)) + rng.standard_normal((n, k))).astype(np.float32)
    codes[:, 2] = 0.0
    mi, h = info.histogram_mutual_info(codes, f)
    ref = dlib.discrete_mutual_info(dlib.histogram_discretize(codes), f)
    np.testing.assert_allclose(np.asarray(mi), ref, atol=2e-6)
    np.testing.assert_allclose(np.asarray(h), dlib.discrete_entropy(f), atol=2e-6)
    assert np.all(np.asarray(mi)[2] == 0.0)


def test_sharded_codes_give_the_same_matrix(rng):
    n = 4000
    f = rng.integers(0, 5, (n, 2))
    codes = (f[:, :1] + rng.standard_normal((n, 3))).astype(np.float32)
    mesh = jax.make_mesh((4,), ("data",))
    sharded = jax.device_put(codes, jax.NamedSharding(mesh, jax.P("data")))
    np.testing.assert_array_equal(np.asarray(info.histogram_mutual_info(sharded, f)[0]),
                                  np.asarray(info.histogram_mutual_info(codes, f)[0]))


def test_label_errors():
    with pytest.raises(ValueError, match="integer"):
        info.mutual_info_matrix(np.zeros((4, 2), int), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="rows"):
        info.mutual_info_matrix(np.zeros((4, 2), int), np.zeros((5, 1), int))
    with pytest.raises(ValueError, match="2-D"):
        info.entropy(np.zeros(4, int))
