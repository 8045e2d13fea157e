"""The procedural renderers: contracts (shape, dtype, jit, vmap), factor coverage,
symmetries, and agreement with independent geometric references."""

import colorsys
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.data import dsprites, shapes3d

MODULES = {"dsprites": dsprites}
render_jit = {name: jax.jit(m.render) for name, m in MODULES.items()}


def sample(module, rng, n):
    """n uniform factor tuples drawn with numpy: int32 [n, F]."""
    return np.stack([rng.integers(0, s, n) for s in module.SPACE.sizes], -1).astype(np.int32)


def images(name, factors):
    return np.asarray(render_jit[name](jnp.asarray(factors, jnp.int32)))


def fingerprints(imgs):
    """One bytes key per image (exact equality of float32 pixels)."""
    flat = np.ascontiguousarray(imgs.reshape(len(imgs), -1))
    return [row.tobytes() for row in flat]


# -- contracts -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODULES)
def test_shape_dtype_range(name, rng):
    m = MODULES[name]
    x = render_jit[name](jnp.asarray(sample(m, rng, 32)))
    chex.assert_shape(x, (32, *m.OBSERVATION_SHAPE))
    chex.assert_type(x, jnp.float32)
    chex.assert_tree_all_finite(x)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("name", MODULES)
def test_jit_matches_eager_and_vmap_matches_batch(name, rng):
    m = MODULES[name]
    f = jnp.asarray(sample(m, rng, 12))
    batched = render_jit[name](f)
    chex.assert_trees_all_close(m.render(f), batched, atol=1e-6)
    stacked = jax.jit(jax.vmap(m.render))(f.reshape(3, 4, -1))
    chex.assert_trees_all_close(stacked.reshape(batched.shape), batched, atol=1e-6)


@pytest.mark.parametrize("name", MODULES)
def test_deterministic(name, rng):
    m = MODULES[name]
    f = sample(m, rng, 16)
    np.testing.assert_array_equal(images(name, f), images(name, f.copy()))


@pytest.mark.parametrize("name", MODULES)
def test_out_of_range_is_clipped_inside_jit(name, rng):
    m = MODULES[name]
    f = sample(m, rng, 4)
    wild = f.copy()
    wild[0] = -3
    wild[1] = np.asarray(m.SPACE.sizes) + 5
    clipped = np.clip(wild, 0, np.asarray(m.SPACE.sizes) - 1)
    np.testing.assert_array_equal(images(name, wild), images(name, clipped))


@pytest.mark.parametrize("name", MODULES)
def test_value_tables_match_the_grid(name):
    m = MODULES[name]
    assert list(m.VALUES) == list(m.SPACE.names)
    assert [len(v) for v in m.VALUES.values()] == list(m.SPACE.sizes)


# -- every factor matters, everywhere -----------------------------------------------------
@pytest.mark.parametrize("name", MODULES)
def test_every_adjacent_factor_step_changes_the_image(name, rng):
    """For a few random base tuples, sweep each factor over its whole range: every step
    to the next value changes the image."""
    m = MODULES[name]
    sweeps = []
    for base in sample(m, rng, 3):
        for j, n in enumerate(m.SPACE.sizes):
            f = np.tile(base, (n, 1))
            f[:, j] = np.arange(n)
            sweeps.append((j, f))
    imgs = images(name, np.concatenate([f for _, f in sweeps]))
    start = 0
    for j, f in sweeps:
        x = imgs[start:start + len(f)]
        start += len(f)
        same = np.all(x[1:] == x[:-1], axis=(1, 2, 3))
        assert not same.any(), (f"{m.SPACE.names[j]}: values {np.nonzero(same)[0]} and the next "
                                f"give identical images (others fixed at {f[0].tolist()})")


def _canonical(name, f):
    """Factor tuples modulo the documented symmetries."""
    f = f.copy()
    if name == "dsprites":
        f[:, 2] %= dsprites.SPACE.sizes[2] - 1  # orientation 39 is 2 pi == 0
    return f


@pytest.mark.parametrize("name", MODULES)
def test_distinct_tuples_give_distinct_images(name, rng):
    m = MODULES[name]
    f = np.unique(_canonical(name, sample(m, rng, 3000)), axis=0)
    keys = fingerprints(images(name, f))
    assert len(set(keys)) == len(keys), f"{len(keys) - len(set(keys))} repeated images"


# -- dSprites ------------------------------------------------------------------------------
def test_dsprites_is_binary(rng):
    x = images("dsprites", sample(dsprites, rng, 64))
    assert set(np.unique(x).tolist()) <= {0.0, 1.0}
    assert (x.sum(axis=(1, 2, 3)) > 0).all()


