"""Decoding a Top-k code without materialising it: y = sum_j v_j W[i_j] + b.

A dense decode of a ``[B, N]`` code costs O(B N d) FLOPs; with k nonzeros per row the
same result is a gather of k decoder rows per example, O(B k d). The backward pass is
sparse too: the value cotangent is a k-row gather-dot, and the decoder gradient is a
scatter-add of ``v_j * g`` into the k used rows of each example (OpenAI's sparse-dense
transposed kernel, here as an XLA scatter). The bias gradient is the column sum of g.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Up to this many code slots the forward gather-sum is unrolled, one [B, d] gather per
# slot (XLA fuses gather, scale and add; measured 20x faster on CPU than gathering the
# [B, k, d] block at once); beyond it a fori_loop keeps the program small.
_UNROLL_MAX_K = 64


def _check(values, indices, W_dec, b_dec):
    if values.ndim != 2 or indices.shape != values.shape:
        raise ValueError("sparse_decode expects values and indices of one shape [B, k], got "
                         f"values {values.shape} and indices {indices.shape}")
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"sparse_decode indices must be integers, got {indices.dtype}")
    if W_dec.ndim != 2:
        raise ValueError(f"sparse_decode expects W_dec of shape [N, d], got {W_dec.shape}")
    if b_dec.shape != (W_dec.shape[1],):
        raise ValueError(f"sparse_decode expects b_dec of shape [d] = [{W_dec.shape[1]}], "
                         f"got {b_dec.shape}")


def _rows(W_NxD, i):
    """W[i] for integer i of any shape; indices outside [0, N) read as zero rows."""
    return W_NxD.at[i].get(mode="fill", fill_value=0, wrap_negative_indices=False)


def _gather_sum(v_Bxk, i_Bxk, W_NxD):
    """sum_j v[:, j] * W[i[:, j]] -> [B, d]; out-of-range rows read as 0."""
    b, k = v_Bxk.shape
    dtype = jnp.result_type(v_Bxk.dtype, W_NxD.dtype)

    def slot(j, y_BxD):
        rows_BxD = _rows(W_NxD, i_Bxk[:, j])
        return y_BxD + v_Bxk[:, j, None].astype(dtype) * rows_BxD

    y_BxD = jnp.zeros((b, W_NxD.shape[1]), dtype)
    if k <= _UNROLL_MAX_K:
        for j in range(k):
            y_BxD = slot(j, y_BxD)
        return y_BxD
    return jax.lax.fori_loop(0, k, slot, y_BxD)


@jax.custom_vjp
def _decode(v_Bxk, i_Bxk, W_NxD, b_D):
    return _gather_sum(v_Bxk, i_Bxk, W_NxD) + b_D


def _decode_fwd(v_Bxk, i_Bxk, W_NxD, b_D):
    return _decode(v_Bxk, i_Bxk, W_NxD, b_D), (v_Bxk, i_Bxk, W_NxD, b_D)


def _decode_bwd(res, g_BxD):
    v_Bxk, i_Bxk, W_NxD, b_D = res
    b, k = v_Bxk.shape
    # d/dv[b, j] = <g[b], W[i[b, j]]>: k gathered rows per example, never the N-wide code.
    if k <= _UNROLL_MAX_K:
        gv_Bxk = jnp.stack([jnp.sum(g_BxD * _rows(W_NxD, i_Bxk[:, j]), axis=-1)
                            for j in range(k)], axis=-1)
    else:
        gv_Bxk = jnp.einsum("bd,bkd->bk", g_BxD, _rows(W_NxD, i_Bxk))
    # dW[n] = sum over (b, j) with i[b, j] = n of v[b, j] g[b]: scatter-add into used rows.
    upd_BkxD = (v_Bxk[..., None].astype(g_BxD.dtype) * g_BxD[:, None, :]).reshape(b * k, -1)
    gW_NxD = jnp.zeros(W_NxD.shape, g_BxD.dtype).at[i_Bxk.reshape(-1)].add(
        upd_BkxD, mode="drop", wrap_negative_indices=False)
    gb_D = jnp.sum(g_BxD, axis=0)
    return (gv_Bxk.astype(v_Bxk.dtype), None, gW_NxD.astype(W_NxD.dtype),
            gb_D.astype(b_D.dtype))


_decode.defvjp(_decode_fwd, _decode_bwd)


def sparse_decode(values: jax.Array, indices: jax.Array, W_dec: jax.Array,
                  b_dec: jax.Array) -> jax.Array:
    """Decode a Top-k code: ``sum_j values[:, j] * W_dec[indices[:, j]] + b_dec``.

    Equal to ``scatter(values, indices) @ W_dec + b_dec`` (duplicates add), with the
    gradients of that expression w.r.t. values, W_dec and b_dec, at O(B k d) cost.

    Args:
      values: float ``[B, k]``, the code's nonzero values (zeros are allowed: unused slots).
      indices: int ``[B, k]`` in ``[0, N)``; an index outside contributes nothing
        (forward and backward), so a padded slot may use N.
      W_dec: ``[N, d]`` decoder rows (one dictionary direction per latent).
      b_dec: ``[d]`` decoder bias.

    Returns:
      ``[B, d]`` in the promoted dtype of values and W_dec.
    """
    values, indices, W_dec, b_dec = map(jnp.asarray, (values, indices, W_dec, b_dec))
    _check(values, indices, W_dec, b_dec)
    return _decode(values, indices.astype(jnp.int32), W_dec, b_dec)


def dense_decode(values: jax.Array, indices: jax.Array, W_dec: jax.Array,
                 b_dec: jax.Array) -> jax.Array:
    """The O(B N d) reference: scatter the code to ``[B, N]`` and multiply by W_dec."""
    values, indices, W_dec, b_dec = map(jnp.asarray, (values, indices, W_dec, b_dec))
    _check(values, indices, W_dec, b_dec)
    b = values.shape[0]
    code_BxN = jnp.zeros((b, W_dec.shape[0]), values.dtype).at[
        jnp.arange(b)[:, None], indices].add(values, mode="drop", wrap_negative_indices=False)
    return code_BxN @ W_dec + b_dec
