"""The VAE-SAE hybrid as an engine :class:`~sparsejax.train.engine.Model`.

The model is split once: its graph definition is static (built from the config, no
parameters allocated) and the parameters are the ``nnx.State`` of its ``nnx.Param``
variables, a pytree the engine differentiates and updates.
"""

from __future__ import annotations

import jax
from flax import nnx

from sparsejax.models.vae import VAE, loss_terms, total_loss
from sparsejax.train.config import TrainConfig


def make_model(cfg: TrainConfig, channels: int, rngs: nnx.Rngs) -> VAE:
    return VAE(channels, method=cfg.method, num_units=cfg.num_units,
               num_latents=cfg.num_latents, placement=cfg.placement,
               topk_impl=cfg.topk_impl, topk_relu=cfg.topk_relu,
               conv_impl=cfg.conv_impl, compute_dtype=cfg.compute_dtype, rngs=rngs)


def model_graphdef(cfg: TrainConfig, channels: int) -> nnx.GraphDef:
    """The model's static graph definition (no parameters are allocated)."""
    abstract = nnx.eval_shape(lambda: make_model(cfg, channels, nnx.Rngs(0)))
    return nnx.split(abstract)[0]


class HybridModel:
    """``init(key) -> params``; ``loss(params, (x, eps), (k, l1_coef)) -> (loss, (terms, h))``.

    ``x`` float32 ``[B, H, W, C]`` images in [0, 1], ``eps`` ``[B, L]`` the reparameterisation
    noise, ``k`` the traced number of active units, ``l1_coef`` the L1 weight this step
    (0 outside the L1 arm); ``terms`` are the batch means of the loss terms
    (:func:`sparsejax.models.vae.loss_terms`), ``h`` the sparse code ``[B, N]`` (None dense).
    """

    def __init__(self, cfg: TrainConfig, channels: int, graphdef: nnx.GraphDef | None = None):
        self.cfg, self.channels = cfg, channels
        self._graphdef = graphdef

    @property
    def graphdef(self) -> nnx.GraphDef:
        if self._graphdef is None:  # built on first use: init alone never needs it
            self._graphdef = model_graphdef(self.cfg, self.channels)
        return self._graphdef

    def init(self, key: jax.Array) -> nnx.State:
        model = make_model(self.cfg, self.channels, nnx.Rngs(params=key))
        return nnx.state(model, nnx.Param)

    def loss(self, params: nnx.State, batch: tuple[jax.Array, jax.Array],
             hyper: tuple[jax.Array, jax.Array]):
        x, eps = batch
        k, l1_coef = hyper
        out = nnx.merge(self.graphdef, params)(x, eps, k)
        terms = loss_terms(out, x)
        loss = total_loss(terms, beta=self.cfg.beta, sae_weight=self.cfg.sae_weight,
                          l1_coef=l1_coef)
        return loss, (terms, out.h)

    def apply(self, params: nnx.State, x, eps, k):
        """The forward pass (:class:`sparsejax.models.vae.VAEOut`), for evaluation."""
        return nnx.merge(self.graphdef, params)(x, eps, k)

