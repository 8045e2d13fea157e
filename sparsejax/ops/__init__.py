"""Sparse ops: exact, approximate and Pallas Top-k, the batch-wide Top-k of BatchTopK, and the
sparse decoder of a Top-k code."""

from sparsejax.ops.batch_topk import batch_topk
from sparsejax.ops.sharded import topk_latent_sharded, topk_sharded
from sparsejax.ops.sparse_decode import TopkCode, dense_decode, sparse_decode, topk_encode
from sparsejax.ops.order import order_key
from sparsejax.ops.topk import AUTO_IMPL, IMPLS, resolve_impl, topk, topk_values_indices

__all__ = ["AUTO_IMPL", "IMPLS", "TopkCode", "batch_topk", "dense_decode", "order_key",
           "resolve_impl", "sparse_decode", "topk", "topk_encode", "topk_latent_sharded",
           "topk_sharded", "topk_values_indices"]
