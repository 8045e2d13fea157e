"""Curves and histograms for study reports (matplotlib, written as PNG)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from sparsejax.viz.grids import mosaic, save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def seed_band_panels(panels: Mapping[str, Mapping[str, np.ndarray]], *, x: np.ndarray,
                     xlabel: str, ylabel: str, path: str | os.PathLike, title: str = "",
                     hlines: Mapping[str, float] | None = None, ylim=None):
    """One panel per key of ``panels``; in each, one line per series (mean over seeds) with
    the band between the lowest and highest seed shaded.

    ``panels[name][label]`` is ``[S, E]`` (seeds x epochs). ``hlines`` draws labelled
    reference levels (e.g. the paper's figure) in every panel.
    """
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(max(4.2 * n, 5.5), 3.4), squeeze=False,
                             sharey=True)
    for ax, (pname, series) in zip(axes[0], panels.items()):
        for label, y_SxE in series.items():
            y_SxE = np.atleast_2d(np.asarray(y_SxE, np.float64))
            mean = np.nanmean(y_SxE, 0)
            (line,) = ax.plot(x[:mean.size], mean, label=f"{label} (n={y_SxE.shape[0]})")
            if y_SxE.shape[0] > 1:
                ax.fill_between(x[:mean.size], np.nanmin(y_SxE, 0), np.nanmax(y_SxE, 0),
                                color=line.get_color(), alpha=0.2, linewidth=0)
        for hname, level in (hlines or {}).items():
            ax.axhline(level, ls="--", lw=1, color="grey")
            ax.annotate(hname, (x[0], level), fontsize=7, color="grey",
                        xytext=(2, 2), textcoords="offset points")
        ax.set_title(pname, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def density_histograms(panels: Mapping[str, Mapping[str, np.ndarray]], *,
                       path: str | os.PathLike, floor: float = 1e-6, title: str = ""):
    """log10 firing-density histograms, one panel per run, one outline per moment.

    ``panels[run][moment]`` is a per-unit firing density in [0, 1] (fraction of evaluation
    samples on which the unit fires). Dead units (density 0) are drawn in a separate bar at
    ``log10(floor)`` so they stay visible.
    """
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False, sharey=True)
    lo = np.log10(floor)
    bins = np.linspace(lo - 0.5, 0.0, 27)
    for ax, (pname, moments) in zip(axes[0], panels.items()):
        for label, dens in moments.items():
            d = np.asarray(dens, np.float64)
            logd = np.where(d > 0, np.log10(np.maximum(d, floor)), lo - 0.25)
            dead = int((d <= 0).sum())
            ax.hist(logd, bins=bins, histtype="step", lw=1.5, label=f"{label} ({dead} dead)")
        ax.axvline(lo, color="grey", lw=0.8, ls=":")
        ax.set_title(pname, fontsize=10)
        ax.set_xlabel("log10 firing density (dead at left)")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("units")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def image_rows(rows: Sequence[np.ndarray], labels: Sequence[str], *, path: str | os.PathLike,
               title: str = ""):
    """Rows of images ``[V, H, W, C]`` (e.g. latent traversals), one labelled row each."""
    plt = _plt()
    v = max(r.shape[0] for r in rows)
    h, w, c = rows[0].shape[1:]
    grid = np.ones((len(rows), v, h, w, c), np.float32)
    for i, r in enumerate(rows):
        grid[i, :r.shape[0]] = r
    img = mosaic(grid)
    fig, ax = plt.subplots(figsize=(1.5 + img.shape[1] / 50, 0.6 + img.shape[0] / 50), dpi=100)
    ax.imshow(img.squeeze(-1) if c == 1 else img, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(h + 2) * i + h / 2 for i in range(len(rows))])
    ax.set_yticklabels(labels, fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def xy_panels(panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], *,
              xlabel: str, ylabel: str, path: str | os.PathLike, title: str = "",
              scatter: bool = False, front: bool = False,
              hlines: Mapping[str, float] | None = None, invert_x: bool = False):
    """One panel per key of ``panels``; in each, one labelled series per ``(x, y)`` pair
    (lines, or points with ``scatter``). ``front`` draws the lower-left Pareto front of all
    of a panel's points (smaller is better on both axes); ``hlines`` labelled levels."""
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(max(5.5 * n, 6.0), 4.2), squeeze=False)
    for ax, (pname, series) in zip(axes[0], panels.items()):
        pts = []
        for i, (label, (x, y)) in enumerate(series.items()):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            marker = "os^vD<>pP*Xh"[i % 12]
            if scatter:
                ax.scatter(x, y, label=label, marker=marker, s=36)
                pts += list(zip(x.ravel(), y.ravel()))
            else:
                ax.plot(x, y, label=label, marker=marker, ms=3, lw=1.2)
        if front and pts:
            best, ys = [], np.inf
            for px, py in sorted(p for p in pts if np.isfinite(p[0]) and np.isfinite(p[1])):
                if py < ys:
                    best.append((px, py))
                    ys = py
            if best:
                ax.plot(*zip(*best), ls="--", color="black", lw=1, label="Pareto front")
        for hname, level in (hlines or {}).items():
            ax.axhline(level, ls=":", lw=1, color="grey")
            ax.annotate(hname, (0.01, level), xycoords=("axes fraction", "data"), fontsize=7,
                        color="grey", xytext=(2, 2), textcoords="offset points")
        if invert_x:
            ax.invert_xaxis()
        ax.set_title(pname, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    axes[0, 0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
