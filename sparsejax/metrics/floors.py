"""Floors a trained model's figures must beat before they mean anything.

The reconstruction floor is the Bernoulli negative log-likelihood of predicting every image
by the mean image. Bernoulli cross-entropy ``-[x log p + (1 - x) log(1 - p)]`` is linear in
the target x, so with p the pixel-wise mean of the images themselves the mean over images
is exactly the summed binary entropy of the mean image, ``sum_d H(p_d)``: a constant
predictor can do no better (cross-entropy is minimised at p = the mean target).
"""

from __future__ import annotations

# Shape letters: n images, D = H * W * C pixel values.

from collections.abc import Iterable

import numpy as np


def binary_entropy_sum(p_D: np.ndarray) -> float:
    """``sum_d H(p_d)`` in nats, with ``0 log 0 = 0``."""
    p = np.clip(np.asarray(p_D, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))
    return float(h.sum())


def mean_image_nll(chunks: Iterable[np.ndarray]) -> float:
    """Nats per image of the best constant predictor of images in [0, 1] (the mean image),
    from chunks ``[b, H, W, C]`` of one image set (streamed: any number of chunks)."""
    total, n = None, 0
    for x in chunks:
        x = np.asarray(x, np.float64)
        s = x.reshape(x.shape[0], -1).sum(0)
        total = s if total is None else total + s
        n += x.shape[0]
    if not n:
        raise ValueError("mean_image_nll needs at least one image")
    return binary_entropy_sum(total / n)
