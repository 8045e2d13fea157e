"""``paper_estimate``: what the ``paper`` collapse preset costs on this device, before the run.

The training wall time of the whole main grid, of the revival, and of one cell (all its
seeds), at the train rate measured here: the hybrid step with the preset's seeds per cell
and batch (:func:`experiments.bench.train.measure`, shared with ``train_hybrid``). The
grid, epochs, steps and batch come from the preset itself
(:func:`experiments.collapse.cost_estimate`), the same numbers that
``python -m experiments collapse --preset paper --dry-run`` prints.
"""

from __future__ import annotations

from experiments.collapse import cost_estimate, measured_rate, preset_config


def paper_estimate():
    cfg = preset_config("paper")
    yield {**cost_estimate(cfg, measured_rate(cfg, min_time=3.0)), "rate_from": "measured"}


CASES = {"paper_estimate": paper_estimate}
