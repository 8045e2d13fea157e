"""Unit-level tools for sparse codes: per-unit statistics, top-activating inputs, response
curves over the factors, the most informative factor, activation maximisation, surrogate
decision trees (rule extraction) and factor sweeps (sensitivity analysis).

Letters: N samples, U units, F factors, V values of a factor (padded to the largest),
H W C image, S optimisation steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.metrics.information import histogram_mutual_info


def unit_stats(codes_NxU, factors_NxF, factor_sizes: Sequence[int], *,
               threshold: float = 0.0, num_bins: int = 20) -> dict[str, np.ndarray]:
    """Per unit: firing density, alive, mean response to every value of every factor, and
    the factor it tells most about.

    Returns numpy arrays: ``density [U]`` (share of samples above ``threshold``), ``alive [U]``
    (fires at least once), ``response [U, F, V]`` (mean activation given factor j = v; NaN
    past a factor's size or for unseen values), ``nmi [U, F]`` (histogram mutual information
    normalised by the factor's entropy, as in MIG) and ``best_factor [U]`` (-1 for dead units).
    """
    codes = np.asarray(codes_NxU, np.float32)
    factors = np.asarray(factors_NxF)
    n, u = codes.shape
    density = (codes > threshold).mean(0)
    alive = density > 0
    v_max = max(factor_sizes)
    response = np.full((u, len(factor_sizes), v_max), np.nan, np.float32)
    for j, size in enumerate(factor_sizes):
        onehot = factors[:, j][:, None] == np.arange(size)[None]  # [N, V]
        count = onehot.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            response[:, j, :size] = (codes.T @ onehot) / np.where(count > 0, count, np.nan)
    mi, ent = histogram_mutual_info(codes, factors, num_bins=num_bins)
    nmi = np.asarray(mi) / np.maximum(np.asarray(ent), 1e-12)[None]
    best = np.where(alive, nmi.argmax(1), -1)
    return {"density": density, "alive": alive, "response": response, "nmi": nmi,
            "best_factor": best}


def top_activating(codes_NxU, k: int) -> np.ndarray:
    """Indices ``[U, k]`` of the samples with the highest activation of each unit."""
    codes = np.asarray(codes_NxU)
    return np.argsort(-codes, axis=0, kind="stable")[:k].T


def total_variation(x_BxHxWxC) -> jax.Array:
    """Anisotropic total variation per image ``[B]`` (mean absolute neighbour difference)."""
    dh = jnp.abs(x_BxHxWxC[:, 1:] - x_BxHxWxC[:, :-1]).mean((1, 2, 3))
    dw = jnp.abs(x_BxHxWxC[:, :, 1:] - x_BxHxWxC[:, :, :-1]).mean((1, 2, 3))
    return dh + dw


def _blur(x_BxHxWxC):
    """3x3 binomial blur per channel (edge-padded)."""
    k = jnp.asarray([0.25, 0.5, 0.25])
    p = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    x = k[0] * p[:, :-2] + k[1] * p[:, 1:-1] + k[2] * p[:, 2:]
    return k[0] * x[:, :, :-2] + k[1] * x[:, :, 1:-1] + k[2] * x[:, :, 2:]


def activation_maximisation(unit_fn: Callable, x0_BxHxWxC, *, key, steps: int = 128,
                            lr: float = 0.05, l2: float = 1e-3, tv: float = 0.05,
                            jitter: int = 2, blur_every: int = 8) -> jax.Array:
    """Feature visualisation (Erhan 2009; Olah 2017's regularisers): gradient ascent on
    ``unit_fn(x) - l2 |x|^2 - tv TV(x)`` from ``x0``, with a random shift of up to
    ``jitter`` px before every step, a blur every ``blur_every`` steps, and x kept in
    [0, 1]. ``unit_fn: x [B, H, W, C] -> [B]`` (one unit's activation). Jit-able."""

    def objective(x, shift):
        xs = jnp.roll(x, shift, axis=(1, 2))
        return (unit_fn(xs) - l2 * jnp.sum(x ** 2, (1, 2, 3)) - tv * total_variation(x)).sum()

    def step(x, inp):
        i, k = inp
        shift = tuple(jax.random.randint(k, (2,), -jitter, jitter + 1))
        g = jax.grad(objective)(x, shift)
        g = g / (jnp.sqrt(jnp.mean(g ** 2, (1, 2, 3), keepdims=True)) + 1e-8)
        x = jnp.clip(x + lr * g, 0.0, 1.0)
        x = jnp.where((i + 1) % blur_every == 0, _blur(x), x) if blur_every else x
        return x, None

    keys = jax.random.split(key, steps)
    x, _ = jax.lax.scan(step, x0_BxHxWxC, (jnp.arange(steps), keys))
    return x


def surrogate_trees(codes_NxU, factors_NxF, factor_names: Sequence[str], *,
                    max_depth: int = 4, train_share: float = 0.5, seed: int = 0) -> dict:
    """Rule extraction: per factor, a decision tree from the codes to the factor, fitted on
    ``train_share`` of the samples; fidelity is its accuracy on the rest (beside the
    majority-class rate). Returns ``{factor: {"fidelity", "majority", "rules", "units"}}``."""
    from sklearn.tree import DecisionTreeClassifier, export_text

    codes = np.asarray(codes_NxU)
    factors = np.asarray(factors_NxF)
    rng = np.random.default_rng(seed)
    order = rng.permutation(codes.shape[0])
    cut = int(train_share * len(order))
    tr, te = order[:cut], order[cut:]
    out = {}
    for j, name in enumerate(factor_names):
        tree = DecisionTreeClassifier(max_depth=max_depth, random_state=seed)
        tree.fit(codes[tr], factors[tr, j])
        fidelity = float((tree.predict(codes[te]) == factors[te, j]).mean())
        majority = float(np.bincount(factors[te, j]).max() / len(te))
        used = sorted({int(f) for f in tree.tree_.feature if f >= 0})
        rules = export_text(tree, feature_names=[f"unit{i}" for i in range(codes.shape[1])])
        out[name] = {"fidelity": fidelity, "majority": majority, "rules": rules, "units": used}
    return out


def factor_sweeps(encode_fn: Callable, render_fn: Callable, base_F, factor_sizes:
                  Sequence[int]) -> np.ndarray:
    """Sensitivity analysis: codes ``[F, V, U]`` as each factor sweeps its range with the
    others held at ``base_F`` (NaN past a factor's size). ``encode_fn: images -> codes``."""
    base = np.asarray(base_F, np.int32)
    v_max = max(factor_sizes)
    tuples = []
    for j in range(len(factor_sizes)):
        for v in range(v_max):
            t = base.copy()
            t[j] = min(v, factor_sizes[j] - 1)
            tuples.append(t)
    codes = np.asarray(encode_fn(render_fn(np.stack(tuples))), np.float32)
    codes = codes.reshape(len(factor_sizes), v_max, -1)
    valid = np.arange(v_max)[None] < np.asarray(factor_sizes)[:, None]
    return np.where(valid[..., None], codes, np.nan)
