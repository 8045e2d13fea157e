"""Remedies against dead latents in sparse autoencoders (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders"; Bricken et al. 2023, "Towards Monosemanticity").

* AuxK (Gao et al. 2024): the top ``k_aux`` pre-activations among dead latents reconstruct
  the main reconstruction's residual. Two details that implementations get wrong
  (EleutherAI sparsify's known bugs): the residual ``e = x - x_hat`` is detached (AuxK must
  not pull the main reconstruction towards e), and the decoder bias is not added to the
  auxiliary reconstruction, since x_hat already counted it once: ``e_hat = W_dec^T z_aux``.
* Dead-latent bookkeeping: a latent is dead when it has not fired for ``dead_after``
  steps (Gao et al.: 10M tokens; SAELens: 1,000 steps).
* Resampling (Anthropic, "Towards Monosemanticity"): dead latents get a decoder row equal
  to a unit-normalised input drawn with probability proportional to its squared
  reconstruction loss, an encoder row of that direction scaled to 0.2 x the mean alive
  encoder norm, zero encoder bias, and fresh optimiser state for those rows.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax import ops
from sparsejax.models.sae import SAEParams, unit_rows


class AuxSums(NamedTuple):
    """Sums over a batch, so that data-parallel shards add up: the AuxK loss is
    ``sse / centred`` once both are summed over all shards."""

    sse: jax.Array  # sum_b ||e_b - e_hat_b||^2
    centred: jax.Array  # sum_b ||e_b - mean(e)||^2, a constant (e is detached)


def auxk_sums(params: SAEParams, x_BxD: jax.Array, recon_BxD: jax.Array,
              aux_values_BxA: jax.Array, aux_indices_BxA: jax.Array,
              e_mean_D: jax.Array | None = None) -> AuxSums:
    """AuxK's squared error of the auxiliary reconstruction of the detached residual.

    Args:
      x_BxD, recon_BxD: inputs and the main reconstruction (which includes b_dec).
      aux_values_BxA, aux_indices_BxA: the auxiliary code (ReLU'd, 0 in unused slots).
      e_mean_D: the residual's mean over the whole (global) batch; default: this batch's.
    """
    e_BxD = jax.lax.stop_gradient(x_BxD - recon_BxD)
    zero_bias = jnp.zeros_like(params.b_dec)  # b_dec is already in recon: count it once
    e_hat_BxD = ops.sparse_decode(aux_values_BxA, aux_indices_BxA, params.W_dec, zero_bias)
    if e_mean_D is None:
        e_mean_D = jnp.mean(e_BxD, axis=0)
    return AuxSums(sse=jnp.sum((e_BxD - e_hat_BxD) ** 2),
                   centred=jnp.sum((e_BxD - e_mean_D) ** 2))


def auxk_loss(params: SAEParams, x_BxD, recon_BxD, aux_values_BxA, aux_indices_BxA):
    """The normalised AuxK loss of one batch: ``||e - e_hat||^2 / ||e - mean(e)||^2``."""
    s = auxk_sums(params, x_BxD, recon_BxD, aux_values_BxA, aux_indices_BxA)
    return s.sse / jnp.maximum(s.centred, 1e-12)


def dead_mask(last_fired_N: jax.Array, step: jax.Array, dead_after: int) -> jax.Array:
    """bool ``[N]``: latents that have not fired in the last ``dead_after`` steps."""
    return (step - last_fired_N) >= dead_after


def resample_dead(key: jax.Array, params: SAEParams, opt_state, optimizer, dead_N: jax.Array,
                  x_BxD: jax.Array, recon_BxD: jax.Array, enc_scale: float = 0.2):
    """Anthropic-style resampling of the dead latents from the inputs of one batch.

    Shapes stay static: every latent draws a candidate input, and only the dead ones take
    theirs. Returns ``(params, opt_state)``.
    """
    loss_B = jnp.sum((x_BxD - recon_BxD) ** 2, axis=-1)
    logits_B = jnp.log(jnp.maximum(loss_B, 1e-30) ** 2)  # p ~ squared loss
    pick_N = jax.random.categorical(key, logits_B, shape=dead_N.shape)
    direction_NxD = unit_rows(x_BxD[pick_N] - params.b_dec)
    alive = ~dead_N
    enc_norm_N = jnp.linalg.norm(params.W_enc, axis=0)
    alive_norm = jnp.sum(jnp.where(alive, enc_norm_N, 0)) / jnp.maximum(jnp.sum(alive), 1)
    alive_norm = jnp.where(jnp.any(alive), alive_norm, 1.0)
    d_N1 = dead_N[:, None]
    new = SAEParams(
        W_enc=jnp.where(dead_N, (direction_NxD * enc_scale * alive_norm).T, params.W_enc),
        b_enc=jnp.where(dead_N, 0, params.b_enc),
        W_dec=jnp.where(d_N1, direction_NxD, params.W_dec),
        b_dec=params.b_dec)

    # Zero the optimiser moments of the resampled rows (Adam's mu and nu are params-shaped).
    rows = SAEParams(W_enc=dead_N[None, :], b_enc=dead_N, W_dec=d_N1,
                     b_dec=jnp.zeros_like(params.b_dec, bool))
    opt_state = optax.tree_utils.tree_map_params(
        optimizer, lambda leaf, m: jnp.where(m, 0, leaf), opt_state, rows)
    return new, opt_state
