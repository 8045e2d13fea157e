"""Flax NNX models: the disentanglement_lib conv VAE, the sparse layer, the VAE-SAE hybrid.

Split once (``graphdef, params = nnx.split(model)``) and jit over ``params``; every
forward pass returns its intermediates (:class:`VAEOutputs`). The standalone SAE over
arbitrary activations lives in :mod:`sparsejax.models.sae`.
"""

from sparsejax.models.conv import (CONV_IMPLS, Conv, ConvTranspose, Decoder, Encoder,
                                   resolve_conv_impl)
from sparsejax.models.sparse_layer import (BatchTopK, JumpReLU, ReLU, SparseLayer, SparseOut,
                                           TopK, make_sparsifier)
from sparsejax.models.vae import (LAYER_METHODS, METHODS, PENALISED, PLACEMENTS, SPARSE_METHODS,
                                  VAE, VAEOutputs, loss_terms, total_loss)

__all__ = ["BatchTopK", "CONV_IMPLS", "JumpReLU", "LAYER_METHODS", "METHODS", "PENALISED",
           "PLACEMENTS", "SPARSE_METHODS", "VAE", "Conv", "ConvTranspose", "Decoder", "Encoder", "ReLU", "SparseLayer", "SparseOut", "TopK",
           "VAEOutputs", "loss_terms", "make_sparsifier", "resolve_conv_impl", "total_loss"]
