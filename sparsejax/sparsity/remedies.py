"""Remedies against dead latents in sparse autoencoders, one home for the standalone SAE
(:mod:`sparsejax.models.sae`) and the hybrid's sparse layer (:mod:`sparsejax.train.hybrid`).

Every function works on plain arrays (encoder ``W_enc [D, N]``, decoder ``W_dec [N, D]``),
so both models call the same code:

* AuxK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): the top ``k_aux``
  pre-activations among dead latents reconstruct the main reconstruction's residual. Two
  details that implementations get wrong (EleutherAI sparsify's known bugs): the residual
  ``e = x - x_hat`` is detached (AuxK must not pull the main reconstruction towards e), and
  the decoder bias is not added to the auxiliary reconstruction, since x_hat already
  counted it once: ``e_hat = W_dec^T z_aux``.
* Dead-latent bookkeeping: a latent is dead when it has not fired for ``dead_after``
  steps (Gao et al.: 10M tokens; SAELens: 1,000 steps).
* Resampling (Anthropic, "Towards Monosemanticity"): dead latents get a decoder row equal
  to a unit-normalised input drawn with probability proportional to its squared
  reconstruction loss, an encoder row of that direction scaled to 0.2 x the mean alive
  encoder norm, zero encoder bias, and fresh optimiser state for those rows.
* Tied initialisation (Gao et al. 2024): the encoder starts as the decoder's transpose.
* Subspace-constrained initialisation (arXiv 2508.16929): dictionary directions drawn
  inside the subspace the inputs actually occupy (their top principal components), not
  in the whole space, where most random directions see nothing and die.
* Whitening of the SAE's input (PCA whitening, arXiv 2511.13981; centring,
  arXiv 2605.31518): the input's mean and covariance, estimated from data; whitened to
  the input's mean variance, not to 1, so that the optimiser's steps keep their size.
"""

from __future__ import annotations

# Shape letters: B batch, D input width, N latents, A auxiliary slots, M data samples.

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax import ops


