"""A decoder-only transformer whose every head can be read and switched off.

Pre-LayerNorm blocks (GPT-2 layout), attention-only or with MLPs, learned absolute or rotary
(Su et al. 2021) positions::

    x = embed(tokens) [+ pos]                       [B, T, D]
    per layer l:  z_h = softmax(q_h k_h^T / sqrt(K) + causal) v_h     head h, [B, T, K]
                  o_h = m_lh z_h W_O[h] + (1 - m_lh) fill_lh          [B, T, D]
                  x += sum_h o_h;  x += MLP(LN(x)) (optional)
    logits = LN(x) W_U                               [B, T, V]

Every head's attention pattern ``[B, L, H, T, T]`` and its output ``o_h`` ``[B, L, H, T, D]``
come back from the same forward pass (:class:`TransformerOut`). The head mask ``m [L, H]``
scales each head's contribution: 0 removes it (zero ablation), and with ``fill`` the
removed head is replaced by a fixed output (mean ablation); its gradient at ``m = 1`` is
Michel et al. (2019)'s head importance. Optional sparsity through :mod:`sparsejax.ops`:
Top-k on the MLP's hidden units, and Top-k attention (each query keeps its k largest
scores before the softmax).

The model is split once (``graphdef, params = nnx.split(model)``); :func:`apply` is a pure
function of the parameter pytree.
"""

from __future__ import annotations

# Shape letters: B batch, T positions (query t, key s), V vocabulary, D width, L layers,
# H heads per layer, K head width (D / H), F MLP hidden width.

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sparsejax import ops

