"""Token-sequence tasks whose ground-truth attention is known, sampled on the device.

Each task draws a :class:`SequenceBatch` from a key (jit-able, no host round trip): the
tokens, the target of every position, which positions are scored, and for every query
position the key position a head solving the task should attend to (-1: none).

- ``repeated_tokens`` (Olsson et al. 2022): uniform random tokens whose last n
  (n uniform in ``[min_repeat, T/2]`` per sequence) repeat the n before them; targets are
  the next tokens. In the repeat the next token is known from the first occurrence: query
  t attends to ``t - n + 1`` (an induction head). The repeat length varies so that no
  fixed positional offset solves the task: with a fixed n = T/2 a one-layer model with
  learned positions reaches an induction score above 0.9 by attending to ``t - T/2 + 1``
  (and with distinct tokens before the repeat, two-layer models found solutions other than
  induction heads).
- ``bigram`` (Bietti et al. 2023, "Birth of a transformer"): i.i.d. tokens from the
  non-trigger vocabulary, with the trigger tokens ``0 .. n_triggers - 1`` inserted at random;
  each sequence draws one output token per trigger, and a trigger is always followed by its
  output. A repeated trigger's next token is the one after its most recent earlier
  occurrence ``s``: the query attends to ``s + 1``.
- ``previous_token``: random tokens; the target of position t is the token at t - 1 (copy);
  the query attends to ``t - 1``.
- ``brackets``: a random balanced sequence over ``n_types`` opening brackets (tokens
  ``1 .. n_types``) and one closing token (``0``); the target of a closing bracket is the
  type of the opening bracket it closes, which is where the query attends (a grammar with
  known long-range dependencies).
"""

from __future__ import annotations

# Shape letters: B sequences, T positions (query t, key s), C trigger tokens.

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

TASKS = ("repeated_tokens", "bigram", "previous_token", "brackets")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """A task and its sizes.

    Attributes:
      name: one of :data:`TASKS`.
      vocab: V tokens (including the triggers / brackets).
      seq_len: T (even for ``repeated_tokens`` and ``brackets``).
      min_repeat: ``repeated_tokens``: the shortest repeated segment.
      n_triggers: ``bigram``: trigger tokens.
      trigger_prob: ``bigram``: chance that a position starts a trigger-output pair.
      n_types: ``brackets``: bracket types (tokens ``1 .. n_types``; vocab must exceed it).
    """

    name: str
    vocab: int = 64
    seq_len: int = 32
    min_repeat: int = 4
    n_triggers: int = 5
    trigger_prob: float = 0.15
    n_types: int = 4

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ValueError(f"TaskConfig({self.name!r}): {what}")

        need(self.name in TASKS, f"unknown task; expected one of {TASKS}")
        need(self.vocab >= 2 and self.seq_len >= 2,
             f"vocab={self.vocab} and seq_len={self.seq_len} must be >= 2")
        if self.name == "brackets":
            need(self.seq_len % 2 == 0, f"seq_len={self.seq_len} must be even")
        if self.name == "repeated_tokens":
            need(1 <= self.min_repeat <= self.seq_len // 2,
                 f"min_repeat={self.min_repeat} must be in [1, seq_len / 2]")
        if self.name == "bigram":
            need(1 <= self.n_triggers <= self.vocab - 2,
                 f"n_triggers={self.n_triggers} must be in [1, vocab - 2]")
            need(0 < self.trigger_prob < 1, f"trigger_prob={self.trigger_prob} must be in (0, 1)")
        if self.name == "brackets":
            need(1 <= self.n_types < self.vocab,
                 f"n_types={self.n_types} must be in [1, vocab - 1]")


class SequenceBatch(NamedTuple):
    tokens: jax.Array  # int32 [B, T]
    targets: jax.Array  # int32 [B, T] what each position predicts (-1 where none)
    weight: jax.Array  # float32 [B, T] 1 at the positions the loss scores
    attend: jax.Array  # int32 [B, T] the key each query should attend to (-1: none)
    known: jax.Array  # float32 [B, T] 1 where the target is determined by the context


def _next_tokens(tokens_BxT):
    return jnp.concatenate([tokens_BxT[:, 1:], jnp.full_like(tokens_BxT[:, :1], -1)], 1)


