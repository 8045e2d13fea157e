"""Pallas Top-k by threshold search: find each row's k-th largest value without sorting it.

Every float maps to an int32 order key (``order.order_key``: IEEE total order, the order
``lax.top_k`` uses). The k-th largest key t of a row is found bit by bit, most significant
first: a candidate bit stays set when at least k keys are >= the candidate. That is 32
passes of compare-and-count over the row (held in registers/VMEM when it fits, streamed in
chunks otherwise), O(32 N) work and no data-dependent memory traffic, against O(N log N)
for a sort. Ties at t are resolved to the lowest indices, as ``lax.top_k`` does, by a
second bisection on the index (skipped when the row has no surplus ties). The same kernel
then writes ``where(keep, x, 0)``, so threshold search and mask are one pass over HBM.

Per row it returns the threshold key ``t`` and the tie cut ``j``: an entry is kept iff
``key > t or (key == t and index < j)``. That pair is all a backward pass needs
(``order.keep_from_threshold``), so the Top-k residual is O(B), not O(B N).

Backends: GPU through Triton (``pallas_call``'s default GPU lowering), TPU through Mosaic,
and CPU through interpret mode, which this module switches on by itself so the same call
runs in tests. Block shapes follow each backend's rules: powers of two for Triton,
(8, 128) multiples for Mosaic. Rows are padded with the lowest key, which is never kept.
"""

# Shape letters: B rows, N units (a row), R rows per kernel block, M = N padded to the block
# layout, C units per streamed chunk of a row.

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from sparsejax.ops.order import order_key

