"""A sparse layer of N units with interchangeable sparsifiers.

``pre = W f + b`` (``[B, N]``), ``h = sparsify(pre, k)``, and an SAE decoder
``f_hat = W_dec h + b_dec`` that reconstructs the layer's input. A sparsifier is any
module with ``__call__(pre_BxN, k) -> h_BxN``; it sees the whole batch (so BatchTopK fits)
and may hold parameters (so JumpReLU's thresholds fit). ``k`` is a traced int32 scalar:
a schedule that moves k does not recompile.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
from flax import nnx

from sparsejax import ops
from sparsejax.models.conv import dense


class TopK(nnx.Module):
    """``h = ReLU(TopK(pre, k))``: the k largest pre-activations of each row, negatives zeroed.

    With ``relu=False``, ``h = TopK(pre, k)``: exactly k units active in every row (a
    negative pre-activation among the k largest stays). With the ReLU, a row has at most k
    active units, and at k near N about as many as ReLU alone gives (about half).

    Args:
      num_units: N, the static bound on k.
      impl: the :func:`sparsejax.ops.topk` implementation (``"auto"``, ``"lax"``, ...).
      relu: zero the negative values among the k kept.
    """

    def __init__(self, num_units: int, *, impl: str = "auto", relu: bool = True):
        self.num_units = num_units
        self.impl = impl
        self.relu = relu

    def __call__(self, pre_BxN: jax.Array, k: jax.Array) -> jax.Array:
        h_BxN = ops.topk(pre_BxN, k, self.impl, k_max=self.num_units)
        return jax.nn.relu(h_BxN) if self.relu else h_BxN


class ReLU(nnx.Module):
    """``h = ReLU(pre)``; sparsity comes from the L1 penalty on h in the loss. Ignores k."""

    def __call__(self, pre_BxN: jax.Array, k: jax.Array) -> jax.Array:
        del k
        return jax.nn.relu(pre_BxN)


class SparseOut(NamedTuple):
    pre: jax.Array  # [B, N] pre-activations W f + b
    h: jax.Array  # [B, N] sparse code
    recon: jax.Array  # [B, D] SAE reconstruction of the input from h


class SparseLayer(nnx.Module):
    """``f [B, D] -> (pre [B, N], h [B, N], f_hat [B, D])`` with a pluggable sparsifier."""

    def __init__(self, d_in: int, num_units: int, sparsifier: nnx.Module, *, rngs: nnx.Rngs):
        self.num_units = num_units
        self.enc = dense(d_in, num_units, rngs)
        self.dec = dense(num_units, d_in, rngs)
        self.sparsify = sparsifier

    def __call__(self, f_BxD: jax.Array, k: jax.Array) -> SparseOut:
        pre_BxN = self.enc(f_BxD)
        h_BxN = self.sparsify(pre_BxN, k)
        return SparseOut(pre_BxN, h_BxN, self.dec(h_BxN))


SPARSIFIERS = {"topk": TopK, "l1": ReLU}


def make_sparsifier(method: str, num_units: int, *, topk_impl: str = "auto",
                    topk_relu: bool = True) -> nnx.Module:
    """The sparsifier of a training method: ``topk`` -> :class:`TopK`, ``l1`` -> :class:`ReLU`."""
    if method == "topk":
        return TopK(num_units, impl=topk_impl, relu=topk_relu)
    if method == "l1":
        return ReLU()
    raise ValueError(f"no sparsifier for method {method!r}: expected one of {sorted(SPARSIFIERS)}")