def test_dsprites_orientation_ends_coincide(rng):
    f0 = sample(dsprites, rng, 32)
    f0[:, 2] = 0
    f39 = f0.copy()
    f39[:, 2] = 39
    np.testing.assert_array_equal(images("dsprites", f0), images("dsprites", f39))


def test_dsprites_centroid_follows_the_position_mapping(rng):
    """The lit pixels' centroid is the sprite centre (every shape is centred on its own
    area centroid), to within half a pixel on each axis."""
    f = sample(dsprites, rng, 300)
    x = images("dsprites", f)[..., 0]
    centres = np.arange(64) + 0.5
    count = x.sum(axis=(1, 2))
    cx = (x.sum(axis=1) * centres).sum(1) / count
    cy = (x.sum(axis=2) * centres).sum(1) / count
    ex, ey = dsprites.sprite_centre(dsprites.POSITIONS[f[:, 3]], dsprites.POSITIONS[f[:, 4]])
    np.testing.assert_array_less(np.abs(cx - ex), 0.5 + 1e-4)
    np.testing.assert_array_less(np.abs(cy - ey), 0.5 + 1e-4)
    # The mapping itself: 1 px steps, centred on the canvas to within half a pixel.
    grid, _ = dsprites.sprite_centre(dsprites.POSITIONS, dsprites.POSITIONS)
    np.testing.assert_allclose(np.diff(grid), 1.0, rtol=1e-9)
    assert abs(grid.mean() - 32.0) < 0.5


def test_dsprites_axis_aligned_square_is_the_pixel_box(rng):
    """At orientation 0 a square lights exactly the pixel centres inside its box."""
    f = sample(dsprites, rng, 40)
    f[:, 0], f[:, 2] = 0, 0
    x = images("dsprites", f)[..., 0]
    centres = np.arange(64) + 0.5
    for img, (_, k, _, i, j) in zip(x, f):
        half = dsprites.SCALES[k] * dsprites.SPRITE_PX / 2
        cx, cy = dsprites.sprite_centre(dsprites.POSITIONS[i], dsprites.POSITIONS[j])
        box = (np.abs(centres[:, None] - cy) <= half) & (np.abs(centres[None, :] - cx) <= half)
        np.testing.assert_array_equal(img, box.astype(np.float32))


@pytest.mark.parametrize("shape", range(3))
def test_dsprites_area_matches_the_analytic_area(shape, rng):
    """Pixel-centre sampling of a convex shape with area A and perimeter P lights between
    A - P r and A + P r + pi r^2 pixels, r = sqrt(2) / 2 (half a pixel diagonal)."""
    f = sample(dsprites, rng, 200)
    f[:, 0] = shape
    count = images("dsprites", f).sum(axis=(1, 2, 3))
    unit = dsprites.SCALES[f[:, 1]] * dsprites.SPRITE_PX
    if shape == 0:
        area, perimeter = unit**2, 4 * unit
    elif shape == 1:
        a, b = (np.asarray(dsprites.ELLIPSE_AXES)[:, None] * unit)
        area = math.pi * a * b
        perimeter = math.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan
    else:
        side = dsprites.HEART_SIDE * unit
        area, perimeter = dsprites.HEART_AREA * unit**2, (2 + math.pi) * side
    np.testing.assert_allclose(area, [dsprites.sprite_area_px(shape, dsprites.SCALES[k])
                                      for k in f[:, 1]], rtol=1e-12)
    r = math.sqrt(2) / 2
    assert (count >= area - perimeter * r).all() and (count <= area + perimeter * r + math.pi * r**2).all()


def test_dsprites_heart_constants_by_integration():
    """Area and centroid of the heart, integrated on a fine grid (independent of the
    closed forms in the module)."""
    g = np.linspace(-0.8, 0.8, 4001)
    hx, hy = np.meshgrid(np.abs(g), g)  # heart frame, y up, origin at the square's centre
    s, c, r = dsprites.HEART_SIDE, dsprites.HEART_C, dsprites.HEART_R
    inside = (hx + np.abs(hy) <= s / math.sqrt(2)) | ((hx - c) ** 2 + (hy - c) ** 2 <= r**2)
    da = (g[1] - g[0]) ** 2
    np.testing.assert_allclose(inside.sum() * da, dsprites.HEART_AREA, rtol=2e-3)
    np.testing.assert_allclose(hy[inside].mean(), dsprites.HEART_CY, atol=2e-3)
    np.testing.assert_allclose(np.ptp(np.where(inside, np.meshgrid(g, g)[0], 0)), 1.0, atol=2e-3)
