"""Codes from a representation function over a factor dataset.

Every dataset-level metric samples the same way dlib does (``evaluation/metrics/utils.py``):
factors i.i.d. uniform over the grid, images rendered from them, codes from a representation
function ``fn(images [B, H, W, C]) -> codes [B, K]`` (e.g. the encoder mean), evaluated in
batches. Randomness comes from a ``jax.random.key`` (or an int seed) so a metric is
reproducible from its seed; sklearn models get an int seed drawn from the same key.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.data.dataset import FactorDataset
from sparsejax.data.factors import as_key

RepresentationFn = Callable[[jax.Array], jax.Array]

_RENDER_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prng_key(seed_or_key) -> jax.Array:
    """A typed key from an int seed, a typed key or a raw ``uint32[2]`` key."""
    if isinstance(seed_or_key, (int, np.integer)) and not isinstance(seed_or_key, bool):
        return jax.random.key(int(seed_or_key))
    return as_key(seed_or_key)


def sklearn_seed(key) -> int:
    """An int seed for a sklearn ``random_state``, drawn from ``key``."""
    return int(jax.random.randint(prng_key(key), (), 0, np.iinfo(np.int32).max))


def _render(dataset: FactorDataset, factors_NxF):
    if not dataset.on_device:
        return dataset.render(np.asarray(factors_NxF))
    fn = _RENDER_CACHE.get(dataset)
    if fn is None:  # the procedural renderer is pure JAX: compile it once per dataset
        fn = _RENDER_CACHE[dataset] = jax.jit(dataset.render)
    return fn(factors_NxF)


def encode(representation_fn: RepresentationFn, dataset: FactorDataset, factors_NxF,
           batch_size: int = 256):
    """Codes of the images at ``factors_NxF``: ``[N, K]``.

    Images are rendered and encoded ``batch_size`` at a time. The codes keep the type the
    function returns (a JAX array, or a numpy array for a numpy function).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = int(np.shape(factors_NxF)[0])
    out = []
    for start in range(0, n, batch_size):
        f = factors_NxF[start:start + batch_size]
        codes = representation_fn(_render(dataset, f))
        if np.ndim(codes) != 2 or np.shape(codes)[0] != np.shape(f)[0]:
            raise ValueError(f"representation_fn must map images [B, H, W, C] to codes [B, K]; "
                             f"for B = {np.shape(f)[0]} it returned shape {np.shape(codes)}")
        out.append(codes)
    if all(isinstance(c, jax.Array) for c in out):
        return jnp.concatenate(out, axis=0)
    return np.concatenate([np.asarray(c) for c in out], axis=0)


def sample_codes(representation_fn: RepresentationFn, dataset: FactorDataset, key,
                 num_points: int, batch_size: int = 256):
    """``num_points`` i.i.d. samples: ``(codes [N, K], factors int32 [N, F])``."""
    if num_points < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    factors = dataset.sample_factors(prng_key(key), num_points)
    return encode(representation_fn, dataset, factors, batch_size), factors


def sample_train_test(representation_fn: RepresentationFn, dataset: FactorDataset, key,
                      num_train: int, num_test: int, batch_size: int = 256):
    """Independent train and test samples.

    Returns ``(codes_train, factors_train, codes_test, factors_test)``.
    """
    k_train, k_test = jax.random.split(prng_key(key))
    return (*sample_codes(representation_fn, dataset, k_train, num_train, batch_size),
            *sample_codes(representation_fn, dataset, k_test, num_test, batch_size))


def labelled_codes(codes_NxK, factors_NxF, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Checks a sample for the sklearn-based scores; returns float64 codes and int factors.

    Raises ValueError for a wrong rank, mismatched sample counts or non-integer factors.
    """
    if np.ndim(codes_NxK) != 2:
        raise ValueError(f"codes_{split} must be [N, K], got shape {np.shape(codes_NxK)}")
    if np.ndim(factors_NxF) != 2:
        raise ValueError(f"factors_{split} must be [N, F], got shape {np.shape(factors_NxF)}")
    codes, factors = np.asarray(codes_NxK, np.float64), np.asarray(factors_NxF)
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(f"codes_{split} has {codes.shape[0]} samples but factors_{split} has "
                         f"{factors.shape[0]}: expected one factor row per code row")
    if codes.shape[0] == 0:
        raise ValueError(f"codes_{split} has no samples")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors_{split} must be integer class labels, got dtype {factors.dtype}")
    if not np.isfinite(codes).all():
        raise ValueError(f"codes_{split} has non-finite values: expected finite codes")
    return codes, factors.astype(np.int64)


def check_split_pair(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]):
    """Raises ValueError unless train and test have the same code and factor dimensions."""
    if train[0].shape[1] != test[0].shape[1] or train[1].shape[1] != test[1].shape[1]:
        raise ValueError(f"train has {train[0].shape[1]} codes and {train[1].shape[1]} factors "
                         f"but test has {test[0].shape[1]} and {test[1].shape[1]}")
