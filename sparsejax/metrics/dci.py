"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018), dlib's way.

From an importance matrix ``R [K, F]`` (how much code ``k`` is used to predict factor ``j``)::

    D = sum_k rho_k (1 - H_F(P_k.)),  P_kj = R_kj / sum_j R_kj,  rho_k = sum_j R_kj / sum R
    C = sum_j rho_j (1 - H_K(P_.j)),  columns normalised, rho_j = sum_k R_kj / sum R

(entropies in base F and K, with dlib's ``+1e-11`` inside them; an all-zero ``R`` gives
uniform weights). Informativeness is the mean accuracy of the per-factor predictors.

Importance models (``importance=``):

* ``"gbt"`` (dlib's): ``GradientBoostingClassifier()`` per factor, ``R = |feature_importances_|``,
  accuracies of the trees. Slow: cost grows with codes x classes x samples (hours for 500
  codes and 40-class factors at 10,000 samples); use it for latent codes or small samples.
* ``"l1_logistic"`` (fast): codes standardised on the training sample; per factor an
  L1-penalised multinomial logistic regression (:func:`l1_logistic_fit`, JAX, all factors
  in one jit-compiled proximal-gradient loop); ``R_kj = sum_v |W[k, j, v]|``; accuracies of
  its predictions. Seconds for 500 codes on a CPU. A softmax over a linear function of one
  code still carves it into class intervals, so an identity code scores D, C ~ 0.97
  (a least-squares fit of class indicators would not: the middle classes have no linear
  trend). Its numbers are not comparable with the trees'.

The result dict records the model (``"importance_model"``).
"""

# Shape letters: N samples, K codes, F factors, V classes (the most any factor has).

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax.metrics import sampling

IMPORTANCE_MODELS = ("gbt", "l1_logistic")
L1_STRENGTH = 0.01  # on the mean log-loss; sklearn's C = 1 / (L1_STRENGTH * N)
L1_STEPS = 500


def _check_importance(r) -> np.ndarray:
    r = np.asarray(r, np.float64)
    if r.ndim != 2 or 0 in r.shape:
        raise ValueError(f"importance must be [K, F] with K, F >= 1, got shape {r.shape}")
    if (r < 0).any():
        raise ValueError("importance must be non-negative")
    return r


def _one_minus_entropy(p, base: int, axis: int):
    # base 1 (one factor, or one code) has no spread to measure: dlib's log base 1 is a
    # division by zero; a single column is perfectly disentangled/complete.
    if base == 1:
        return np.ones(p.shape[1 - axis])
    import scipy.stats  # on use, as sklearn in importance_gbt()

    return 1.0 - scipy.stats.entropy(p + 1e-11, base=base, axis=axis)


def _row_score(r) -> float:
    """sum_i rho_i (1 - H_C(P_i.)): rows weighted by their share of the importance, entropy
    in base C (the number of columns)."""
    per_row = _one_minus_entropy(r, r.shape[1], axis=1)
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per_row * r.sum(axis=1) / r.sum()))


def disentanglement(importance_KxF) -> float:
    """D from an importance matrix ``[K, F]``: per code, entropy over factors (base F)."""
    return _row_score(_check_importance(importance_KxF))


def completeness(importance_KxF) -> float:
    """C from an importance matrix ``[K, F]``: per factor, entropy over codes (base K)."""
    return _row_score(_check_importance(importance_KxF).T)


def importance_gbt(train, test, seed: int = 0):
    """dlib's ``compute_importance_gbt``: ``(R [K, F], train accuracy, test accuracy)``."""
    from sklearn import ensemble  # on use: sklearn adds ~1 s to start-up

    (x_tr, y_tr), (x_te, y_te) = train, test
    r = np.zeros((x_tr.shape[1], y_tr.shape[1]))
    acc_tr, acc_te = [], []
    for factor in range(y_tr.shape[1]):
        model = ensemble.GradientBoostingClassifier(random_state=seed).fit(x_tr, y_tr[:, factor])
        r[:, factor] = np.abs(model.feature_importances_)
        acc_tr.append(np.mean(model.predict(x_tr) == y_tr[:, factor]))
        acc_te.append(np.mean(model.predict(x_te) == y_te[:, factor]))
    return r, float(np.mean(acc_tr)), float(np.mean(acc_te))


def _largest_eigenvalue(a_KxK, iters: int = 50):
    v = jnp.ones((a_KxK.shape[0],), a_KxK.dtype) / jnp.sqrt(a_KxK.shape[0])
    def power_step(_, v):
        w = a_KxK @ v
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

    v = lax.fori_loop(0, iters, power_step, v)
    return v @ a_KxK @ v


@functools.partial(jax.jit, static_argnames=("sizes", "steps"))
def l1_logistic_fit(z_NxK, y_NxF, l1_strength, *, sizes: tuple[int, ...], steps: int):
    """L1-penalised multinomial logistic regression of every factor on standardised codes.

    Minimises, for each factor ``j`` independently (one joint, block-separable problem),
    ``mean_n -log softmax(z_n W_j + b_j)[y_nj] + l1_strength * |W_j|_1`` (intercepts not
    penalised) by accelerated proximal gradient (FISTA, step ``1/L`` with ``L`` the softmax
    curvature bound ``max(eig(Z^T Z), N) / 2N`` for centred codes).

    Args:
      z_NxK: standardised codes (zero-mean columns).
      y_NxF: dense class ids, ``0 <= y[:, j] < sizes[j]``.
      l1_strength: penalty on the mean log-loss (``1 / (C N)`` in sklearn's terms).
      sizes: classes per factor; steps: FISTA iterations.

    Returns:
      ``(W [K, F, V], b [F, V])`` with ``V = max(sizes)``; padded classes have weight 0.
    """
    n, k = z_NxK.shape
    v = max(sizes)
    valid_FxV = jnp.arange(v)[None, :] < jnp.asarray(sizes)[:, None]
    target_NxFxV = (y_NxF[:, :, None] == jnp.arange(v)).astype(z_NxK.dtype)
    step = 2.0 * n / jnp.maximum(_largest_eigenvalue(z_NxK.T @ z_NxK), n)

    def grad(w_KxFxV, b_FxV):
        logits = jnp.einsum("nk,kfv->nfv", z_NxK, w_KxFxV) + b_FxV
        p = jax.nn.softmax(jnp.where(valid_FxV, logits, -jnp.inf), axis=-1)
        g_NxFxV = (p - target_NxFxV) / n
        return jnp.einsum("nk,nfv->kfv", z_NxK, g_NxFxV), g_NxFxV.sum(axis=0)

    def prox(w, b, gw, gb):
        w = w - step * gw
        w = jnp.sign(w) * jnp.maximum(jnp.abs(w) - step * l1_strength, 0.0)
        return jnp.where(valid_FxV, w, 0.0), jnp.where(valid_FxV, b - step * gb, 0.0)

    def fista_step(_, state):
        w, b, w_prev, b_prev, t = state
        t_next = (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mom = (t - 1.0) / t_next
        yw, yb = w + mom * (w - w_prev), b + mom * (b - b_prev)
        w_new, b_new = prox(yw, yb, *grad(yw, yb))
        return w_new, b_new, w, b, t_next

    zero_w = jnp.zeros((k, len(sizes), v), z_NxK.dtype)
    zero_b = jnp.zeros((len(sizes), v), z_NxK.dtype)
    start = (zero_w, zero_b, zero_w, zero_b, jnp.float32(1.0))
    w, b, *_ = lax.fori_loop(0, steps, fista_step, start)
    return w, b


def importance_l1_logistic(train, test, l1_strength: float = L1_STRENGTH, steps: int = L1_STEPS):
    """Importances ``sum_v |W[k, j, v]|`` of an L1 multinomial logistic regression per factor.

    Codes are standardised with the training mean and std (constant codes stay 0).
    Returns ``(R [K, F], train accuracy, test accuracy)``.
    """
    (x_tr, y_tr), (x_te, y_te) = train, test
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z_tr, z_te = (x_tr - mean) / std, (x_te - mean) / std
    classes = [np.unique(y_tr[:, factor]) for factor in range(y_tr.shape[1])]
    ids = np.stack([np.searchsorted(values, y_tr[:, factor])
                    for factor, values in enumerate(classes)], axis=1)
    sizes = tuple(len(values) for values in classes)
    w, b = l1_logistic_fit(jnp.asarray(z_tr, jnp.float32), jnp.asarray(ids, jnp.int32),
                           jnp.float32(l1_strength), sizes=sizes, steps=steps)
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    valid = np.arange(w.shape[2])[None, :] < np.asarray(sizes)[:, None]

    def accuracy(z, y):
        logits = np.where(valid, np.einsum("nk,kfv->nfv", z, w) + b, -np.inf)
        pred = logits.argmax(axis=-1)
        return np.mean([np.mean(classes[factor][pred[:, factor]] == y[:, factor])
                        for factor in range(len(classes))])

    return np.abs(w).sum(axis=2), float(accuracy(z_tr, y_tr)), float(accuracy(z_te, y_te))


def dci(codes_train, factors_train, codes_test, factors_test, *, importance: str = "gbt",
        seed: int = 0, l1_strength: float = L1_STRENGTH) -> dict:
    """DCI scores from a train and a test sample.

    Args:
      codes_train, codes_test: ``[N, K]`` codes.
      factors_train, factors_test: integer ``[N, F]`` factor labels.
      importance: ``"gbt"`` (dlib's gradient-boosted trees) or ``"l1_logistic"`` (fast).
      seed: ``random_state`` of the trees.
      l1_strength: L1 penalty of the logistic model (on the mean log-loss).

    Returns:
      ``{"disentanglement", "completeness", "informativeness_train", "informativeness_test",
      "importance_model"}``.
    """
    if importance not in IMPORTANCE_MODELS:
        raise ValueError(f"unknown importance model {importance!r}: expected one of "
                         f"{IMPORTANCE_MODELS}")
    train = sampling.labelled_codes(codes_train, factors_train, "train")
    test = sampling.labelled_codes(codes_test, factors_test, "test")
    sampling.check_split_pair(train, test)
    if importance == "gbt":
        r, acc_tr, acc_te = importance_gbt(train, test, seed)
        model = "gbt"
    else:
        r, acc_tr, acc_te = importance_l1_logistic(train, test, l1_strength)
        model = f"l1_logistic(l1_strength={l1_strength:g}, steps={L1_STEPS})"
    return {"disentanglement": disentanglement(r), "completeness": completeness(r),
            "informativeness_train": acc_tr, "informativeness_test": acc_te,
            "importance_model": model}


def dci_on_dataset(representation_fn: sampling.RepresentationFn, dataset, key,
                   num_train: int = 10_000, num_test: int = 5_000, *, importance: str = "gbt",
                   batch_size: int = 256) -> dict:
    """DCI of a representation on fresh samples (dlib defaults: 10,000 / 5,000, trees)."""
    k_data, k_model = jax.random.split(sampling.prng_key(key))
    split = sampling.sample_train_test(representation_fn, dataset, k_data, num_train, num_test,
                                       batch_size)
    return dci(*split, importance=importance, seed=sampling.sklearn_seed(k_model))
