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


# Each test evaluates its scores under one jax.jit: one XLA:CPU program per test instead of
# one per eager op.

def test_previous_token_score():
    T = 6
    prev = _onehot_rows([0, 0, 1, 2, 3, 4], T)
    A = np.stack([prev, _uniform(T), np.eye(T)]).astype(np.float32)
    got = jax.jit(hd.previous_token_score)(A)
    chex.assert_shape(got, (3,))
    np.testing.assert_allclose(got, [1.0, np.mean(1 / np.arange(2, T + 1)), 0.0], rtol=1e-6)


@jax.jit
def _duplicate_and_induction(A, tok, A2, tokens2, A3):
    return dict(dup=hd.duplicate_token_score(A, tok), ind=hd.induction_score(A, tok),
                ind2=hd.induction_score(A2, tokens2), dup2=hd.duplicate_token_score(A2, tokens2),
                dup3=hd.duplicate_token_score(A3, tokens2),
                ind_none=hd.induction_score(A2, jnp.arange(4)))


def test_duplicate_and_induction_scores_hand_built():
    tokens = np.array([1, 2, 3, 1, 2, 3])
    T = 6
    # qualifying queries 3, 4, 5 (their token occurred at 0, 1, 2); induction keys 1, 2, 3
    A = np.eye(T)
    for t, dup, ind, w_dup in ((3, 0, 1, 0.5), (4, 1, 2, 0.25), (5, 2, 3, 0.0)):
        A[t] = 0
        A[t, dup], A[t, ind] = w_dup, 1 - w_dup
    A = A.astype(np.float32)
    # s + 1 = t is not an induction key; the query still counts
    tokens2 = np.asarray([4, 4, 5, 6])
    A2 = _onehot_rows([0, 1, 0, 1], 4).astype(np.float32)  # query 1 attends to itself
    A3 = _onehot_rows([0, 0, 0, 1], 4).astype(np.float32)
    r = _duplicate_and_induction(A, tokens, A2, tokens2, A3)
    np.testing.assert_allclose(r["dup"], 0.75 / 3, rtol=1e-6)
    np.testing.assert_allclose(r["ind"], (0.5 + 0.75 + 1) / 3, rtol=1e-6)
    np.testing.assert_allclose(r["ind2"], 0.0)
    # the eager form agrees with the jitted one
    np.testing.assert_allclose(hd.induction_score(jnp.asarray(A2), jnp.asarray(tokens2)), 0.0)
    np.testing.assert_allclose(r["dup2"], 0.0)
    np.testing.assert_allclose(r["dup3"], 1.0)
    # no query whose token occurred earlier: 0
    np.testing.assert_allclose(r["ind_none"], 0.0)


def test_scores_keep_leading_dims_and_tokens_broadcast(rng):
    B, L, H, T = 3, 2, 2, 7
    logits = rng.standard_normal((B, L, H, T, T))
    logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    A = np.exp(logits - logits.max(-1, keepdims=True))
    A /= A.sum(-1, keepdims=True)
    tokens = rng.integers(0, 3, (B, T))
    got, pooled = jax.jit(lambda A, tok: (hd.induction_score(A, tok[:, None, None]),
                                          hd.pooled_scores(A, tok)))(A, tokens)
    got = np.asarray(got)
    chex.assert_shape(got, (B, L, H))
    for b, l, h in np.ndindex(B, L, H):  # a loop over the definition
        num, den = 0.0, 0
        for t in range(T):
            src = [s for s in range(t) if tokens[b, s] == tokens[b, t]]
            if src:
                den += 1
                num += sum(A[b, l, h, t, s + 1] for s in src if s + 1 < t)
        np.testing.assert_allclose(got[b, l, h], num / den if den else 0.0, rtol=1e-5)
    chex.assert_shape(pooled["induction"], (L, H))


@jax.jit
def _entropy_confidence_accuracy_positional(U, A, attend, other):
    return dict(entropy_U=hd.entropy(U), confidence_U=hd.confidence(U), entropy_A=hd.entropy(A),
                accuracy=hd.ground_truth_accuracy(A, attend),
                same=hd.positional_score(jnp.stack([A, A])),
                other=hd.positional_score(jnp.stack([A, other])))


def test_entropy_confidence_accuracy_positional():
    T = 5
    U = _uniform(T).astype(np.float32)
    A = _onehot_rows([0, 0, 1, 1, 2], T).astype(np.float32)
    attend = np.asarray([-1, 0, 1, 2, 3])  # hits at queries 1 and 2 of 4
    other = _onehot_rows([0, 1, 0, 0, 0], T).astype(np.float32)
    r = _entropy_confidence_accuracy_positional(U, A, attend, other)
    np.testing.assert_allclose(r["entropy_U"], np.mean(np.log(np.arange(2, T + 1))), rtol=1e-6)
    np.testing.assert_allclose(r["confidence_U"], np.mean(1 / np.arange(2, T + 1)), rtol=1e-6)
    np.testing.assert_allclose(r["entropy_A"], 0.0, atol=1e-7)
    np.testing.assert_allclose(r["accuracy"], 0.5)
    # two sequences, same pattern: positional 1; disjoint one-hot rows at queries 1..4:
    # each row is 0.5 from the mean, query 0 always agrees -> 1 - (4 * 0.5) / 5
    np.testing.assert_allclose(r["same"], 1.0)
    np.testing.assert_allclose(r["other"], 1 - 2.0 / 5, rtol=1e-6)


def test_gradient_and_ablation_importance_of_a_known_loss(rng):
    c = rng.random((2, 3)).astype(np.float32)

    @jax.jit
    def importances(c):
        loss = lambda m: jnp.sum(c * m ** 2) + jnp.prod(m)  # noqa: E731
        return hd.gradient_importance(loss, (2, 3)), hd.ablation_importance(loss, (2, 3))

    grad, ablation = importances(c)
    np.testing.assert_allclose(grad, 2 * c + 1, rtol=1e-6)
    # turning one head off: -c_lh, and the product term drops from 1 to 0
    np.testing.assert_allclose(ablation, -c - 1, rtol=1e-6)


def test_labels_follow_thresholds_in_order():
    def at(pairs):  # a float32 score per head, 0 but at the given heads
        z = np.zeros((6,), np.float32)
        for i, v in pairs:
            z[i] = v
        return z

    scores = {"induction": at([(0, hd.INDUCTION_THRESHOLD), (1, 0.9)]),
              "previous_token": at([(1, 0.9), (2, hd.PREVIOUS_TOKEN_THRESHOLD)]),
              "duplicate": at([(3, 0.5)]),
              "ground_truth": at([(4, hd.GROUND_TRUTH_THRESHOLD)]),
              "positional": at([(4, 1.0), (5, hd.POSITIONAL_THRESHOLD - 0.01)])}
    got = [hd.LABELS[i] for i in np.asarray(jax.jit(hd.label_heads)(scores))]
    assert got == ["induction", "induction", "previous-token", "duplicate",
                   "ground-truth-dependency", "other"]
