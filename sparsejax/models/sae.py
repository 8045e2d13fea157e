"""A standalone sparse autoencoder on activation vectors, as pure functions over a pytree.

``x [B, d] -> code (N latents) -> x_hat [B, d]`` with

* TopK (Gao et al. 2024): ``z = ReLU(TopK(W_enc (x - b_dec) + b_enc, k))``, computed by
  ``ops.topk_encode`` (dense encoder matmul, sparse backward) and decoded by
  ``ops.sparse_decode`` (gather-sum, O(B k d)); k may be traced, bounded by ``cfg.k``.
* ReLU + L1: ``z = ReLU(W_enc (x - b_dec) + b_enc)``, decoded densely, L1 penalty on z.
* BatchTopK (Bussmann et al. 2024): ``ReLU(pre)`` at the ``k B`` largest pre-activations
  of the whole batch in training, at a threshold estimated in training at evaluation.
* JumpReLU (Rajamanoharan et al. 2024): ``pre H(pre - theta)`` with a learned threshold
  per latent and an L0 penalty (``l0_coef``), optionally the pre-activation loss on dead
  latents (``preact_coef``, Anthropic 2025).

BatchTopK and JumpReLU are the hybrid's sparsifiers' own functions
(:mod:`sparsejax.models.sparse_layer`), and their settings' defaults are the hybrid's
(:class:`sparsejax.sparsity.remedies.RemedyConfig`): one home per remedy.

Decoder rows (one dictionary direction per latent, ``W_dec [N, d]``) have unit norm: the
training step keeps them there. The encoder (``W_enc [d, N]``) starts as the decoder's
transpose, which keeps units alive early (Gao et al.).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sparsejax import ops
from sparsejax.models import sparse_layer
from sparsejax.sparsity.remedies import RemedyConfig, tied_encoder, unit_rows

ACTIVATIONS = ("topk", "relu", "batchtopk", "jumprelu")
DENSE_CODES = ("relu", "batchtopk", "jumprelu")  # activations whose code is a dense [B, N]
_REMEDY = RemedyConfig()  # the sparsifier settings' defaults, shared with the hybrid


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """Shape and sparsity of an SAE.

    Attributes:
      d_in: width d of the activation vectors.
      n_latents: dictionary size N.
      k: TopK: active latents per vector (the static bound; a traced k may go lower).
      activation: one of :data:`ACTIVATIONS`: ``"topk"``, ``"relu"`` (ReLU + L1),
        ``"batchtopk"`` (k per vector on average over the batch) or ``"jumprelu"``.
      l1_coef: ReLU only: weight of the L1 penalty on the code (per vector, summed latents).
      l0_coef: JumpReLU only: weight of the L0 penalty (mean active latents per vector),
        in units of FVU.
      preact_coef: JumpReLU only: weight of the pre-activation loss on dead latents,
        ``sum_n dead_n ReLU(theta_n - pre_n)`` per vector over the data's mean norm.
      batchtopk_decay: BatchTopK's threshold moving average, per step.
      jump_init, jump_bandwidth, jump_lr_scale: JumpReLU's threshold at step 0, its
        pseudo-derivative's kernel width, and its learning rate in multiples of the model's
        (:class:`sparsejax.models.sparse_layer.JumpReLU`).
      k_aux: AuxK latents per vector drawn from the dead ones (0: AuxK off); Gao et al.
        use d_in / 2.
      aux_coef: weight of the AuxK loss (Gao et al.: 1/32).
      impl: ``ops.topk`` implementation.
    """

    d_in: int
    n_latents: int
    k: int = 32
    activation: str = "topk"
    l1_coef: float = 5.0
    l0_coef: float = 1e-3
    preact_coef: float = 0.0
    batchtopk_decay: float = _REMEDY.batchtopk_decay
    jump_init: float = _REMEDY.jump_init
    jump_bandwidth: float = _REMEDY.jump_bandwidth
    jump_lr_scale: float = _REMEDY.jump_lr_scale
    k_aux: int = 0
    aux_coef: float = 1 / 32
    impl: str = "auto"

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ValueError(f"SAEConfig: {what}")

        need(self.d_in >= 1, f"d_in={self.d_in} must be >= 1")
        need(self.n_latents >= 1, f"n_latents={self.n_latents} must be >= 1")
        need(self.activation in ACTIVATIONS,
             f"activation={self.activation!r} must be one of {ACTIVATIONS}")
        need(1 <= self.k <= self.n_latents,
             f"k={self.k} must be in [1, n_latents={self.n_latents}]")
        need(0 <= self.k_aux <= self.n_latents,
             f"k_aux={self.k_aux} must be in [0, n_latents={self.n_latents}]")
        need(self.k_aux == 0 or self.activation == "topk",
             f"k_aux={self.k_aux}: AuxK needs activation='topk', got {self.activation!r}")
        need(self.l1_coef >= 0 and self.aux_coef >= 0 and self.l0_coef >= 0,
             f"l1_coef={self.l1_coef}, l0_coef={self.l0_coef} and aux_coef={self.aux_coef} "
             f"must be >= 0")
        need(self.preact_coef == 0 or self.activation == "jumprelu",
             f"preact_coef={self.preact_coef}: the pre-activation loss needs "
             f"activation='jumprelu', got {self.activation!r}")
        try:  # the hybrid's checks of the same settings
            RemedyConfig(preact_coef=self.preact_coef, batchtopk_decay=self.batchtopk_decay,
                         jump_init=self.jump_init, jump_bandwidth=self.jump_bandwidth,
                         jump_lr_scale=self.jump_lr_scale)
        except ValueError as e:
            raise ValueError(f"SAEConfig: {e}") from None
        need(self.impl in ops.IMPLS, f"impl={self.impl!r} must be one of {ops.IMPLS}")


class SAEParams(NamedTuple):
    W_enc: jax.Array  # [d, N] encoder columns (x @ W_enc: the fast layout for XLA:CPU)
    b_enc: jax.Array  # [N]
    W_dec: jax.Array  # [N, d] unit-norm dictionary directions
    b_dec: jax.Array  # [d] subtracted before encoding, added after decoding
    # JumpReLU: [N] u = log(theta) / jump_lr_scale, trained. BatchTopK: the evaluation
    # threshold, a scalar moving average the train step sets (its gradient is zero, so
    # Adam leaves it). None for the others (their checkpoints keep four arrays).
    threshold: jax.Array | None = None


def init_params(key: jax.Array, cfg: SAEConfig, b_dec: jax.Array | None = None,
                dtype=jnp.float32) -> SAEParams:
    """Random unit decoder rows, encoder = their transpose, zero b_enc.

    ``b_dec`` (e.g. the data mean) defaults to zeros.
    """
    W_dec = unit_rows(jax.random.normal(key, (cfg.n_latents, cfg.d_in), dtype))
    if b_dec is None:
        b_dec = jnp.zeros((cfg.d_in,), dtype)
    elif jnp.shape(b_dec) != (cfg.d_in,):
        raise ValueError(f"init_params: b_dec must have shape [{cfg.d_in}], got {jnp.shape(b_dec)}")
    threshold = None
    if cfg.activation == "jumprelu":
        threshold = sparse_layer.jump_log_threshold(cfg.n_latents, cfg.jump_init,
                                                    cfg.jump_lr_scale)
    elif cfg.activation == "batchtopk":
        threshold = jnp.zeros((), jnp.float32)
    return SAEParams(W_enc=tied_encoder(W_dec), b_enc=jnp.zeros((cfg.n_latents,), dtype),
                     W_dec=W_dec, b_dec=jnp.asarray(b_dec, dtype), threshold=threshold)


class SAEOut(NamedTuple):
    """The code and the reconstruction. TopK: ``code`` is an ``ops.TopkCode`` of ReLU'd
    values (``[B, k]``); the others (:data:`DENSE_CODES`): the dense ``[B, N]`` activation."""

    code: ops.TopkCode | jax.Array
    recon: jax.Array  # [B, d]


def preactivations(params: SAEParams, x_BxD: jax.Array) -> jax.Array:
    """``[B, N]``: ``(x - b_dec) W_enc + b_enc``."""
    return (x_BxD - params.b_dec) @ params.W_enc + params.b_enc


def jump_threshold(params: SAEParams, cfg: SAEConfig) -> jax.Array:
    """JumpReLU's ``[N]`` thresholds theta."""
    return sparse_layer.jump_threshold(params.threshold, cfg.jump_lr_scale)


