"""Faithfulness, localisation, robustness and complexity of attributions, batched.

Every metric returns one score per sample ``[B]`` (curves ``[B, K]`` beside AUCs).
Attributions ``attr [B, H, W]`` or ``[B, H, W, C]`` are summed over channels to a pixel map
where a metric ranks or masks pixels; masks are bool ``[B, H, W]``. Pixel removal acts on
all channels of a pixel.

- pixel flipping: deletion and insertion curves and AUC (Samek 2017; deletion / insertion
  as named by Petsiuk 2018), most relevant pixels first;
- ROAD (Rong 2022): removal with imputation from the kept neighbours (harmonic, by Jacobi
  sweeps, plus noise) instead of a constant, so removal leaks no mask shape;
- faithfulness correlation (Bhatt 2020); infidelity and max-sensitivity (Yeh 2019);
- the model-parameter randomisation check (Adebayo 2018): rank correlation between the
  attributions of the trained and of a randomised model (high = the method ignores the
  model);
- against ground truth: relevance mass and rank accuracy (Arras 2022), pointing game
  (Zhang 2018);
- complexity: Gini index (Chalasani 2020) and entropy (Bhatt 2020) of |attr|.

Letters: B batch, H W C image, P = H * W pixels, K curve points, S random draws.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sparsejax.interp.attribution import score


def pixel_map(attr) -> jax.Array:
    """``[B, H, W]``: attributions summed over channels (a 3-d input is returned as is)."""
    return attr.sum(-1) if attr.ndim == 4 else attr


def _flat(a_BxHxW):
    return a_BxHxW.reshape(a_BxHxW.shape[0], -1)


def _rank_order(attr) -> jax.Array:
    """Per sample, the pixel indices ``[B, P]`` from most to least relevant."""
    return jnp.argsort(-_flat(pixel_map(attr)), axis=1)


def _expand(mask_BxHxW, x):
    """A pixel mask broadcast over x's channels."""
    return mask_BxHxW[..., None] if x.ndim == 4 else mask_BxHxW


def _ranked_masks(attr, steps: int, top: float = 1.0) -> jax.Array:
    """``[K, B, H, W]`` bool: the top ``top * k / steps`` share of pixels by relevance,
    k = 0..steps."""
    b, p = attr.shape[0], _flat(pixel_map(attr)).shape[1]
    rank_BxP = jnp.argsort(_rank_order(attr), axis=1)  # rank of each pixel, 0 = most relevant
    n_K = jnp.round(jnp.linspace(0.0, top, steps + 1) * p).astype(jnp.int32)
    m = rank_BxP[None] < n_K[:, None, None]
    return m.reshape(steps + 1, b, *pixel_map(attr).shape[1:])


def _curve_scores(f, xs_KxB, target, prob: bool, chunk):
    k, b = xs_KxB.shape[:2]
    flat = xs_KxB.reshape(-1, *xs_KxB.shape[2:])
    t = jnp.tile(jnp.broadcast_to(jnp.asarray(target, jnp.int32), (b,)), k)

    def fn(x, t):
        out = f(x)
        if prob and out.ndim == 2:
            out = jax.nn.softmax(out, axis=-1)
        return score(out, t)

    from sparsejax.interp.attribution import _map_chunks

    return _map_chunks(fn, chunk, flat, t).reshape(k, b).T  # [B, K]


def _auc(curve_BxK) -> jax.Array:
    """Trapezoid area under a curve on equally spaced points of [0, 1]."""
    return (curve_BxK[:, 1:] + curve_BxK[:, :-1]).mean(1) / 2


