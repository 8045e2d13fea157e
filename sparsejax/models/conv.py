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
  this form, and every conv in its gradient, is a plain stride-1 conv. 5 of the 9 taps of
  each phase's 3x3 window are zero (the decoder does 2.25x the FLOPs it needs).
- ``"phase2x2"``: the phase form without the zero taps: each output phase of a transposed
  conv reads only its own ``k/2 x k/2`` taps, so one stride-1 ``k/2 x k/2`` conv over the
  ``(H + 1) x (W + 1)`` grid of window starts makes the four phases (sub-pixel convolution,
  Shi et al. 2016); the strided conv is the phase form's (it has no zero taps).
- ``"phase_mm"``: ``phase2x2`` with a hand-written gradient of its stride-1 convs. XLA:CPU
  computes a conv's kernel gradient as a convolution whose window is the whole image,
  which its conv kernels run at a fraction of the matmul rate (in the phase form that was
  half of the train step); here it is one matmul over the A*A shifted copies of the side
  with fewer channels. The input gradient is the usual stride-1 conv of the output
  gradient; a layer with few outputs (``A*A*Co < Ci``) runs as a matmul plus a shifted sum.
- ``"auto"``: ``"phase_mm"`` on CPU, ``"lax"`` elsewhere (:data:`AUTO_CONV_IMPL`).

Every form computes the same sums in a different order: outputs and gradients agree to
float32 round-off (tests/models/test_conv.py checks every layer shape of the model).

Layout NHWC throughout; images ``[B, 64, 64, C]`` with C = 1 (dSprites) or 3 (Shapes3D).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

CONV_IMPLS = ("auto", "lax", "phase", "phase2x2", "phase_mm")
# compute dtypes of the convs and matmuls (parameters, loss and Top-k stay float32)
COMPUTE_DTYPES = ("float32", "bfloat16")
AUTO_CONV_IMPL = {"cpu": "phase_mm"}  # the fastest measured on CPU; others: "lax"
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


IM2COL_MAX = 48  # A*A*C up to which a conv runs as its window matrix times the kernel


def _valid_conv(u_BxHxWxC, kk_AxAxCxD):
    """Stride-1 VALID conv ``[B, H, W, C] -> [B, H-A+1, W-A+1, D]``.

    A 1x1 kernel is a matmul. With few inputs per window (``A*A*C <= IM2COL_MAX``: the
    encoder's first layer, the decoder's last layer's input gradient) it is the matrix of
    the windows (im2col, ``[B*G*V, A*A*C]``) times the kernel, which XLA:CPU runs faster
    than its convolution kernel at C = 4 or 12 (the dSprites train step 5-12% faster on a
    2-core CPU: ``python -m experiments bench --only conv_im2col``). With few outputs
    (``A*A*D < C``: the decoder's last layer) it is one matmul to every tap's output
    followed by the sum of the A*A shifted taps (col2im), which XLA:CPU also runs faster
    than its convolution kernel there.
    """
    a, _, c, d = kk_AxAxCxD.shape
    if a == 1:
        return jnp.einsum("bhwc,cd->bhwd", u_BxHxWxC, kk_AxAxCxD[0, 0])
    if a * a * c <= IM2COL_MAX:
        b, h, w, _ = u_BxHxWxC.shape
        g, v = h - a + 1, w - a + 1
        cols = _taps_stacked(u_BxHxWxC, a, g, v).reshape(b * g * v, a * a * c)
        return (cols @ kk_AxAxCxD.reshape(a * a * c, d)).reshape(b, g, v, d)
    if a * a * d < c:
        b, h, w, _ = u_BxHxWxC.shape
        g, v = h - a + 1, w - a + 1
        z = jnp.einsum("bhwc,ce->bhwe", u_BxHxWxC,
                       kk_AxAxCxD.transpose(2, 0, 1, 3).reshape(c, a * a * d))
        z = z.reshape(b, h, w, a, a, d)
        return sum(z[:, p:p + g, q:q + v, p, q] for p in range(a) for q in range(a))
    return lax.conv_general_dilated(u_BxHxWxC, kk_AxAxCxD, (1, 1), "VALID",
                                    dimension_numbers=_DN)


