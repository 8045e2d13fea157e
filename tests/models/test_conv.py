"""The strided conv formulations against Flax's plain layers and ``lax``; the dlib encoder/decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.models import conv

IMPLS = [i for i in conv.CONV_IMPLS if i != "auto"]


def _pair(ref_cls, ours_cls, ci, co, k, rng):
    """A Flax reference layer and ours (every impl) holding the same random params."""
    ref = ref_cls(ci, co, (k, k), (2, 2), padding="SAME", rngs=nnx.Rngs(0))
    kernel = jnp.asarray(rng.normal(size=(k, k, ci, co)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(co,)), jnp.float32)
    ref.kernel[...], ref.bias[...] = kernel, bias
    ours = {}
    for impl in IMPLS:
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


# Every strided layer of the Encoder (dSprites and Shapes3D inputs) and the Decoder:
# (transposed, C_in, C_out, k, input H = W), at the model's batch layout
MODEL_SHAPES = [(False, 1, 32, 4, 64), (False, 3, 32, 4, 64), (False, 32, 32, 4, 32),
                (False, 32, 64, 2, 16), (False, 64, 64, 2, 8),
                (True, 64, 64, 4, 4), (True, 64, 32, 4, 8), (True, 32, 32, 4, 16),
                (True, 32, 1, 4, 32), (True, 32, 3, 4, 32)]


def _lax_reference(transposed, x, kernel):
    """The plain formulation: ``lax.conv_general_dilated`` with stride 2 ("SAME"), and its
    transpose as ``lax.conv_transpose`` builds it (an input-dilated conv_general_dilated)."""
    if transposed:
        return jax.lax.conv_transpose(x, kernel, (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("transposed,ci,co,k,hw", MODEL_SHAPES)
def test_every_impl_equals_lax_on_model_shapes(transposed, ci, co, k, hw):
    """Forward and both gradients (input, kernel) of every impl equal the plain conv,
    float32, on fresh random inputs for each layer shape the Encoder/Decoder use."""
    rng = np.random.default_rng([ci, co, k, hw, transposed])
    x = jnp.asarray(rng.normal(size=(3, hw, hw, ci)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, ci, co)) / np.sqrt(k * k * ci), jnp.float32)
    op = conv.conv_transpose_s2 if transposed else conv.conv_s2
    out_shape = (3, 2 * hw, 2 * hw, co) if transposed else (3, hw // 2, hw // 2, co)
    w = jnp.asarray(rng.normal(size=out_shape), jnp.float32)

    def value_and_grads(f):
        y, vjp = jax.vjp(f, x, kernel)
        return (y, *vjp(w))

    want = jax.jit(lambda: value_and_grads(lambda x, k: _lax_reference(transposed, x, k)))()
    assert want[0].shape == out_shape
    for impl in IMPLS:
        got = jax.jit(lambda: value_and_grads(lambda x, k: op(x, k, impl)))()
        for name, g, r in zip(("output", "d input", "d kernel"), got, want):
            scale = float(jnp.max(jnp.abs(r)))
            np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-5 * scale,
                                       err_msg=f"{impl}: {name}")


def test_phase_starts_of_kernel_4():
    taps, _ = conv._phase_taps(4)
    # phase 0 reads window rows 0, 1 (taps 0, 2); phase 1 rows 1, 2 (taps 1, 3)
    assert conv._phase_starts(taps, 2) == [0, 1]


def test_kernel_grad_matmul_equals_autodiff_both_sides(rng):
    """Both copies of :func:`_valid_conv_kernel_grad` (input windows when C <= D, shifted
    dy otherwise) equal the autodiff gradient of the stride-1 conv."""
    for c, d in ((3, 8), (8, 3)):
        u = jnp.asarray(rng.normal(size=(2, 7, 6, c)), jnp.float32)
        kk = jnp.asarray(rng.normal(size=(2, 2, c, d)), jnp.float32)
        dy = jnp.asarray(rng.normal(size=(2, 6, 5, d)), jnp.float32)
        want = jax.vjp(lambda k: conv._valid_conv(u, k), kk)[1](dy)[0]
        got = conv._valid_conv_kernel_grad(u, dy, 2)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resolve_conv_impl():
    assert conv.resolve_conv_impl("auto", "cpu") == "phase_mm"
    assert conv.resolve_conv_impl("auto", "gpu") == "lax"
    assert conv.resolve_conv_impl("lax", "cpu") == "lax"
    with pytest.raises(ValueError, match="conv impl"):
        conv.resolve_conv_impl("fast")


@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_decoder_shapes_and_impls_agree(channels, rng):
    x = jnp.asarray(rng.uniform(size=(2, 64, 64, channels)), jnp.float32)
    z = jnp.asarray(rng.normal(size=(2, 10)), jnp.float32)
    enc = {i: conv.Encoder(channels, impl=i, rngs=nnx.Rngs(1)) for i in IMPLS}
    dec = {i: conv.Decoder(10, channels, impl=i, rngs=nnx.Rngs(2)) for i in IMPLS}
    f = {i: nnx.jit(lambda m, x: m(x))(enc[i], x) for i in enc}
    y = {i: nnx.jit(lambda m, z: m(z))(dec[i], z) for i in dec}
    assert f["phase"].shape == (2, 256) and y["phase"].shape == (2, 64, 64, channels)
    for impl in IMPLS:
        np.testing.assert_allclose(f[impl], f["lax"], rtol=1e-4, atol=1e-5, err_msg=impl)
        np.testing.assert_allclose(y[impl], y["lax"], rtol=1e-4, atol=1e-4, err_msg=impl)
    # dlib layer sizes: 4 convs (32, 32, 64, 64) and 4 transposed convs (64, 32, 32, C)
    assert [c.kernel.shape[-1] for c in enc["phase"].convs] == [32, 32, 64, 64]
    assert [c.kernel.shape[:2] for c in enc["phase"].convs] == [(4, 4), (4, 4), (2, 2), (2, 2)]
    assert [d.kernel.shape[-1] for d in dec["phase"].deconvs] == [64, 32, 32, channels]