def activate(params: SAEParams, pre_BxN: jax.Array, k, cfg: SAEConfig, *, train: bool = False,
             axis_name: str | None = None) -> jax.Array:
    """The dense code ``[B, N]`` of pre-activations, for the :data:`DENSE_CODES`.

    ``train`` selects BatchTopK's batch-wide cut (over every shard of ``axis_name`` inside
    ``shard_map``) over its estimated threshold; the others ignore it and ``axis_name``.
    """
    if cfg.activation == "relu":
        return jax.nn.relu(pre_BxN)
    if cfg.activation == "batchtopk":
        if train:
            return sparse_layer.batch_topk_train(pre_BxN, k, axis_name=axis_name)
        return sparse_layer.batch_topk_eval(pre_BxN, params.threshold)
    if cfg.activation == "jumprelu":
        return sparse_layer.jump_relu(pre_BxN, jump_threshold(params, cfg), cfg.jump_bandwidth)
    raise ValueError(f"activate: activation {cfg.activation!r} has no dense code; expected "
                     f"one of {DENSE_CODES}")


def encode(params: SAEParams, x_BxD: jax.Array, k, cfg: SAEConfig,
           dead_N: jax.Array | None = None, *, train: bool = False,
           axis_name: str | None = None):
    """The code of x: a TopkCode (TopK; AuxK slots from ``dead_N`` if ``cfg.k_aux``) or the
    dense ``[B, N]`` (:func:`activate`, with ``train`` and ``axis_name``)."""
    if cfg.activation in DENSE_CODES:
        return activate(params, preactivations(params, x_BxD), k, cfg, train=train,
                        axis_name=axis_name)
    code = ops.topk_encode(x_BxD, params.W_enc, params.b_enc, k, impl=cfg.impl, k_max=cfg.k,
                           aux_mask=dead_N if cfg.k_aux else None, k_aux=cfg.k_aux,
                           x_offset=params.b_dec)
    return code._replace(values=jax.nn.relu(code.values),
                         aux_values=jax.nn.relu(code.aux_values))


