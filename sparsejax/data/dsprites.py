"""dSprites: 2D sprites (square, ellipse, heart) on a 64x64 binary canvas.

The factor grid is the real dataset's with colour dropped (as disentanglement_lib's
``dsprites_full``): shape 3, scale 6 (0.5 .. 1), orientation 40 (0 .. 2 pi, both ends
included), x position 32 and y position 32 (0 .. 1), y fastest.

:func:`render` is a pure JAX function (jit-able, vmap-able, no host callbacks). It
rasterises the way the original was made: vector shapes drawn with LOVE (Love2D) and
rasterised at 64x64 without anti-aliasing (deepmind/dsprites-dataset issues #2 and #3),
so a pixel is on when its centre lies inside the shape. We evaluate implicit-shape tests
at the pixel centres; the output is binary {0, 1} like the original.

Geometry (pixels; x to the right, y downwards as in LOVE; pixel ``(row i, col j)`` has
its centre at ``(x, y) = (j + 0.5, i + 0.5)``):

- position: the sprite centre is at ``16.36 + 31 v`` px on each axis for a position value
  ``v`` in [0, 1] (y = 0 at the top): exactly 1 px per step, so the 32 positions are exact
  translates of one another. The centre runs over [16.4, 47.4] (the middle half of the
  canvas) and a scale-1 sprite at any angle stays inside the canvas.
- size: one sprite unit is ``SPRITE_PX = 20.5`` px at scale 1. With the shapes below this
  makes the mean pixel value over the full grid 0.0442; the real dataset's is 0.0425
  (0.04249, a normalisation constant published in a public repository), which is how we
  sized the sprites. One scale step grows a square's side by 2.05 px, so every scale step
  changes the image.
- square: side 1 unit (20.5 px at scale 1, a third of the canvas).
- ellipse: semi-axes 0.6 x 0.3 units (aspect 2:1), major axis along x at orientation 0.
- heart: a square standing on a corner with a half-disc on each of its two upper edges,
  point down at orientation 0, 1 unit wide; area ``(1 + pi / 4) side^2``.
- every shape is placed and rotated about its area centroid, so the centroid of the lit
  pixels tracks the position mapping for all three shapes.
- orientation: rotation about the centre, clockwise on screen (positive in LOVE's
  y-down frame).
- sub-pixel phase: the 0.36 px fraction of the centre offset was picked by a scan. With
  the centre on a lattice symmetry (phase 0 or 0.5 px), a square at angle a and one at
  a + 90 deg +- 2.3 deg rasterise to the same pixels; phases in [0.32, 0.39] px give no
  such coincidence at this size, and 0.36 keeps every axis-aligned edge at least 0.01 px
  from a pixel centre, so float rounding cannot flip those pixels.

Unknown about the original (its generator is not public): the pixel range of
positions, the sprite size in pixels, the ellipse aspect, the heart outline, the
direction of rotation and the heart's orientation at angle 0. The choices above match
the published images in kind (sprite sizes, placement, binary edges), not pixel for pixel.

Symmetries: orientations are ``k * 2 pi / 39``, so index 0 and 39 are the same angle
(the renderer wraps 39 to exactly 0) and give identical images for every shape. Two
orientations ``k, m`` are the same square (period pi / 2) only if ``4 (k - m)`` is a
multiple of 39, and the same ellipse (period pi) only if ``2 (k - m)`` is; 39 is odd and
coprime to 4, so no other pair coincides on the 40-step grid. The nearest misses are
2.3 deg apart modulo the symmetry for squares and 4.6 deg for ellipses. At these sizes a
binary raster need not tell such angles apart (nothing guarantees it for the original
either), but ours does: over the full grid of 737,280 tuples, the renderer gives
718,848 distinct images, exactly 737,280 minus the 18,432 pairs (orientation 0, 39).
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
SPRITE_PX = 20.5  # one sprite unit at scale 1, px
CENTRE_LO, CENTRE_SPAN = 16.36, 31.0  # centre_px = CENTRE_LO + CENTRE_SPAN * v: 1 px steps
ELLIPSE_AXES = (0.6, 0.3)  # semi-axes (along x, along y) in sprite units
# Heart: a square standing on a corner with a half-disc on each upper edge (the classic
# construction), 1 unit wide. Its area and centroid are closed-form.
HEART_SIDE = 1.0 / (1.0 + 1.0 / math.sqrt(2))  # side of the square, units
HEART_R, HEART_C = HEART_SIDE / 2, HEART_SIDE / (2 * math.sqrt(2))  # disc radius, centre offset
HEART_AREA = HEART_SIDE**2 * (1 + math.pi / 4)  # units^2
# Centroid height above the square's centre: the two half-discs' moment over the area.
HEART_CY = (math.pi * HEART_R**2 * (HEART_C + 4 * HEART_R / (3 * math.pi * math.sqrt(2)))
            / HEART_AREA)


def sprite_centre(x_position, y_position):
    """Centre of the sprite in pixels, ``(x, y)``, for position values in [0, 1]."""
    return CENTRE_LO + CENTRE_SPAN * x_position, CENTRE_LO + CENTRE_SPAN * y_position


def _inside(shape_N, u_NxHxW, v_NxHxW):
    """Whether sprite-frame points ``(u, v)`` (sprite units, y down) lie in the shape."""
    square = jnp.maximum(jnp.abs(u_NxHxW), jnp.abs(v_NxHxW)) <= 0.5
    a, b = ELLIPSE_AXES
    ellipse = (u_NxHxW / a) ** 2 + (v_NxHxW / b) ** 2 <= 1.0
    hx = jnp.abs(u_NxHxW)  # heart frame: y up, origin at the square's centre; mirror-symmetric
    hy = HEART_CY - v_NxHxW
    heart = (hx + jnp.abs(hy) <= HEART_SIDE / math.sqrt(2)) | (
        (hx - HEART_C) ** 2 + (hy - HEART_C) ** 2 <= HEART_R**2)
    s = shape_N[:, None, None]
    return jnp.where(s == 0, square, jnp.where(s == 1, ellipse, heart))


def render(factors_NxF: jax.Array) -> jax.Array:
    """Binary dSprites images for factor class indices: :func:`render_masks` as float32
    ``[N, 64, 64, 1]``.

    Args:
      factors_NxF: int ``[N, 5]`` class indices in the order of ``SPACE.names``
        (shape, scale, orientation, x_position, y_position). Out-of-range values are
        clipped (validate on the host first: ``SPACE.validate``).

    Returns:
      float32 ``[N, 64, 64, 1]`` with values in {0, 1}.
    """
    return render_masks(factors_NxF).astype(jnp.float32)[..., None]


def render_masks(factors_NxF: jax.Array) -> jax.Array:
    """The sprite's pixels, bool ``[N, 64, 64]`` (the ground truth of attribution; the image
    is this mask). Same arguments as :func:`render`; jit-able."""
    f_NxF = jnp.clip(jnp.asarray(factors_NxF).astype(jnp.int32), 0,
                     jnp.asarray(SPACE.sizes, jnp.int32) - 1)
    shape_N, scale_i, orient_i, x_i, y_i = f_NxF.T
    px_N = jnp.asarray(SCALES, jnp.float32)[scale_i] * SPRITE_PX  # sprite unit, px
    # Index 39 is 2 pi: wrap it to exactly 0 so that 0 and 39 rasterise identically (in
    # float32, sin(2 pi) = 1.7e-7 would flip pixels whose centres lie on an edge).
    steps = SPACE.sizes[2] - 1
    th_N = (2 * np.pi / steps) * (orient_i % steps).astype(jnp.float32)
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
    return _inside(shape_N, u_NxHxW, v_NxHxW)


def sprite_area_px(shape: int, scale: float) -> float:
    """Analytic area of a sprite in px^2 (the reference the rasterised pixel count tracks)."""
    unit = scale * SPRITE_PX  # px per sprite unit
    if SHAPES[shape] == "square":
        return unit**2
    if SHAPES[shape] == "ellipse":
        return math.pi * ELLIPSE_AXES[0] * ELLIPSE_AXES[1] * unit**2
    return HEART_AREA * unit**2