@functools.partial(jax.jit, static_argnames=("f", "steps", "prob", "chunk"))
def deletion(f: Callable, x, attr, target=0, *, steps: int = 16, baseline=0.0,
             prob: bool = True, chunk: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Deletion (pixel flipping): ``(auc [B], curve [B, steps + 1])`` of the target's score
    (softmax probability if ``prob``) as the most relevant pixels go to ``baseline``.
    Lower is more faithful."""
    m = _ranked_masks(attr, steps)
    mx = _expand(m, x)
    xs = jnp.where(mx, jnp.broadcast_to(baseline, x.shape)[None], x[None])
    curve = _curve_scores(f, xs, target, prob, chunk)
    return _auc(curve), curve


@functools.partial(jax.jit, static_argnames=("f", "steps", "prob", "chunk"))
def insertion(f: Callable, x, attr, target=0, *, steps: int = 16, baseline=0.0,
              prob: bool = True, chunk: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Insertion: ``(auc [B], curve [B, steps + 1])`` as the most relevant pixels are put
    back into ``baseline``. Higher is more faithful."""
    mx = _expand(_ranked_masks(attr, steps), x)
    xs = jnp.where(mx, x[None], jnp.broadcast_to(baseline, x.shape)[None])
    curve = _curve_scores(f, xs, target, prob, chunk)
    return _auc(curve), curve


def impute(x, removed_BxHxW, *, key=None, sweeps: int = 64, noise=0.0) -> jax.Array:
    """Removed pixels replaced by the harmonic interpolation of the kept ones (the mean of
    their 4 neighbours, by ``sweeps`` Jacobi sweeps from the kept pixels' mean), plus
    Gaussian noise of sd ``noise`` (drawn when a ``key`` is given): ROAD's noisy linear
    imputation (Rong 2022)."""
    x4 = x if x.ndim == 4 else x[..., None]
    keep = (~removed_BxHxW)[..., None].astype(x4.dtype)
    mean = (x4 * keep).sum((1, 2), keepdims=True) / jnp.maximum(keep.sum((1, 2), keepdims=True), 1)
    v = jnp.where(keep > 0, x4, mean)

    def sweep(v, _):
        p = jnp.pad(v, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        avg = (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]) / 4
        return jnp.where(keep > 0, x4, avg), None

    v, _ = jax.lax.scan(sweep, v, None, length=sweeps)
    if key is not None:
        v = v + (1 - keep) * noise * jax.random.normal(key, v.shape, v.dtype)
    return v if x.ndim == 4 else v[..., 0]


@functools.partial(jax.jit, static_argnames=("f", "steps", "prob", "chunk", "sweeps"))
def road(f: Callable, x, attr, target=0, *, key, steps: int = 8, noise: float = 0.01,
         sweeps: int = 64, prob: bool = True, chunk: int | None = None
         ) -> tuple[jax.Array, jax.Array]:
    """ROAD, most relevant first (MoRF): ``(auc [B], curve [B, steps + 1])`` of the target's
    score as the top 0 .. 90% of pixels are imputed (:func:`impute`; Rong 2022 stop at 90%
    too: imputation needs kept pixels). Lower is more faithful."""
    m = _ranked_masks(attr, steps, ROAD_TOP)
    keys = jax.random.split(key, steps + 1)
    xs = jax.vmap(lambda mk, k: impute(x, mk, key=k, sweeps=sweeps, noise=noise))(m, keys)
    curve = _curve_scores(f, xs, target, prob, chunk)
    return _auc(curve), curve


ROAD_TOP = 0.9  # largest share of pixels ROAD removes


def pearson(a_BxS, b_BxS) -> jax.Array:
    """Per-row Pearson correlation ``[B]`` (0 where a row is constant)."""
    a = a_BxS - a_BxS.mean(1, keepdims=True)
    b = b_BxS - b_BxS.mean(1, keepdims=True)
    den = jnp.sqrt((a * a).sum(1) * (b * b).sum(1))
    return jnp.where(den > 0, (a * b).sum(1) / jnp.where(den > 0, den, 1), 0.0)


def _ranks(a_BxN):
    """Per-row ranks (0..N-1; ties broken by position)."""
    return jnp.argsort(jnp.argsort(a_BxN, axis=1), axis=1).astype(jnp.float32)


def spearman(a, b) -> jax.Array:
    """Per-sample Spearman rank correlation ``[B]`` of two attributions (flattened)."""
    fa, fb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return pearson(_ranks(fa), _ranks(fb))


@functools.partial(jax.jit, static_argnames=("f", "draws", "subset", "chunk"))
def faithfulness_correlation(f: Callable, x, attr, target=0, *, key, draws: int = 32,
                             subset: int = 8, baseline=0.0, chunk: int | None = None
                             ) -> jax.Array:
    """Bhatt 2020: over ``draws`` random sets of ``subset`` pixels, the Pearson correlation
    between the attribution summed over the set and the score drop when the set goes to
    ``baseline`` (raw scores). ``[B]``; higher is more faithful."""
    b, h, w = pixel_map(attr).shape
    u = jax.random.uniform(key, (draws, b, h * w))
    rank = jnp.argsort(jnp.argsort(u, axis=2), axis=2)
    sets = (rank < subset).reshape(draws, b, h, w)  # [S, B, H, W]
    xs = jnp.where(_expand(sets, x), jnp.broadcast_to(baseline, x.shape)[None], x[None])
    drop = _curve_scores(f, jnp.concatenate([x[None], xs]), target, False, chunk)
    drop_BxS = drop[:, :1] - drop[:, 1:]
    attr_BxS = jnp.einsum("bhw,sbhw->bs", pixel_map(attr), sets.astype(attr.dtype))
    return pearson(attr_BxS, drop_BxS)


@functools.partial(jax.jit, static_argnames=("f", "draws", "normalise", "chunk"))
def infidelity(f: Callable, x, attr, target=0, *, key, draws: int = 32, sigma: float = 0.1,
               normalise: bool = True, chunk: int | None = None) -> jax.Array:
    """Yeh 2019: ``E_I[(I . attr - (f(x) - f(x - I)))^2]`` with ``I ~ N(0, sigma^2)`` per
    element, raw scores. ``normalise``: attributions rescaled by the best scalar first (the
    least-squares beta), so the scale of a method does not count. ``[B]``; lower is better."""
    noise = sigma * jax.random.normal(key, (draws, *x.shape), x.dtype)
    s = _curve_scores(f, jnp.concatenate([x[None], x[None] - noise]), target, False, chunk)
    delta_BxS = s[:, :1] - s[:, 1:]
    dot_BxS = jnp.einsum("sb...,b...->bs", noise, attr.astype(x.dtype))
    if normalise:
        beta = (dot_BxS * delta_BxS).sum(1) / jnp.maximum((dot_BxS ** 2).sum(1), 1e-30)
        dot_BxS = dot_BxS * beta[:, None]
    return jnp.mean((dot_BxS - delta_BxS) ** 2, axis=1)


def max_sensitivity(attr_fn: Callable, x, *, key=None, radius: float = 0.05, draws: int = 8,
                    noise=None) -> jax.Array:
    """Yeh 2019: ``max_d |attr(x + d) - attr(x)| / |attr(x)|`` (Frobenius norms) over
    ``draws`` perturbations uniform in the L-inf ball of ``radius`` (or the given ``noise``
    ``[S, B, ...]``). ``attr_fn: x -> attr``. ``[B]``; lower is more robust."""
    if noise is None:
        noise = jax.random.uniform(key, (draws, *x.shape), x.dtype, -radius, radius)
    a0 = attr_fn(x)
    a = jax.lax.map(lambda d: attr_fn(x + d), noise)  # [S, B, ...]
    axes = tuple(range(2, a.ndim))
    num = jnp.sqrt(jnp.sum((a - a0[None]) ** 2, axis=axes))  # [S, B]
    den = jnp.sqrt(jnp.sum(a0 ** 2, axis=tuple(range(1, a0.ndim))))
    return num.max(0) / jnp.maximum(den, 1e-30)


def randomisation_similarity(attr_trained, attr_random) -> jax.Array:
    """Adebayo 2018's model-parameter randomisation check: Spearman correlation ``[B]`` of
    |attr| under the trained and the randomised model. Near 1: the method does not depend
    on what the model learned (it fails the check)."""
    return spearman(jnp.abs(pixel_map(attr_trained)), jnp.abs(pixel_map(attr_random)))


# --------------------------------------------------------------------------- ground truth
def relevance_mass_accuracy(attr, mask) -> jax.Array:
    """Arras 2022: positive relevance inside the mask over all positive relevance ``[B]``
    (0 where there is none)."""
    pos = _flat(jnp.maximum(pixel_map(attr), 0))
    inside = (pos * _flat(mask).astype(pos.dtype)).sum(1)
    total = pos.sum(1)
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1), 0.0)


