"""Head metrics over cached attention patterns: detectors, confidence, importance, labels.

Patterns ``A [..., T, T]`` are (query t, key s) rows that sum to 1 over a causal window;
tokens ``[..., T]`` broadcast against ``A``'s leading dimensions (e.g. ``[B, 1, 1, T]``
against ``[B, L, H, T, T]``). Every function is jit-able and returns the leading dimensions
(one number per head and sequence); :func:`pooled_scores` pools a batch into one per head.

Detectors (as in TransformerLens; Olsson et al. 2022 for induction):

- :func:`previous_token_score`: mean over t = 1..T-1 of ``A[t, t-1]``.
- :func:`duplicate_token_score`: mean, over queries t whose token occurred earlier, of the
  mass on earlier positions s < t with ``tokens[s] == tokens[t]``.
- :func:`induction_score`: the same mean, of the mass on positions s + 1 (s + 1 < t) where
  s < t and ``tokens[s] == tokens[t]`` (the token after an earlier copy: prefix matching).

Also: attention entropy (nats) and Voita et al. (2019)'s confidence (mean max attention),
both over queries t >= 1 (query 0 can attend only to itself); accuracy against a task's
ground-truth key; a positional score (how little the pattern depends on the input);
Michel et al. (2019)'s gradient importance ``|dL/dm|`` of a head mask and the ablation
importance (the loss change when one head is mean-ablated); and a label per head.
"""

from __future__ import annotations

# Shape letters: B sequences, L layers, H heads, T positions (query t, key s).

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

# Label thresholds (scores in [0, 1]). A head gets the first label whose test it passes.
INDUCTION_THRESHOLD = 0.4  # induction_score >= this
PREVIOUS_TOKEN_THRESHOLD = 0.4  # previous_token_score >= this
DUPLICATE_THRESHOLD = 0.4  # duplicate_token_score >= this
GROUND_TRUTH_THRESHOLD = 0.5  # ground-truth accuracy (argmax on the true key) >= this
POSITIONAL_THRESHOLD = 0.9  # positional score >= this (the pattern barely depends on input)
LABELS = ("induction", "previous-token", "duplicate", "ground-truth-dependency", "positional",
          "other")
SPECIALISED = LABELS[:-1]


def _earlier_same(tokens_xT: jax.Array) -> jax.Array:
    """bool ``[..., T, T]``: s < t and ``tokens[s] == tokens[t]``."""
    T = tokens_xT.shape[-1]
    eq = tokens_xT[..., :, None] == tokens_xT[..., None, :]
    return eq & jnp.tril(jnp.ones((T, T), bool), -1)


def _induction_keys(same_xTxT: jax.Array) -> jax.Array:
    """bool ``[..., T, T]``: key s + 1 < t for each earlier copy s of query t's token."""
    T = same_xTxT.shape[-1]
    shifted = jnp.pad(same_xTxT[..., :, :-1], [(0, 0)] * (same_xTxT.ndim - 1) + [(1, 0)])
    return shifted & jnp.tril(jnp.ones((T, T), bool), -1)


def _mass_and_count(A_xTxT, keys_xTxT, queries_xT):
    """``(sum over queries of the mass on keys, number of queries)``, leading dims."""
    mass_xT = jnp.sum(A_xTxT * keys_xTxT, -1)
    q = queries_xT.astype(A_xTxT.dtype)
    return jnp.sum(mass_xT * q, -1), jnp.sum(jnp.broadcast_to(q, mass_xT.shape), -1)


def _ratio(num, den):
    return jnp.where(den > 0, num / jnp.maximum(den, 1), 0.0)


def previous_token_score(A_xTxT: jax.Array) -> jax.Array:
    """Mean over t = 1..T-1 of ``A[..., t, t-1]``."""
    return jnp.mean(jnp.diagonal(A_xTxT, offset=-1, axis1=-2, axis2=-1), -1)


def duplicate_token_score(A_xTxT: jax.Array, tokens_xT: jax.Array) -> jax.Array:
    """Mean over queries whose token occurred earlier of the mass on its earlier copies
    (0 where no query qualifies)."""
    same = _earlier_same(tokens_xT)
    return _ratio(*_mass_and_count(A_xTxT, same, jnp.any(same, -1)))


def induction_score(A_xTxT: jax.Array, tokens_xT: jax.Array) -> jax.Array:
    """Mean over queries whose token occurred earlier of the mass on the positions right
    after its earlier copies (s + 1 < t); 0 where no query qualifies."""
    same = _earlier_same(tokens_xT)
    return _ratio(*_mass_and_count(A_xTxT, _induction_keys(same), jnp.any(same, -1)))


def entropy(A_xTxT: jax.Array) -> jax.Array:
    """Mean attention entropy (nats) over queries t >= 1."""
    h_xT = -jnp.sum(jnp.where(A_xTxT > 0, A_xTxT * jnp.log(jnp.where(A_xTxT > 0, A_xTxT, 1)),
                              0), -1)
    return jnp.mean(h_xT[..., 1:], -1)


