"""Faithfulness, localisation and complexity metrics on hand-built cases with exact values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.interp import faithfulness as F


# Each test evaluates everything under one jax.jit (one XLA:CPU program, not one per eager op).

@jax.jit
def _localisation(attr, mask):
    attr_c = jnp.repeat(attr[..., None], 3, -1) / 3
    return dict(mass=F.relevance_mass_accuracy(attr, mask),
                rank=F.relevance_rank_accuracy(attr, mask),
                point=F.pointing_game(attr, mask), point_neg=F.pointing_game(-attr, mask),
                mass_c=F.relevance_mass_accuracy(attr_c, mask),
                rank_c=F.relevance_rank_accuracy(attr_c, mask),
                mass_no_pos=F.relevance_mass_accuracy(-jnp.abs(attr), mask),
                rank_empty=F.relevance_rank_accuracy(attr, jnp.zeros_like(mask)))


def test_mass_rank_pointing_exact():
    attr = np.asarray([[[3.0, -1.0], [1.0, 0.0]], [[4.0, 3.0], [2.0, 1.0]]], np.float32)
    mask = np.asarray([[[1, 0], [0, 0]], [[1, 0], [0, 1]]], bool)
    r = _localisation(attr, mask)
    chex.assert_trees_all_close(r["mass"], jnp.asarray([0.75, 0.5]))
    # sample 0: |mask| = 1, the top pixel (3.0) is in it; sample 1: top 2 = (4, 3), one inside
    chex.assert_trees_all_close(r["rank"], jnp.asarray([1.0, 0.5]))
    chex.assert_trees_all_close(r["point"], jnp.asarray([1.0, 1.0]))
    chex.assert_trees_all_close(r["point_neg"], jnp.asarray([0.0, 1.0]))  # -1 at (1, 1)
    # channels are summed: splitting each pixel's value over 3 channels changes nothing
    chex.assert_trees_all_close(r["mass_c"], jnp.asarray([0.75, 0.5]))
    chex.assert_trees_all_close(r["rank_c"], jnp.asarray([1.0, 0.5]))
    # no positive relevance / an empty mask score 0
    chex.assert_trees_all_close(r["mass_no_pos"], jnp.zeros(2))
    chex.assert_trees_all_close(r["rank_empty"], jnp.zeros(2))


@jax.jit
def _complexity(uniform, one, two):
    return dict(gini=(F.gini(uniform), F.gini(one), F.gini(two)),
                entropy=(F.entropy(uniform), F.entropy(one)))


def test_complexity_exact():
    n = 16
    uniform = np.ones((1, 4, 4), np.float32)
    one = np.zeros((1, 4, 4), np.float32)
    one[0, 1, 2] = -5.0
    two = np.zeros((1, 4, 4), np.float32)
    two[0, 0, :2] = 1.0  # two equal pixels
    r = _complexity(uniform, one, two)
    chex.assert_trees_all_close(r["gini"][0], jnp.zeros(1), atol=1e-6)
    chex.assert_trees_all_close(r["gini"][1], jnp.asarray([1 - 1 / n]), atol=1e-6)
    chex.assert_trees_all_close(r["entropy"][0], jnp.asarray([np.log(n)]), atol=1e-6)
    chex.assert_trees_all_close(r["entropy"][1], jnp.zeros(1), atol=1e-6)
    # two equal pixels: Gini 1 - 2/n... from the definition: sorted a = (0..0, 1, 1)
    k = np.arange(1, n + 1)
    a = np.zeros(n)
    a[-2:] = 0.5
    want = 1 - 2 * np.sum(a * (n - k + 0.5) / n)
    chex.assert_trees_all_close(r["gini"][2], jnp.asarray([want]), atol=1e-6)


def _sum_model(w):
    return lambda x: (x * w).reshape(x.shape[0], -1).sum(1)


@jax.jit
def _deletion_insertion(w, x):
    f = _sum_model(w)
    return dict(deletion=F.deletion(f, x, w[None], steps=4, prob=False),
                insertion=F.insertion(f, x, w[None], steps=4, prob=False),
                deletion_bad=F.deletion(f, x, -w[None], steps=4, prob=False))


def test_deletion_insertion_exact():
    w = np.asarray([[4.0, 3.0], [2.0, 1.0]], np.float32)
    x = np.ones((1, 2, 2), np.float32)
    r = _deletion_insertion(w, x)
    auc, curve = r["deletion"]
    chex.assert_trees_all_close(curve, jnp.asarray([[10.0, 6.0, 3.0, 1.0, 0.0]]))
    chex.assert_trees_all_close(auc, jnp.asarray([30 / 8]))
    auc, curve = r["insertion"]
    chex.assert_trees_all_close(curve, jnp.asarray([[0.0, 4.0, 7.0, 9.0, 10.0]]))
    chex.assert_trees_all_close(auc, jnp.asarray([50 / 8]))
    # reversed relevance: the worst deletion order
    auc_bad, _ = r["deletion_bad"]
    chex.assert_trees_all_close(auc_bad, jnp.asarray([(10 + 9 + 9 + 7 + 7 + 4 + 4) / 8]))


@jax.jit
def _imputation_and_road(ramp, removed, const, big, key):
    f = _sum_model(jnp.ones((6, 6, 3)))
    return dict(ramp=F.impute(ramp, removed), const=F.impute(const, big),
                road=F.road(f, const, jnp.arange(72.0).reshape(2, 6, 6), key=key, steps=4,
                            noise=0.0, prob=False))


def test_imputation_and_road():
    # a ramp: isolated interior pixels impute to the mean of their 4 neighbours, exactly
    ramp = np.broadcast_to(np.arange(6.0, dtype=np.float32)[None, None, :], (1, 6, 6))
    removed = np.zeros((1, 6, 6), bool)
    removed[0, 2, 3] = removed[0, 4, 1] = True
    # a constant image with channels stays constant whatever is removed
    const = np.full((2, 6, 6, 3), 0.3, np.float32)
    big = np.zeros((2, 6, 6), bool)
    big[:, 1:5, 1:5] = True
    r = _imputation_and_road(ramp, removed, const, big, jax.random.key(0))
    chex.assert_trees_all_close(r["ramp"], ramp, atol=1e-5)
    chex.assert_trees_all_close(r["const"], const, atol=1e-6)
    auc, curve = r["road"]
    chex.assert_trees_all_close(curve, jnp.full((2, 5), 0.3 * 108), rtol=1e-5)
    chex.assert_trees_all_close(auc, jnp.full((2,), 0.3 * 108), rtol=1e-5)


@jax.jit
def _correlation_and_infidelity(w, x, other, key):
    f = _sum_model(w)
    grad = jnp.broadcast_to(w, x.shape)
    return dict(corr=F.faithfulness_correlation(f, x, w * x, key=key),
                corr_neg=F.faithfulness_correlation(f, x, -w * x, key=key),
                inf_grad=F.infidelity(f, x, grad, key=key),
                inf_3grad=F.infidelity(f, x, 3 * grad, key=key),
                inf_3grad_raw=F.infidelity(f, x, 3 * grad, key=key, normalise=False),
                inf_other=F.infidelity(f, x, other, key=key),
                noise=0.1 * jax.random.normal(key, (32, *x.shape)))


def test_faithfulness_correlation_and_infidelity_on_a_linear_model(rng):
    w = rng.normal(size=(4, 4)).astype(np.float32)
    x = rng.normal(size=(3, 4, 4)).astype(np.float32)
    r = _correlation_and_infidelity(w, x, rng.normal(size=x.shape).astype(np.float32),
                                    jax.random.key(1))
    chex.assert_trees_all_close(r["corr"], jnp.ones(3), atol=1e-5)
    chex.assert_trees_all_close(r["corr_neg"], -jnp.ones(3), atol=1e-5)
    # the gradient is exactly faithful to a linear model's response to any perturbation
    chex.assert_trees_all_close(r["inf_grad"], jnp.zeros(3), atol=1e-10)
    chex.assert_trees_all_close(r["inf_3grad"], jnp.zeros(3), atol=1e-10)  # rescaled away
    # unnormalised, 3x the gradient errs by (2 I.w)^2 (the noise infidelity draws from key)
    want = np.mean((2 * np.einsum("sbhw,hw->bs", np.asarray(r["noise"]), w)) ** 2, axis=1)
    chex.assert_trees_all_close(r["inf_3grad_raw"], want, rtol=1e-4)
    assert np.all(np.asarray(r["inf_other"]) > 1e-4)


@jax.jit
def _sensitivity_and_randomisation(x, noise, a):
    return dict(const=F.max_sensitivity(lambda v: jnp.ones_like(v), x, noise=noise),
                ident=F.max_sensitivity(lambda v: v, x, noise=noise),
                same=F.randomisation_similarity(a, 2 * a),
                inverse=F.randomisation_similarity(a, 1 / a), spearman=F.spearman(a, a ** 3))


def test_max_sensitivity_and_randomisation(rng):
    x = rng.normal(size=(2, 3, 3)).astype(np.float32)
    noise = rng.uniform(-0.1, 0.1, size=(5, 2, 3, 3)).astype(np.float32)
    a = np.arange(9.0, dtype=np.float32).reshape(1, 3, 3) + 1
    r = _sensitivity_and_randomisation(x, noise, a)
    chex.assert_trees_all_close(r["const"], jnp.zeros(2))
    want = np.sqrt((noise ** 2).sum((2, 3))).max(0) / np.sqrt((x ** 2).sum((1, 2)))
    chex.assert_trees_all_close(r["ident"], want, rtol=1e-5)
    chex.assert_trees_all_close(r["same"], jnp.ones(1), atol=1e-6)
    chex.assert_trees_all_close(r["inverse"], -jnp.ones(1), atol=1e-6)
    chex.assert_trees_all_close(r["spearman"], jnp.ones(1), atol=1e-6)
