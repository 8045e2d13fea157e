"""The disentanglement_lib conv encoder and deconv decoder, and the strided convs they use.

Both strided layers hold exactly the parameters of their Flax counterparts (``nnx.Conv`` /
``nnx.ConvTranspose`` with ``padding="SAME"``: kernel ``[k, k, C_in, C_out]``, bias
``[C_out]``) and compute exactly the same function; ``impl`` only picks how:

- ``"lax"``: the plain strided op (``lax.conv_general_dilated`` / ``lax.conv_transpose``).
  Best where the backend has fast strided and transposed kernels (cuDNN, TPU).
- ``"phase"``: a stride-1 convolution on a re-arranged kernel plus a pixel shuffle.
  A stride-2 conv is space-to-depth followed by a stride-1 ``k/2 x k/2`` conv; a stride-2
  transposed conv is a stride-1 ``3 x 3`` conv producing the 4 output phases as channels,
  followed by depth-to-space. XLA:CPU differentiates strided and transposed convs through
  input-dilated convolutions, which have no fast kernel there (the decoder's forward +
  backward: 270 ms as ``nnx.ConvTranspose`` vs 34 ms this way, batch 64); every conv in
  this form, and every conv in its gradient, is a plain stride-1 conv.
- ``"auto"``: ``"phase"`` on CPU, ``"lax"`` elsewhere (:data:`AUTO_CONV_IMPL`).

Layout NHWC throughout; images ``[B, 64, 64, C]`` with C = 1 (dSprites) or 3 (Shapes3D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

CONV_IMPLS = ("auto", "lax", "phase")
AUTO_CONV_IMPL = {"cpu": "phase"}  # backends not listed use "lax"
_DN = ("NHWC", "HWIO", "NHWC")

# TensorFlow's layer defaults, which disentanglement_lib's tf.layers use.
kernel_init = nnx.initializers.glorot_uniform()
bias_init = nnx.initializers.zeros_init()


def resolve_conv_impl(impl: str = "auto", backend: str | None = None) -> str:
    """The concrete conv formulation ``impl`` stands for on ``backend``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv impl={impl!r} is not known; expected one of {CONV_IMPLS}")
    if impl != "auto":
        return impl
    return AUTO_CONV_IMPL.get(backend or jax.default_backend(), "lax")


def space_to_depth(x_BxHxWxC: jax.Array, r: int = 2) -> jax.Array:
    """``[B, H, W, C] -> [B, H/r, W/r, r*r*C]``; channel order ``(dy, dx, c)``."""
    b, h, w, c = x_BxHxWxC.shape
    x = x_BxHxWxC.reshape(b, h // r, r, w // r, r, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // r, w // r, r * r * c)


def depth_to_space(x_BxHxWxD: jax.Array, r: int = 2) -> jax.Array:
    """Inverse of :func:`space_to_depth`: ``[B, H, W, r*r*C] -> [B, r*H, r*W, C]``."""
    b, h, w, d = x_BxHxWxD.shape
    c = d // (r * r)
    x = x_BxHxWxD.reshape(b, h, w, r, r, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, r * h, r * w, c)


def _same_pads(k: int, s: int) -> tuple[int, int]:
    """TF/Flax "SAME" padding of a stride-s conv on an input divisible by s."""
    total = max(k - s, 0)
    return total // 2, total - total // 2


def conv_s2(x, kernel, impl: str):
    """Stride-2 "SAME" convolution ``[B, H, W, Ci] -> [B, H/2, W/2, Co]`` (no bias).

    ``phase`` (even k, even H and W): pad, space-to-depth, then a stride-1 VALID conv with
    kernel ``K'[a, b, (dy, dx, ci), co] = kernel[2a + dy, 2b + dx, ci, co]``.
    """
    k, _, ci, co = kernel.shape
    _, h, w, _ = x.shape
    if impl == "lax" or k % 2 or h % 2 or w % 2:
        return lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
    lo, hi = _same_pads(k, 2)
    u = space_to_depth(jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0))))
    kk = kernel.reshape(k // 2, 2, k // 2, 2, ci, co).transpose(0, 2, 1, 3, 4, 5)
    kk = kk.reshape(k // 2, k // 2, 4 * ci, co)
    if k == 2:  # a 1x1 conv: a matmul over channels
        return jnp.einsum("bhwd,de->bhwe", u, kk[0, 0])
    return lax.conv_general_dilated(u, kk, (1, 1), "VALID", dimension_numbers=_DN)


def _phase_taps(k: int) -> tuple[np.ndarray, int]:
    """For a stride-2 "SAME" transposed conv with kernel size k (as ``lax.conv_transpose``):
    ``taps[w, p]`` is the kernel tap that input offset ``w - lo`` feeds output phase p
    (-1: none), and ``lo``, the largest negative offset. Output ``y[2m + p]`` is
    ``sum_t kernel[t] x[m + (p + t - pad)/2]`` over taps t with ``p + t - pad`` even.
    """
    pad = k // 2  # lax.conv_transpose "SAME" pads k // 2 before the dilated input (even k)
    offs = {(p, t): (p + t - pad) // 2 for p in (0, 1) for t in range(k) if (p + t - pad) % 2 == 0}
    lo, hi = min(offs.values()), max(offs.values())
    taps = -np.ones((hi - lo + 1, 2), np.int64)
    for (p, t), d in offs.items():
        taps[d - lo, p] = t
    return taps, -lo


def conv_transpose_s2(x, kernel, impl: str):
    """Stride-2 "SAME" transposed conv ``[B, H, W, Ci] -> [B, 2H, 2W, Co]`` (no bias),
    equal to ``lax.conv_transpose(x, kernel, (2, 2), "SAME")`` (Flax's ``ConvTranspose``).

    ``phase``: one stride-1 conv whose ``4 Co`` outputs are the four output phases, then
    depth-to-space. For k = 4 the window is 3x3 and tap ``(w, p)`` of the phase kernel is
    ``kernel[t]`` with ``t = [[0, -], [2, 1], [-, 3]][w][p]``.
    """
    k, _, ci, co = kernel.shape
    if impl == "lax" or k % 2:
        return lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
    taps, lo = _phase_taps(k)  # [window, 2]
    w = taps.shape[0]
    mask = (taps >= 0).astype(np.float32)
    t = np.maximum(taps, 0)
    # kp[wy, py, wx, px, ci, co] = kernel[t[wy, py], t[wx, px]] (0 where no tap)
    kp = kernel[t[:, :, None, None], t[None, None, :, :]]
    kp = kp * (mask[:, :, None, None] * mask[None, None, :, :])[..., None, None]
    kp = kp.transpose(0, 2, 4, 1, 3, 5).reshape(w, w, ci, 4 * co)
    hi = w - 1 - lo
    y = lax.conv_general_dilated(x, kp, (1, 1), ((lo, hi), (lo, hi)), dimension_numbers=_DN)
    return depth_to_space(y)


class _StridedConv(nnx.Module):
    """Kernel ``[k, k, ci, co]`` and bias of a stride-2 "SAME" layer; ``_op`` applies it."""

    _op = None  # conv_s2 or conv_transpose_s2

    def __init__(self, in_features: int, out_features: int, kernel_size: int, *,
                 impl: str = "auto", rngs: nnx.Rngs):
        self.impl = resolve_conv_impl(impl)
        self.kernel = nnx.Param(kernel_init(rngs.params(),
                                            (kernel_size, kernel_size, in_features, out_features)))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,)))

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        return type(self)._op(x_BxHxWxC, self.kernel[...], self.impl) + self.bias[...]


