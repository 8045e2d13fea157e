"""Writes a finished collapse study's outputs: ``results.json``, the PNGs and ``report.md``.

The parts live in their own modules: the statistics and the results schema in
:mod:`experiments.collapse_stats`, the plots in :mod:`experiments.collapse_plots`, the
report text in :mod:`experiments.collapse_render` (``templates/collapse_report.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.collapse_plots import write_plots, write_traversals
from experiments.collapse_render import report_markdown
from sparsejax.atomic_io import write_atomic


def write_all(results: dict, out: Path, *, run_dir_for_traversal: Path | None) -> None:
    """``out/results.json``, the plots and ``out/report.md`` (each written atomically);
    traversals of ``run_dir_for_traversal``'s first seed when it holds a trained run."""
    figs = write_plots(results, out)
    trav = write_traversals(run_dir_for_traversal, out)
    if trav:
        figs.append(trav)
    write_atomic(out / "results.json", json.dumps(results) + "\n")
    write_atomic(out / "report.md", report_markdown(results, figs))
