"""Attribution methods: pure functions of a model function, an input and a target.

Every method takes ``f: x [B, ...] -> out [B, C]`` (logits; or ``[B]``, a score), an input
``x [B, ...]`` and ``target`` (an int or ``[B]`` ints; ignored for ``[B]`` outputs), and
returns attributions shaped like ``x``. Samples never interact: the score of sample b is
``out[b, target[b]]``, and a batch gradient of the summed scores is every sample's gradient.
Methods that evaluate ``f`` many times (paths, noise, coalitions, patches) do so in chunks
of ``chunk`` rows per call (``None``: all at once), so memory is bounded. All are jit-able
with the method's settings static.

Gradient methods: saliency (Simonyan 2014), input x gradient, integrated gradients
(Sundararajan 2017), SmoothGrad (Smilkov 2017), VarGrad (Adebayo 2018), Grad-CAM
(Selvaraju 2017). Rule-based backward passes through :mod:`sparsejax.interp.propagation`
(no model rewrite): guided backprop (Springenberg 2015), deconvnet (Zeiler & Fergus 2014),
DeepLIFT rescale (Shrikumar 2017), LRP (Bach 2015; Montavon 2019). Perturbation methods over
features (each element of ``x[b]`` by default, or the ids of a ``features`` map such as
image patches): occlusion (Zeiler & Fergus 2014), KernelSHAP (Lundberg & Lee 2017), LIME
(Ribeiro 2016), Shapley value sampling (Strumbelj & Kononenko 2014). A feature's score is
spread evenly over its elements, so sums over a feature are the feature's score.

Letters: B batch, C classes, S evaluations per sample (steps, samples, coalitions),
M features, D = prod(x.shape[1:]).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.interp import propagation
from sparsejax.interp.propagation import LRP_RULES

IG_RULES = ("riemann", "gauss_legendre")  # integration of the path: midpoint or Gauss


# --------------------------------------------------------------------------- helpers
class _Static:
    """A numpy array as a hashable static argument (a feature map)."""

    def __init__(self, a):
        self.a = np.asarray(a)
        self._key = (self.a.shape, self.a.dtype.str, self.a.tobytes())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key


def _jit(*static: str):
    """Compiles a method as one program: ``f`` and the settings ``static`` are static
    (a new ``f`` compiles anew); ``features`` maps are passed as hashable constants."""

    def deco(fn):
        params = inspect.signature(fn).parameters
        positional = [n for n, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
        nums = (0, *(positional.index(n) for n in static if n in positional))
        jf = jax.jit(fn, static_argnums=nums, static_argnames=static)

        @functools.wraps(fn)
        def wrapper(f, x, *args, **kw):
            if kw.get("features") is not None:
                kw["features"] = _Static(kw["features"])
            return jf(f, jnp.asarray(x), *args, **kw)

        return wrapper

    return deco


def _targets(target, b: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(target, jnp.int32), (b,))


def score(out, target) -> jax.Array:
    """``[B]`` scores: ``out[b, target[b]]`` for ``[B, C]`` outputs, ``out`` itself for ``[B]``."""
    if out.ndim == 1:
        return out
    t_B = _targets(target, out.shape[0])
    return jnp.take_along_axis(out, t_B[:, None], axis=1)[:, 0]


def _map_chunks(fn: Callable, chunk: int | None, *xs):
    """``fn`` over the leading axis of ``xs`` in chunks of ``chunk`` rows (lax.map)."""
    n = xs[0].shape[0]
    if chunk is None or chunk >= n:
        return fn(*xs)
    pad = -n % chunk
    padded = [jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)) for x in xs]
    blocks = [x.reshape(-1, chunk, *x.shape[1:]) for x in padded]
    out = jax.lax.map(lambda a: fn(*a), tuple(blocks))
    return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[:n], out)


def _grad_fn(f: Callable) -> Callable:
    """``(x [N, ...], t [N]) -> d out[n, t[n]] / dx [N, ...]``."""
    return jax.grad(lambda x, t: score(f(x), t).sum())


def _scores_fn(f: Callable) -> Callable:
    return lambda x, t: score(f(x), t)


def _repeat(x_BxD, t_B, s: int):
    """``x`` and targets tiled ``s`` times: ``[S * B, ...]``, ``[S * B]`` (S outer)."""
    return (jnp.broadcast_to(x_BxD, (s, *x_BxD.shape)).reshape(-1, *x_BxD.shape[1:]),
            jnp.tile(t_B, s))


# --------------------------------------------------------------------------- gradients
@_jit("absolute")
def saliency(f: Callable, x, target=0, *, absolute: bool = False) -> jax.Array:
    """The gradient of the target score (signed; ``absolute``: its magnitude, Simonyan 2014)."""
    g = _grad_fn(f)(x, _targets(target, x.shape[0]))
    return jnp.abs(g) if absolute else g


@_jit()
def input_x_gradient(f: Callable, x, target=0) -> jax.Array:
    """``x * d score / dx``."""
    return x * saliency(f, x, target)


def _alphas(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and weights summing to 1 for the path integral."""
    if rule == "riemann":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    raise ValueError(f"unknown integration rule {rule!r}; expected one of {IG_RULES}")


