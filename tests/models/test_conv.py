"""The strided conv formulations against Flax's plain layers and ``lax``; the dlib encoder/decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.models import conv

IMPLS = [i for i in conv.CONV_IMPLS if i != "auto"]


def _value_and_grads(layer, x, w):
    """Output and gradients (w.r.t. input, kernel, bias) of the projection onto w."""
    gd, params = nnx.split(layer)

    def f(p, x):
        return jnp.sum(nnx.merge(gd, p)(x) * w)

    gp, gx = jax.grad(f, argnums=(0, 1))(params, x)
    return layer(x), gx, gp["kernel"][...], gp["bias"][...]


@nnx.jit
def _ref_and_ours(ref, ours, x, w):
    """Outputs and gradients of the reference layer and of ours (every impl), in one
    compiled program."""
    return (_value_and_grads(ref, x, w),
            {impl: _value_and_grads(m, x, w) for impl, m in ours.items()})


def _random_layer_case(ref_cls, ours_cls, ci, co, k, hw, rng, numpy_init):
    """A Flax reference layer and ours (every impl) holding the same random params."""
    kernel = rng.normal(size=(k, k, ci, co)).astype(np.float32)
    bias = rng.normal(size=(co,)).astype(np.float32)
    ref = numpy_init(lambda: ref_cls(ci, co, (k, k), (2, 2), padding="SAME", rngs=nnx.Rngs(0)))
    ours = {impl: numpy_init(lambda impl=impl: ours_cls(ci, co, k, impl=impl, rngs=nnx.Rngs(0)))
            for impl in IMPLS}
    for m in (ref, *ours.values()):
        m.kernel[...], m.bias[...] = jax.device_put(kernel), jax.device_put(bias)
    x = rng.normal(size=(2, hw, hw, ci)).astype(np.float32)
    # the random projection, numpy-drawn (jax.random compiles a costly program per shape)
    w = rng.normal(size=jax.eval_shape(ref, x).shape).astype(np.float32)
    return _ref_and_ours(ref, ours, x, w)


@pytest.mark.parametrize("ci,co,k,hw", [(1, 8, 4, 16), (6, 5, 2, 8), (3, 4, 6, 12)])
def test_conv_phase_equals_flax_conv(ci, co, k, hw, rng, numpy_init):
    want, ours = _random_layer_case(nnx.Conv, conv.Conv, ci, co, k, hw, rng, numpy_init)
    for impl, got in ours.items():
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=impl)


@pytest.mark.parametrize("ci,co,k,hw", [(8, 4, 4, 4), (4, 1, 4, 8), (3, 5, 6, 5)])
def test_conv_transpose_phase_equals_flax_conv_transpose(ci, co, k, hw, rng, numpy_init):
    want, ours = _random_layer_case(nnx.ConvTranspose, conv.ConvTranspose, ci, co, k, hw, rng,
                                    numpy_init)
    assert want[0].shape == (2, 2 * hw, 2 * hw, co)
    for impl, got in ours.items():
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=impl)


def test_phase_taps_of_kernel_4():
    taps, lo = conv._phase_taps(4)
    # window offsets -1, 0, +1; phase 0 reads taps 0 and 2, phase 1 taps 1 and 3
    np.testing.assert_array_equal(taps, [[0, -1], [2, 1], [-1, 3]])
    assert lo == 1


def test_space_to_depth_matches_loops_and_inverts(rng):
    x = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
    got, back = jax.jit(lambda x: (conv.space_to_depth(x),
                                   conv.depth_to_space(conv.space_to_depth(x))))(x)
    want = np.zeros((2, 2, 3, 12), np.float32)
    for i in range(2):
        for j in range(3):
            for dy in range(2):
                for dx in range(2):
                    want[:, i, j, (dy * 2 + dx) * 3:(dy * 2 + dx + 1) * 3] = x[:, 2 * i + dy,
                                                                              2 * j + dx]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(back, x)


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
    x = rng.normal(size=(3, hw, hw, ci)).astype(np.float32)
    kernel = (rng.normal(size=(k, k, ci, co)) / np.sqrt(k * k * ci)).astype(np.float32)
    op = conv.conv_transpose_s2 if transposed else conv.conv_s2
    out_shape = (3, 2 * hw, 2 * hw, co) if transposed else (3, hw // 2, hw // 2, co)
    w = rng.normal(size=out_shape).astype(np.float32)

    @jax.jit  # the plain conv and every impl in one compiled program
    def run(x, kernel, w):
        def value_and_grads(f):
            y, vjp = jax.vjp(f, x, kernel)
            return (y, *vjp(w))

        return (value_and_grads(lambda x, k: _lax_reference(transposed, x, k)),
                {impl: value_and_grads(lambda x, k, impl=impl: op(x, k, impl)) for impl in IMPLS})

    want, ours = run(x, kernel, w)
    assert want[0].shape == out_shape
    for impl, got in ours.items():
        for name, g, r in zip(("output", "d input", "d kernel"), got, want):
            scale = float(np.max(np.abs(r)))
            np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-5 * scale,
                                       err_msg=f"{impl}: {name}")


def test_phase_starts_of_kernel_4():
    taps, _ = conv._phase_taps(4)
    # phase 0 reads window rows 0, 1 (taps 0, 2); phase 1 rows 1, 2 (taps 1, 3)
    assert conv._phase_starts(taps, 2) == [0, 1]


@pytest.mark.parametrize("channel_major", [True, False])
def test_kernel_grad_matmul_equals_autodiff_both_sides(rng, channel_major, monkeypatch):
    """Both copies of :func:`_valid_conv_kernel_grad` (input windows when C <= D, shifted
    dy otherwise), in both layouts of the copies, equal the autodiff gradient of the
    stride-1 conv and a numpy loop over the taps."""
    monkeypatch.setattr(conv, "KERNEL_GRAD_CHANNEL_MAJOR", channel_major)
    cases = []
    for c, d in ((3, 8), (8, 3)):
        cases.append(tuple(rng.normal(size=s).astype(np.float32)
                           for s in ((2, 7, 6, c), (2, 2, c, d), (2, 6, 5, d))))

    @jax.jit  # both cases in one program
    def run(cases):
        return [(conv._valid_conv_kernel_grad(u, dy, 2),
                 jax.vjp(lambda k: conv._valid_conv(u, k), kk)[1](dy)[0])
                for u, kk, dy in cases]

    for (got, want), (u, _, dy) in zip(run(cases), cases):
        g, v = dy.shape[1:3]
        loops = np.stack([np.stack([np.einsum("bijc,bijd->cd", u[:, p:p + g, q:q + v], dy)
                                    for q in range(2)]) for p in range(2)])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got, loops, rtol=1e-5, atol=1e-5)


def test_resolve_conv_impl():
    assert conv.resolve_conv_impl("auto", "cpu") == "phase_mm"
    assert conv.resolve_conv_impl("auto", "gpu") == "lax"
    assert conv.resolve_conv_impl("lax", "cpu") == "lax"
    with pytest.raises(ValueError, match="conv impl"):
        conv.resolve_conv_impl("fast")


@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_decoder_shapes_and_impls_agree(channels, rng, numpy_init):
    x = rng.uniform(size=(2, 64, 64, channels)).astype(np.float32)
    z = rng.normal(size=(2, 10)).astype(np.float32)
    enc = {"lax": numpy_init(lambda: conv.Encoder(channels, impl="lax", rngs=nnx.Rngs(1)))}
    dec = {"lax": numpy_init(lambda: conv.Decoder(10, channels, impl="lax", rngs=nnx.Rngs(2)))}
    for i in IMPLS:  # every impl holds the same params
        enc[i] = numpy_init(lambda: conv.Encoder(channels, impl=i, rngs=nnx.Rngs(1)), enc["lax"])
        dec[i] = numpy_init(lambda: conv.Decoder(10, channels, impl=i, rngs=nnx.Rngs(2)),
                            dec["lax"])
    # every impl's encoder and decoder in one program
    f, y = nnx.jit(lambda enc, dec: ({i: m(x) for i, m in enc.items()},
                                     {i: m(z) for i, m in dec.items()}))(enc, dec)
    assert f["phase"].shape == (2, 256) and y["phase"].shape == (2, 64, 64, channels)
    for impl in IMPLS:
        np.testing.assert_allclose(f[impl], f["lax"], rtol=1e-4, atol=1e-5, err_msg=impl)
        np.testing.assert_allclose(y[impl], y["lax"], rtol=1e-4, atol=1e-4, err_msg=impl)
    # dlib layer sizes: 4 convs (32, 32, 64, 64) and 4 transposed convs (64, 32, 32, C)
    assert [c.kernel.shape[-1] for c in enc["phase"].convs] == [32, 32, 64, 64]
    assert [c.kernel.shape[:2] for c in enc["phase"].convs] == [(4, 4), (4, 4), (2, 2), (2, 2)]
    assert [d.kernel.shape[-1] for d in dec["phase"].deconvs] == [64, 32, 32, channels]
