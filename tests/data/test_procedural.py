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

MODULES = {"dsprites": dsprites, "shapes3d": shapes3d}
render_jit = {}  # name -> the jitted renderer that images() runs


@pytest.fixture(scope="module", autouse=True)
def _compile_renderers(optimized):
    # these tests render thousands of images: with LLVM's optimisations (tests/conftest.py)
    render_jit.update({name: jax.jit(m.render, compiler_options=optimized)
                       for name, m in MODULES.items()})


def sample(module, rng, n):
    """n uniform factor tuples drawn with numpy: int32 [n, F]."""
    return np.stack([rng.integers(0, s, n) for s in module.SPACE.sizes], -1).astype(np.int32)


CHUNK = 128  # images() renders in chunks of this many rows: one compile per renderer


def images(name, factors):
    """The jitted render of int factors [n, F] as numpy, in zero-padded chunks of CHUNK
    rows (every image is rendered on its own, so the padding changes no other image; one
    batch shape means one compiled program per renderer instead of one per test size)."""
    f = np.asarray(factors, np.int32).reshape(-1, len(MODULES[name].SPACE.sizes))
    n = len(f)
    f = np.concatenate([f, np.zeros((-n % CHUNK, f.shape[1]), np.int32)])
    return np.concatenate([np.asarray(render_jit[name](f[i:i + CHUNK]))
                           for i in range(0, len(f), CHUNK)])[:n]


def fingerprints(imgs):
    """One bytes key per image (exact equality of float32 pixels)."""
    flat = np.ascontiguousarray(imgs.reshape(len(imgs), -1))
    return [row.tobytes() for row in flat]


# -- contracts -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODULES)
def test_shape_dtype_range(name, rng):
    m = MODULES[name]
    x = images(name, sample(m, rng, 32))
    chex.assert_shape(x, (32, *m.OBSERVATION_SHAPE))
    chex.assert_type(x, jnp.float32)
    chex.assert_tree_all_finite(x)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("name", MODULES)
def test_jit_matches_eager_and_vmap_matches_batch(name, rng):
    m = MODULES[name]
    f = jnp.asarray(sample(m, rng, CHUNK))
    # compiled like the eager ops, under the session's flags: the optimised render_jit may
    # round Shapes3D's shading differently (up to 3e-4 on 0.02% of pixels, seen on a CPU)
    batched = jax.jit(m.render)(f)
    # dSprites is binary, so exact; Shapes3D's float32 shading may round a few ulp apart
    # where eager and fused code differ (seen on a GPU: 6e-6).
    atol = 0.0 if name == "dsprites" else 1e-5
    chex.assert_trees_all_close(m.render(f), batched, atol=atol, rtol=0.0)
    stacked = jax.jit(jax.vmap(m.render))(f.reshape(4, CHUNK // 4, -1))
    chex.assert_trees_all_close(stacked.reshape(batched.shape), batched, atol=atol, rtol=0.0)


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


def test_dsprites_position_steps_are_one_pixel_translations(rng):
    """Moving one step in x (y) shifts the image by exactly one column (row)."""
    f = sample(dsprites, rng, 16)
    f[:, 3:] = np.minimum(f[:, 3:], 30)
    fx, fy = f.copy(), f.copy()
    fx[:, 3] += 1
    fy[:, 4] += 1
    x, x_right, x_down = (images("dsprites", g) for g in (f, fx, fy))
    np.testing.assert_array_equal(np.roll(x, 1, axis=2), x_right)
    np.testing.assert_array_equal(np.roll(x, 1, axis=1), x_down)


def test_dsprites_all_shapes_scales_orientations_distinct():
    """Every (shape, scale, orientation) at one position gives its own image, apart from
    orientation 39 == 0. Positions are exact translates, so this covers the full grid."""
    f = np.stack(np.meshgrid(range(3), range(6), range(39), [16], [16], indexing="ij"), -1)
    keys = fingerprints(images("dsprites", f.reshape(-1, 5)))
    assert len(set(keys)) == len(keys) == 3 * 6 * 39


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
    assert (count >= area - perimeter * r).all()
    assert (count <= area + perimeter * r + math.pi * r**2).all()


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


# -- Shapes3D ------------------------------------------------------------------------------
def _hsv(hue):
    return np.asarray(colorsys.hsv_to_rgb(hue, 1.0, 1.0))


def _lambert(normal):
    return shapes3d.AMBIENT + shapes3d.DIFFUSE * max(0.0, float(np.dot(normal, shapes3d.LIGHT)))


def test_shapes3d_hsv_matches_colorsys():
    hue = np.linspace(0.0, 0.999, 101, dtype=np.float32)
    got = np.stack([np.asarray(c) for c in jax.jit(shapes3d.hsv_to_rgb)(hue)], -1)
    np.testing.assert_allclose(got, [_hsv(h) for h in hue.astype(float)], atol=1e-5)


def test_shapes3d_floor_and_wall_pixels_have_the_exact_plane_colour(rng):
    """The bottom-centre pixel sees the floor in front of the object and the top-centre
    pixel the back wall, for every camera azimuth; both are lit, outside the shadow."""
    f = sample(shapes3d, rng, 64)
    x = images("shapes3d", f)
    floor = np.stack([_hsv(shapes3d.HUES[i]) for i in f[:, 0]]) * _lambert((0.0, 1.0, 0.0))
    wall = np.stack([_hsv(shapes3d.HUES[i]) for i in f[:, 1]]) * _lambert((0.0, 0.0, 1.0))
    np.testing.assert_allclose(x[:, 63, 32], floor, atol=1e-5)
    np.testing.assert_allclose(x[:, 0, 32], wall, atol=1e-5)
    np.testing.assert_allclose(shapes3d.PLANE_SHADE[:2], [_lambert((0, 1, 0)), _lambert((0, 0, 1))])


def test_shapes3d_object_pixel_has_the_object_hue(rng):
    """Pixel (36, 32) is on the object for every shape, scale and azimuth; shading scales
    the object's colour, so its hue and full saturation survive."""
    f = sample(shapes3d, rng, 64)
    x = images("shapes3d", f)[:, 36, 32]
    for rgb, k in zip(x, f[:, 2]):
        h, s, v = colorsys.rgb_to_hsv(*rgb.astype(float))
        dh = abs(h - shapes3d.HUES[k])
        assert min(dh, 1 - dh) < 1e-4 and s > 1 - 1e-4, (rgb, shapes3d.HUES[k])
        assert shapes3d.AMBIENT - 1e-5 <= v <= 1 + 1e-5


def test_shapes3d_every_geometry_is_distinct():
    """All 480 (scale, shape, orientation) tuples with the hues fixed give distinct images
    (the hues colour separate surfaces, so this covers the full grid); a sphere seen from
    any two azimuths differs because the room turns behind it."""
    f = np.stack(np.meshgrid([0], [3], [6], range(8), range(4), range(15), indexing="ij"), -1)
    x = images("shapes3d", f.reshape(-1, 6))
    keys = fingerprints(x)
    assert len(set(keys)) == len(keys) == 480
    spheres = x.reshape(8, 4, 15, -1)[:, 2]
    changed = (np.abs(spheres[:, 1:] - spheres[:, :-1]) > 1 / 255).sum(-1)
    assert changed.min() > 50  # pixels, out of 64 * 64 * 3