@dataclasses.dataclass(frozen=True)
class RemedyConfig:
    """The remedies a hybrid run trains with (all off by default).

    Attributes:
      k_aux: AuxK latents per example drawn from the dead ones (0: AuxK off).
      aux_coef: weight of AuxK's normalised loss relative to the SAE term's (Gao et al.:
        1/32).
      dead_after: steps without firing (on a training batch) after which a unit counts as
        dead for AuxK, resampling and the pre-activation loss.
      resample_every: Anthropic resampling of the dead units every this many steps (0: off).
      preact_coef: JumpReLU only: weight of the pre-activation loss on dead units
        (Anthropic, January 2025 circuits update): ``sum_n dead_n ReLU(theta_n - pre_n)
        ||W_dec,n||``, which pulls a dead unit's pre-activation up to its threshold.
      batchtopk_decay: BatchTopK's threshold moving average, per step.
      jump_init: JumpReLU's threshold at step 0.
      jump_bandwidth: JumpReLU's pseudo-derivative kernel width.
      jump_lr_scale: JumpReLU's threshold learning rate, in multiples of the model's
        (:class:`sparsejax.models.sparse_layer.JumpReLU`; 1: the paper's).
    """

    k_aux: int = 0
    aux_coef: float = 1 / 32
    dead_after: int = 100
    resample_every: int = 0
    preact_coef: float = 0.0
    batchtopk_decay: float = 0.9
    jump_init: float = 1e-3
    jump_bandwidth: float = 1e-3
    jump_lr_scale: float = 1.0

    def __post_init__(self):
        for name in ("k_aux", "resample_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"remedy {name} must be an integer >= 0, got {v!r}")
        if isinstance(self.dead_after, bool) or not isinstance(self.dead_after, int) \
                or self.dead_after < 1:
            raise ValueError(f"remedy dead_after must be an integer >= 1, got "
                             f"{self.dead_after!r}")
        for name in ("aux_coef", "preact_coef"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"remedy {name} must be a finite number >= 0, got {v!r}")
        if not 0 <= self.batchtopk_decay < 1:
            raise ValueError(f"remedy batchtopk_decay must be in [0, 1), got "
                             f"{self.batchtopk_decay!r}")
        for name in ("jump_init", "jump_bandwidth", "jump_lr_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"remedy {name} must be a finite number > 0, got {v!r}")

    @property
    def tracks_dead(self) -> bool:
        """Whether a remedy reads the dead mask during training."""
        return bool(self.k_aux or self.resample_every or self.preact_coef)


def unit_rows(W_NxD: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows scaled to unit L2 norm (dictionary directions, resampled inputs)."""
    return W_NxD / jnp.maximum(jnp.linalg.norm(W_NxD, axis=-1, keepdims=True), eps)


# --------------------------------------------------------------------------- AuxK
class AuxSums(NamedTuple):
    """Sums over a batch, so that data-parallel shards add up: the AuxK loss is
    ``sse / centred`` once both are summed over all shards."""

    sse: jax.Array  # sum_b ||e_b - e_hat_b||^2
    centred: jax.Array  # sum_b ||e_b - mean(e)||^2, a constant (e is detached)


def dead_aux_code(pre_BxN: jax.Array, dead_N: jax.Array, k_aux: int
                  ) -> tuple[jax.Array, jax.Array]:
    """AuxK's code: per example the ``k_aux`` largest pre-activations among the dead units,
    ReLU'd (``[B, A]`` values, 0 in slots that hold no dead unit, and int32 indices)."""
    masked_BxN = jnp.where(dead_N, pre_BxN, -jnp.inf)
    values_BxA, indices_BxA = jax.lax.top_k(masked_BxN, k_aux)
    return jnp.where(jnp.isfinite(values_BxA), jax.nn.relu(values_BxA), 0.0), indices_BxA


def auxk_sums(W_dec_NxD: jax.Array, x_BxD: jax.Array, recon_BxD: jax.Array,
              aux_values_BxA: jax.Array, aux_indices_BxA: jax.Array,
              e_mean_D: jax.Array | None = None) -> AuxSums:
    """AuxK's squared error of the auxiliary reconstruction of the detached residual.

    Args:
      W_dec_NxD: the decoder (rows: the latents' directions).
      x_BxD, recon_BxD: inputs and the main reconstruction (which includes the bias).
      aux_values_BxA, aux_indices_BxA: the auxiliary code (ReLU'd, 0 in unused slots).
      e_mean_D: the residual's mean over the whole (global) batch; default: this batch's.
    """
    e_BxD = jax.lax.stop_gradient(x_BxD - recon_BxD)
    zero_bias = jnp.zeros((W_dec_NxD.shape[1],), W_dec_NxD.dtype)  # counted once, in recon
    e_hat_BxD = ops.sparse_decode(aux_values_BxA, aux_indices_BxA, W_dec_NxD, zero_bias)
    if e_mean_D is None:
        e_mean_D = jnp.mean(e_BxD, axis=0)
    return AuxSums(sse=jnp.sum((e_BxD - e_hat_BxD) ** 2),
                   centred=jnp.sum((e_BxD - e_mean_D) ** 2))


def auxk_loss(W_dec_NxD, x_BxD, recon_BxD, aux_values_BxA, aux_indices_BxA):
    """The normalised AuxK loss of one batch: ``||e - e_hat||^2 / ||e - mean(e)||^2``."""
    s = auxk_sums(W_dec_NxD, x_BxD, recon_BxD, aux_values_BxA, aux_indices_BxA)
    return s.sse / jnp.maximum(s.centred, 1e-12)


def dead_mask(last_fired_N: jax.Array, step: jax.Array, dead_after: int) -> jax.Array:
    """bool ``[N]``: latents that have not fired in the last ``dead_after`` steps."""
    return (step - last_fired_N) >= dead_after


# --------------------------------------------------------------------------- resampling
class Rows(NamedTuple):
    """The arrays resampling rewrites: encoder ``[D, N]``, its bias ``[N]``, decoder
    ``[N, D]``."""

    W_enc: jax.Array
    b_enc: jax.Array
    W_dec: jax.Array


def resample_rows(key: jax.Array, rows: Rows, b_dec_D: jax.Array, dead_N: jax.Array,
                  x_BxD: jax.Array, recon_BxD: jax.Array, *, enc_scale: float = 0.2,
                  dec_norm: jax.Array | float = 1.0) -> Rows:
    """Anthropic's resampling of the dead latents from the inputs of one batch.

    Shapes stay static: every latent draws a candidate input, and only the dead ones take
    theirs. ``dec_norm`` is the norm a new decoder row gets (1 for unit-norm dictionaries).
    """
    loss_B = jnp.sum((x_BxD - recon_BxD) ** 2, axis=-1)
    logits_B = jnp.log(jnp.maximum(loss_B, 1e-30) ** 2)  # p ~ squared loss
    pick_N = jax.random.categorical(key, logits_B, shape=dead_N.shape)
    direction_NxD = unit_rows(x_BxD[pick_N] - b_dec_D)
    alive = ~dead_N
    enc_norm_N = jnp.linalg.norm(rows.W_enc, axis=0)
    alive_norm = jnp.sum(jnp.where(alive, enc_norm_N, 0)) / jnp.maximum(jnp.sum(alive), 1)
    alive_norm = jnp.where(jnp.any(alive), alive_norm, 1.0)
    d_N1 = dead_N[:, None]
    return Rows(
        W_enc=jnp.where(dead_N, (direction_NxD * enc_scale * alive_norm).T, rows.W_enc),
        b_enc=jnp.where(dead_N, 0, rows.b_enc),
        W_dec=jnp.where(d_N1, direction_NxD * dec_norm, rows.W_dec))


def reset_moments(optimizer: optax.GradientTransformation, opt_state, mask_tree):
    """Zero the optimiser state (Adam's mu and nu are params-shaped) where ``mask_tree``
    (bool leaves broadcastable to each parameter) is True."""
    return optax.tree_utils.tree_map_params(
        optimizer, lambda leaf, m: jnp.where(m, 0, leaf), opt_state, mask_tree)


def resample_dead(key: jax.Array, params, opt_state, optimizer, dead_N: jax.Array,
                  x_BxD: jax.Array, recon_BxD: jax.Array, enc_scale: float = 0.2):
    """:func:`resample_rows` on a standalone SAE's parameters (fields ``W_enc``, ``b_enc``,
    ``W_dec``, ``b_dec``; unit-norm decoder rows), with their optimiser rows reset; any
    other field (a JumpReLU threshold) and its optimiser state are left as they are.
    Returns ``(params, opt_state)``."""
    new = resample_rows(key, Rows(params.W_enc, params.b_enc, params.W_dec), params.b_dec,
                        dead_N, x_BxD, recon_BxD, enc_scale=enc_scale)
    d_N1 = dead_N[:, None]
    untouched = jax.tree.map(lambda v: jnp.zeros(jnp.shape(v), bool), params)
    rows = untouched._replace(W_enc=dead_N[None, :], b_enc=dead_N, W_dec=d_N1)
    return (params._replace(W_enc=new.W_enc, b_enc=new.b_enc, W_dec=new.W_dec),
            reset_moments(optimizer, opt_state, rows))


# --------------------------------------------------------------------------- initialisation
def tied_encoder(W_dec_NxD: jax.Array) -> jax.Array:
    """``[D, N]``: the encoder as the decoder's transpose (a copy, not an alias: the two
    are updated and donated apart)."""
    return W_dec_NxD.T.copy()


class Moments(NamedTuple):
    """Mean ``[D]`` and the eigendecomposition of the covariance of a sample of inputs."""

    mean: jax.Array  # [D]
    eigvals: jax.Array  # [D], descending
    eigvecs: jax.Array  # [D, D], columns


def moments(x_MxD: jax.Array) -> Moments:
    """The sample mean and covariance spectrum of ``x`` (float64-free: float32 ``eigh``)."""
    mean_D = jnp.mean(x_MxD, axis=0)
    c_MxD = x_MxD - mean_D
    cov_DxD = c_MxD.T @ c_MxD / max(x_MxD.shape[0] - 1, 1)
    vals_D, vecs_DxD = jnp.linalg.eigh(cov_DxD)
    return Moments(mean_D, jnp.maximum(vals_D[::-1], 0.0), vecs_DxD[:, ::-1])


def active_rank(m: Moments, kept: float = 0.99) -> jax.Array:
    """int32: the fewest principal directions that hold ``kept`` of the variance."""
    frac_D = jnp.cumsum(m.eigvals) / jnp.maximum(jnp.sum(m.eigvals), 1e-30)
    return jnp.sum(frac_D < kept).astype(jnp.int32) + 1


def subspace_directions(key: jax.Array, m: Moments, num_units: int, kept: float = 0.99
                        ) -> jax.Array:
    """``[N, D]`` unit directions drawn isotropically inside the inputs' active subspace
    (the span of the principal directions holding ``kept`` of the variance)."""
    d = m.eigvals.shape[0]
    in_span_D = jnp.arange(d) < active_rank(m, kept)
    g_NxD = jax.random.normal(key, (num_units, d)) * in_span_D
    return unit_rows(g_NxD @ m.eigvecs.T)


def whitening(m: Moments, rel_eps: float = 1e-3) -> tuple[jax.Array, jax.Array]:
    """PCA whitening at the inputs' own scale, ``(P [D, D], P_inv [D, D])``: ``(x - mean) P``
    has variance (about) ``v`` in every direction that carries variance, ``v`` the inputs'
    mean variance. Unit variance instead would multiply every step Adam takes on the encoder by
    ``1 / sqrt(v)`` (Adam's step is about lr per weight whatever the input's scale): on the
    hybrid's hidden layer, whose values are about 1e-3, that is a step a few hundred times
    larger, and its units all died within one epoch. Directions with variance below
    ``rel_eps v`` are regularised to that level rather than blown up (a ReLU layer has
    constant units)."""
    v = jnp.maximum(jnp.mean(m.eigvals), 1e-30)
    s_D = jnp.sqrt((m.eigvals + rel_eps * v) / v)
    return m.eigvecs / s_D, (m.eigvecs * s_D).T