def repeated_tokens(key, batch: int, cfg: TaskConfig) -> SequenceBatch:
    T = cfg.seq_len
    k_tok, k_len = jax.random.split(key)
    # a segment of n tokens (n uniform in [min_repeat, T/2]) repeated at the end, after a
    # filler: uniform random tokens (with replacement)
    n_B = jax.random.randint(k_len, (batch,), cfg.min_repeat, T // 2 + 1)
    order = jax.random.randint(k_tok, (batch, T), 0, cfg.vocab)
    t_T = jnp.arange(T)
    second_BxT = t_T >= T - n_B[:, None]  # the repeat
    src_BxT = jnp.where(second_BxT, t_T - n_B[:, None], t_T)
    tokens = jnp.take_along_axis(order, src_BxT, 1).astype(jnp.int32)
    targets = _next_tokens(tokens)
    attend = jnp.where(second_BxT, t_T - n_B[:, None] + 1, -1).astype(jnp.int32)
    known = (second_BxT & (t_T < T - 1)).astype(jnp.float32)
    weight = jnp.broadcast_to((t_T < T - 1).astype(jnp.float32), (batch, T))
    return SequenceBatch(tokens, targets, weight, attend, known)


def last_earlier_match(tokens_BxT: jax.Array) -> jax.Array:
    """int32 ``[B, T]``: the most recent ``s < t`` with ``tokens[s] == tokens[t]`` (-1: none)."""
    T = tokens_BxT.shape[1]
    eq_BxTxT = tokens_BxT[:, :, None] == tokens_BxT[:, None, :]
    earlier_TxT = jnp.tril(jnp.ones((T, T), bool), -1)
    return jnp.max(jnp.where(eq_BxTxT & earlier_TxT, jnp.arange(T), -1), axis=-1).astype(
        jnp.int32)


def bigram(key, batch: int, cfg: TaskConfig) -> SequenceBatch:
    T, C = cfg.seq_len, cfg.n_triggers
    k_tok, k_out, k_pos = jax.random.split(key, 3)
    tokens = jax.random.randint(k_tok, (batch, T), C, cfg.vocab, jnp.int32)
    out_BxC = jax.random.randint(k_out, (batch, C), C, cfg.vocab, jnp.int32)
    u = jax.random.uniform(k_pos, (batch, T, 2))
    cand = (u[..., 0] < cfg.trigger_prob).at[:, -1].set(False)
    # no two triggers side by side: a trigger's successor is its output
    trig = cand & ~jnp.pad(cand[:, :-1], ((0, 0), (1, 0)))
    trig_id = jnp.minimum((u[..., 1] * C).astype(jnp.int32), C - 1)
    tokens = jnp.where(trig, trig_id, tokens)
    after = jnp.pad(trig[:, :-1], ((0, 0), (1, 0)))  # positions right after a trigger
    prev_id = jnp.pad(trig_id[:, :-1], ((0, 0), (1, 0)))
    tokens = jnp.where(after, jnp.take_along_axis(out_BxC, prev_id, 1), tokens)
    targets = _next_tokens(tokens)
    s = last_earlier_match(tokens)
    known = trig & (s >= 0)
    attend = jnp.where(known, s + 1, -1)
    weight = jnp.broadcast_to((jnp.arange(T) < T - 1).astype(jnp.float32), (batch, T))
    return SequenceBatch(tokens, targets, weight, attend.astype(jnp.int32),
                         known.astype(jnp.float32))


def previous_token(key, batch: int, cfg: TaskConfig) -> SequenceBatch:
    T = cfg.seq_len
    tokens = jax.random.randint(key, (batch, T), 0, cfg.vocab, jnp.int32)
    targets = jnp.concatenate([jnp.full_like(tokens[:, :1], -1), tokens[:, :-1]], 1)
    t_T = jnp.arange(T)
    bt = (batch, T)
    known = jnp.broadcast_to((t_T >= 1).astype(jnp.float32), bt)
    return SequenceBatch(tokens, targets, known, jnp.broadcast_to(t_T - 1, bt).astype(jnp.int32),
                         known)


def brackets(key, batch: int, cfg: TaskConfig) -> SequenceBatch:
    T = cfg.seq_len
    k_dir, k_type = jax.random.split(key)
    u_BxT = jax.random.uniform(k_dir, (batch, T))
    type_BxT = jax.random.randint(k_type, (batch, T), 1, cfg.n_types + 1, jnp.int32)

    def one(u_T, type_T):
        def step(carry, inp):
            depth, stack_T = carry
            t, u, typ = inp
            left = T - t  # positions left, this one included
            # must open at depth 0, must close when only enough positions remain
            opens = (depth == 0) | ((depth < left - 1) & (u < 0.5))
            opens = opens & (depth < left)
            tok_stack = stack_T[jnp.maximum(depth - 1, 0)]
            match = jnp.where(opens, -1, tok_stack)
            stack_T = jnp.where(opens, stack_T.at[depth].set(t), stack_T)
            depth = jnp.where(opens, depth + 1, depth - 1)
            return (depth, stack_T), (opens, match)

        init = (jnp.int32(0), jnp.zeros((T,), jnp.int32))
        _, (opens_T, match_T) = jax.lax.scan(step, init, (jnp.arange(T), u_T, type_T))
        return opens_T, match_T

    opens, match = jax.vmap(one)(u_BxT, type_BxT)
    tokens = jnp.where(opens, type_BxT, 0)
    matched_type = jnp.take_along_axis(tokens, jnp.maximum(match, 0), 1)
    targets = jnp.where(opens, -1, matched_type)
    known = (~opens).astype(jnp.float32)
    return SequenceBatch(tokens, targets.astype(jnp.int32), known, match.astype(jnp.int32),
                         known)


SAMPLERS = {"repeated_tokens": repeated_tokens, "bigram": bigram,
            "previous_token": previous_token, "brackets": brackets}


def sample(key: jax.Array, batch: int, cfg: TaskConfig) -> SequenceBatch:
    """A batch of ``cfg.name``'s sequences from a typed key (jit-able; ``batch`` static)."""
    return SAMPLERS[cfg.name](key, batch, cfg)
