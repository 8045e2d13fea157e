"""Shapes3D: one object in a room, seen from a camera at a varying azimuth, 64x64 RGB.

Factors in the real dataset's storage order (orientation fastest): floor hue 10,
wall hue 10, object hue 10 (0.0, 0.1 .. 0.9), scale 8 (0.75 .. 1.25), shape 4 (cube,
cylinder, sphere, capsule), orientation 15 (camera azimuth -30 .. 30 degrees).

:func:`render` is a small analytic ray caster in pure JAX (jit-able, vmap-able, no host
callbacks): one primary ray per sub-pixel, closed-form intersections with the planes of
the room and with the object, the closest hit wins, Lambert + ambient shading under one
directional light, and a hard shadow of the object on the floor and walls (softened by
the supersampling).

Scene (world units, y up; the object stands on the floor at the origin):

- room: floor ``y = 0``, back wall ``z = -ROOM_BACK``, side walls ``x = -ROOM_SIDE`` and
  ``x = +ROOM_SIDE``. The floor takes the floor hue, every wall the wall hue.
- object, for scale ``s`` and half-width ``a = OBJECT_SIZE * s``: cube
  ``[-a, a] x [0, 2a] x [-a, a]``; cylinder of radius ``a`` and height ``2a`` (vertical
  axis); sphere of radius ``a`` resting on the floor; capsule of radius ``0.75 a`` and
  height ``2.6 a`` standing upright. It takes the object hue and never rotates.
- camera: orbits the object at distance ``CAMERA_DISTANCE``, elevation
  ``CAMERA_ELEVATION`` degrees and azimuth = the orientation factor (0 faces the back wall
  from +z; positive azimuth moves the camera towards +x, image right), aimed at
  ``(0, CAMERA_TARGET_Y, 0)``; pinhole, vertical field of view ``CAMERA_FOV`` degrees.
  The object stays centred while the room turns behind it: the wall corners move across
  the image, so even a sphere looks different at every orientation.
- light: one directional light from ``LIGHT`` (up, left and towards the camera), so the
  object's shadow falls behind it to the right.
- colour: HSV ``(hue, 1, 1)`` -> RGB, times the shading factor
  ``AMBIENT + DIFFUSE * max(0, n . LIGHT)`` of the surface normal ``n`` (``AMBIENT`` alone
  in the object's shadow). The planes have constant normals, so each has one exact
  shading factor, :data:`PLANE_SHADE` (floor, back wall, left wall, right wall).
- anti-aliasing: ``SUPERSAMPLE x SUPERSAMPLE`` rays per pixel, box-filtered. Pixels whose
  sub-pixels all see one plane outside the shadow have exactly that plane's colour.

The real dataset was rendered with MuJoCo by a renderer that is not public; its exact
camera, room size, lighting, object sizes and shadowing are unknown. The layout above
reproduces the look (floor in the lower part of the image, walls behind, corner lines
moving with the azimuth, the object centred), not the pixels. No factor tuples repeat:
hues are distinct colours, and the camera azimuth moves the room even for the
rotation-symmetric shapes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.data.factors import FactorSpace

SPACE = FactorSpace(
    names=("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    sizes=(10, 10, 10, 8, 4, 15),
)
OBSERVATION_SHAPE = (64, 64, 3)

SHAPES = ("cube", "cylinder", "sphere", "capsule")
# Factor value tables: class index -> physical value (the real dataset's labels).
HUES = np.linspace(0.0, 0.9, 10)
SCALES = np.linspace(0.75, 1.25, 8)
AZIMUTHS = np.linspace(-30.0, 30.0, 15)  # degrees
VALUES = {"floor_hue": HUES, "wall_hue": HUES, "object_hue": HUES, "scale": SCALES,
          "shape": np.arange(4, dtype=np.float64), "orientation": AZIMUTHS}

# Scene, in world units (the object's half-width at scale 1 is OBJECT_SIZE).
ROOM_BACK, ROOM_SIDE = 3.5, 3.2
OBJECT_SIZE = 0.6
CAPSULE_RADIUS, CAPSULE_HEIGHT = 0.75, 2.6  # in units of the half-width a
CAMERA_DISTANCE, CAMERA_ELEVATION, CAMERA_TARGET_Y, CAMERA_FOV = 5.0, 16.0, 0.9, 40.0
LIGHT = tuple(float(c) for c in np.array([-0.4, 1.0, 0.6]) / np.linalg.norm([-0.4, 1.0, 0.6]))
AMBIENT, DIFFUSE = 0.45, 0.55  # shading = AMBIENT + DIFFUSE * max(0, n . LIGHT)
SUPERSAMPLE = 2  # rays per pixel along each axis
CPU_BLOCK = 8  # images per block when rendering on a CPU (see _render_blocked)
# Floor, back wall, left wall, right wall: inward normals and their exact shading factors.
PLANE_NORMALS = ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0))
PLANE_SHADE = tuple(AMBIENT + DIFFUSE * max(0.0, float(np.dot(n, LIGHT))) for n in PLANE_NORMALS)

_EPS = 1e-4  # minimum hit distance, world units (keeps shadow rays off their own surface)
_INF = float("inf")

# Vectors are tuples of three arrays (x, y, z) that broadcast together: every step below
# is elementwise over [N, R, R] rays, which XLA fuses into a few loops.


def hsv_to_rgb(hue):
    """RGB of HSV ``(hue, 1, 1)`` for hue in [0, 1): a 3-tuple of arrays shaped like ``hue``."""
    k = [jnp.mod(n + 6.0 * hue, 6.0) for n in (5.0, 3.0, 1.0)]
    return tuple(1.0 - jnp.clip(jnp.minimum(kc, 4.0 - kc), 0.0, 1.0) for kc in k)


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _unit(a):
    inv = jax.lax.rsqrt(_dot(a, a))
    return tuple(c * inv for c in a)


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def camera_rays(azimuth_deg_N):
    """Primary rays: eye ``3 x [N, 1, 1]`` and unit directions ``3 x [N, R, R]``.

    R = 64 * SUPERSAMPLE sub-pixels per side; row 0 is the top of the image.
    """
    phi = jnp.deg2rad(azimuth_deg_N)[:, None, None]
    el = math.radians(CAMERA_ELEVATION)
    eye = (CAMERA_DISTANCE * math.cos(el) * jnp.sin(phi),
           jnp.full_like(phi, CAMERA_TARGET_Y + CAMERA_DISTANCE * math.sin(el)),
           CAMERA_DISTANCE * math.cos(el) * jnp.cos(phi))
    fwd = _unit((-eye[0], CAMERA_TARGET_Y - eye[1], -eye[2]))
    right = _unit(_cross(fwd, (0.0, 1.0, 0.0)))
    up = _cross(right, fwd)
    r = OBSERVATION_SHAPE[0] * SUPERSAMPLE
    half = math.tan(math.radians(CAMERA_FOV) / 2)
    s = ((jnp.arange(r, dtype=jnp.float32) + 0.5) / r * 2.0 - 1.0) * half
    sx, sy = s[None, None, :], -s[None, :, None]  # image-plane offsets of the sub-pixel centres
    return eye, _unit(tuple(f + sx * rc + sy * uc for f, rc, uc in zip(fwd, right, up)))


# -- closed-form intersections: distance t (inf on a miss) and the unit normal -----------
def _hit_box(o, d, inv_d, a):
    """Box ``[-a, a] x [0, 2a] x [-a, a]``; ``inv_d`` is ``1 / d`` per component."""
    lo, hi = (-a, jnp.zeros_like(a), -a), (a, 2.0 * a, a)
    t1 = [(lc - oc) * ic for lc, oc, ic in zip(lo, o, inv_d)]
    t2 = [(hc - oc) * ic for hc, oc, ic in zip(hi, o, inv_d)]
    tn = [jnp.minimum(u, v) for u, v in zip(t1, t2)]
    tf = [jnp.maximum(u, v) for u, v in zip(t1, t2)]
    t_in = jnp.maximum(jnp.maximum(tn[0], tn[1]), tn[2])
    t_out = jnp.minimum(jnp.minimum(tf[0], tf[1]), tf[2])
    t = jnp.where((t_in <= t_out) & (t_in > _EPS), t_in, _INF)
    # The face entered last: the slab whose entry distance is t_in.
    ax = jnp.where(tn[0] == t_in, 0, jnp.where(tn[1] == t_in, 1, 2))
    n = tuple(jnp.where(ax == k, -jnp.sign(dc), 0.0) for k, dc in enumerate(d))
    return t, n


def _hit_sphere(o, d, cy, r):
    """Sphere of radius r centred at ``(0, cy, 0)``."""
    oc = (o[0], o[1] - cy, o[2])
    b = _dot(oc, d)
    disc = b * b - (_dot(oc, oc) - r * r)
    t = -b - jnp.sqrt(jnp.maximum(disc, 0.0))
    t = jnp.where((disc >= 0.0) & (t > _EPS), t, _INF)
    return t, tuple((oc_ + t * d_) / r for oc_, d_ in zip(oc, d))


def _hit_tube(o, d, r, y0, y1):
    """Side of the vertical cylinder ``x^2 + z^2 = r^2`` between heights y0 and y1."""
    a = d[0] * d[0] + d[2] * d[2]
    b = o[0] * d[0] + o[2] * d[2]
    disc = b * b - a * (o[0] * o[0] + o[2] * o[2] - r * r)
    t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / a
    y = o[1] + t * d[1]
    t = jnp.where((disc >= 0.0) & (t > _EPS) & (y >= y0) & (y <= y1), t, _INF)
    return t, ((o[0] + t * d[0]) / r, jnp.zeros_like(t), (o[2] + t * d[2]) / r)


def _hit_disc(o, d, inv_d, r, y):
    """Horizontal disc of radius r at height y (a cylinder's top)."""
    t = (y - o[1]) * inv_d[1]
    x, z = o[0] + t * d[0], o[2] + t * d[2]
    t = jnp.where((t > _EPS) & (x * x + z * z <= r * r), t, _INF)
    return t, (jnp.zeros_like(t), jnp.ones_like(t), jnp.zeros_like(t))


def _nearer(best, hit, enabled=True):
    """Running closest hit: keep ``best`` unless ``hit`` (if enabled) is nearer."""
    t = jnp.where(enabled, hit[0], _INF)
    closer = t < best[0]
    return (jnp.where(closer, t, best[0]),
            tuple(jnp.where(closer, h, b) for h, b in zip(hit[1], best[1])))


def hit_object(o, d, shape, a):
    """The object of each image: ``(t, normal)``.

    Every shape is built from one set of primitives with per-image parameters, so the
    cast evaluates five primitives rather than all four shapes: a box (cube), a tube and a
    top disc (cylinder; a capsule's body), and two spheres (the sphere; a capsule's ends).
    ``shape`` and ``a`` (half-width) broadcast against the rays.
    """
    cube, cyl, sph, cap = (shape == k for k in range(4))
    rc = CAPSULE_RADIUS * a
    tube_r = jnp.where(cyl, a, rc)
    tube_y0, tube_y1 = jnp.where(cyl, 0.0, rc), jnp.where(cyl, 2.0 * a, CAPSULE_HEIGHT * a - rc)
    sph0_y, sph0_r = jnp.where(sph, a, rc), jnp.where(sph, a, rc)
    inv_d = tuple(1.0 / dc for dc in d)  # shared by the box and the disc
    shape_ = jnp.broadcast_shapes(jnp.shape(o[0]), jnp.shape(d[0]), jnp.shape(a))
    miss = (jnp.full(shape_, _INF), (jnp.zeros(shape_),) * 3)
    best = _nearer(miss, _hit_box(o, d, inv_d, a), cube)
    best = _nearer(best, _hit_tube(o, d, tube_r, tube_y0, tube_y1), cyl | cap)
    best = _nearer(best, _hit_disc(o, d, inv_d, a, 2.0 * a), cyl)
    best = _nearer(best, _hit_sphere(o, d, sph0_y, sph0_r), sph | cap)
    return _nearer(best, _hit_sphere(o, d, tube_y1, rc), cap)


def render(factors_NxF: jax.Array) -> jax.Array:
    """Shapes3D images for factor class indices.

    Args:
      factors_NxF: int ``[N, 6]`` class indices in the order of ``SPACE.names`` (floor_hue,
        wall_hue, object_hue, scale, shape, orientation). Out-of-range values are clipped
        (validate on the host first: ``SPACE.validate``).

    Returns:
      float32 ``[N, 64, 64, 3]`` RGB in [0, 1].
    """
    f_NxF = jnp.clip(jnp.asarray(factors_NxF).astype(jnp.int32), 0,
                     jnp.asarray(SPACE.sizes, jnp.int32) - 1)
    return jax.lax.platform_dependent(f_NxF, cpu=_render_blocked, default=_render)


def _render_blocked(f_NxF):
    """:func:`_render` over blocks of ``CPU_BLOCK`` images, one after another.

    On a CPU the per-ray intermediates of a whole batch (``[N, 128, 128]`` floats each)
    spill out of cache; blocks keep them in it, which is 3x faster on a 2-core machine.
    Accelerators take the whole batch at once.
    """
    n, pad = f_NxF.shape[0], -f_NxF.shape[0] % CPU_BLOCK
    blocks = jnp.pad(f_NxF, ((0, pad), (0, 0))).reshape(-1, CPU_BLOCK, f_NxF.shape[1])
    return jax.lax.map(_render, blocks).reshape(-1, *OBSERVATION_SHAPE)[:n]


def _per_image(table, i):
    return jnp.asarray(table, jnp.float32)[i][:, None, None]  # [N, 1, 1]


def _primary_hits(f_NxF):
    """Rays, closest hits and surface ids (0 floor, 1 back, 2 left, 3 right wall, 4 object)
    of every sub-pixel ray ``[N, R, R]``, and the object's normal there."""
    a = OBJECT_SIZE * _per_image(SCALES, f_NxF[:, 3])
    shape = f_NxF[:, 4][:, None, None]
    o, d = camera_rays(jnp.asarray(AZIMUTHS, jnp.float32)[f_NxF[:, 5]])

    # The room: planes with constant normals, so each has one shading factor; surface ids
    # 0 floor, 1 back wall, 2 left wall, 3 right wall, 4 the object.
    t = jnp.full(d[0].shape, _INF)
    surface = jnp.zeros(d[0].shape, jnp.int32)
    planes = ((1, 0.0), (2, -ROOM_BACK), (0, -ROOM_SIDE), (0, ROOM_SIDE))
    for k, (axis, offset) in enumerate(planes):
        tk = (offset - o[axis]) / d[axis]
        tk = jnp.where(tk > _EPS, tk, _INF)
        surface, t = jnp.where(tk < t, k, surface), jnp.minimum(tk, t)
    t_obj, n_obj = hit_object(o, d, shape, a)
    surface = jnp.where(t_obj < t, 4, surface)
    t = jnp.minimum(t_obj, t)
    return o, d, t, surface, n_obj, shape, a


def render_masks(factors_NxF: jax.Array, coverage: float = 0.5) -> jax.Array:
    """The object's pixels, bool ``[N, 64, 64]``: those where at least ``coverage`` of the
    ``SUPERSAMPLE^2`` rays hit the object (0.5: the object covers half the pixel or more;
    1.0: pixels of the object's colour alone). Same arguments as :func:`render`; jit-able."""
    f_NxF = jnp.clip(jnp.asarray(factors_NxF).astype(jnp.int32), 0,
                     jnp.asarray(SPACE.sizes, jnp.int32) - 1)
    surface = _primary_hits(f_NxF)[3]
    n, r = surface.shape[0], OBSERVATION_SHAPE[0]
    share = (surface == 4).reshape(n, r, SUPERSAMPLE, r, SUPERSAMPLE).mean((2, 4))
    return share >= coverage - 1e-6


def _render(f_NxF):
    """The ray cast for clipped int32 factors ``[N, 6]``: float32 ``[N, 64, 64, 3]``."""
    floor_h, wall_h, obj_h = (_per_image(HUES, f_NxF[:, j]) for j in range(3))
    o, d, t, surface, n_obj, shape, a = _primary_hits(f_NxF)
    obj_shade = AMBIENT + DIFFUSE * jnp.maximum(_dot(n_obj, LIGHT), 0.0)
    # Materialise the primary hit once; fused into the shadow pass it would be recomputed.
    t, surface, obj_shade = jax.lax.optimization_barrier((t, surface, obj_shade))

    plane_shade = jnp.full_like(t, PLANE_SHADE[3])
    for k in range(3):
        plane_shade = jnp.where(surface == k, PLANE_SHADE[k], plane_shade)
    # Hard shadow: a room point whose ray towards the light meets the object.
    p = tuple(oc + t * dc for oc, dc in zip(o, d))
    light = tuple(jnp.float32(c) for c in LIGHT)
    in_shadow = hit_object(p, light, shape, a)[0] < _INF
    shade = jnp.where(surface == 4, obj_shade, jnp.where(in_shadow, AMBIENT, plane_shade))

    # Likewise the shading, which each of the three colour channels reads.
    surface, shade = jax.lax.optimization_barrier((surface, shade))
    colours = [hsv_to_rgb(h) for h in (floor_h, wall_h, obj_h)]
    rgb = [jnp.where(surface == 0, fc, jnp.where(surface == 4, oc, wc)) * shade
           for fc, wc, oc in zip(*colours)]
    img = jnp.stack(rgb, -1)  # [N, R, R, 3]
    n, r = img.shape[0], OBSERVATION_SHAPE[0]
    return img.reshape(n, r, SUPERSAMPLE, r, SUPERSAMPLE, 3).mean((2, 4))
