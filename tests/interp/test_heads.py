"""Head metrics against hand-built patterns with exactly known values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.interp import heads as hd


def _onehot_rows(keys, T):
    A = np.zeros((T, T))
    A[np.arange(T), keys] = 1
    return A


def _uniform(T):
    return np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]


def test_previous_token_score():
    T = 6
    prev = _onehot_rows([0, 0, 1, 2, 3, 4], T)
    A = jnp.asarray(np.stack([prev, _uniform(T), np.eye(T)]), jnp.float32)
    got = hd.previous_token_score(A)
    chex.assert_shape(got, (3,))
    np.testing.assert_allclose(got, [1.0, np.mean(1 / np.arange(2, T + 1)), 0.0], rtol=1e-6)


def test_duplicate_and_induction_scores_hand_built():
    tokens = np.array([1, 2, 3, 1, 2, 3])
    T = 6
    # qualifying queries 3, 4, 5 (their token occurred at 0, 1, 2); induction keys 1, 2, 3
    A = np.eye(T)
    for t, dup, ind, w_dup in ((3, 0, 1, 0.5), (4, 1, 2, 0.25), (5, 2, 3, 0.0)):
        A[t] = 0
        A[t, dup], A[t, ind] = w_dup, 1 - w_dup
    A = jnp.asarray(A, jnp.float32)
    tok = jnp.asarray(tokens)
    np.testing.assert_allclose(hd.duplicate_token_score(A, tok), 0.75 / 3, rtol=1e-6)
    np.testing.assert_allclose(hd.induction_score(A, tok), (0.5 + 0.75 + 1) / 3, rtol=1e-6)
    # s + 1 = t is not an induction key; the query still counts; the jitted form agrees
    tokens2 = jnp.asarray([4, 4, 5, 6])
    A2 = jnp.asarray(_onehot_rows([0, 1, 0, 1], 4), jnp.float32)  # query 1 attends to itself
    np.testing.assert_allclose(jax.jit(hd.induction_score)(A2, tokens2), 0.0)
    np.testing.assert_allclose(hd.duplicate_token_score(A2, tokens2), 0.0)
    A3 = jnp.asarray(_onehot_rows([0, 0, 0, 1], 4), jnp.float32)
    np.testing.assert_allclose(hd.duplicate_token_score(A3, tokens2), 1.0)
    # no query whose token occurred earlier: 0
    np.testing.assert_allclose(hd.induction_score(A2, jnp.arange(4)), 0.0)


def test_scores_keep_leading_dims_and_tokens_broadcast(rng):
    B, L, H, T = 3, 2, 2, 7
    logits = rng.standard_normal((B, L, H, T, T))
    logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    A = np.exp(logits - logits.max(-1, keepdims=True))
    A /= A.sum(-1, keepdims=True)
    tokens = rng.integers(0, 3, (B, T))
    got = hd.induction_score(jnp.asarray(A), jnp.asarray(tokens)[:, None, None])
    chex.assert_shape(got, (B, L, H))
    for b, l, h in np.ndindex(B, L, H):  # a loop over the definition
        num, den = 0.0, 0
        for t in range(T):
            src = [s for s in range(t) if tokens[b, s] == tokens[b, t]]
            if src:
                den += 1
                num += sum(A[b, l, h, t, s + 1] for s in src if s + 1 < t)
        np.testing.assert_allclose(got[b, l, h], num / den if den else 0.0, rtol=1e-5)
    pooled = hd.pooled_scores(jnp.asarray(A), jnp.asarray(tokens))
    chex.assert_shape(pooled["induction"], (L, H))


def test_entropy_confidence_accuracy_positional():
    T = 5
    U = jnp.asarray(_uniform(T), jnp.float32)
    np.testing.assert_allclose(hd.entropy(U), np.mean(np.log(np.arange(2, T + 1))), rtol=1e-6)
    np.testing.assert_allclose(hd.confidence(U), np.mean(1 / np.arange(2, T + 1)), rtol=1e-6)
    A = jnp.asarray(_onehot_rows([0, 0, 1, 1, 2], T), jnp.float32)
    np.testing.assert_allclose(hd.entropy(A), 0.0, atol=1e-7)
    attend = jnp.asarray([-1, 0, 1, 2, 3])  # hits at queries 1 and 2 of 4
    np.testing.assert_allclose(hd.ground_truth_accuracy(A, attend), 0.5)
    # two sequences, same pattern: positional 1; disjoint one-hot rows at queries 1..4:
    # each row is 0.5 from the mean, query 0 always agrees -> 1 - (4 * 0.5) / 5
    same = jnp.stack([A, A])
    np.testing.assert_allclose(hd.positional_score(same), 1.0)
    other = jnp.asarray(_onehot_rows([0, 1, 0, 0, 0], T), jnp.float32)
    np.testing.assert_allclose(hd.positional_score(jnp.stack([A, other])), 1 - 2.0 / 5,
                               rtol=1e-6)


def test_gradient_and_ablation_importance_of_a_known_loss(rng):
    c = jnp.asarray(rng.random((2, 3)), jnp.float32)
    loss = lambda m: jnp.sum(c * m ** 2) + jnp.prod(m)  # noqa: E731
    np.testing.assert_allclose(hd.gradient_importance(loss, (2, 3)), 2 * c + 1, rtol=1e-6)
    # turning one head off: -c_lh, and the product term drops from 1 to 0
    np.testing.assert_allclose(hd.ablation_importance(loss, (2, 3)), -c - 1, rtol=1e-6)


def test_labels_follow_thresholds_in_order():
    z = jnp.zeros((6,))
    scores = {"induction": z.at[0].set(hd.INDUCTION_THRESHOLD).at[1].set(0.9),
              "previous_token": z.at[1].set(0.9).at[2].set(hd.PREVIOUS_TOKEN_THRESHOLD),
              "duplicate": z.at[3].set(0.5),
              "ground_truth": z.at[4].set(hd.GROUND_TRUTH_THRESHOLD),
              "positional": z.at[4].set(1.0).at[5].set(hd.POSITIONAL_THRESHOLD - 0.01)}
    got = [hd.LABELS[i] for i in np.asarray(hd.label_heads(scores))]
    assert got == ["induction", "induction", "previous-token", "duplicate",
                   "ground-truth-dependency", "other"]
