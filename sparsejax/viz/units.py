"""Unit dashboards: one PNG per unit and one self-contained HTML page (images inlined)."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparsejax.atomic_io import write_atomic


def unit_png(path: str | os.PathLike, unit: int, top_images, response_FxV, factor_names:
             Sequence[str], factor_sizes: Sequence[int], *, density: float, alive: bool,
             best: str, nmi: float, act_max=None) -> Path:
    """One unit's panel: its top-activating images, its activation-maximisation image (if
    given), and its mean response over every factor's values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsejax.viz.grids import save_figure

    k = len(top_images) + (act_max is not None)
    f = len(factor_names)
    fig = plt.figure(figsize=(max(1.0 * k, 1.6 * f), 3.4))
    grid = fig.add_gridspec(2, max(k, f))
    ims = list(top_images) + ([act_max] if act_max is not None else [])
    for i, im in enumerate(ims):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(im.squeeze(-1) if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title("act. max" if act_max is not None and i == k - 1 else f"top {i + 1}",
                     fontsize=7)
    for j, (name, size) in enumerate(zip(factor_names, factor_sizes)):
        ax = fig.add_subplot(grid[1, j])
        ax.plot(np.arange(size), response_FxV[j, :size], lw=1)
        ax.set_title(name, fontsize=7)
        ax.tick_params(labelsize=6)
    state = "alive" if alive else "DEAD"
    fig.suptitle(f"unit {unit}: {state}, fires on {density:.1%}, most informative factor "
                 f"{best} (NMI {nmi:.2f})", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def dashboard_html(path: str | os.PathLike, title: str, summary: str,
                   units: Sequence[tuple[str, Path]]) -> Path:
    """One page holding every unit's PNG (base64-inlined) under its caption."""
    blocks = []
    for caption, png in units:
        data = base64.b64encode(Path(png).read_bytes()).decode()
        blocks.append(f"<figure><img src=\"data:image/png;base64,{data}\">"
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;"
            "margin:0.5em}img{max-width:640px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><pre>{html.escape(summary)}</pre>"
            + "".join(blocks) + "</body></html>")
    return write_atomic(path, page)
