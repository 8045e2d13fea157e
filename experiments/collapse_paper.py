"""The collapse study's grid as arXiv 2603.18056 reports it: its figures and the cell names.

The paper's numbers are typed in from its abstract; every other number the study reports
is measured (``results.json``). Imported by the runner (:mod:`experiments.collapse`) and by
the statistics, plots and report, and imports none of them.
"""

from __future__ import annotations

PAPER_K = 50  # the paper's final k: its dead-unit rates are measured there
PAPER_LR = 1e-4  # Adam learning rate of disentanglement_lib, which the paper builds on
PAPER_BATCH = 64  # and its batch size

# dead-unit rate at k = 50, (mean, std) over seeds, in % (arXiv 2603.18056, abstract)
PAPER: dict[tuple[str, str], tuple[float, float]] = {
    ("dsprites", "topk"): (34.4, 0.9), ("shapes3d", "topk"): (62.7, 1.3),
    ("dsprites", "l1"): (41.7, 4.4), ("shapes3d", "l1"): (90.6, 0.5),
}
# Shapes3D dead rate / dSprites dead rate, per method (same source)
PAPER_RATIOS: dict[str, float] = {"topk": 1.8, "l1": 2.2}

# The arms of one dataset's grid beside the paper's two methods (its results keys):
# the controls that say what a dead rate means, and the shared warm-up they start from.
CONTROLS = ("untrained", "relu_no_penalty", "topk_fixed")
WARMUP = "warmup"
# the engine method each arm trains (the controls are Top-k models with a fixed k)
ARM_METHOD = {"topk": "topk", "l1": "l1", "dense": "dense", "untrained": "topk",
              "relu_no_penalty": "topk", "topk_fixed": "topk", WARMUP: "topk"}

METHOD_LABEL = {"topk": "Top-k", "l1": "L1", "dense": "dense VAE",
                "untrained": "untrained network", "relu_no_penalty": "ReLU, no penalty",
                "topk_fixed": "Top-k, final k from the start", WARMUP: "shared warm-up (ReLU)"}


def cell_name(dataset: str, method: str) -> str:
    """The name of one grid cell: its run directory ``runs/<name>`` and its results key."""
    return f"{dataset}-{method}"