def _taps_stacked(x_BxHxWxC, a: int, h: int, w: int):
    """``[B, h, w, A*A, C]``: entry ``(i, j, (p, q))`` is ``x[i + p, j + q]`` (the A x A windows)."""
    return jnp.stack([x_BxHxWxC[:, p:p + h, q:q + w] for p in range(a) for q in range(a)], -2)


def _tn(x_MxP, y_MxQ):
    """``x^T y``: ``[P, Q]``, contracted over the long axis M."""
    return lax.dot_general(x_MxP, y_MxQ, (((0,), (0,)), ((), ())))


# The kernel gradient's shifted copies channel-major (``[A*A*C, M] @ [M, D]``); False: row-major
# (``[M, A*A*C]^T [M, D]``), the peer of ``python -m experiments bench --only conv_kernel_grad``.
KERNEL_GRAD_CHANNEL_MAJOR = True


def _shifted_copies(x_BxHxWxC, a: int, shift, channel_major: bool):
    """The A*A shifted copies of ``x`` (``shift(x_CxBxHxW, p, q)``: the slice or pad of the
    spatial axes that makes copy ``(p, q)``), flattened to ``[A*A*C, M]`` (channel-major) or
    ``[M, A*A*C]`` (row-major)."""
    c = x_BxHxWxC.shape[-1]
    x_CxBxHxW = x_BxHxWxC.transpose(3, 0, 1, 2)
    copies = [shift(x_CxBxHxW, p, q) for p in range(a) for q in range(a)]
    if channel_major:
        return jnp.stack(copies).reshape(a * a * c, -1)
    return jnp.stack([y.transpose(1, 2, 3, 0) for y in copies], -2).reshape(-1, a * a * c)


def _valid_conv_kernel_grad(u_BxHxWxC, dy_BxGxVxD, a: int):
    """``dK[p, q, c, d] = sum_{b, i, j} u[b, i+p, j+q, c] dy[b, i, j, d]`` as one matmul.

    The gradient of :func:`_valid_conv` w.r.t. its ``[A, A, C, D]`` kernel. XLA:CPU lowers
    it as a convolution whose window is the whole image, which has no fast kernel there;
    as a matmul it contracts the long axis. The A*A shifted copies are made of the side
    with fewer channels: the input's windows (im2col) when C <= D, else ``dy`` shifted into
    the input's frame (then the matmul contracts ``B*H*W``). They are built channel-major
    (:data:`KERNEL_GRAD_CHANNEL_MAJOR`), so the matmul is ``[P, M] @ [M, Q]``: alone, XLA:CPU
    runs ``x^T y`` with both operands ``[M, .]`` at a third to a sixth of that rate at these
    shapes, and the copies cost the same either way (the 8 layers' kernel gradients, batch
    64, 2-core CPU: 16.1 ms row-major, 12.3 ms channel-major). In the whole train step,
    where XLA runs two ops at once on the two cores, the step gains 0-7%.
    """
    b, g, v, d = dy_BxGxVxD.shape
    h, w, c = u_BxHxWxC.shape[1:]
    cm = KERNEL_GRAD_CHANNEL_MAJOR
    dims = (((1 if cm else 0,), (0,)), ((), ()))
    if c <= d:
        pt = _shifted_copies(u_BxHxWxC, a, lambda x, p, q: x[:, :, p:p + g, q:q + v], cm)
        return lax.dot_general(pt, dy_BxGxVxD.reshape(-1, d), dims).reshape(a, a, c, d)
    shifted = _shifted_copies(  # dy moved into the input's frame: [A*A*D, B*H*W]
        dy_BxGxVxD, a, lambda x, p, q: jnp.pad(x, ((0, 0), (0, 0), (p, a - 1 - p),
                                                   (q, a - 1 - q))), cm)
    dk = lax.dot_general(shifted, u_BxHxWxC.reshape(b * h * w, c), dims)
    return dk.reshape(a, a, d, c).transpose(0, 1, 3, 2)


