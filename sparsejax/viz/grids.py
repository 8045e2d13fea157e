"""Image grids: factor sweeps and sample mosaics, saved as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sparsejax.atomic_io import write_atomic


def factor_sweeps(ds, base_F) -> tuple[np.ndarray, np.ndarray]:
    """Images sweeping each factor over its whole range, the others held at ``base_F``.

    Returns ``images [F, V, H, W, C]`` (V = the largest factor size; unused cells are 0)
    and ``valid [F, V]`` (bool).
    """
    base_F = np.asarray(base_F, np.int32)
    sizes = ds.factor_sizes
    num_v = max(sizes)
    tuples, valid = [], np.zeros((len(sizes), num_v), bool)
    for j, size in enumerate(sizes):
        for v in range(num_v):
            t = base_F.copy()
            t[j] = min(v, size - 1)
            tuples.append(t)
            valid[j, v] = v < size
    images = np.asarray(ds.render(np.stack(tuples)))
    images = images.reshape(len(sizes), num_v, *images.shape[1:])
    return images * valid[:, :, None, None, None], valid


def mosaic(images_RxCxHxWxC: np.ndarray, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tiles ``[rows, cols, H, W, C]`` into one ``[rows*(H+pad)-pad, cols*(W+pad)-pad, C]`` image."""
    r, c, h, w, ch = images_RxCxHxWxC.shape
    out = np.full((r * (h + pad) - pad, c * (w + pad) - pad, ch), pad_value, np.float32)
    for i in range(r):
        for j in range(c):
            out[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = \
                images_RxCxHxWxC[i, j]
    return out


def save_factor_sweeps(ds, base_F, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draws :func:`factor_sweeps` with one labelled row per factor and writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, valid = factor_sweeps(ds, base_F)
    f, v = valid.shape
    # Grey out cells past a factor's last value so short rows read as short.
    images = np.where(valid[:, :, None, None, None], images, 0.85)
    grid = mosaic(images)
    h, w = grid.shape[:2]
    fig_w = 2.0 + w / 40
    fig, ax = plt.subplots(figsize=(fig_w, 0.6 + h / 40), dpi=100)
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    cell = images.shape[2] + 2
    ax.set_yticks([cell * i + images.shape[2] / 2 for i in range(f)])
    ax.set_yticklabels([f"{n} ({s})" for n, s in zip(ds.factor_names, ds.factor_sizes)])
    ax.set_xticks([cell * i + images.shape[3] / 2 for i in range(v)])
    ax.set_xticklabels([str(i) for i in range(v)], fontsize=6)
    ax.set_title(title or f"{ds.name} ({ds.source}): each row sweeps one factor, others at "
                 f"{tuple(int(x) for x in base_F)}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Saves a matplotlib figure as PNG atomically and closes it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", **savefig_kwargs)
    finally:
        plt.close(fig)
    return write_atomic(path, buf.getvalue())
