"""Sequence tasks: every generator's ground truth checked against the tokens it drew."""

import chex
import jax
import numpy as np
import pytest

from sparsejax.data import sequences as sq

B, T = 16, 12
CFGS = {"repeated_tokens": sq.TaskConfig("repeated_tokens", vocab=16, seq_len=T, min_repeat=3),
        "bigram": sq.TaskConfig("bigram", vocab=16, seq_len=T, n_triggers=3, trigger_prob=0.3),
        "previous_token": sq.TaskConfig("previous_token", vocab=16, seq_len=T),
        "brackets": sq.TaskConfig("brackets", vocab=16, seq_len=T, n_types=3)}


@pytest.fixture(scope="module")
def batches():
    """Every task's batch from a fresh key, drawn in one compiled program."""
    seed = int(np.random.default_rng().integers(1 << 31))
    keys = jax.random.split(jax.random.key(seed), len(CFGS))
    draw = jax.jit(lambda ks: {n: sq.sample(k, B, c) for k, (n, c) in zip(ks, CFGS.items())})
    out = {}
    for name, batch in draw(keys).items():
        for x in batch:
            chex.assert_shape(x, (B, T))
        out[name] = [np.asarray(x) for x in batch]
    return out


def _draw(name, batches):
    return CFGS[name], batches[name]


def test_repeated_tokens_ground_truth_is_the_induction_target(batches):
    cfg, (tok, tgt, w, att, known) = _draw("repeated_tokens", batches)
    T = cfg.seq_len
    lengths = set()
    for b in range(B):
        n = int(np.sum(att[b] >= 0))
        lengths.add(n)
        assert 3 <= n <= T // 2
        np.testing.assert_array_equal(tok[b, T - n:], tok[b, T - 2 * n:T - n])
        np.testing.assert_array_equal(tgt[b, :-1], tok[b, 1:])
        for t in range(T - n, T - 1):
            s = att[b, t]
            # the key right after the earlier copy of the query's token holds the target
            assert tok[b, s - 1] == tok[b, t] and s - 1 < t and tok[b, s] == tgt[b, t]
        np.testing.assert_array_equal(known[b], (att[b] >= 0) & (np.arange(T) < T - 1))
    assert len(lengths) > 1  # the repeat length varies


def test_bigram_triggers_are_followed_by_their_output(batches):
    cfg, (tok, tgt, w, att, known) = _draw("bigram", batches)
    T = cfg.seq_len
    assert known.sum() > 0
    for b in range(B):
        out = {}
        for t in range(T - 1):
            if tok[b, t] < 3:
                assert tok[b, t + 1] >= 3  # a trigger is followed by a non-trigger output
                assert out.setdefault(tok[b, t], tok[b, t + 1]) == tok[b, t + 1]
        for t in range(T):
            earlier = [s for s in range(t) if tok[b, s] == tok[b, t]]
            if tok[b, t] < 3 and earlier:
                s = att[b, t]
                assert s == earlier[-1] + 1 and tok[b, s] == tgt[b, t] and known[b, t] == 1
            else:
                assert att[b, t] == -1 and known[b, t] == 0


def test_previous_token_targets_the_previous_token(batches):
    _, (tok, tgt, w, att, known) = _draw("previous_token", batches)
    np.testing.assert_array_equal(tgt[:, 1:], tok[:, :-1])
    np.testing.assert_array_equal(att[:, 1:], np.tile(np.arange(T - 1), (B, 1)))
    assert np.all(att[:, 0] == -1) and np.all(w[:, 0] == 0) and np.all(w[:, 1:] == 1)


def test_brackets_match_a_stack_parse(batches):
    cfg, (tok, tgt, w, att, known) = _draw("brackets", batches)
    for b in range(B):
        stack = []
        for t, x in enumerate(tok[b]):
            if x > 0:
                assert 1 <= x <= 3 and att[b, t] == -1 and w[b, t] == 0
                stack.append(t)
            else:
                s = stack.pop()
                assert att[b, t] == s and tgt[b, t] == tok[b, s] and w[b, t] == 1
        assert not stack  # balanced


def test_task_config_errors():
    with pytest.raises(ValueError, match="unknown task"):
        sq.TaskConfig("copying")
    with pytest.raises(ValueError, match="min_repeat=20 must be in"):
        sq.TaskConfig("repeated_tokens", seq_len=32, min_repeat=20)
    with pytest.raises(ValueError, match="must be even"):
        sq.TaskConfig("brackets", seq_len=7)
