"""A sparse layer of N units with interchangeable sparsifiers.

``pre = W f + b`` (``[B, N]``), ``h = sparsify(pre, k)``, and an SAE decoder
``f_hat = W_dec h + b_dec`` that reconstructs the layer's input. A sparsifier is any
module with ``__call__(pre_BxN, k) -> h_BxN``; it sees the whole batch (so BatchTopK fits)
and may hold parameters (so JumpReLU's thresholds fit). ``k`` is a traced int32 scalar:
a schedule that moves k does not recompile.

Sparsifiers: :class:`TopK` (Gao et al. 2024), :class:`ReLU` (+ L1 in the loss),
:class:`BatchTopK` (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders") and
:class:`JumpReLU` (Rajamanoharan et al. 2024, "Jumping Ahead"). A sparsifier may also
define ``penalty(pre_BxN) -> [B]``, its own sparsity penalty (JumpReLU's L0), which the
loss weights by the controller's coefficient; and ``deterministic`` (set by
``model.eval()``), which switches BatchTopK to its estimated threshold. The arithmetic of
BatchTopK and JumpReLU lives in pure functions here (:func:`batch_topk_train`,
:func:`batch_topk_eval`, :func:`ema_threshold`, :func:`jump_relu`, :func:`jump_step`,
:func:`jump_threshold`), which the standalone SAE (:mod:`sparsejax.models.sae`) calls too.

With ``whiten=True`` the layer reads a whitened input (arXiv 2511.13981; centring alone is
arXiv 2605.31518's remedy): ``pre = W ((f - m) P) + b`` and ``f_hat = (W_dec h + b_dec)
P^-1 + m``, so the SAE still reconstructs f itself. ``m``, ``P`` and ``P^-1`` are
estimated from data (:func:`sparsejax.sparsity.remedies.whitening`) and never trained
(held as parameters so they checkpoint with the rest; their gradient is stopped).
"""

from __future__ import annotations

# Shape letters: B batch, N units, D the layer's input width.

from typing import NamedTuple

import jax
import jax.numpy as jnp
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


class BatchTopK(nnx.Module):
    """``h = ReLU(pre)`` at the ``k B`` largest pre-activations of the whole batch, 0 elsewhere
    (Bussmann et al. 2024): k active units per example on average, more on some, fewer on
    others. At evaluation (``deterministic``) each example is cut alone at the threshold
    estimated in training: ``h = pre [pre > theta]``.

    ``theta`` is an exponential moving average of the smallest activation each training
    batch keeps, updated by the train step (:meth:`estimate`), never by the optimiser.

    Args:
      num_units: N.
      decay: the moving average's decay per step.
    """

    def __init__(self, num_units: int, *, decay: float = 0.9):
        self.num_units = num_units
        self.decay = decay
        self.deterministic = False
        self.threshold = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, pre_BxN: jax.Array, k: jax.Array) -> jax.Array:
        if self.deterministic:
            return batch_topk_eval(pre_BxN, self.threshold[...])
        return batch_topk_train(pre_BxN, k)

    def estimate(self, theta: jax.Array, h_BxN: jax.Array) -> jax.Array:
        """The threshold after one training batch whose code is ``h``
        (:func:`ema_threshold`)."""
        return ema_threshold(theta, h_BxN, self.decay)


def batch_topk_train(pre_BxN: jax.Array, k, *, axis_name: str | None = None) -> jax.Array:
    """BatchTopK in training: ``ReLU(pre)`` at the ``k B`` largest pre-activations of the
    batch (of all its shards over ``axis_name``, inside ``shard_map``), 0 elsewhere."""
    count = jnp.asarray(k, jnp.int32) * pre_BxN.shape[0]  # k times this device's rows
    if axis_name is not None:
        count = count * jax.lax.psum(1, axis_name)
    return jax.nn.relu(ops.batch_topk(pre_BxN, count, axis_name=axis_name))


def batch_topk_eval(pre_BxN: jax.Array, theta: jax.Array) -> jax.Array:
    """BatchTopK at evaluation: each example alone, ``ReLU(pre) [pre > theta]``."""
    theta = jax.lax.stop_gradient(theta)
    return jnp.where(pre_BxN > theta, jax.nn.relu(pre_BxN), 0.0)


