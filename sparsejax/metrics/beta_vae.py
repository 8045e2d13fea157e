"""BetaVAE score (Higgins et al. 2017) as disentanglement_lib computes it (``beta_vae.py``).

A training point: pick a factor ``j`` uniformly; draw two batches of ``batch_size`` (64)
i.i.d. factor tuples and copy column ``j`` of the first into the second (each pair of samples
shares its value of ``j``); the feature is ``mean_batch |z(x1) - z(x2)|`` per code, the label
``j``. A ``LogisticRegression`` (sklearn defaults) is trained on ``num_train`` points and
scored on ``num_eval`` fresh ones.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.metrics import sampling


@jax.jit
def beta_vae_features(codes_a_TxSxK, codes_b_TxSxK):
    """``mean_S |a - b|``: the feature of each of ``T`` batch pairs, ``[T, K]``."""
    return jnp.mean(jnp.abs(codes_a_TxSxK - codes_b_TxSxK), axis=1)


def beta_vae(train_features, train_labels, eval_features, eval_labels, *, seed: int = 0) -> dict:
    """Accuracies of a logistic regression from features ``[T, K]`` to factor labels ``[T]``."""
    x_tr, x_ev = np.asarray(train_features, np.float64), np.asarray(eval_features, np.float64)
    y_tr, y_ev = np.asarray(train_labels), np.asarray(eval_labels)
    if x_tr.ndim != 2 or x_ev.ndim != 2 or x_tr.shape[1] != x_ev.shape[1]:
        raise ValueError(f"features must be [T, K] with the same K, got {x_tr.shape} and "
                         f"{x_ev.shape}")
    if y_tr.shape != (x_tr.shape[0],) or y_ev.shape != (x_ev.shape[0],):
        raise ValueError(f"labels must be [T] matching the features, got {y_tr.shape} and "
                         f"{y_ev.shape}")
    if len(np.unique(y_tr)) < 2:
        raise ValueError("the training labels hold a single factor: expected at least two")
    from sklearn import linear_model  # on use: sklearn adds ~1 s to start-up

    model = linear_model.LogisticRegression(random_state=seed).fit(x_tr, y_tr)
    return {"train_accuracy": float(np.mean(model.predict(x_tr) == y_tr)),
            "eval_accuracy": float(model.score(x_ev, y_ev))}


@functools.partial(jax.jit, static_argnames=("dataset", "num_pairs", "batch_size"))
def _batch_pairs(key, *, dataset, num_pairs: int, batch_size: int):
    """``(label_T, factors [2, T, S, F])``: pairs of batches sharing factor ``label`` per sample."""
    f = dataset.num_factors
    k_label, k_a, k_b = jax.random.split(key, 3)
    label_T = jax.random.randint(k_label, (num_pairs,), 0, f)
    a = dataset.sample_factors(k_a, num_pairs * batch_size).reshape(num_pairs, batch_size, f)
    b = dataset.sample_factors(k_b, num_pairs * batch_size).reshape(num_pairs, batch_size, f)
    b = jnp.where(jnp.arange(f)[None, None, :] == label_T[:, None, None], a, b)
    return label_T, jnp.stack([a, b])


def _points(representation_fn, dataset, key, num_points, batch_size, images_per_call):
    f = dataset.num_factors
    per_call = max(1, min(num_points, images_per_call // (2 * batch_size)))
    feats, labels = [], []
    for start in range(0, num_points, per_call):
        # One compiled shape per call; the last call keeps only the points still needed.
        label_T, factors = _batch_pairs(jax.random.fold_in(key, start), dataset=dataset,
                                        num_pairs=per_call, batch_size=batch_size)
        n = 2 * per_call * batch_size
        codes = sampling.encode(representation_fn, dataset, factors.reshape(n, f), n)
        codes = jnp.asarray(codes, jnp.float32).reshape(2, per_call, batch_size, -1)
        t = min(per_call, num_points - start)
        feats.append(np.asarray(beta_vae_features(codes[0], codes[1]))[:t])
        labels.append(np.asarray(label_T)[:t])
    return np.concatenate(feats), np.concatenate(labels)


def beta_vae_score(representation_fn: sampling.RepresentationFn, dataset, key, *,
                   batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                   images_per_call: int = 4096) -> dict:
    """The BetaVAE score of a representation (dlib defaults).

    Returns ``{"train_accuracy", "eval_accuracy"}``.
    """
    k_train, k_eval, k_model = jax.random.split(sampling.prng_key(key), 3)
    train = _points(representation_fn, dataset, k_train, num_train, batch_size, images_per_call)
    evals = _points(representation_fn, dataset, k_eval, num_eval, batch_size, images_per_call)
    return beta_vae(*train, *evals, seed=sampling.sklearn_seed(k_model))