def confidence(A_xTxT: jax.Array) -> jax.Array:
    """Voita et al. (2019): mean over queries t >= 1 of the largest attention weight."""
    return jnp.mean(jnp.max(A_xTxT, -1)[..., 1:], -1)


def ground_truth_accuracy(A_xTxT: jax.Array, attend_xT: jax.Array) -> jax.Array:
    """Fraction of the queries with a ground-truth key (``attend >= 0``) whose largest
    attention weight is on it (0 where none has one)."""
    hit_xT = jnp.argmax(A_xTxT, -1) == attend_xT
    q = jnp.broadcast_to(attend_xT >= 0, hit_xT.shape)
    return _ratio(jnp.sum(hit_xT & q, -1).astype(A_xTxT.dtype), jnp.sum(q, -1))


def positional_score(A_BxxTxT: jax.Array) -> jax.Array:
    """1 - the mean (over sequences and queries) total-variation distance between a
    sequence's attention row and the batch's mean row: 1 when the pattern does not depend
    on the input at all. Axis 0 is the batch; returns the remaining leading dims."""
    mean = jnp.mean(A_BxxTxT, 0, keepdims=True)
    tv_BxxT = 0.5 * jnp.sum(jnp.abs(A_BxxTxT - mean), -1)
    return 1 - jnp.mean(tv_BxxT, (0, tv_BxxT.ndim - 1))


def pooled_scores(A_BxLxHxTxT: jax.Array, tokens_BxT: jax.Array,
                  attend_BxT: jax.Array | None = None) -> dict[str, jax.Array]:
    """Every pattern metric per head ``[L, H]`` over a batch: detectors pool queries over
    the batch (sum of masses over the number of qualifying queries), entropy and confidence
    are batch means."""
    tok = tokens_BxT[:, None, None, :]
    same = _earlier_same(tok)
    q = jnp.any(same, -1)
    pooled = lambda keys: _ratio(*[x.sum(0) for x in _mass_and_count(A_BxLxHxTxT, keys, q)])
    out = {
        "previous_token": previous_token_score(A_BxLxHxTxT).mean(0),
        "duplicate": pooled(same),
        "induction": pooled(_induction_keys(same)),
        "entropy": entropy(A_BxLxHxTxT).mean(0),
        "confidence": confidence(A_BxLxHxTxT).mean(0),
        "positional": positional_score(A_BxLxHxTxT),
    }
    if attend_BxT is not None:
        att = attend_BxT[:, None, None, :]
        hit = (jnp.argmax(A_BxLxHxTxT, -1) == att) & (att >= 0)
        out["ground_truth"] = _ratio(jnp.sum(hit, (0, 3)).astype(jnp.float32),
                                     jnp.sum(jnp.broadcast_to(att >= 0, hit.shape), (0, 3)))
    return out


def gradient_importance(loss_of_mask: Callable[[jax.Array], jax.Array],
                        shape_LxH: tuple[int, int]) -> jax.Array:
    """Michel et al. (2019): ``|dL/dm|`` at the all-ones head mask, ``[L, H]``."""
    return jnp.abs(jax.grad(loss_of_mask)(jnp.ones(shape_LxH, jnp.float32)))


def ablation_importance(loss_of_mask: Callable[[jax.Array], jax.Array],
                        shape_LxH: tuple[int, int]) -> jax.Array:
    """``L(head off) - L(all on)`` per head ``[L, H]``: with a mean-ablating
    ``loss_of_mask`` (the masked head writes its mean output), the loss change of
    mean-ablating that head alone."""
    L, H = shape_LxH
    off_NxLxH = 1 - jnp.eye(L * H, dtype=jnp.float32).reshape(L * H, L, H)
    losses_N = jax.lax.map(loss_of_mask, off_NxLxH)
    return (losses_N - loss_of_mask(jnp.ones(shape_LxH, jnp.float32))).reshape(L, H)


def label_heads(scores: Mapping[str, jax.Array]) -> jax.Array:
    """int32 index into :data:`LABELS` per head, the first test passed in order: induction,
    previous-token, duplicate, ground-truth dependency, positional, else other."""
    tests = [scores["induction"] >= INDUCTION_THRESHOLD,
             scores["previous_token"] >= PREVIOUS_TOKEN_THRESHOLD,
             scores["duplicate"] >= DUPLICATE_THRESHOLD,
             scores.get("ground_truth", jnp.zeros_like(scores["induction"]))
             >= GROUND_TRUTH_THRESHOLD,
             scores["positional"] >= POSITIONAL_THRESHOLD]
    label = jnp.full(jnp.shape(scores["induction"]), len(LABELS) - 1, jnp.int32)
    for i in reversed(range(len(tests))):
        label = jnp.where(tests[i], i, label)
    return label