POSITIONS = ("learned", "rotary")
NEG_INF = -1e30  # masked attention score (finite: no NaN from inf - inf)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Shape of a decoder-only transformer.

    Attributes:
      vocab: V tokens.
      max_len: the longest sequence T (learned positions have one row per position).
      layers: L blocks.
      heads: H heads per block.
      width: D, the residual width (divisible by H; head width K = D / H).
      mlp: add an MLP (width ``mlp_ratio * D``, GELU) to each block; False: attention only.
      positions: ``"learned"`` absolute embeddings or ``"rotary"`` (RoPE on q and k).
      mlp_topk: keep the k largest MLP hidden activations per position (0: dense).
      attn_topk: each query attends to its k highest-scoring keys only (0: all).
      topk_impl: :func:`sparsejax.ops.topk` implementation.
    """

    vocab: int
    max_len: int
    layers: int = 2
    heads: int = 4
    width: int = 64
    mlp: bool = False
    mlp_ratio: int = 4
    positions: str = "learned"
    mlp_topk: int = 0
    attn_topk: int = 0
    topk_impl: str = "auto"

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ValueError(f"TransformerConfig: {what}")

        for name in ("vocab", "max_len", "layers", "heads", "width", "mlp_ratio"):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        need(self.width % self.heads == 0,
             f"width={self.width} must be divisible by heads={self.heads}")
        need(self.positions in POSITIONS,
             f"positions={self.positions!r} must be one of {POSITIONS}")
        need(self.positions != "rotary" or self.head_width % 2 == 0,
             f"rotary positions need an even head width, got {self.head_width}")
        need(0 <= self.mlp_topk <= self.mlp_ratio * self.width,
             f"mlp_topk={self.mlp_topk} must be in [0, {self.mlp_ratio * self.width}]")
        need(self.mlp_topk == 0 or self.mlp, f"mlp_topk={self.mlp_topk} needs mlp=True")
        need(self.attn_topk >= 0, f"attn_topk={self.attn_topk} must be >= 0")
        need(self.topk_impl in ops.IMPLS, f"topk_impl={self.topk_impl!r} must be one of "
                                          f"{ops.IMPLS}")

    @property
    def head_width(self) -> int:
        return self.width // self.heads


class TransformerOut(NamedTuple):
    """What one forward pass computes."""

    logits: jax.Array  # [B, T, V]
    patterns: jax.Array  # [B, L, H, T, T] attention (query, key), rows sum to 1
    head_out: jax.Array  # [B, L, H, T, D] each head's write to the residual stream


def _normal(rngs: nnx.Rngs, shape, std: float) -> nnx.Param:
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))


def rotary(x_BxHxTxK: jax.Array, base: float = 10000.0) -> jax.Array:
    """RoPE (Su et al. 2021): rotate the pairs (x_i, x_{i + K/2}) of position t by
    ``t * base^(-2i/K)``."""
    t, k = x_BxHxTxK.shape[-2:]
    freq = base ** (-jnp.arange(k // 2, dtype=jnp.float32) * 2 / k)
    ang_TxK2 = jnp.arange(t, dtype=jnp.float32)[:, None] * freq
    cos, sin = jnp.cos(ang_TxK2), jnp.sin(ang_TxK2)
    x1, x2 = x_BxHxTxK[..., : k // 2], x_BxHxTxK[..., k // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Attention(nnx.Module):
    """Causal multi-head attention with per-head weights ``W_Q, W_K, W_V [H, D, K]`` and
    ``W_O [H, K, D]`` (no biases), returning the pattern and each head's output."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        h, d, k = cfg.heads, cfg.width, cfg.head_width
        self.cfg = cfg
        self.W_Q = _normal(rngs, (h, d, k), d ** -0.5)
        self.W_K = _normal(rngs, (h, d, k), d ** -0.5)
        self.W_V = _normal(rngs, (h, d, k), d ** -0.5)
        self.W_O = _normal(rngs, (h, k, d), (h * k) ** -0.5)

    def __call__(self, x_BxTxD, mask_BxH, fill_HxTxD=None):
        cfg = self.cfg
        q = jnp.einsum("btd,hdk->bhtk", x_BxTxD, self.W_Q[...])
        k = jnp.einsum("btd,hdk->bhtk", x_BxTxD, self.W_K[...])
        v = jnp.einsum("btd,hdk->bhtk", x_BxTxD, self.W_V[...])
        if cfg.positions == "rotary":
            q, k = rotary(q), rotary(k)
        T = x_BxTxD.shape[1]
        s_BxHxTxT = jnp.einsum("bhtk,bhsk->bhts", q, k) / jnp.sqrt(jnp.float32(cfg.head_width))
        causal_TxT = jnp.tril(jnp.ones((T, T), bool))
        s_BxHxTxT = jnp.where(causal_TxT, s_BxHxTxT, NEG_INF)
        if 0 < cfg.attn_topk < T:
            s_BxHxTxT = topk_scores(s_BxHxTxT, cfg.attn_topk, cfg.topk_impl)
        A_BxHxTxT = jax.nn.softmax(s_BxHxTxT, axis=-1)
        z_BxHxTxK = jnp.einsum("bhts,bhsk->bhtk", A_BxHxTxT, v)
        o_BxHxTxD = jnp.einsum("bhtk,hkd->bhtd", z_BxHxTxK, self.W_O[...])
        m = mask_BxH[:, :, None, None]
        o_BxHxTxD = m * o_BxHxTxD
        if fill_HxTxD is not None:
            o_BxHxTxD = o_BxHxTxD + (1 - m) * fill_HxTxD[None]
        return A_BxHxTxT, o_BxHxTxD


def topk_scores(s_BxHxTxT: jax.Array, k: int, impl: str = "auto") -> jax.Array:
    """Top-k attention: each query keeps its k largest scores, the rest are masked. The
    threshold (the k-th largest score, from :func:`sparsejax.ops.topk_values_indices`) is
    not differentiated; the kept scores are."""
    values, _ = ops.topk_values_indices(jax.lax.stop_gradient(s_BxHxTxT), k, impl, k_max=k)
    return jnp.where(s_BxHxTxT >= values[..., -1:], s_BxHxTxT, NEG_INF)


