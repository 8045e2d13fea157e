"""Ground-truth object masks of the procedural renderers agree with their images."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.data import dsprites, get_dataset, shapes3d


def test_dsprites_mask_is_the_lit_pixels():
    ds = get_dataset("dsprites", "procedural")
    f = ds.sample_factors(jax.random.key(5), 32)
    masks = ds.render_masks(f)
    chex.assert_shape(masks, (32, 64, 64))
    assert masks.dtype == jnp.bool_
    np.testing.assert_array_equal(masks, np.asarray(ds.render(f))[..., 0] > 0)
    np.testing.assert_array_equal(jax.jit(dsprites.render_masks)(f), masks)
    assert np.all(np.asarray(masks).sum((1, 2)) > 0)


def test_shapes3d_mask_pixels_have_the_object_hue():
    # object hue 0 (red) in front of floor hue 5 and wall hue 7: colours differ
    f = np.array([[5, 7, 0, 0, 0, 0], [5, 7, 0, 7, 3, 14]], np.int32)  # cube; capsule
    ds = get_dataset("shapes3d", "procedural")
    img = np.asarray(ds.render(f))
    full, half, touched = (np.asarray(m) for m in jax.jit(
        lambda f: [shapes3d.render_masks(f, coverage=c) for c in (1.0, 0.5, 0.01)])(f))
    assert np.all(full <= half) and np.all(half <= touched) and full.sum() > 100
    # a pixel's colour over its brightest channel is the hue's pure colour
    pure = img / np.maximum(img.max(-1, keepdims=True), 1e-9)
    red = np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(pure[full], np.broadcast_to(red, pure[full].shape), atol=1e-5)
    far = np.abs(pure[~touched] - red).max(-1)
    assert np.all(far > 0.5)
    with pytest.raises(ValueError, match="factor|out of range|range"):
        ds.render_masks(np.array([[10, 0, 0, 0, 0, 0]]))