def relevance_rank_accuracy(attr, mask) -> jax.Array:
    """Arras 2022: the share of the ``|mask|`` most relevant pixels that lie in the mask
    ``[B]`` (ties broken by position; 0 for an empty mask)."""
    m = _flat(mask)
    size = m.sum(1)
    rank = jnp.argsort(_rank_order(attr), axis=1)  # 0 = most relevant
    hits = ((rank < size[:, None]) & m).sum(1)
    return jnp.where(size > 0, hits / jnp.maximum(size, 1), 0.0)


def pointing_game(attr, mask) -> jax.Array:
    """Zhang 2018: 1.0 where the most relevant pixel lies in the mask, else 0.0 ``[B]``."""
    top = jnp.argmax(_flat(pixel_map(attr)), axis=1)
    return jnp.take_along_axis(_flat(mask), top[:, None], axis=1)[:, 0].astype(jnp.float32)


def gini(attr) -> jax.Array:
    """Gini index of |attr| per sample (Chalasani 2020): 0 uniform, -> 1 one pixel."""
    a = jnp.sort(_flat(jnp.abs(pixel_map(attr))), axis=1)
    n = a.shape[1]
    k = jnp.arange(1, n + 1, dtype=a.dtype)
    total = a.sum(1)
    g = 1 - 2 * ((n - k + 0.5)[None] * a).sum(1) / (n * jnp.where(total > 0, total, 1))
    return jnp.where(total > 0, g, 0.0)


def entropy(attr) -> jax.Array:
    """Entropy (nats) of |attr| normalised to a distribution over pixels (Bhatt 2020)."""
    a = _flat(jnp.abs(pixel_map(attr)))
    p = a / jnp.maximum(a.sum(1, keepdims=True), 1e-30)
    return -(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0.0)).sum(1)


# Metric names (for tables) and whether higher is better.
METRICS: dict[str, bool] = {
    "deletion_auc": False, "insertion_auc": True, "road_auc": False,
    "faithfulness_corr": True, "infidelity": False, "max_sensitivity": False,
    "mass_accuracy": True, "rank_accuracy": True, "pointing_game": True,
    "gini": True, "entropy": False, "randomisation_similarity": False,
}