@_jit("steps", "rule", "chunk")
def integrated_gradients(f: Callable, x, target=0, baseline=None, steps: int = 32, *,
                         rule: str = "riemann", chunk: int | None = None) -> jax.Array:
    """``(x - x0) * int_0^1 grad f(x0 + a (x - x0)) da`` (Sundararajan 2017).

    ``baseline`` broadcasts against ``x`` (default zeros); ``rule``: midpoint Riemann sum or
    Gauss-Legendre quadrature with ``steps`` nodes.
    """
    x0 = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
    a_S, w_S = _alphas(steps, rule)
    a = jnp.asarray(a_S, x.dtype).reshape(-1, *([1] * x.ndim))
    path = (x0[None] + a * (x - x0)[None]).reshape(-1, *x.shape[1:])  # [S * B, ...]
    t = jnp.tile(_targets(target, x.shape[0]), steps)
    g = _map_chunks(_grad_fn(f), chunk, path, t).reshape(steps, *x.shape)
    avg = jnp.tensordot(jnp.asarray(w_S, x.dtype), g, axes=1)
    return (x - x0) * avg


def _noisy_grads(f, x, target, key, samples, sigma, chunk):
    """Gradients at ``x + N(0, (sigma * (max - min))^2)``, range per sample: ``[S, B, ...]``."""
    axes = tuple(range(1, x.ndim))
    span = (x.max(axes, keepdims=True) - x.min(axes, keepdims=True))
    noise = jax.random.normal(key, (samples, *x.shape), x.dtype) * sigma * span[None]
    xs, t = _repeat(x, _targets(target, x.shape[0]), samples)
    g = _map_chunks(_grad_fn(f), chunk, xs + noise.reshape(xs.shape), t)
    return g.reshape(samples, *x.shape)


@_jit("samples", "sigma", "chunk")
def smoothgrad(f: Callable, x, target=0, *, key, samples: int = 16, sigma: float = 0.15,
               chunk: int | None = None) -> jax.Array:
    """The mean gradient under Gaussian input noise of ``sigma`` times each sample's range
    (Smilkov 2017: 10-20%)."""
    return _noisy_grads(f, x, target, key, samples, sigma, chunk).mean(0)


@_jit("samples", "sigma", "chunk")
def vargrad(f: Callable, x, target=0, *, key, samples: int = 16, sigma: float = 0.15,
            chunk: int | None = None) -> jax.Array:
    """The variance of the gradient under the same noise (Adebayo 2018)."""
    return _noisy_grads(f, x, target, key, samples, sigma, chunk).var(0)


def _spread_map(map_BxHxW, x):
    """A per-pixel map ``[B, h, w]`` resized to x's ``H, W`` and spread over its channels."""
    b, h, w = x.shape[:3]
    if map_BxHxW.shape[1:] != (h, w):
        map_BxHxW = jax.image.resize(map_BxHxW, (b, h, w), "bilinear")
    if x.ndim == 4:
        return jnp.broadcast_to(map_BxHxW[..., None] / x.shape[-1], x.shape)
    return map_BxHxW