def ema_threshold(theta: jax.Array, h_BxN: jax.Array, decay: float, *,
                  axis_name: str | None = None) -> jax.Array:
    """BatchTopK's evaluation threshold after a training batch whose code is ``h``: the
    moving average of the batch's smallest kept (positive) value, over every shard of
    ``axis_name``; unchanged if nothing fired; the first batch (``theta == 0``) sets it."""
    least = jnp.min(jnp.where(h_BxN > 0, h_BxN, jnp.inf))
    if axis_name is not None:
        least = jax.lax.pmin(least, axis_name)
    fired = jnp.isfinite(least)
    new = jnp.where(theta > 0, decay * theta + (1 - decay) * least, least)
    return jax.lax.stop_gradient(jnp.where(fired, new, theta).astype(theta.dtype))


@jax.custom_vjp
def jump_relu(pre_BxN, theta_N, bandwidth):
    """``pre H(pre - theta)`` ``[B, N]``, with the straight-through gradient to theta
    ``[N]`` (a rectangle kernel of width ``bandwidth``)."""
    return pre_BxN * (pre_BxN > theta_N)


def _jump_fwd(pre_BxN, theta_N, bandwidth):
    return jump_relu(pre_BxN, theta_N, bandwidth), (pre_BxN, theta_N, bandwidth)


def _jump_bwd(res, g_BxN):
    pre_BxN, theta_N, eps = res
    on = pre_BxN > theta_N
    # Rajamanoharan et al. 2024, eq. 11: d/dtheta of z H(z - theta) ~ -(theta / eps)
    # K((z - theta) / eps) with the rectangle kernel K(u) = 1[|u| < 1/2]
    window = (jnp.abs(pre_BxN - theta_N) < eps / 2).astype(g_BxN.dtype)
    g_theta_N = jnp.sum(-(theta_N / eps) * window * g_BxN, axis=0)
    return jnp.where(on, g_BxN, 0.0), g_theta_N, None


jump_relu.defvjp(_jump_fwd, _jump_bwd)


@jax.custom_vjp
def jump_step(pre_BxN, theta_N, bandwidth):
    """``H(pre - theta)`` ``[B, N]`` (the L0 summand), with the straight-through gradient to
    theta ``[N]`` only."""
    return (pre_BxN > theta_N).astype(pre_BxN.dtype)


def _step_fwd(pre_BxN, theta_N, bandwidth):
    return jump_step(pre_BxN, theta_N, bandwidth), (pre_BxN, theta_N, bandwidth)


def _step_bwd(res, g_BxN):
    pre_BxN, theta_N, eps = res
    # eq. 12: d/dtheta H(z - theta) ~ -(1 / eps) K((z - theta) / eps); none to z
    window = (jnp.abs(pre_BxN - theta_N) < eps / 2).astype(g_BxN.dtype)
    return jnp.zeros_like(pre_BxN), jnp.sum(-window * g_BxN, axis=0) / eps, None


jump_step.defvjp(_step_fwd, _step_bwd)


def jump_log_threshold(num_units: int, init_threshold: float, lr_scale: float) -> jax.Array:
    """``[N]`` float32: the JumpReLU parameter ``u = log(theta) / lr_scale`` at step 0."""
    return jnp.full((num_units,), jnp.log(init_threshold) / lr_scale, jnp.float32)


def jump_threshold(u_N: jax.Array, lr_scale: float) -> jax.Array:
    """``[N]`` thresholds ``exp(lr_scale u)`` (positive) of the parameter ``u``."""
    return jnp.exp(lr_scale * u_N)


class JumpReLU(nnx.Module):
    """``h = pre H(pre - theta)`` with a learned threshold per unit (Rajamanoharan et al.
    2024). The threshold gets its gradient through straight-through pseudo-derivatives
    (rectangle kernel of width ``bandwidth``), from the reconstruction and from the L0
    penalty :meth:`penalty`; the loss weights that penalty by the controller's
    coefficient, steered so that mean L0 tracks the k schedule. Ignores k otherwise.

    The parameter is ``u = log(theta) / lr_scale``. Adam moves a parameter by about its
    learning rate per step whatever the gradient's size, so log theta moves by about
    ``lr_scale x lr`` per step: with ``lr_scale = 1`` (the paper's ``log theta``, trained
    over 10^5 steps and more) a threshold crosses less than one nat in the few hundred
    steps of a CPU-sized schedule, and L0 cannot follow k at any coefficient.

    Args:
      num_units: N.
      init_threshold: theta at step 0 (> 0), the same for every unit.
      bandwidth: the pseudo-derivative's kernel width, in pre-activation units.
      lr_scale: the thresholds' learning rate, in multiples of the model's (> 0).
    """

    def __init__(self, num_units: int, *, init_threshold: float = 1e-3,
                 bandwidth: float = 1e-3, lr_scale: float = 1.0):
        self.bandwidth = bandwidth
        self.lr_scale = lr_scale
        self.log_threshold_u = nnx.Param(jump_log_threshold(num_units, init_threshold,
                                                            lr_scale))

    def threshold(self) -> jax.Array:
        """``[N]`` thresholds, ``exp(lr_scale u)`` (positive)."""
        return jump_threshold(self.log_threshold_u[...], self.lr_scale)

    def __call__(self, pre_BxN: jax.Array, k: jax.Array) -> jax.Array:
        del k
        return jump_relu(pre_BxN, self.threshold(), self.bandwidth)

    def penalty(self, pre_BxN: jax.Array) -> jax.Array:
        """``[B]`` L0 of each example, with the straight-through gradient to theta."""
        return jnp.sum(jump_step(pre_BxN, self.threshold(), self.bandwidth), axis=-1)


