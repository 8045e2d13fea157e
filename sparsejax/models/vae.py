"""The VAE-SAE hybrid of the flagship study, and the plain VAE as its dense baseline.

Hybrid, sparse layer on the hidden layer (``placement="hidden"``, the default)::

    f = enc(x)                     [B, 256]   disentanglement_lib conv encoder + Dense 256
    pre = W f + b, h = sparsify    [B, N]     TopK: ReLU(TopK(pre, k)); L1 arm: ReLU(pre)
    f_hat = W_dec h + b_dec        [B, 256]   SAE decoder; loss against stop_gradient(f)
    mu, logvar = head(h)           [B, L]     the latent head reads the sparse code
    z = mu + exp(logvar / 2) eps   [B, L]
    logits = dec(z)                [B, 64, 64, C]

With ``placement="latent"`` the sparse layer reads the latent mean instead:
``h = sparsify(W mu + b)``, its SAE decoder reconstructs ``stop_gradient(mu)``, and the
decoder reads ``z = mu_hat + exp(logvar / 2) eps``, so the sparse code stays on the path
from image to reconstruction in both placements. ``method="dense"`` drops the sparse layer
(the plain VAE). The target of the SAE term is always stop-gradiented so that the SAE loss
cannot shrink the features it explains.

The forward pass returns every intermediate (:class:`VAEOutputs`), so metrics and
interpretability tools need no second pass. The model holds no RNG: the caller passes
the reparameterisation noise ``eps``, which keeps the step a pure function of (seed, step).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sparsejax.models.conv import Decoder, Encoder, dense
from sparsejax.models.sparse_layer import SparseLayer, make_sparsifier

SPARSE_METHODS = ("topk", "l1")  # Top-k (hard) and ReLU + L1 (soft): the paper's two arms
# every sparsifier of the sparse layer (sparsejax.models.sparse_layer): the paper's two and
# the remedies' BatchTopK and JumpReLU
LAYER_METHODS = (*SPARSE_METHODS, "batchtopk", "jumprelu")
PENALISED = ("l1", "jumprelu")  # methods whose penalty the controller steers to the k target
# methods whose graph computes others exactly, so they can train in one program
# (TrainConfig.group): Top-k at k = N is ReLU, the L1 arm's sparsifier
GROUPABLE = {"topk": ("l1",)}
METHODS = (*LAYER_METHODS, "dense")  # "dense": the plain VAE, no sparse layer
PLACEMENTS = ("hidden", "latent")


class VAEOutputs(NamedTuple):
    """Everything the forward pass computes (None where the model has no sparse layer)."""

    logits: jax.Array  # [B, H, W, C] Bernoulli logits
    mu: jax.Array  # [B, L] latent mean
    logvar: jax.Array  # [B, L] latent log-variance
    z: jax.Array  # [B, L] the sample the decoder read
    f: jax.Array  # [B, 256] encoder hidden layer
    pre: jax.Array | None = None  # [B, N] sparse layer pre-activations
    h: jax.Array | None = None  # [B, N] sparse code
    sae_recon: jax.Array | None = None  # [B, D] SAE reconstruction (D = 256 or L)
    sae_target: jax.Array | None = None  # [B, D] what it reconstructs (stop-gradiented)
    h_scale: jax.Array | None = None  # [N] norm of the weights that read each unit of h
    penalty: jax.Array | None = None  # [B] the sparsifier's own penalty (JumpReLU: L0)


class VAE(nnx.Module):
    """Conv VAE with an optional sparse layer (see the module docstring).

    Args:
      channels: image channels C (1 for dSprites, 3 for Shapes3D).
      method: ``"topk"``, ``"l1"`` (ReLU + L1 penalty in the loss), ``"batchtopk"``,
        ``"jumprelu"`` (:mod:`sparsejax.models.sparse_layer`) or ``"dense"`` (no layer).
      num_units: N, the sparse layer's width.
      num_latents: L.
      placement: ``"hidden"`` (between the 256-d hidden layer and the latent head) or
        ``"latent"`` (on the latent mean).
      topk_impl: :func:`sparsejax.ops.topk` implementation.
      topk_relu: Top-k keeps ReLU(TopK(pre)) (default) or TopK(pre), exactly k active.
      conv_impl: strided conv formulation (:mod:`sparsejax.models.conv`).
      compute_dtype: of the encoder's and decoder's convs and Dense layers
        (``"float32"`` or ``"bfloat16"``); parameters, the sparse layer (its Top-k
        selection), the latent heads and the logits stay float32.
      whiten: the sparse layer reads a whitened input (:class:`~sparsejax.models.SparseLayer`).
      sparsifier_options: keyword arguments of
        :func:`~sparsejax.models.sparse_layer.make_sparsifier` (BatchTopK's decay, JumpReLU's
        initial threshold and bandwidth).
    """

    def __init__(self, channels: int, *, method: str = "topk", num_units: int = 500,
                 num_latents: int = 10, hidden: int = 256, placement: str = "hidden",
                 topk_impl: str = "auto", topk_relu: bool = True, conv_impl: str = "auto",
                 compute_dtype: str = "float32",
                 whiten: bool = False, sparsifier_options: dict | None = None,
                 rngs: nnx.Rngs):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}: expected one of {PLACEMENTS}")
        self.placement = placement
        self.encoder = Encoder(channels, hidden=hidden, impl=conv_impl, dtype=compute_dtype,
                               rngs=rngs)
        sparse, head_in = None, hidden
        if method != "dense":
            d_in = hidden if placement == "hidden" else num_latents
            sparsifier = make_sparsifier(method, num_units, topk_impl=topk_impl,
                                         topk_relu=topk_relu, **(sparsifier_options or {}))
            sparse = SparseLayer(d_in, num_units, sparsifier, rngs=rngs, whiten=whiten)
            head_in = num_units if placement == "hidden" else hidden
        self.sparse = nnx.data(sparse)
        self.mean = dense(head_in, num_latents, rngs)
        self.logvar = dense(head_in, num_latents, rngs)
        self.decoder = Decoder(num_latents, channels, impl=conv_impl, dtype=compute_dtype,
                               rngs=rngs)

    def encode(self, x_BxHxWxC: jax.Array, k: jax.Array) -> VAEOutputs:
        """Everything up to the latent distribution (z and logits left as mu and None)."""
        f = self.encoder(x_BxHxWxC)
        if self.sparse is None:
            mu, logvar = self.mean(f), self.logvar(f)
            return VAEOutputs(None, mu, logvar, mu, f)
        if self.placement == "hidden":
            sp = self.sparse(f, k)
            mu, logvar = self.mean(sp.h), self.logvar(sp.h)
            return VAEOutputs(None, mu, logvar, mu, f, sp.pre, sp.h, sp.recon,
                              jax.lax.stop_gradient(f), self.h_scale(), self._penalty(sp.pre))
        mu, logvar = self.mean(f), self.logvar(f)
        sp = self.sparse(mu, k)
        # the decoder reads the SAE's reconstruction of the mean: z's centre is mu_hat
        return VAEOutputs(None, mu, logvar, sp.recon, f, sp.pre, sp.h, sp.recon,
                          jax.lax.stop_gradient(mu), self.h_scale(), self._penalty(sp.pre))

    def _penalty(self, pre_BxN: jax.Array) -> jax.Array | None:
        own = getattr(self.sparse.sparsify, "penalty", None)
        return None if own is None else own(pre_BxN)

    def h_scale(self) -> jax.Array:
        """``[N]``: per unit of h, the L2 norm of every weight that reads it (the SAE
        decoder's row, and with ``placement="hidden"`` the latent head's rows too).

        The L1 penalty is weighted by it, so it cannot be lowered by shrinking h while the
        readers grow (the rescaling loophole; Anthropic's April 2024 SAE update weights
        the L1 term by decoder norms for the same reason).
        """
        readers = [self.sparse.decoder_matrix()]
        if self.placement == "hidden":
            readers += [self.mean.kernel[...], self.logvar.kernel[...]]
        return jnp.sqrt(sum(jnp.sum(jnp.square(w), axis=1) for w in readers))

    def __call__(self, x_BxHxWxC: jax.Array, eps_BxL: jax.Array, k: jax.Array) -> VAEOutputs:
        """Full forward pass; ``eps`` is standard normal noise ``[B, L]`` (zeros: z = centre)."""
        out = self.encode(x_BxHxWxC, k)
        z = out.z + jnp.exp(0.5 * out.logvar) * eps_BxL
        return out._replace(z=z, logits=self.decoder(z))


def loss_terms(out: VAEOutputs, x_BxHxWxC: jax.Array, *, reduce: bool = True
               ) -> dict[str, jax.Array]:
    """Every loss term separately: batch means (scalars), or ``[B]`` with ``reduce=False``.

    - ``recon``: Bernoulli negative log-likelihood in nats, summed over pixels.
    - ``kl``: KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over latents.
    - ``sae``: squared error of the SAE reconstruction, summed over its D features
      (per example, like the other terms).
    - ``l1``: sum over units of |h| times the norm of the weights that read the unit
      (:meth:`VAE.h_scale`); ``l0``: number of nonzero units.
    - ``penalty``: what the controller's coefficient weights: the sparsifier's own penalty
      where it has one (JumpReLU: L0 with its straight-through gradient), else ``l1``.

    Models without a sparse layer report ``sae = l1 = l0 = penalty = 0``.
    """
    b = x_BxHxWxC.shape[0]
    recon_B = optax.sigmoid_binary_cross_entropy(out.logits, x_BxHxWxC).reshape(b, -1).sum(-1)
    kl_B = 0.5 * jnp.sum(jnp.square(out.mu) + jnp.exp(out.logvar) - out.logvar - 1.0, axis=-1)
    if out.h is None:
        sae_B = l1_B = l0_B = jnp.zeros_like(recon_B)
    else:
        sae_B = jnp.sum(jnp.square(out.sae_recon - out.sae_target), axis=-1)
        l1_B = jnp.abs(out.h) @ out.h_scale
        l0_B = jnp.sum(out.h != 0, axis=-1, dtype=recon_B.dtype)
    penalty_B = l1_B if out.penalty is None else out.penalty
    terms = {"recon": recon_B, "kl": kl_B, "sae": sae_B, "l1": l1_B, "l0": l0_B,
             "penalty": penalty_B}
    return {n: v.mean() for n, v in terms.items()} if reduce else terms


def total_loss(terms: dict[str, jax.Array], *, beta: float = 1.0, sae_weight: float = 1.0,
               l1_coef: jax.Array | float = 0.0) -> jax.Array:
    """``recon + beta kl + sae_weight sae + l1_coef penalty`` (defaults beta = lambda = 1;
    ``penalty`` is ``l1`` but for JumpReLU, and ``l1`` when ``terms`` has no penalty)."""
    return (terms["recon"] + beta * terms["kl"] + sae_weight * terms["sae"]
            + l1_coef * terms.get("penalty", terms["l1"]))