@_jit("layer", "upsample")
def grad_cam(f: Callable, x, target=0, *, layer: str, upsample: bool = True) -> jax.Array:
    """Grad-CAM (Selvaraju 2017) on the intermediate ``layer``.

    ``f(x) -> (out, intermediates)``, ``intermediates[layer]`` an activation
    ``A [B, h, w, K]`` on the path to ``out``. ``cam = ReLU(sum_k alpha_k A_k)``, ``alpha_k``
    the spatial mean of ``d score / d A_k``. The gradient with respect to ``A`` comes from a
    re-evaluation of f's jaxpr in which ``A`` is an input. Returns ``[B, h, w]`` if not
    ``upsample``, else the map bilinearly resized to x's ``[H, W]`` and spread over channels
    (shaped like x).
    """
    t_B = _targets(target, x.shape[0])
    closed, (out_shape, inter) = jax.make_jaxpr(f, return_shape=True)(
        jax.ShapeDtypeStruct(x.shape, x.dtype))
    if not isinstance(inter, dict) or layer not in inter or jax.tree.leaves(out_shape) != [
            out_shape]:
        raise ValueError(f"grad_cam: f must return (out, dict of intermediates) holding "
                         f"{layer!r}")
    i = 1 + sorted(inter).index(layer)  # dict leaves come in sorted key order
    var_a = closed.jaxpr.outvars[i]
    a_val = propagation.evaluate(closed, x)[i]

    def out_of_a(a):  # x held fixed: only A reaches the output
        return propagation.evaluate(closed, x, overrides={var_a: a}, x_active=False)[0]

    g = jax.grad(lambda a: score(out_of_a(a), t_B).sum())(a_val)
    alpha_BxK = g.mean((1, 2))
    cam = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a_val, alpha_BxK))
    return _spread_map(cam, x) if upsample else cam


# --------------------------------------------------------------------------- rule-based
def _rule_grad(f, x, target, rule, x_ref=None):
    g = propagation.rewrite(f, rule, x)
    t_B = _targets(target, x.shape[0])
    return jax.grad(lambda v: score(g(v, x_ref), t_B).sum())(x)


@_jit()
def guided_backprop(f: Callable, x, target=0) -> jax.Array:
    """The gradient with guided ReLUs (Springenberg 2015)."""
    return _rule_grad(f, x, target, propagation.make_rule("guided"))


@_jit()
def deconvnet(f: Callable, x, target=0) -> jax.Array:
    """The gradient with deconvnet ReLUs (Zeiler & Fergus 2014)."""
    return _rule_grad(f, x, target, propagation.make_rule("deconvnet"))


@_jit()
def deeplift(f: Callable, x, target=0, baseline=None) -> jax.Array:
    """DeepLIFT with the rescale rule (Shrikumar 2017): ``(x - x0) * multipliers``; sums to
    ``score(x) - score(x0)`` on networks of linear maps and elementwise nonlinearities."""
    x0 = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
    return (x - x0) * _rule_grad(f, x, target, propagation.make_rule("rescale"), x0)


@_jit("rule", "epsilon", "gamma")
def lrp(f: Callable, x, target=0, rule: str = "epsilon", epsilon: float = 1e-6,
        gamma: float = 0.25) -> jax.Array:
    """Layer-wise relevance propagation of the target score (Bach 2015; Montavon 2019).

    ``rule`` in :data:`LRP_RULES` applies to every layer; the output's relevance is the
    target score. On a bias-free ReLU network, ``epsilon -> 0`` gives input x gradient.
    """
    if rule not in LRP_RULES:
        raise ValueError(f"lrp: unknown rule {rule!r}; expected one of {LRP_RULES}")
    r = propagation.LRPRule(rule, epsilon=epsilon, gamma=gamma)
    return x * _rule_grad(f, x, target, r)


