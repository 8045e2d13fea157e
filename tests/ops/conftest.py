"""Shared reference for the ops tests."""

import jax
import numpy as np
import pytest


def np_order_key(x):
    """Numpy restatement of ops.order_key: int32 keys in IEEE total order (NaN beyond inf by
    sign, -0.0 below +0.0). In numpy, so the reference compiles no XLA program per shape."""
    bits = np.ascontiguousarray(x, np.float32).view(np.int32)
    return bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))


def reference_topk(x, k):
    """Numpy reference: the k largest by IEEE total order, ties to the lower index."""
    x = np.asarray(x, np.float32)
    flat = x.reshape(-1, x.shape[-1])
    key = np_order_key(flat).astype(np.int64)
    out = np.zeros_like(flat)
    k = min(k, flat.shape[-1])
    for r in range(flat.shape[0]):
        order = np.argsort(-key[r], kind="stable")[:k]
        out[r, order] = flat[r, order]
    return out.reshape(x.shape)


def reference_batch_topk(x, count):
    """Numpy reference of BatchTopK's selection: the ``count`` largest entries of the whole
    array by IEEE total order, 0 elsewhere."""
    flat = np.asarray(x, np.float32).reshape(-1)
    keep = np.zeros(flat.shape, bool)
    keep[np.argsort(-np_order_key(flat).astype(np.int64), kind="stable")[:count]] = True
    return np.where(keep.reshape(np.shape(x)), x, 0).astype(np.float32)


@pytest.fixture
def np_topk():
    return reference_topk


@pytest.fixture
def np_batch_topk():
    return reference_batch_topk


@pytest.fixture(autouse=True)
def exact_float32_matmuls():
    """References multiply in full float32 (GPUs default to TF32, a 1e-3 relative error)."""
    with jax.default_matmul_precision("highest"):
        yield