class MLP(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        d, f = cfg.width, cfg.mlp_ratio * cfg.width
        self.cfg = cfg
        self.W_in = _normal(rngs, (d, f), d ** -0.5)
        self.b_in = nnx.Param(jnp.zeros((f,), jnp.float32))
        self.W_out = _normal(rngs, (f, d), f ** -0.5)
        self.b_out = nnx.Param(jnp.zeros((d,), jnp.float32))

    def __call__(self, x_BxTxD):
        h_BxTxF = jax.nn.gelu(x_BxTxD @ self.W_in[...] + self.b_in[...])
        if self.cfg.mlp_topk:
            h_BxTxF = ops.topk(h_BxTxF, self.cfg.mlp_topk, self.cfg.topk_impl)
        return h_BxTxF @ self.W_out[...] + self.b_out[...]


class Block(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.ln_attn = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(cfg.width, rngs=rngs) if cfg.mlp else None
        self.mlp = MLP(cfg, rngs=rngs) if cfg.mlp else None

    def __call__(self, x_BxTxD, mask_BxH, fill_HxTxD=None):
        A_BxHxTxT, o_BxHxTxD = self.attn(self.ln_attn(x_BxTxD), mask_BxH, fill_HxTxD)
        x_BxTxD = x_BxTxD + o_BxHxTxD.sum(1)
        if self.mlp is not None:
            x_BxTxD = x_BxTxD + self.mlp(self.ln_mlp(x_BxTxD))
        return x_BxTxD, A_BxHxTxT, o_BxHxTxD


class Transformer(nnx.Module):
    """Decoder-only transformer (see the module docstring)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = _normal(rngs, (cfg.vocab, cfg.width), 1.0)
        self.pos = (_normal(rngs, (cfg.max_len, cfg.width), 1.0)
                    if cfg.positions == "learned" else None)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.layers)])
        self.ln_final = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.unembed = _normal(rngs, (cfg.width, cfg.vocab), cfg.width ** -0.5)

    def __call__(self, tokens_BxT: jax.Array, head_mask_LxH: jax.Array | None = None,
                 fill_LxHxTxD: jax.Array | None = None) -> TransformerOut:
        """Forward pass of int tokens ``[B, T]`` (T <= max_len).

        Args:
          head_mask_LxH: per-head scale of its output (default all ones); ``[L, H]``, or
            ``[B, L, H]`` for one mask per sequence (per-sequence gradients in one pass).
          fill_LxHxTxD: what a head with mask 0 writes instead (e.g. its mean output over a
            batch: mean ablation); default zeros.
        """
        cfg = self.cfg
        T = tokens_BxT.shape[1]
        if T > cfg.max_len:
            raise ValueError(f"Transformer: sequence length {T} > max_len={cfg.max_len}")
        B = tokens_BxT.shape[0]
        if head_mask_LxH is None:
            head_mask_LxH = jnp.ones((cfg.layers, cfg.heads), jnp.float32)
        mask_BxLxH = jnp.broadcast_to(head_mask_LxH, (B, cfg.layers, cfg.heads))
        x_BxTxD = self.embed[...][tokens_BxT]
        if self.pos is not None:
            x_BxTxD = x_BxTxD + self.pos[...][:T]
        patterns, outs = [], []
        for l, block in enumerate(self.blocks):
            fill = None if fill_LxHxTxD is None else fill_LxHxTxD[l]
            x_BxTxD, A, o = block(x_BxTxD, mask_BxLxH[:, l], fill)
            patterns.append(A)
            outs.append(o)
        logits_BxTxV = self.ln_final(x_BxTxD) @ self.unembed[...]
        return TransformerOut(logits_BxTxV, jnp.stack(patterns, 1), jnp.stack(outs, 1))


def init(key: jax.Array, cfg: TransformerConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, params)`` of a fresh model from a typed key."""
    return nnx.split(Transformer(cfg, rngs=nnx.Rngs(params=key)), nnx.Param)[:2]


def graphdef(cfg: TransformerConfig) -> nnx.GraphDef:
    """The static graph definition (no parameters are allocated)."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))), nnx.Param)[0]


def apply(gdef: nnx.GraphDef, params: nnx.State, tokens_BxT, head_mask_LxH=None,
          fill_LxHxTxD=None) -> TransformerOut:
    """The forward pass as a pure function of ``params``."""
    return nnx.merge(gdef, params)(tokens_BxT, head_mask_LxH, fill_LxHxTxD)


def token_loss(logits_BxTxV: jax.Array, targets_BxT: jax.Array,
               weight_BxT: jax.Array) -> jax.Array:
    """Mean cross-entropy (nats) over the positions with weight > 0 (weights sum over the
    batch; a batch without scored positions has loss 0)."""
    logp = jax.nn.log_softmax(logits_BxTxV, axis=-1)
    nll_BxT = -jnp.take_along_axis(logp, jnp.maximum(targets_BxT, 0)[..., None], -1)[..., 0]
    return jnp.sum(nll_BxT * weight_BxT) / jnp.maximum(jnp.sum(weight_BxT), 1e-9)