# --------------------------------------------------------------------------- features
def patch_features(shape_HxW: tuple[int, int], patch: int) -> np.ndarray:
    """Feature ids ``[H, W]`` of a grid of ``patch x patch`` squares (row-major)."""
    h, w = shape_HxW
    rows, cols = np.arange(h) // patch, np.arange(w) // patch
    return (rows[:, None] * (-(-w // patch)) + cols[None, :]).astype(np.int32)


def _feature_matrix(x, features) -> tuple[np.ndarray, int]:
    """One-hot ``[D, M]`` of each element's feature (numpy; the features are static)."""
    d_shape = x.shape[1:]
    features = features.a if isinstance(features, _Static) else features
    if features is None:
        ids = np.arange(math.prod(d_shape)).reshape(d_shape)
    else:
        ids = np.asarray(features)
        ids = np.broadcast_to(ids.reshape(ids.shape + (1,) * (len(d_shape) - ids.ndim)),
                              d_shape)
    ids = ids.reshape(-1)
    m = int(ids.max()) + 1
    return np.eye(m, dtype=np.float32)[ids], m


def _coalition_scores(f, x, x0, t_B, z_SxM, onehot_DxM, chunk):
    """``[S, B]`` scores of inputs keeping the features where ``z`` is 1, else baseline."""
    s, b = z_SxM.shape[0], x.shape[0]
    keep_SxD = (z_SxM @ onehot_DxM.T).reshape(s, 1, *x.shape[1:])
    xs = (x0[None] + keep_SxD * (x - x0)[None]).reshape(-1, *x.shape[1:])
    return _map_chunks(_scores_fn(f), chunk, xs, jnp.tile(t_B, s)).reshape(s, b)


def _spread(phi_BxM, onehot_DxM, x):
    """Feature scores spread evenly over their elements: shaped like x."""
    per = onehot_DxM / np.maximum(onehot_DxM.sum(0, keepdims=True), 1)
    return (phi_BxM @ jnp.asarray(per.T, phi_BxM.dtype)).reshape(x.shape)


def _spd_solve(a_MxM, b_MxB):
    """``a^-1 b`` for a symmetric positive definite ``a`` (Cholesky)."""
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a_MxM), b_MxB)


def _random_ranks(key, n: int, m: int) -> jax.Array:
    """``[n, M]`` uniformly random permutations of ``0..M-1``, as ranks (counted, no sort)."""
    u = jax.random.uniform(key, (n, m))
    return (u[:, None, :] < u[:, :, None]).sum(-1)


def _baseline(x, baseline):
    return jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)


@_jit("patch", "stride", "chunk")
def occlusion(f: Callable, x, target=0, *, patch: int = 4, stride: int | None = None,
              baseline=None, chunk: int | None = None) -> jax.Array:
    """Occlusion (Zeiler & Fergus 2014): ``score(x) - score(x with a patch at baseline)``
    for square patches over ``x [B, H, W(, C)]`` every ``stride`` pixels (default: the
    patch), averaged over the patches covering each pixel, spread over channels."""
    stride = stride or patch
    b, h, w = x.shape[:3]
    x0 = _baseline(x, baseline)
    tops = sorted({*range(0, max(h - patch, 0) + 1, stride), max(h - patch, 0)})
    lefts = sorted({*range(0, max(w - patch, 0) + 1, stride), max(w - patch, 0)})
    masks = np.zeros((len(tops) * len(lefts), h, w), np.float32)
    for i, (r, c) in enumerate((r, c) for r in tops for c in lefts):
        masks[i, r:r + patch, c:c + patch] = 1
    p = masks.shape[0]
    m = jnp.asarray(masks).reshape(p, 1, h, w, *([1] * (x.ndim - 3)))
    xs = (x[None] * (1 - m) + x0[None] * m).reshape(-1, *x.shape[1:])
    t_B = _targets(target, b)
    s_B = score(f(x), t_B)
    s_PxB = _map_chunks(_scores_fn(f), chunk, xs, jnp.tile(t_B, p)).reshape(p, b)
    heat = jnp.einsum("pb,phw->bhw", s_B[None] - s_PxB, masks) / masks.sum(0)
    return _spread_map(heat, x)


