"""The phase-form strided convs against Flax's plain layers; the dlib encoder/decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.models import conv


def _pair(ref_cls, ours_cls, ci, co, k, rng):
    """A Flax reference layer and ours ("phase" and "lax") holding the same random params."""
    ref = ref_cls(ci, co, (k, k), (2, 2), padding="SAME", rngs=nnx.Rngs(0))
    kernel = jnp.asarray(rng.normal(size=(k, k, ci, co)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(co,)), jnp.float32)
    ref.kernel[...], ref.bias[...] = kernel, bias
    ours = {}
    for impl in ("phase", "lax"):
        m = ours_cls(ci, co, k, impl=impl, rngs=nnx.Rngs(0))
        m.kernel[...], m.bias[...] = kernel, bias
        ours[impl] = m
    return ref, ours


def _value_and_grads(layer, x):
    """Output and gradients (w.r.t. input, kernel, bias) of a fixed random projection."""
    gd, params = nnx.split(layer)
    w = jax.random.normal(jax.random.key(7), jax.eval_shape(lambda: layer(x)).shape)

    def f(p, x):
        return jnp.sum(nnx.merge(gd, p)(x) * w)

    @jax.jit
    def run(p, x):
        gp, gx = jax.grad(f, argnums=(0, 1))(p, x)
        return nnx.merge(gd, p)(x), gx, gp["kernel"][...], gp["bias"][...]

    return run(params, x)


@pytest.mark.parametrize("ci,co,k,hw", [(1, 8, 4, 16), (6, 5, 2, 8), (3, 4, 6, 12)])
def test_conv_phase_equals_flax_conv(ci, co, k, hw, rng):
    ref, ours = _pair(nnx.Conv, conv.Conv, ci, co, k, rng)
    x = jnp.asarray(rng.normal(size=(2, hw, hw, ci)), jnp.float32)
    want = _value_and_grads(ref, x)
    for impl, layer in ours.items():
        got = _value_and_grads(layer, x)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=impl)


@pytest.mark.parametrize("ci,co,k,hw", [(8, 4, 4, 4), (4, 1, 4, 8), (3, 5, 6, 5)])
def test_conv_transpose_phase_equals_flax_conv_transpose(ci, co, k, hw, rng):
    ref, ours = _pair(nnx.ConvTranspose, conv.ConvTranspose, ci, co, k, rng)
    x = jnp.asarray(rng.normal(size=(2, hw, hw, ci)), jnp.float32)
    want = _value_and_grads(ref, x)
    assert want[0].shape == (2, 2 * hw, 2 * hw, co)
    for impl, layer in ours.items():
        got = _value_and_grads(layer, x)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=impl)


def test_phase_taps_of_kernel_4():
    taps, lo = conv._phase_taps(4)
    # window offsets -1, 0, +1; phase 0 reads taps 0 and 2, phase 1 taps 1 and 3
    np.testing.assert_array_equal(taps, [[0, -1], [2, 1], [-1, 3]])
    assert lo == 1


def test_space_to_depth_matches_loops_and_inverts(rng):
    x = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
    got = np.asarray(conv.space_to_depth(jnp.asarray(x)))
    want = np.zeros((2, 2, 3, 12), np.float32)
    for i in range(2):
        for j in range(3):
            for dy in range(2):
                for dx in range(2):
                    want[:, i, j, (dy * 2 + dx) * 3:(dy * 2 + dx + 1) * 3] = x[:, 2 * i + dy,
                                                                              2 * j + dx]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(conv.depth_to_space(jnp.asarray(got)), x)


def test_resolve_conv_impl():
    assert conv.resolve_conv_impl("auto", "cpu") == "phase"
    assert conv.resolve_conv_impl("auto", "gpu") == "lax"
    assert conv.resolve_conv_impl("lax", "cpu") == "lax"
    with pytest.raises(ValueError, match="conv impl"):
        conv.resolve_conv_impl("fast")


@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_decoder_shapes_and_impls_agree(channels, rng):
    x = jnp.asarray(rng.uniform(size=(2, 64, 64, channels)), jnp.float32)
    z = jnp.asarray(rng.normal(size=(2, 10)), jnp.float32)
    enc = {i: conv.Encoder(channels, impl=i, rngs=nnx.Rngs(1)) for i in ("phase", "lax")}
    dec = {i: conv.Decoder(10, channels, impl=i, rngs=nnx.Rngs(2)) for i in ("phase", "lax")}
    f = {i: nnx.jit(lambda m, x: m(x))(enc[i], x) for i in enc}
    y = {i: nnx.jit(lambda m, z: m(z))(dec[i], z) for i in dec}
    assert f["phase"].shape == (2, 256) and y["phase"].shape == (2, 64, 64, channels)
    np.testing.assert_allclose(f["phase"], f["lax"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y["phase"], y["lax"], rtol=1e-4, atol=1e-4)
    # dlib layer sizes: 4 convs (32, 32, 64, 64) and 4 transposed convs (64, 32, 32, C)
    assert [c.kernel.shape[-1] for c in enc["phase"].convs] == [32, 32, 64, 64]
    assert [c.kernel.shape[:2] for c in enc["phase"].convs] == [(4, 4), (4, 4), (2, 2), (2, 2)]
    assert [d.kernel.shape[-1] for d in dec["phase"].deconvs] == [64, 32, 32, channels]