@jax.custom_vjp
def _valid_conv_mm(u_BxHxWxC, kk_AxAxCxD):
    """:func:`_valid_conv` whose kernel gradient is :func:`_valid_conv_kernel_grad`."""
    return _valid_conv(u_BxHxWxC, kk_AxAxCxD)


def _valid_conv_mm_fwd(u, kk):
    return _valid_conv(u, kk), (u, kk)


def _valid_conv_mm_bwd(res, dy):
    u, kk = res
    a = kk.shape[0]
    # the input gradient: a stride-1 "full" conv of dy with the flipped, transposed kernel
    dy_pad = jnp.pad(dy, ((0, 0), (a - 1, a - 1), (a - 1, a - 1), (0, 0)))
    du = _valid_conv(dy_pad, kk[::-1, ::-1].transpose(0, 1, 3, 2))
    if a == 1:
        dk = _tn(u.reshape(-1, u.shape[-1]), dy.reshape(-1, dy.shape[-1]))[None, None]
    else:
        dk = _valid_conv_kernel_grad(u, dy, a)
    return du, dk


_valid_conv_mm.defvjp(_valid_conv_mm_fwd, _valid_conv_mm_bwd)


def conv_s2(x, kernel, impl: str):
    """Stride-2 "SAME" convolution ``[B, H, W, Ci] -> [B, H/2, W/2, Co]`` (no bias).

    The phase forms (even k, even H and W): pad, space-to-depth, then a stride-1 VALID conv
    with kernel ``K'[a, b, (dy, dx, ci), co] = kernel[2a + dy, 2b + dx, ci, co]`` (no zero
    taps); ``phase_mm`` takes that conv's kernel gradient as a matmul.
    """
    k, _, ci, co = kernel.shape
    _, h, w, _ = x.shape
    if impl == "lax" or k % 2 or h % 2 or w % 2:
        return lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
    lo, hi = _same_pads(k, 2)
    u = space_to_depth(jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0))))
    kk = kernel.reshape(k // 2, 2, k // 2, 2, ci, co).transpose(0, 2, 1, 3, 4, 5)
    kk = kk.reshape(k // 2, k // 2, 4 * ci, co)
    return (_valid_conv_mm if impl == "phase_mm" else _valid_conv)(u, kk)


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


def _phase_kernel_3x3(kernel, taps):
    """``[w, w, Ci, 4 Co]``: the four phases' taps in one window (0 where a phase has none)."""
    w = taps.shape[0]
    _, _, ci, co = kernel.shape
    mask = jnp.asarray(taps >= 0, kernel.dtype)
    t = np.maximum(taps, 0)
    # kp[wy, py, wx, px, ci, co] = kernel[t[wy, py], t[wx, px]] (0 where no tap)
    kp = kernel[t[:, :, None, None], t[None, None, :, :]]
    kp = kp * (mask[:, :, None, None] * mask[None, None, :, :])[..., None, None]
    return kp.transpose(0, 2, 4, 1, 3, 5).reshape(w, w, ci, 4 * co)


def _phase_starts(taps: np.ndarray, a: int) -> list[int]:
    """Per output phase p, the first window row of its a taps (they are contiguous)."""
    starts = []
    for p in range(2):
        rows = np.flatnonzero(taps[:, p] >= 0)
        assert len(rows) == a and rows[-1] - rows[0] == a - 1, taps
        starts.append(int(rows[0]))
    return starts


def conv_transpose_s2(x, kernel, impl: str):
    """Stride-2 "SAME" transposed conv ``[B, H, W, Ci] -> [B, 2H, 2W, Co]`` (no bias),
    equal to ``lax.conv_transpose(x, kernel, (2, 2), "SAME")`` (Flax's ``ConvTranspose``).

    ``phase``: one stride-1 conv whose ``4 Co`` outputs are the four output phases, then
    depth-to-space. For k = 4 the window is 3x3 and tap ``(w, p)`` of the phase kernel is
    ``kernel[t]`` with ``t = [[0, -], [2, 1], [-, 3]][w][p]``; 5 of its 9 taps per phase
    are zero. ``phase2x2`` / ``phase_mm``: each phase reads only its own ``k/2 x k/2`` taps
    (rows ``s_p .. s_p + k/2 - 1`` of that window): one stride-1 ``k/2 x k/2`` conv on the
    ``(H + 1) x (W + 1)`` grid of window starts makes all four, and phase ``(py, px)`` is
    read at start ``(m + s_py, n + s_px)`` (sub-pixel convolution, Shi et al. 2016).
    """
    k, _, ci, co = kernel.shape
    if impl == "lax" or k % 2:
        return lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
    taps, lo = _phase_taps(k)  # [window, 2]
    win = taps.shape[0]
    pads = ((0, 0), (lo, win - 1 - lo), (lo, win - 1 - lo), (0, 0))
    if impl == "phase":
        y = lax.conv_general_dilated(x, _phase_kernel_3x3(kernel, taps), (1, 1), pads[1:3],
                                     dimension_numbers=_DN)
        return depth_to_space(y)
    a = k // 2
    s = _phase_starts(taps, a)
    # kp[i, j, ci, (py, px, co)] = kernel[taps[s_py + i, py], taps[s_px + j, px]]
    t = np.stack([taps[s[p]:s[p] + a, p] for p in range(2)])  # [2 (phase), a]
    kp = kernel[t[:, :, None, None], t[None, None, :, :]]  # [py, i, px, j, ci, co]
    kp = kp.transpose(1, 3, 4, 0, 2, 5).reshape(a, a, ci, 4 * co)
    conv = _valid_conv_mm if impl == "phase_mm" else _valid_conv
    y = conv(jnp.pad(x, pads), kp)  # [B, H + win - a, W + win - a, 4 Co]
    geom = (*s, *x.shape[1:3], *y.shape[1:3])
    return (_phase_gather_mm if impl == "phase_mm" else _phase_gather)(y, geom)


def _phase_gather(y_BxGxVxE, geom: tuple[int, ...]):
    """``[B, G, V, 4 Co] -> [B, 2h, 2w, Co]`` with ``geom = (s0, s1, h, w, G, V)``: output
    ``(2m + py, 2n + px)`` is phase ``(py, px)`` of window start ``(m + s[py], n + s[px])``."""
    s0, s1, h, w, _, _ = geom
    s = (s0, s1)
    b, g, v, e = y_BxGxVxE.shape
    co = e // 4
    y = y_BxGxVxE.reshape(b, g, v, 2, 2, co)
    rows = [jnp.stack([y[:, s[py]:s[py] + h, s[px]:s[px] + w, py, px] for px in range(2)], 3)
            for py in range(2)]  # each [B, h, w, 2 (px), Co]
    return jnp.stack(rows, 2).reshape(b, 2 * h, 2 * w, co)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _phase_gather_mm(y_BxGxVxE, geom):
    """:func:`_phase_gather` whose gradient is one stack of padded phases (autodiff adds
    four zero-padded copies of the whole ``[B, G, V, 4 Co]`` tensor)."""
    return _phase_gather(y_BxGxVxE, geom)


def _phase_gather_fwd(y, geom):
    return _phase_gather(y, geom), None


def _phase_gather_bwd(geom, _, dout_Bx2hx2wxCo):
    s0, s1, h, w, g, v = geom
    s = (s0, s1)
    b, co = dout_Bx2hx2wxCo.shape[0], dout_Bx2hx2wxCo.shape[-1]
    d = dout_Bx2hx2wxCo.reshape(b, h, 2, w, 2, co)
    phases = [jnp.pad(d[:, :, py, :, px], ((0, 0), (s[py], g - h - s[py]),
                                            (s[px], v - w - s[px]), (0, 0)))
              for py in range(2) for px in range(2)]
    return (jnp.stack(phases, 3).reshape(b, g, v, 4 * co),)


_phase_gather_mm.defvjp(_phase_gather_fwd, _phase_gather_bwd)


class _StridedConv(nnx.Module):
    """Kernel ``[k, k, ci, co]`` and bias of a stride-2 "SAME" layer; ``_op`` applies it."""

    _op = None  # conv_s2 or conv_transpose_s2

    def __init__(self, in_features: int, out_features: int, kernel_size: int, *,
                 impl: str = "auto", dtype: str = "float32", rngs: nnx.Rngs):
        self.impl = resolve_conv_impl(impl)
        self.dtype = dtype  # of the conv's inputs and products; the output is float32
        self.kernel = nnx.Param(kernel_init(rngs.params(),
                                            (kernel_size, kernel_size, in_features, out_features)))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,)))

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        y = type(self)._op(x_BxHxWxC.astype(self.dtype), self.kernel[...].astype(self.dtype),
                           self.impl)
        return y.astype(jnp.float32) + self.bias[...]