class SparseOut(NamedTuple):
    pre: jax.Array  # [B, N] pre-activations W f + b
    h: jax.Array  # [B, N] sparse code
    recon: jax.Array  # [B, D] SAE reconstruction of the input from h


class SparseLayer(nnx.Module):
    """``f [B, D] -> (pre [B, N], h [B, N], f_hat [B, D])`` with a pluggable sparsifier."""

    def __init__(self, d_in: int, num_units: int, sparsifier: nnx.Module, *, rngs: nnx.Rngs,
                 whiten: bool = False):
        self.num_units = num_units
        self.enc = dense(d_in, num_units, rngs)
        self.dec = dense(num_units, d_in, rngs)
        self.sparsify = sparsifier
        self.whiten = nnx.data(Whitening(d_in) if whiten else None)

    def __call__(self, f_BxD: jax.Array, k: jax.Array) -> SparseOut:
        if self.whiten is None:
            pre_BxN = self.enc(f_BxD)
            h_BxN = self.sparsify(pre_BxN, k)
            return SparseOut(pre_BxN, h_BxN, self.dec(h_BxN))
        m_D, P_DxD, P_inv_DxD = self.whiten.arrays()
        pre_BxN = self.enc((f_BxD - m_D) @ P_DxD)
        h_BxN = self.sparsify(pre_BxN, k)
        return SparseOut(pre_BxN, h_BxN, self.dec(h_BxN) @ P_inv_DxD + m_D)

    def decoder_matrix(self) -> jax.Array:
        """``[N, D]``: the linear map from h to the reconstruction (``f_hat = h W + c``)."""
        W_NxD = self.dec.kernel[...]
        return W_NxD if self.whiten is None else W_NxD @ self.whiten.arrays()[2]


class Whitening(nnx.Module):
    """The sparse layer's input transform ``(f - mean) P``, inverted by ``P_inv``
    (identity at construction; set from data by the study)."""

    def __init__(self, d_in: int):
        eye = jnp.eye(d_in, dtype=jnp.float32)
        self.mean = nnx.Param(jnp.zeros((d_in,), jnp.float32))
        self.P = nnx.Param(eye)
        self.P_inv = nnx.Param(eye)

    def arrays(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(mean [D], P [D, D], P_inv [D, D])``, gradient stopped."""
        return tuple(jax.lax.stop_gradient(v[...]) for v in (self.mean, self.P, self.P_inv))


SPARSIFIERS = {"topk": TopK, "l1": ReLU, "batchtopk": BatchTopK, "jumprelu": JumpReLU}


def make_sparsifier(method: str, num_units: int, *, topk_impl: str = "auto",
                    topk_relu: bool = True, batchtopk_decay: float = 0.9,
                    jump_init: float = 1e-3, jump_bandwidth: float = 1e-3,
                    jump_lr_scale: float = 1.0) -> nnx.Module:
    """The sparsifier of a training method: ``topk`` -> :class:`TopK`, ``l1`` ->
    :class:`ReLU`, ``batchtopk`` -> :class:`BatchTopK`, ``jumprelu`` -> :class:`JumpReLU`."""
    if method == "topk":
        return TopK(num_units, impl=topk_impl, relu=topk_relu)
    if method == "l1":
        return ReLU()
    if method == "batchtopk":
        return BatchTopK(num_units, decay=batchtopk_decay)
    if method == "jumprelu":
        return JumpReLU(num_units, init_threshold=jump_init, bandwidth=jump_bandwidth,
                        lr_scale=jump_lr_scale)
    raise ValueError(f"no sparsifier for method {method!r}: expected one of {sorted(SPARSIFIERS)}")
