"""Faithfulness, localisation and complexity metrics on hand-built cases with exact values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.interp import faithfulness as F


def test_mass_rank_pointing_exact():
    attr = jnp.asarray([[[3.0, -1.0], [1.0, 0.0]], [[4.0, 3.0], [2.0, 1.0]]])
    mask = jnp.asarray([[[1, 0], [0, 0]], [[1, 0], [0, 1]]], bool)
    chex.assert_trees_all_close(F.relevance_mass_accuracy(attr, mask), jnp.asarray([0.75, 0.5]))
    # sample 0: |mask| = 1, the top pixel (3.0) is in it; sample 1: top 2 = (4, 3), one inside
    chex.assert_trees_all_close(F.relevance_rank_accuracy(attr, mask), jnp.asarray([1.0, 0.5]))
    chex.assert_trees_all_close(F.pointing_game(attr, mask), jnp.asarray([1.0, 1.0]))
    chex.assert_trees_all_close(F.pointing_game(-attr, mask), jnp.asarray([0.0, 1.0]))  # -1 at (1, 1)
    # channels are summed: splitting each pixel's value over 3 channels changes nothing
    attr_c = jnp.repeat(attr[..., None], 3, -1) / 3
    chex.assert_trees_all_close(F.relevance_mass_accuracy(attr_c, mask), jnp.asarray([0.75, 0.5]))
    chex.assert_trees_all_close(F.relevance_rank_accuracy(attr_c, mask), jnp.asarray([1.0, 0.5]))
    # no positive relevance / an empty mask score 0
    chex.assert_trees_all_close(F.relevance_mass_accuracy(-jnp.abs(attr), mask), jnp.zeros(2))
    chex.assert_trees_all_close(F.relevance_rank_accuracy(attr, jnp.zeros_like(mask)),
                                jnp.zeros(2))


def test_complexity_exact():
    n = 16
    uniform = jnp.ones((1, 4, 4))
    one = jnp.zeros((1, 4, 4)).at[0, 1, 2].set(-5.0)
    chex.assert_trees_all_close(F.gini(uniform), jnp.zeros(1), atol=1e-6)
    chex.assert_trees_all_close(F.gini(one), jnp.asarray([1 - 1 / n]), atol=1e-6)
    chex.assert_trees_all_close(F.entropy(uniform), jnp.asarray([np.log(n)]), atol=1e-6)
    chex.assert_trees_all_close(F.entropy(one), jnp.zeros(1), atol=1e-6)
    # two equal pixels: Gini 1 - 2/n... from the definition: sorted a = (0..0, 1, 1)
    two = jnp.zeros((1, 4, 4)).at[0, 0, :2].set(1.0)
    k = np.arange(1, n + 1)
    a = np.zeros(n)
    a[-2:] = 0.5
    want = 1 - 2 * np.sum(a * (n - k + 0.5) / n)
    chex.assert_trees_all_close(F.gini(two), jnp.asarray([want]), atol=1e-6)


def _sum_model(w):
    return lambda x: (x * w).reshape(x.shape[0], -1).sum(1)


def test_deletion_insertion_exact():
    w = jnp.asarray([[4.0, 3.0], [2.0, 1.0]])
    x = jnp.ones((1, 2, 2))
    f = _sum_model(w)
    auc, curve = F.deletion(f, x, w[None], steps=4, prob=False)
    chex.assert_trees_all_close(curve, jnp.asarray([[10.0, 6.0, 3.0, 1.0, 0.0]]))
    chex.assert_trees_all_close(auc, jnp.asarray([30 / 8]))
    auc, curve = F.insertion(f, x, w[None], steps=4, prob=False)
    chex.assert_trees_all_close(curve, jnp.asarray([[0.0, 4.0, 7.0, 9.0, 10.0]]))
    chex.assert_trees_all_close(auc, jnp.asarray([50 / 8]))
    # reversed relevance: the worst deletion order
    auc_bad, _ = F.deletion(f, x, -w[None], steps=4, prob=False)
    chex.assert_trees_all_close(auc_bad, jnp.asarray([(10 + 9 + 9 + 7 + 7 + 4 + 4) / 8]))


def test_imputation_and_road():
    # a ramp: isolated interior pixels impute to the mean of their 4 neighbours, exactly
    ramp = jnp.broadcast_to(jnp.arange(6.0)[None, None, :], (1, 6, 6))
    removed = jnp.zeros((1, 6, 6), bool).at[0, 2, 3].set(True).at[0, 4, 1].set(True)
    chex.assert_trees_all_close(F.impute(ramp, removed), ramp, atol=1e-5)
    # a constant image with channels stays constant whatever is removed
    const = jnp.full((2, 6, 6, 3), 0.3)
    big = jnp.zeros((2, 6, 6), bool).at[:, 1:5, 1:5].set(True)
    chex.assert_trees_all_close(F.impute(const, big), const, atol=1e-6)
    f = _sum_model(jnp.ones((6, 6, 3)))
    auc, curve = F.road(f, const, jnp.arange(72.0).reshape(2, 6, 6), key=jax.random.key(0),
                        steps=4, noise=0.0, prob=False)
    chex.assert_trees_all_close(curve, jnp.full((2, 5), 0.3 * 108), rtol=1e-5)
    chex.assert_trees_all_close(auc, jnp.full((2,), 0.3 * 108), rtol=1e-5)


def test_faithfulness_correlation_and_infidelity_on_a_linear_model(rng):
    w = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(3, 4, 4)), jnp.float32)
    f = _sum_model(w)
    key = jax.random.key(1)
    chex.assert_trees_all_close(F.faithfulness_correlation(f, x, w * x, key=key), jnp.ones(3),
                                atol=1e-5)
    chex.assert_trees_all_close(F.faithfulness_correlation(f, x, -w * x, key=key), -jnp.ones(3),
                                atol=1e-5)
    # the gradient is exactly faithful to a linear model's response to any perturbation
    grad = jnp.broadcast_to(w, x.shape)
    chex.assert_trees_all_close(F.infidelity(f, x, grad, key=key), jnp.zeros(3), atol=1e-10)
    chex.assert_trees_all_close(F.infidelity(f, x, 3 * grad, key=key), jnp.zeros(3),
                                atol=1e-10)  # rescaled away
    # unnormalised, 3x the gradient errs by (2 I.w)^2
    noise = 0.1 * jax.random.normal(key, (32, *x.shape))
    want = np.mean((2 * np.einsum("sbhw,hw->bs", noise, w)) ** 2, axis=1)
    chex.assert_trees_all_close(F.infidelity(f, x, 3 * grad, key=key, normalise=False), want,
                                rtol=1e-4)
    assert np.all(np.asarray(F.infidelity(f, x, jnp.asarray(rng.normal(size=x.shape),
                                                            jnp.float32), key=key)) > 1e-4)


def test_max_sensitivity_and_randomisation(rng):
    x = jnp.asarray(rng.normal(size=(2, 3, 3)), jnp.float32)
    noise = jnp.asarray(rng.uniform(-0.1, 0.1, size=(5, 2, 3, 3)), jnp.float32)
    chex.assert_trees_all_close(F.max_sensitivity(lambda v: jnp.ones_like(v), x, noise=noise),
                                jnp.zeros(2))
    want = np.sqrt((np.asarray(noise) ** 2).sum((2, 3))).max(0) / np.sqrt(
        (np.asarray(x) ** 2).sum((1, 2)))
    chex.assert_trees_all_close(F.max_sensitivity(lambda v: v, x, noise=noise), want, rtol=1e-5)
    a = jnp.arange(9.0).reshape(1, 3, 3) + 1
    chex.assert_trees_all_close(F.randomisation_similarity(a, 2 * a), jnp.ones(1), atol=1e-6)
    chex.assert_trees_all_close(F.randomisation_similarity(a, 1 / a), -jnp.ones(1), atol=1e-6)
    chex.assert_trees_all_close(F.spearman(a, a ** 3), jnp.ones(1), atol=1e-6)