def decode(params: SAEParams, code) -> jax.Array:
    """``[B, d]`` reconstruction from a TopkCode (sparse decode) or a dense ``[B, N]`` code."""
    if isinstance(code, ops.TopkCode):
        return ops.sparse_decode(code.values, code.indices, params.W_dec, params.b_dec)
    return code @ params.W_dec + params.b_dec


def forward(params: SAEParams, x_BxD: jax.Array, k, cfg: SAEConfig,
            dead_N: jax.Array | None = None, *, train: bool = False,
            axis_name: str | None = None) -> SAEOut:
    """:func:`encode` then :func:`decode`."""
    code = encode(params, x_BxD, k, cfg, dead_N, train=train, axis_name=axis_name)
    return SAEOut(code, decode(params, code))


def fired(code, n_latents: int) -> jax.Array:
    """bool ``[N]``: which latents were active (> 0) for some vector of the batch."""
    if isinstance(code, ops.TopkCode):
        return jnp.zeros((n_latents,), bool).at[code.indices.reshape(-1)].max(
            code.values.reshape(-1) > 0)
    return jnp.any(code > 0, axis=0)


def l0(code) -> jax.Array:
    """``[B]`` number of active latents per vector."""
    values = code.values if isinstance(code, ops.TopkCode) else code
    return jnp.sum(values > 0, axis=-1)


def dense_code(code, n_latents: int) -> jax.Array:
    """``[B, N]`` activations of a TopkCode (for analysis; training never builds it)."""
    if not isinstance(code, ops.TopkCode):
        return code
    b = code.values.shape[0]
    return jnp.zeros((b, n_latents), code.values.dtype).at[
        jnp.arange(b)[:, None], code.indices].add(code.values)
