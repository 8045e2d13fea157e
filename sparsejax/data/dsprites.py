"""dSprites: 2D sprites (square, ellipse, heart) on a 64x64 binary canvas.

The factor grid is the real dataset's with colour dropped (as disentanglement_lib's
``dsprites_full``): shape 3, scale 6 (0.5 .. 1), orientation 40 (0 .. 2 pi, both ends
included), x position 32 and y position 32 (0 .. 1), y fastest.

:func:`render` is a pure JAX function (jit-able, vmap-able, no host callbacks) that
rasterises the sprites the way the original was made: the original was drawn as
vector shapes with LOVE (Love2D) on a canvas of normalised size 1 and rasterised to
64x64 without anti-aliasing (deepmind/dsprites-dataset issues #2 and #3), i.e. a pixel
is on when its centre is inside the shape. We do exactly that with implicit-shape
tests at the pixel centres, so the output is binary {0, 1} like the original.

Geometry (canvas coordinates in pixels, x to the right, y downwards as in LOVE; pixel
``(row i, col j)`` has its centre at ``(x, y) = (j + 0.5, i + 0.5)``):

- position: the sprite's centre is at ``64 * (0.2 + 0.6 * v)`` for a position value
  ``v`` in [0, 1], on both axes (y = 0 is the top). Steps of 1.24 px, so every one of the
  32 positions moves the sprite by at least one pixel, and a scale-1 sprite at any
  orientation stays inside the canvas. ``CENTRE_LO``/``CENTRE_SPAN`` hold these numbers.
- size: one sprite unit is ``SPRITE_PX = 0.22 * 64 = 14.08`` px at scale 1, so a scale-1
  square is 14.1 px wide (a fifth to a quarter of the canvas) and a scale-0.5 one 7 px.
- square: side 1 unit. Ellipse: semi-axes 0.5 x 0.25 units (aspect 2:1, major axis along
  x at orientation 0). Heart: the implicit heart ``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0``,
  point down at orientation 0, scaled to a width of 1 unit and shifted so that its area
  centroid is the sprite centre.
- orientation: rotation by the angle about the sprite centre, clockwise on screen
  (a positive rotation in LOVE's y-down frame).

The centre of every shape is its area centroid, so the centroid of the lit pixels
tracks the position mapping for all three shapes.

Unknown about the original (its generator is not public): the pixel range of
positions, the sprite size in pixels, the ellipse aspect, the heart outline, the
direction of rotation and the heart's upright orientation. The choices above match
the published images in kind (sprite sizes and placement) but not pixel for pixel.

Symmetries: orientations are ``k * 2 pi / 39``, so index 0 and 39 are the same angle and
give identical images for every shape. Apart from that, two orientations ``k, m`` give
the same square (period pi/2) only if ``4 (k - m)`` is a multiple of 39, and the same
ellipse (period pi) only if ``2 (k - m)`` is; 39 is odd and coprime to 4, so on the
40-step grid no other pair coincides exactly. The closest non-identical pairs are 2.3
degrees apart modulo the symmetry for squares (``360 / 39 / 4``) and 4.6 degrees for
ellipses (``360 / 39 / 2``), which still rasterise differently at these sizes (checked
over the whole grid; see ``tests/data/test_procedural.py``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.data.factors import FactorSpace

SPACE = FactorSpace(
    names=("shape", "scale", "orientation", "x_position", "y_position"),
    sizes=(3, 6, 40, 32, 32),
)
OBSERVATION_SHAPE = (64, 64, 1)

SHAPES = ("square", "ellipse", "heart")
# Factor value tables: class index -> physical value (the real dataset's latents_values).
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)  # radians; 0 and 2 pi both included
POSITIONS = np.linspace(0.0, 1.0, 32)
VALUES = {"shape": np.arange(3, dtype=np.float64), "scale": SCALES,
          "orientation": ORIENTATIONS, "x_position": POSITIONS, "y_position": POSITIONS}

SIZE = OBSERVATION_SHAPE[0]  # canvas side, px
SPRITE_PX = 0.22 * SIZE  # one sprite unit at scale 1, px
CENTRE_LO, CENTRE_SPAN = 0.2 * SIZE, 0.6 * SIZE  # centre_px = CENTRE_LO + CENTRE_SPAN * v
ELLIPSE_AXES = (0.5, 0.25)  # semi-axes (along x, along y) in sprite units
# The implicit heart (x^2 + y^2 - 1)^3 <= x^2 y^3 (y up) is 2 * 1.13841 wide and has its
# area centroid at y = 0.29347 and area 3.66196 (measured numerically; checked in the tests).
HEART_WIDTH, HEART_CENTROID_Y, HEART_AREA = 2 * 1.13841, 0.29347, 3.66196


def sprite_centre(x_position, y_position):
    """Centre of the sprite in pixels, ``(x, y)``, for position values in [0, 1]."""
    return CENTRE_LO + CENTRE_SPAN * x_position, CENTRE_LO + CENTRE_SPAN * y_position


def _inside(shape_N, u_NxHxW, v_NxHxW):
    """Whether sprite-frame points ``(u, v)`` (sprite units, y down) lie in the shape."""
    square = jnp.maximum(jnp.abs(u_NxHxW), jnp.abs(v_NxHxW)) <= 0.5
    a, b = ELLIPSE_AXES
    ellipse = (u_NxHxW / a) ** 2 + (v_NxHxW / b) ** 2 <= 1.0
    hx = u_NxHxW * HEART_WIDTH  # heart frame: y up, origin at the curve's own centre
    hy = HEART_CENTROID_Y - v_NxHxW * HEART_WIDTH
    heart = (hx**2 + hy**2 - 1.0) ** 3 <= hx**2 * hy**3
    s = shape_N[:, None, None]
    return jnp.where(s == 0, square, jnp.where(s == 1, ellipse, heart))


def render(factors_NxF: jax.Array) -> jax.Array:
    """Binary dSprites images for factor class indices.

    Args:
      factors_NxF: int ``[N, 5]`` class indices in the order of ``SPACE.names``
        (shape, scale, orientation, x_position, y_position). Out-of-range values are
        clipped (validate on the host first: ``SPACE.validate``).

    Returns:
      float32 ``[N, 64, 64, 1]`` with values in {0, 1}.
    """
    f_NxF = jnp.clip(jnp.asarray(factors_NxF).astype(jnp.int32), 0,
                     jnp.asarray(SPACE.sizes, jnp.int32) - 1)
    shape_N, scale_i, orient_i, x_i, y_i = f_NxF.T
    px_N = jnp.asarray(SCALES, jnp.float32)[scale_i] * SPRITE_PX  # sprite unit, px
    th_N = jnp.asarray(ORIENTATIONS, jnp.float32)[orient_i]
    cx_N, cy_N = sprite_centre(jnp.asarray(POSITIONS, jnp.float32)[x_i],
                               jnp.asarray(POSITIONS, jnp.float32)[y_i])

    centres_W = jnp.arange(SIZE, dtype=jnp.float32) + 0.5  # pixel centres, px
    dx_NxHxW = centres_W[None, None, :] - cx_N[:, None, None]
    dy_NxHxW = centres_W[None, :, None] - cy_N[:, None, None]
    # Undo the sprite's rotation: rotate the pixel offsets by -theta into the sprite frame.
    c_N, s_N = jnp.cos(th_N)[:, None, None], jnp.sin(th_N)[:, None, None]
    inv_N = (1.0 / px_N)[:, None, None]
    u_NxHxW = (c_N * dx_NxHxW + s_N * dy_NxHxW) * inv_N
    v_NxHxW = (c_N * dy_NxHxW - s_N * dx_NxHxW) * inv_N
    return _inside(shape_N, u_NxHxW, v_NxHxW).astype(jnp.float32)[..., None]


def sprite_area_px(shape: int, scale: float) -> float:
    """Analytic area of a sprite in px^2 (a reference for tests; heart from its constant)."""
    side = scale * SPRITE_PX
    if SHAPES[shape] == "square":
        return side**2
    if SHAPES[shape] == "ellipse":
        return math.pi * ELLIPSE_AXES[0] * ELLIPSE_AXES[1] * side**2
    return HEART_AREA * (side / HEART_WIDTH) ** 2