class Conv(_StridedConv):
    """Stride-2 "SAME" conv with bias; the parameters of ``nnx.Conv(ci, co, k, 2)``."""

    _op = staticmethod(conv_s2)


class ConvTranspose(_StridedConv):
    """Stride-2 "SAME" transposed conv with bias; the parameters of
    ``nnx.ConvTranspose(ci, co, k, 2)`` (kernel ``[k, k, ci, co]``, not flipped)."""

    _op = staticmethod(conv_transpose_s2)


def dense(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)


class Encoder(nnx.Module):
    """disentanglement_lib ``conv_encoder`` up to its 256-d hidden layer.

    ``[B, 64, 64, C] -> f [B, 256]``: Conv(32, 4, s2) -> Conv(32, 4, s2) -> Conv(64, 2, s2)
    -> Conv(64, 2, s2), ReLU each -> flatten 1024 -> Dense 256 ReLU. The mean and
    log-variance heads live in the model, because the hybrid puts its sparse layer
    between this hidden layer and them.
    """

    def __init__(self, channels: int, *, hidden: int = 256, impl: str = "auto",
                 rngs: nnx.Rngs):
        specs = ((channels, 32, 4), (32, 32, 4), (32, 64, 2), (64, 64, 2))
        self.convs = nnx.List([Conv(ci, co, k, impl=impl, rngs=rngs) for ci, co, k in specs])
        self.fc = dense(4 * 4 * 64, hidden, rngs)

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        h = x_BxHxWxC
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
        return jax.nn.relu(self.fc(h.reshape(h.shape[0], -1)))


class Decoder(nnx.Module):
    """disentanglement_lib ``deconv_decoder``: ``z [B, L] -> logits [B, 64, 64, C]``.

    Dense 256 ReLU -> Dense 1024 ReLU -> reshape [4, 4, 64] -> ConvT(64, 4, s2) ->
    ConvT(32, 4, s2) -> ConvT(32, 4, s2) (ReLU each) -> ConvT(C, 4, s2): Bernoulli logits.
    """

    def __init__(self, num_latents: int, channels: int, *, impl: str = "auto",
                 rngs: nnx.Rngs):
        self.fc1 = dense(num_latents, 256, rngs)
        self.fc2 = dense(256, 1024, rngs)
        specs = ((64, 64), (64, 32), (32, 32), (32, channels))
        self.deconvs = nnx.List([ConvTranspose(ci, co, 4, impl=impl, rngs=rngs)
                                 for ci, co in specs])

    def __call__(self, z_BxL: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.fc2(jax.nn.relu(self.fc1(z_BxL))))
        h = h.reshape(-1, 4, 4, 64)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if i < len(self.deconvs) - 1:
                h = jax.nn.relu(h)
        return h
