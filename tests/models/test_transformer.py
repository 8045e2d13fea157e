"""The transformer against a plain numpy forward pass on the same weights; the head mask."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.models import transformer as tfm

# one compiled model (learned positions, MLPs); rotary positions are checked on their own
CFGS = {"learned_mlp": tfm.TransformerConfig(vocab=11, max_len=7, layers=2, heads=2, width=8,
                                             mlp=True)}


@pytest.fixture(scope="module")
def models():
    """(cfg, graphdef, params, jitted apply) per config: one compile each."""
    out = {}
    for name, cfg in CFGS.items():
        gdef, params = tfm.init(jax.random.key(3), cfg)
        out[name] = (cfg, gdef, params, jax.jit(lambda p, t, m, f, g=gdef: tfm.apply(g, p, t, m, f)))
    return out


def _np(x):
    return np.asarray(x, np.float64)


def _ln(x, scale, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _rope(x_TxK):
    T, K = x_TxK.shape
    out = np.empty_like(x_TxK)
    for t in range(T):
        for i in range(K // 2):
            a = t * 10000.0 ** (-2 * i / K)
            x1, x2 = x_TxK[t, i], x_TxK[t, i + K // 2]
            out[t, i] = x1 * np.cos(a) - x2 * np.sin(a)
            out[t, i + K // 2] = x2 * np.cos(a) + x1 * np.sin(a)
    return out


def numpy_forward(cfg, params, tokens_BxT, mask_LxH, fill_LxHxTxD):
    """Loops over sequences, layers and heads; softmax written out."""
    p = params
    B, T = tokens_BxT.shape
    logits, patterns, outs = [], [], []
    for b in range(B):
        x = _np(p["embed"][...])[tokens_BxT[b]]
        if cfg.positions == "learned":
            x = x + _np(p["pos"][...])[:T]
        pat_b, out_b = [], []
        for l in range(cfg.layers):
            blk = p["blocks"][l]
            a = blk["attn"]
            xn = _ln(x, _np(blk["ln_attn"]["scale"][...]), _np(blk["ln_attn"]["bias"][...]))
            pat_l, out_l = [], []
            for h in range(cfg.heads):
                q = xn @ _np(a["W_Q"][...])[h]
                k = xn @ _np(a["W_K"][...])[h]
                v = xn @ _np(a["W_V"][...])[h]
                if cfg.positions == "rotary":
                    q, k = _rope(q), _rope(k)
                s = q @ k.T / np.sqrt(cfg.head_width)
                A = np.zeros((T, T))
                for t in range(T):
                    e = np.exp(s[t, :t + 1] - s[t, :t + 1].max())
                    A[t, :t + 1] = e / e.sum()
                o = A @ v @ _np(a["W_O"][...])[h]
                o = mask_LxH[l, h] * o + (1 - mask_LxH[l, h]) * fill_LxHxTxD[l, h]
                pat_l.append(A)
                out_l.append(o)
            x = x + sum(out_l)
            if cfg.mlp:
                m = blk["mlp"]
                xn = _ln(x, _np(blk["ln_mlp"]["scale"][...]), _np(blk["ln_mlp"]["bias"][...]))
                hid = xn @ _np(m["W_in"][...]) + _np(m["b_in"][...])
                hid = 0.5 * hid * (1 + np.tanh(np.sqrt(2 / np.pi) * (hid + 0.044715 * hid ** 3)))
                x = x + hid @ _np(m["W_out"][...]) + _np(m["b_out"][...])
            pat_b.append(pat_l)
            out_b.append(out_l)
        xn = _ln(x, _np(p["ln_final"]["scale"][...]), _np(p["ln_final"]["bias"][...]))
        logits.append(xn @ _np(p["unembed"][...]))
        patterns.append(pat_b)
        outs.append(out_b)
    return np.array(logits), np.array(patterns), np.array(outs)


@pytest.mark.parametrize("name", sorted(CFGS))
def test_patterns_and_outputs_equal_numpy_attention(name, models, rng):
    cfg, _, params, fwd = models[name]
    B, T = 3, 7
    tokens = rng.integers(0, cfg.vocab, (B, T))
    # a random mask with zeros, ones and fractions, and a random fill (mean-ablation form)
    mask = rng.choice([0.0, 1.0, 0.5], (cfg.layers, cfg.heads))
    fill = rng.standard_normal((cfg.layers, cfg.heads, T, cfg.width))
    out = fwd(params, jnp.asarray(tokens), jnp.asarray(mask, jnp.float32),
              jnp.asarray(fill, jnp.float32))
    logits, patterns, outs = numpy_forward(cfg, params, tokens, mask, fill)
    chex.assert_shape(out.patterns, (B, cfg.layers, cfg.heads, T, T))
    chex.assert_shape(out.head_out, (B, cfg.layers, cfg.heads, T, cfg.width))
    np.testing.assert_allclose(out.patterns, patterns, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.head_out, outs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.logits, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.patterns).sum(-1), 1, rtol=1e-5)
    assert np.all(np.triu(np.asarray(out.patterns), 1) == 0)  # causal


def test_ablating_a_head_changes_exactly_its_contribution(models, rng):
    cfg, _, params, fwd = models["learned_mlp"]
    # B = 3 as in the test above: the same compiled forward (masks and fills built in numpy:
    # eager jnp would compile each op)
    B, T = 3, 7
    tokens = rng.integers(0, cfg.vocab, (B, T)).astype(np.int32)
    zeros = np.zeros((cfg.layers, cfg.heads, T, cfg.width), np.float32)
    ones = np.ones((cfg.layers, cfg.heads), np.float32)
    base = fwd(params, tokens, ones, zeros)
    l, h = 1, int(rng.integers(cfg.heads))
    ablate = ones.copy()
    ablate[l, h] = 0.0
    ablated = fwd(params, tokens, ablate, zeros)
    # the ablated head writes nothing; every other head of its layer and everything in the
    # layers before it are unchanged
    np.testing.assert_array_equal(ablated.head_out[:, l, h], 0)
    others = [i for i in range(cfg.heads) if i != h]
    np.testing.assert_allclose(ablated.head_out[:, l, others], base.head_out[:, l, others],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ablated.patterns[:, :l + 1], base.patterns[:, :l + 1], rtol=1e-6)
    np.testing.assert_allclose(ablated.head_out[:, :l], base.head_out[:, :l], rtol=1e-6)
    assert not np.allclose(ablated.logits, base.logits)
    # one mask per sequence: sequence 0 ablated, sequences 1 and 2 not
    per_seq = np.stack([ablate, ones, ones])
    mixed = fwd(params, tokens, per_seq, zeros)
    np.testing.assert_allclose(mixed.logits[0], ablated.logits[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed.logits[1:], base.logits[1:], rtol=1e-5, atol=1e-6)
    # a fill equal to the head's own output is the unablated model
    fill = zeros.copy()
    fill[l, h] = np.asarray(base.head_out[0, l, h])
    same = fwd(params, tokens, ablate, fill)
    np.testing.assert_allclose(same.logits[0], base.logits[0], rtol=1e-5, atol=1e-5)


def test_rotary_equals_numpy_and_depends_on_offset_only(rng):
    y = rng.standard_normal((1, 1, 6, 8))
    x = np.tile(rng.standard_normal((1, 1, 1, 8)), (1, 1, 6, 1)).astype(np.float32)
    # both inputs through one compiled rotary (eager, each op compiles on its own)
    out = np.asarray(jax.jit(tfm.rotary)(np.concatenate([y.astype(np.float32), x], 1)))
    ry, r = out[0, 0], out[0, 1]  # rotary acts on each head alone
    np.testing.assert_allclose(ry, _rope(y[0, 0]), rtol=1e-4, atol=1e-5)
    s = r @ r.T
    for d in range(1, 6):
        np.testing.assert_allclose(np.diagonal(s, d), np.diagonal(s, d)[0], rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(r, axis=-1), np.linalg.norm(x[0, 0], axis=-1),
                               rtol=1e-5)


def test_topk_attention_keeps_the_k_largest_scores_and_config_errors(rng):
    T = 6
    s = rng.standard_normal((2, 3, T, T))
    causal = np.tril(np.ones((T, T), bool))
    s = np.where(causal, s, tfm.NEG_INF)
    kept = np.asarray(jax.jit(lambda s: tfm.topk_scores(s, 2, "lax"))(s.astype(np.float32))
                      ) > tfm.NEG_INF / 2
    for idx in np.ndindex(2, 3, T):
        row = s[idx][: idx[2] + 1]
        want = np.zeros(T, bool)
        want[np.argsort(-row)[:2]] = True
        np.testing.assert_array_equal(kept[idx], want)
    with pytest.raises(ValueError, match="divisible by heads"):
        tfm.TransformerConfig(vocab=4, max_len=4, heads=3, width=8)
    with pytest.raises(ValueError, match="mlp_topk=4 needs mlp=True"):
        tfm.TransformerConfig(vocab=4, max_len=4, mlp_topk=4)


def test_token_loss_is_masked_mean_cross_entropy(rng):
    logits = rng.standard_normal((2, 3, 5))
    targets = rng.integers(0, 5, (2, 3))
    w = np.array([[1, 0, 1], [0, 1, 0]], float)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -sum(logp[b, t, targets[b, t]] for b in range(2) for t in range(3) if w[b, t]) / 3
    got = jax.jit(tfm.token_loss)(logits.astype(np.float32), targets.astype(np.int32),
                                  w.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)