class Conv(_StridedConv):
    """Stride-2 "SAME" conv with bias; the parameters of ``nnx.Conv(ci, co, k, 2)``."""

    _op = staticmethod(conv_s2)


class ConvTranspose(_StridedConv):
    """Stride-2 "SAME" transposed conv with bias; the parameters of
    ``nnx.ConvTranspose(ci, co, k, 2)`` (kernel ``[k, k, ci, co]``, not flipped)."""

    _op = staticmethod(conv_transpose_s2)


def dense(d_in: int, d_out: int, rngs: nnx.Rngs, dtype: str = "float32") -> nnx.Linear:
    """A TF-initialised Linear with float32 parameters computing in ``dtype``."""
    return nnx.Linear(d_in, d_out, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                      param_dtype=jnp.float32, rngs=rngs)


class Encoder(nnx.Module):
    """disentanglement_lib ``conv_encoder`` up to its 256-d hidden layer.

    ``[B, 64, 64, C] -> f [B, 256]``: Conv(32, 4, s2) -> Conv(32, 4, s2) -> Conv(64, 2, s2)
    -> Conv(64, 2, s2), ReLU each -> flatten 1024 -> Dense 256 ReLU. The mean and
    log-variance heads live in the model, because the hybrid puts its sparse layer
    between this hidden layer and them. ``dtype``: of the convs' and the Dense layer's
    products (``COMPUTE_DTYPES``); f is float32 either way.
    """

    def __init__(self, channels: int, *, hidden: int = 256, impl: str = "auto",
                 dtype: str = "float32", rngs: nnx.Rngs):
        specs = ((channels, 32, 4), (32, 32, 4), (32, 64, 2), (64, 64, 2))
        self.convs = nnx.List([Conv(ci, co, k, impl=impl, dtype=dtype, rngs=rngs)
                               for ci, co, k in specs])
        self.fc = dense(4 * 4 * 64, hidden, rngs, dtype)

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        h = x_BxHxWxC
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
        return jax.nn.relu(self.fc(h.reshape(h.shape[0], -1))).astype(jnp.float32)


