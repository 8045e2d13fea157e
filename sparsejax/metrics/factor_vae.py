"""FactorVAE score (Kim & Mnih 2018) as disentanglement_lib computes it (``factor_vae.py``).

1. Global variance of every code over ``num_variance_estimate`` i.i.d. samples (ddof 1);
   codes with standard deviation below ``prune_threshold`` (0.05) are collapsed and ignored.
2. A vote: pick a factor ``j`` uniformly, draw a batch of ``batch_size`` (64) samples sharing
   one random value of ``j``, and vote ``(j, argmin_k var_batch(z_k) / var_global(z_k))``
   over the active codes.
3. The classifier maps each code to the factor with most training votes (``num_train``);
   accuracy is the share of votes it gets right, on the training votes and on ``num_eval``
   fresh ones.

dlib reports ``num_active_dims`` as ``len`` of a boolean mask (always ``K``); we report the
number of active codes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.metrics import sampling


@functools.partial(jax.jit, static_argnames=("num_factors",))
def factor_vae_votes(batch_codes_TxSxK, fixed_T, global_variance_K, active_K, *,
                     num_factors: int):
    """Votes ``[F, K]`` (int32) of ``T`` fixed-factor batches.

    Args:
      batch_codes_TxSxK: codes of ``T`` batches of ``S`` samples.
      fixed_T: the factor held fixed in each batch.
      global_variance_K: variance (ddof 1) of each code over i.i.d. samples.
      active_K: bool, the codes that take part (std >= prune threshold).
      num_factors: ``F``.
    """
    local_TxK = jnp.var(batch_codes_TxSxK, axis=1, ddof=1)
    ratio_TxK = jnp.where(active_K, local_TxK / jnp.where(active_K, global_variance_K, 1.0),
                          jnp.inf)
    winner_T = jnp.argmin(ratio_TxK, axis=1)
    votes = jnp.zeros((num_factors, batch_codes_TxSxK.shape[-1]), jnp.int32)
    return votes.at[fixed_T, winner_T].add(1)


def factor_vae_accuracy(train_votes_FxK, eval_votes_FxK) -> tuple[float, float]:
    """Majority-vote classifier code -> factor from the training votes; its two accuracies."""
    train, evals = np.asarray(train_votes_FxK), np.asarray(eval_votes_FxK)
    classifier_K = np.argmax(train, axis=0)
    cols = np.arange(train.shape[1])
    return (float(train[classifier_K, cols].sum() / max(train.sum(), 1)),
            float(evals[classifier_K, cols].sum() / max(evals.sum(), 1)))


@functools.partial(jax.jit, static_argnames=("dataset", "num_batches", "batch_size"))
def _fixed_factor_batches(key, *, dataset, num_batches: int, batch_size: int):
    """``(fixed_T, factors [T, S, F])``: T batches, each holding one uniform factor fixed.

    The batch's i.i.d. tuples take, in the fixed column, one value drawn uniformly per batch
    (what ``dataset.sample_fixed_factors`` does, for all batches in one draw).
    """
    f = dataset.num_factors
    k_fixed, k_free, k_value = jax.random.split(key, 3)
    fixed_T = jax.random.randint(k_fixed, (num_batches,), 0, f)
    free = dataset.sample_factors(k_free, num_batches * batch_size)
    free = free.reshape(num_batches, batch_size, f)
    value_TxF = dataset.sample_factors(k_value, num_batches)
    held = jnp.arange(f)[None, None, :] == fixed_T[:, None, None]
    return fixed_T, jnp.where(held, value_TxF[:, None, :], free)


def _votes(representation_fn, dataset, key, num_votes, batch_size, variance_K, active_K,
           images_per_call):
    f = dataset.num_factors
    per_call = max(1, min(num_votes, images_per_call // batch_size))
    votes = np.zeros((f, variance_K.shape[0]), np.int64)
    for start in range(0, num_votes, per_call):
        # Every call draws per_call batches (one compiled shape); the last one keeps only
        # the votes still needed.
        fixed_T, factors_TxSxF = _fixed_factor_batches(jax.random.fold_in(key, start),
                                                       dataset=dataset, num_batches=per_call,
                                                       batch_size=batch_size)
        codes = sampling.encode(representation_fn, dataset,
                                factors_TxSxF.reshape(per_call * batch_size, f),
                                per_call * batch_size)
        codes = jnp.asarray(codes, jnp.float32).reshape(per_call, batch_size, -1)
        t = min(per_call, num_votes - start)
        votes += np.asarray(factor_vae_votes(codes[:t], fixed_T[:t], variance_K, active_K,
                                             num_factors=f))
    return votes


def factor_vae_score(representation_fn: sampling.RepresentationFn, dataset, key, *,
                     batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
                     images_per_call: int = 4096) -> dict:
    """The FactorVAE score of a representation (dlib defaults).

    Returns ``{"train_accuracy", "eval_accuracy", "num_active_dims"}``.
    ``images_per_call`` sets how many images are rendered and encoded at once.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (a variance per batch), got {batch_size}")
    k_var, k_train, k_eval = jax.random.split(sampling.prng_key(key), 3)
    codes, _ = sampling.sample_codes(representation_fn, dataset, k_var, num_variance_estimate,
                                     images_per_call)
    variance_K = jnp.var(jnp.asarray(codes, jnp.float32), axis=0, ddof=1)
    active_K = jnp.sqrt(variance_K) >= prune_threshold
    num_active = int(active_K.sum())
    if num_active == 0:
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train = _votes(representation_fn, dataset, k_train, num_train, batch_size, variance_K,
                   active_K, images_per_call)
    evals = _votes(representation_fn, dataset, k_eval, num_eval, batch_size, variance_K,
                   active_K, images_per_call)
    train_acc, eval_acc = factor_vae_accuracy(train, evals)
    return {"train_accuracy": train_acc, "eval_accuracy": eval_acc,
            "num_active_dims": num_active}