def _shapley_kernel_design(m: int, samples: int, key) -> tuple[jax.Array, jax.Array]:
    """Coalitions ``z [S, M]`` and regression weights ``[S]``.

    ``samples >= 2^M - 2`` (M <= 16): every proper non-empty coalition with its exact Shapley
    kernel weight ``(M - 1) / (C(M, s) s (M - s))``, which makes KernelSHAP exact. Otherwise
    sizes drawn with probability ``~ (M - 1) / (s (M - s))`` and a uniform subset of each
    size, in antithetic pairs (z and 1 - z), with equal weights.
    """
    if m <= 16 and samples >= 2 ** m - 2:
        codes = np.arange(1, 2 ** m - 1)
        z = ((codes[:, None] >> np.arange(m)) & 1).astype(np.float32)
        s = z.sum(1)
        w = (m - 1) / (np.array([math.comb(m, int(k)) for k in s]) * s * (m - s))
        return jnp.asarray(z), jnp.asarray(w, jnp.float32)
    sizes = np.arange(1, m)
    p = (m - 1) / (sizes * (m - sizes))
    half = -(-samples // 2)
    k1, k2 = jax.random.split(key)
    size_S = 1 + jax.random.categorical(k1, jnp.log(jnp.asarray(p / p.sum())), shape=(half,))
    ranks = _random_ranks(k2, half, m)
    z = (ranks < size_S[:, None]).astype(jnp.float32)
    z = jnp.concatenate([z, 1 - z])[:samples]
    return z, jnp.ones((z.shape[0],), jnp.float32)


@_jit("samples", "features", "chunk", "ridge")
def kernel_shap(f: Callable, x, target=0, baseline=None, *, key=None, samples: int = 256,
                features=None, chunk: int | None = None, ridge: float = 1e-6) -> jax.Array:
    """KernelSHAP (Lundberg & Lee 2017): Shapley values of the features as the weighted
    least-squares fit of coalition scores, with the efficiency constraint
    ``sum phi = score(x) - score(x0)`` imposed exactly (one feature eliminated).

    ``features``: ids per element (``[H, W]`` broadcast over channels, or x[0]'s shape);
    default: each element. ``samples`` coalitions per sample (all of them when
    ``samples >= 2^M - 2``: then exact).
    """
    x0 = _baseline(x, baseline)
    onehot, m = _feature_matrix(x, features)
    key = jax.random.key(0) if key is None else key
    z_SxM, w_S = _shapley_kernel_design(m, samples, key)
    t_B = _targets(target, x.shape[0])
    y_SxB = _coalition_scores(f, x, x0, t_B, z_SxM, onehot, chunk)
    f0_B = score(f(x0), t_B)
    total_B = score(f(x), t_B) - f0_B
    # y - f0 - z_M total = sum_{j<M} (z_j - z_M) phi_j
    a_SxM1 = z_SxM[:, :-1] - z_SxM[:, -1:]
    rhs_SxB = y_SxB - f0_B[None] - z_SxM[:, -1:] * total_B[None]
    gram = (a_SxM1 * w_S[:, None]).T @ a_SxM1 + ridge * jnp.eye(m - 1)
    phi_M1xB = _spd_solve(gram, (a_SxM1 * w_S[:, None]).T @ rhs_SxB)
    phi_BxM = jnp.concatenate([phi_M1xB.T, (total_B - phi_M1xB.sum(0))[:, None]], axis=1)
    return _spread(phi_BxM, onehot, x)


def ridge_solve(a_SxM, y_SxB, w_S, ridge: float) -> tuple[jax.Array, jax.Array]:
    """Weighted ridge regression with an unpenalised intercept: ``(coef [M, B], b [B])``
    minimising ``sum_s w_s (y_s - a_s coef - b)^2 + ridge |coef|^2`` (normal equations)."""
    wn = w_S / w_S.sum()
    a_mean, y_mean = wn @ a_SxM, wn @ y_SxB
    ac, yc = a_SxM - a_mean, y_SxB - y_mean
    gram = (ac * w_S[:, None]).T @ ac + ridge * jnp.eye(a_SxM.shape[1])
    coef = _spd_solve(gram, (ac * w_S[:, None]).T @ yc)
    return coef, y_mean - a_mean @ coef


@_jit("samples", "features", "kernel_width", "ridge", "chunk")
def lime(f: Callable, x, target=0, baseline=None, *, key, samples: int = 256, features=None,
         kernel_width: float = 0.25, ridge: float = 1.0, chunk: int | None = None
         ) -> jax.Array:
    """LIME (Ribeiro 2016): a weighted ridge fit of the scores of random coalitions
    (each feature kept with probability 1/2), weights ``exp(-d^2 / width^2)`` with d the
    cosine distance of the coalition to the whole input. Returns the coefficients."""
    x0 = _baseline(x, baseline)
    onehot, m = _feature_matrix(x, features)
    z_SxM = jax.random.bernoulli(key, 0.5, (samples, m)).astype(jnp.float32)
    z_SxM = z_SxM.at[0].set(1.0)  # the input itself
    cos = z_SxM.sum(1) / (jnp.sqrt(jnp.maximum(z_SxM.sum(1), 1e-12)) * math.sqrt(m))
    w_S = jnp.exp(-jnp.square(1 - cos) / kernel_width ** 2)
    t_B = _targets(target, x.shape[0])
    y_SxB = _coalition_scores(f, x, x0, t_B, z_SxM, onehot, chunk)
    coef_MxB, _ = ridge_solve(z_SxM, y_SxB, w_S, ridge)
    return _spread(coef_MxB.T, onehot, x)


@_jit("permutations", "features", "chunk")
def shapley_sampling(f: Callable, x, target=0, baseline=None, *, key, permutations: int = 8,
                     features=None, chunk: int | None = None) -> jax.Array:
    """Shapley value sampling (Strumbelj & Kononenko 2014): marginal contributions along
    random feature orders (each with its reverse, for lower variance), averaged. Always
    sums to ``score(x) - score(x0)``."""
    x0 = _baseline(x, baseline)
    onehot, m = _feature_matrix(x, features)
    half = -(-permutations // 2)
    rank = _random_ranks(key, half, m)  # position of each feature in a random order
    rank_PxM = jnp.concatenate([rank, m - 1 - rank])[:permutations]  # and the reverses
    p = rank_PxM.shape[0]
    # coalition t of order p: the first t features (t = 0..M)
    z = (rank_PxM[:, None, :] < jnp.arange(m + 1)[None, :, None]).astype(jnp.float32)
    t_B = _targets(target, x.shape[0])
    y = _coalition_scores(f, x, x0, t_B, z.reshape(-1, m), onehot, chunk)
    y = y.reshape(p, m + 1, -1)  # [P, M + 1, B]
    gain = y[:, 1:] - y[:, :-1]  # gain of adding perm[p, t]
    phi_PxMxB = jnp.take_along_axis(gain, rank_PxM[:, :, None], axis=1)
    return _spread(phi_PxMxB.mean(0).T, onehot, x)


# --------------------------------------------------------------------------- registry
# name -> (function, needs a key). Grad-CAM needs a model's intermediates and is not here.
METHODS: dict[str, tuple[Callable, bool]] = {
    "saliency": (saliency, False),
    "input_x_gradient": (input_x_gradient, False),
    "integrated_gradients": (integrated_gradients, False),
    "smoothgrad": (smoothgrad, True),
    "vargrad": (vargrad, True),
    "guided_backprop": (guided_backprop, False),
    "deconvnet": (deconvnet, False),
    "deeplift": (deeplift, False),
    "lrp_epsilon": (lambda f, x, target=0, **kw: lrp(f, x, target, "epsilon", **kw), False),
    "lrp_zplus": (lambda f, x, target=0, **kw: lrp(f, x, target, "zplus", **kw), False),
    "lrp_gamma": (lambda f, x, target=0, **kw: lrp(f, x, target, "gamma", **kw), False),
    "occlusion": (occlusion, False),
    "kernel_shap": (kernel_shap, True),
    "lime": (lime, True),
    "shapley_sampling": (shapley_sampling, True),
}
METHOD_NAMES = (*METHODS, "grad_cam")