class Decoder(nnx.Module):
    """disentanglement_lib ``deconv_decoder``: ``z [B, L] -> logits [B, 64, 64, C]``.

    Dense 256 ReLU -> Dense 1024 ReLU -> reshape [4, 4, 64] -> ConvT(64, 4, s2) ->
    ConvT(32, 4, s2) -> ConvT(32, 4, s2) (ReLU each) -> ConvT(C, 4, s2): Bernoulli logits,
    float32 whatever the compute ``dtype`` of the layers.
    """

    def __init__(self, num_latents: int, channels: int, *, impl: str = "auto",
                 dtype: str = "float32", rngs: nnx.Rngs):
        self.fc1 = dense(num_latents, 256, rngs, dtype)
        self.fc2 = dense(256, 1024, rngs, dtype)
        specs = ((64, 64), (64, 32), (32, 32), (32, channels))
        self.deconvs = nnx.List([ConvTranspose(ci, co, 4, impl=impl, dtype=dtype, rngs=rngs)
                                 for ci, co in specs])

    def __call__(self, z_BxL: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.fc2(jax.nn.relu(self.fc1(z_BxL))))
        h = h.reshape(-1, 4, 4, 64)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if i < len(self.deconvs) - 1:
                h = jax.nn.relu(h)
        return h