_SIGN = np.int32(-(2**31))  # the sign bit: xor maps unsigned order to signed order


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _layout(b: int, n: int, backend: str, chunk: int | None, block_rows: int | None):
    """(rows per block, padded rows, chunk width, padded row length) for a backend."""
    if backend == "tpu":
        n_pad = _round_up(n, 128)
        chunk = chunk or min(n_pad, 2048)
        rows = block_rows or 8
    else:  # Triton wants power-of-two blocks; interpret mode follows the GPU layout
        n_pad = _next_pow2(n)
        # A row of up to 16384 stays in registers for all ~50 passes; measured on an H100
        # at B=4096, N=16384: 0.62 ms resident, 1.26 ms in 8192-chunks, 3.1 ms in 4096-
        # chunks re-read from L2 per pass. Longer rows stream in 4096-chunks (at N=65536,
        # 8192-chunks measured no faster; 16384-chunks were not measured).
        chunk = chunk or (n_pad if n_pad <= 16384 else 4096)
        rows = block_rows or max(1, min(_next_pow2(b), 4096 // min(n_pad, 4096), 16))
    n_pad = _round_up(n_pad, chunk)
    if n_pad % chunk:
        raise ValueError(f"chunk={chunk} must divide the padded row length {n_pad}")
    return rows, _round_up(b, rows), chunk, n_pad


def _kernel(k_ref, x_ref, *out_refs, chunk: int, idx_bits: int):
    """One block of rows: k [R,1], x [R,M] -> (y [R,M] if asked), t [R,1], j [R,1]."""
    y_ref, t_ref, j_ref = out_refs if len(out_refs) == 3 else (None, *out_refs)
    rows, n_pad = x_ref.shape
    n_chunks = n_pad // chunk
    k_Rx1 = k_ref[...]

    def load(chunk_id):
        start = 0 if n_chunks == 1 else pl.multiple_of(chunk_id * chunk, chunk)
        x_RxC = x_ref[...] if n_chunks == 1 else x_ref[:, pl.ds(start, chunk)]
        idx_RxC = start + lax.broadcasted_iota(jnp.int32, (rows, chunk), 1)
        return x_RxC, order_key(x_RxC), idx_RxC

    if n_chunks == 1:  # the row block stays in registers / VMEM for all passes
        resident = load(0)

    def count(pred):
        """[R,1] int32: per row, how many entries satisfy pred(key, idx)."""
        def count_chunk(chunk_id):
            _, key, idx = resident if n_chunks == 1 else load(chunk_id)
            return jnp.sum(pred(key, idx).astype(jnp.int32), axis=1, keepdims=True)

        if n_chunks == 1:
            return count_chunk(0)
        return lax.fori_loop(0, n_chunks, lambda chunk_id, acc: acc + count_chunk(chunk_id),
                             jnp.zeros((rows, 1), jnp.int32))

    # t: the largest key with at least k keys >= it, built from the top bit down.
    # Bits are set in unsigned space (u = key ^ SIGN) where bit order is value order.
    def bit_step(from_top, t_u):
        cand_u = t_u | lax.shift_left(jnp.int32(1), 31 - from_top)
        n_ge = count(lambda key, idx: key >= (cand_u ^ _SIGN))
        return jnp.where(n_ge >= k_Rx1, cand_u, t_u)

    t_Rx1 = lax.fori_loop(0, 32, bit_step, jnp.zeros((rows, 1), jnp.int32)) ^ _SIGN

    # Ties at t: keep the `need` lowest indices, j = the largest cut with <= need below it.
    n_gt = count(lambda key, idx: key > t_Rx1)
    n_eq = count(lambda key, idx: key == t_Rx1)
    need_Rx1 = k_Rx1 - n_gt
    j_all = jnp.full((rows, 1), (1 << idx_bits) - 1, jnp.int32)

    def tie_step(from_top, j_Rx1):
        cand = j_Rx1 | lax.shift_left(jnp.int32(1), idx_bits - 1 - from_top)
        n_below = count(lambda key, idx: (key == t_Rx1) & (idx < cand))
        return jnp.where(n_below <= need_Rx1, cand, j_Rx1)

    surplus = jnp.sum((n_eq > need_Rx1).astype(jnp.int32))
    j_Rx1 = lax.cond(surplus > 0,
                     lambda: lax.fori_loop(0, idx_bits, tie_step, jnp.zeros_like(j_all)),
                     lambda: j_all)

    def write(chunk_id):
        x_RxC, key, idx = resident if n_chunks == 1 else load(chunk_id)
        keep = (key > t_Rx1) | ((key == t_Rx1) & (idx < j_Rx1))
        y_RxC = jnp.where(keep, x_RxC, jnp.zeros_like(x_RxC))
        if n_chunks == 1:
            y_ref[...] = y_RxC
        else:
            y_ref[:, pl.ds(pl.multiple_of(chunk_id * chunk, chunk), chunk)] = y_RxC

    if y_ref is None:
        pass
    elif n_chunks == 1:
        write(0)
    else:
        lax.fori_loop(0, n_chunks, lambda chunk_id, carry: (write(chunk_id), carry)[1], 0)
    t_ref[...] = t_Rx1
    j_ref[...] = j_Rx1


def _compiler_params(backend: str, chunk: int, rows: int):
    if backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("parallel",))
    if backend in ("gpu", "cuda", "rocm"):
        from jax.experimental.pallas import triton as pltriton

        warps = 8 if rows * chunk >= 4096 else 4
        return pltriton.CompilerParams(num_warps=warps, num_stages=1)
    return None


def _pad_value(dtype) -> jax.Array:
    """The float whose bits are all ones (a -NaN): its order key is the lowest there is."""
    int_type = {2: jnp.int16, 4: jnp.int32}[jnp.dtype(dtype).itemsize]
    return lax.bitcast_convert_type(jnp.array(-1, int_type), dtype)


@functools.partial(jax.jit, static_argnames=("chunk", "block_rows", "interpret",
                                            "write_values"))
def topk_threshold(x_BxN: jax.Array, k, *, chunk: int | None = None,
                   block_rows: int | None = None, interpret: bool | None = None,
                   write_values: bool = True):
    """Top-k of each row of x ``[B, N]`` by threshold search, in one Pallas kernel.

    Args:
      x_BxN: float16/bfloat16/float32 ``[B, N]``.
      k: int32 scalar or ``[B]`` (traced is fine), assumed in ``[0, N]``.
      chunk, block_rows: kernel tiling (defaults per backend); tests use them to exercise
        the streamed (multi-chunk) path on small rows.
      interpret: run the kernel in the Pallas interpreter; default: only on CPU.
      write_values: also write y (else y is None and the kernel only reads x).

    Returns:
      ``(y [B, N], t [B], j [B])``: ``y = where(keep, x, 0)``, with the keep rule
      ``key > t or (key == t and index < j)``, ``key = order_key(x)``.
    """
    if x_BxN.ndim != 2:
        raise ValueError(f"topk_threshold expects x of shape [B, N], got {x_BxN.shape}")
    if jnp.dtype(x_BxN.dtype).itemsize not in (2, 4) or not jnp.issubdtype(x_BxN.dtype,
                                                                           jnp.floating):
        raise TypeError(f"topk_threshold expects a 16- or 32-bit float x, got {x_BxN.dtype}")
    backend = jax.default_backend()
    interpret = backend == "cpu" if interpret is None else interpret
    b, n = x_BxN.shape
    rows, b_pad, chunk, n_pad = _layout(b, n, "cpu" if interpret else backend, chunk, block_rows)
    k_Bx1 = jnp.broadcast_to(jnp.asarray(k, jnp.int32).reshape(-1, 1), (b, 1))
    x_pad = x_BxN
    if (b_pad, n_pad) != (b, n):
        x_pad = jnp.pad(x_BxN, ((0, b_pad - b), (0, n_pad - n)), constant_values=_pad_value(
            x_BxN.dtype))
        k_Bx1 = jnp.pad(k_Bx1, ((0, b_pad - b), (0, 0)))
    idx_bits = max(1, math.ceil(math.log2(n_pad + 1)))
    row_block = pl.BlockSpec((rows, n_pad), lambda i: (i, 0))
    col_block = pl.BlockSpec((rows, 1), lambda i: (i, 0))
    out_specs = [col_block, col_block]
    out_shape = [jax.ShapeDtypeStruct((b_pad, 1), jnp.int32)] * 2
    if write_values:
        out_specs.insert(0, row_block)
        out_shape.insert(0, jax.ShapeDtypeStruct((b_pad, n_pad), x_BxN.dtype))
    outs = pl.pallas_call(
        functools.partial(_kernel, chunk=chunk, idx_bits=idx_bits),
        grid=(b_pad // rows,),
        in_specs=[col_block, row_block],
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=None if interpret else _compiler_params(backend, chunk, rows),
        interpret=interpret,
        name="topk_threshold",
    )(k_Bx1, x_pad)
    y, t, j = outs if write_values else (None, *outs)
    return (None if y is None else y[:b, :n]), t[:b, 0], j[:b, 0]
