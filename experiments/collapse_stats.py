"""Statistics and the results schema of the collapse study (and the revival study's inputs).

Everything here reads the per-epoch records the engine writes (``metrics.jsonl``, one dict
per seed and epoch; see ``sparsejax.train.loop``) and returns plain JSON-ready values.
Thresholds are keyed as the records key them, by :func:`sparsejax.metrics.tau_key`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from experiments.collapse_paper import (ARM_METHOD, CONTROLS, PAPER, PAPER_RATIOS, WARMUP,
                                        cell_name)


def tau_keys(train_config=None) -> tuple[str, ...]:
    """Record keys of a run's dead thresholds, in the config's order.

    ``train_config`` is a ``TrainConfig`` or its dict (``to_dict``); without one, or
    without ``thresholds``, the engine's default keys ``sparsejax.metrics.TAU_KEYS``.
    """
    from sparsejax.metrics import TAU_KEYS, tau_key

    if train_config is None:
        return TAU_KEYS
    ts = (train_config.get("thresholds") if isinstance(train_config, dict)
          else getattr(train_config, "thresholds", None))
    return tuple(tau_key(t) for t in ts) if ts else TAU_KEYS


BOOTSTRAP_DRAWS = 10_000
BOOTSTRAP_LEVEL = 0.95


def bootstrap_ci(values: Sequence[float], *, draws: int = BOOTSTRAP_DRAWS,
                 level: float = BOOTSTRAP_LEVEL, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval ``[lo, hi]`` of the mean over seeds: ``draws``
    resamples of the seeds with replacement (Efron & Tibshirani 1993, ch. 13). With n
    seeds the resampled means take few values (n = 2: a, (a + b) / 2, b), so at small n
    the interval is coarse, never narrower than the data warrant."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return [None, None]
    idx = np.random.default_rng(seed).integers(0, v.size, (draws, v.size))
    means = v[idx].mean(axis=1)
    a = (1 - level) / 2
    return [float(np.quantile(means, a)), float(np.quantile(means, 1 - a))]


def mean_std(values: Iterable) -> dict:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values;
    ``n`` counts them, ``values`` lists them (None and NaN are dropped) and ``ci95`` is
    the bootstrap interval of the mean over them (:func:`bootstrap_ci`)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0, "values": [], "ci95": [None, None]}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size), "values": v.tolist(), "ci95": bootstrap_ci(v)}


def ratio_with_se(num: dict, den: dict) -> dict:
    """Ratio of two seed means (:func:`mean_std` dicts) with its delta-method standard error
    (standard errors of the means, sample std / sqrt(n), assumed independent)."""
    if not num["n"] or not den["n"] or not den["mean"]:
        return {"ratio": None, "se": None}
    r = num["mean"] / den["mean"]
    rel = 0.0
    for s in (num, den):
        if s["mean"]:
            rel += (s["std"] / math.sqrt(s["n"]) / s["mean"]) ** 2
    return {"ratio": r, "se": abs(r) * math.sqrt(rel)}


def by_run(records: list[dict]) -> dict[int, list[dict]]:
    """Records of one run directory grouped by seed (ascending), each list sorted by epoch."""
    runs = defaultdict(list)
    for r in records:
        runs[r["seed"]].append(r)
    return {s: sorted(rs, key=lambda r: r["epoch"]) for s, rs in sorted(runs.items())}


def dead_masks(rec: dict, keys: Sequence[str] | None = None) -> np.ndarray:
    """bool ``[T, N]`` (T thresholds ``keys``, N units): units that never fired above each
    threshold on the evaluation set."""
    keys = tau_keys() if keys is None else keys
    return np.stack([np.asarray(rec["firing_counts"][t]) == 0 for t in keys])


def death_epochs(epochs: list[dict], keys: Sequence[str] | None = None) -> np.ndarray:
    """int ``[T, N]``: per threshold and unit, the epoch its final dead streak began (-1:
    alive at the end), from one seed's records in epoch order."""
    from sparsejax.metrics import update_death_epochs

    d = None
    for rec in epochs:
        dead = dead_masks(rec, keys)
        d = update_death_epochs(np.full(dead.shape, -1) if d is None else d, dead, rec["epoch"])
    return d


def revived_during(epochs: list[dict], keys: Sequence[str] | None = None) -> list[int]:
    """Per threshold, the units of one seed that were dead at some evaluation and fired at a
    later one (``[T]`` counts, records in epoch order)."""
    ever_dead = np.zeros_like(dead_masks(epochs[0], keys))
    came_back = np.zeros_like(ever_dead)
    for rec in epochs:
        dead = dead_masks(rec, keys)
        came_back |= ever_dead & ~dead
        ever_dead |= dead
    return came_back.sum(axis=1).tolist()


def cell_summary(dataset: str, arm: str, seeds: dict[int, list[dict]],
                 keys: Sequence[str], model: str | None = None,
                 targets_k: bool | None = None) -> dict:
    """One cell's summary: final-epoch statistics over seeds (dead and rare rates in %),
    MIG at the first and last epoch, units revived during the schedule per seed.
    ``method`` is the arm (``topk``, ``l1``, ``dense``, a control or a further arm),
    ``model`` the engine method it trains (default: the collapse grid's,
    :data:`~experiments.collapse_paper.ARM_METHOD`), ``targets_k`` whether its L0 must meet
    k (default: :data:`TARGET_ARMS`)."""
    model = ARM_METHOD[arm] if model is None else model
    finals = {s: rs[-1] for s, rs in seeds.items()}
    firsts = {s: rs[0] for s, rs in seeds.items()}
    summary = {
        "dataset": dataset, "method": arm, "model": model, "seeds": list(seeds),
        "targets_k": arm in TARGET_ARMS if targets_k is None else targets_k,
        "epochs": len(next(iter(seeds.values()), [])),
        "k_final": next((r["k"] for r in finals.values()), None),
        "l0_final": mean_std(r["eval"]["l0"] for r in finals.values()),
        "recon_final": mean_std(r["eval"]["recon"] for r in finals.values()),
        "kl_final": mean_std(r["eval"]["kl"] for r in finals.values()),
        "mig_mean_start": mean_std(r.get("mig_mean") for r in firsts.values()),
        "mig_mean_end": mean_std(r.get("mig_mean") for r in finals.values()),
        "mig_shuffled_end": mean_std(r.get("mig_mean_shuffled") for r in finals.values()),
        "eval_size_final": next((r["eval_size"] for r in finals.values()), None),
        "images_per_s": mean_std(float(np.mean([r["images_per_s"] for r in rs[1:]]))
                                 for rs in seeds.values() if len(rs) > 1
                                 and all("images_per_s" in r for r in rs)),
        "flags": [],
    }
    if model == "dense":
        return summary
    summary.update({
        "mig_code_start": mean_std(r.get("mig_code") for r in firsts.values()),
        "mig_code_end": mean_std(r.get("mig_code") for r in finals.values()),
        "sae_fvu_final": mean_std(r["eval"].get("sae_fvu") for r in finals.values()),
        "dead_final": {t: mean_std(100 * r["dead_fraction"][t] for r in finals.values())
                       for t in keys},
        "rare_final": {t: mean_std(100 * r["firing"][t]["rare_fraction"]
                                   for r in finals.values()) for t in keys},
        "specific_final": mean_std(r["alignment"]["specific_units"] for r in finals.values()),
        "alive_final": mean_std(r["alignment"]["alive_units"] for r in finals.values()),
        "l1_coef_final": mean_std(r["l1_coef"] for r in finals.values())
        if model in ("l1", "jumprelu") else None,
    })
    back = [revived_during(rs, keys) for rs in seeds.values()]  # [S, T]
    summary["revived_during_schedule"] = (dict(zip(keys, np.asarray(back).T.tolist()))
                                          if back else {})
    return summary


# What a flag says (results.json keeps the codes; the report prints the text). The first
# three make a cell "not evidence": its dead rate is not read as a result.
FLAGS = {
    "recon_not_below_mean_image": "not trained: reconstruction not below the mean image",
    "l0_misses_k": "L0 misses k by more than 10%",
    "sae_fvu_not_below_1": "the sparse layer reconstructs its input no better than the "
                           "input's mean (SAE FVU >= 1)",
    "mig_not_above_shuffled": "MIG not above its shuffled-factor floor",
}
NOT_EVIDENCE = ("recon_not_below_mean_image", "l0_misses_k", "sae_fvu_not_below_1")
L0_TOLERANCE = 0.10  # achieved mean L0 within 10% of the target k
TARGET_ARMS = ("topk", "l1", "topk_fixed")  # arms whose k is a target L0 must meet


def cell_flags(cell: dict, floors: dict) -> list[str]:
    """The flags of one cell summary against its dataset's floors (:data:`FLAGS`)."""
    flags = []
    recon, floor = cell["recon_final"]["mean"], floors.get("recon_mean_image")
    if recon is not None and floor is not None and not recon < floor:
        flags.append("recon_not_below_mean_image")
    l0, k = cell["l0_final"]["mean"], cell["k_final"]
    targets = cell.get("targets_k", cell["method"] in TARGET_ARMS)
    if targets and l0 is not None and abs(l0 - k) > L0_TOLERANCE * k:
        flags.append("l0_misses_k")
    # the SAE's floor is its input's mean (FVU 1): a trained sparse layer that does not
    # beat it is no sparse autoencoder of that input, whatever its dead rate
    fvu = (cell.get("sae_fvu_final") or {}).get("mean")
    if cell["method"] != "untrained" and fvu is not None and not fvu < 1.0:
        flags.append("sae_fvu_not_below_1")
    mig_end, mig_floor = cell["mig_mean_end"]["mean"], floors.get("mig_shuffled")
    if (cell["method"] != "untrained" and mig_end is not None and mig_floor is not None
            and not mig_end > mig_floor):
        flags.append("mig_not_above_shuffled")
    return flags


def is_evidence(cell: dict) -> bool:
    return not any(f in NOT_EVIDENCE for f in cell["flags"])


def build_results(cfg, records: dict[str, list[dict]], sources: dict, *, command: str,
                  wall_time_s: float, config: dict, recon_floors: dict[str, float]) -> dict:
    """The machine-readable study: per run, per epoch, and the summary the report shows.

    Args:
      cfg: the study's ``CollapseConfig`` (its cells, methods and per-cell TrainConfigs).
      records: per cell name, every record of its run directory.
      sources: per dataset, ``{"source", "location"}`` of the images.
      command, wall_time_s: how the study was run and how long it took (s).
      config: ``config_dict(cfg)``, stored as is.
      recon_floors: per dataset, the mean image's reconstruction loss (nats) on the final
        evaluation set (:func:`sparsejax.metrics.mean_image_nll`).
    """
    runs, cells = [], {}
    keys_of = {}
    for (dataset, arm) in cfg.cells():
        name = cell_name(dataset, arm)
        keys = keys_of[name] = tau_keys(cfg.train_config(dataset, arm))
        seeds = by_run(records.get(name, []))
        model = cfg.arm_method(arm)
        cells[name] = cell_summary(dataset, arm, seeds, keys, model, cfg.targets_k(arm))
        for seed, rs in seeds.items():
            run = {"cell": name, "dataset": dataset, "method": arm, "seed": seed,
                   "epochs": rs}
            if model != "dense":
                run["death_epoch"] = dict(zip(keys, death_epochs(rs, keys).tolist()))
            runs.append(run)
    floors, controls = {}, {}
    for dataset in cfg.datasets:
        mine = [c for c in cells.values() if c["dataset"] == dataset]
        shuffled = [c["mig_shuffled_end"]["mean"] for c in mine
                    if c["mig_shuffled_end"]["mean"] is not None]
        untrained = cells.get(cell_name(dataset, "untrained"))
        floors[dataset] = {
            "recon_mean_image": recon_floors.get(dataset),
            # the largest of the cells' shuffled-factor MIGs: the most conservative floor
            "mig_shuffled": max(shuffled) if shuffled else None,
            "mig_untrained": untrained["mig_mean_end"]["mean"] if untrained else None,
        }
        for c in mine:
            c["flags"] = cell_flags(c, floors[dataset])
        controls[dataset] = {arm: {"cell": cell_name(dataset, arm),
                                   "dead_final": cells[cell_name(dataset, arm)]["dead_final"]}
                             for arm in CONTROLS if cell_name(dataset, arm) in cells}
    ratios = {}
    for method in cfg.methods:
        a_name, b_name = cell_name("dsprites", method), cell_name("shapes3d", method)
        a, b = cells.get(a_name), cells.get(b_name)
        if a and b and is_evidence(a) and is_evidence(b):
            ratios[method] = {t: ratio_with_se(b["dead_final"][t], a["dead_final"][t])
                              for t in keys_of[a_name]}
    finals = [c["eval_size_final"] for c in cells.values()
              if c["method"] != WARMUP and c["eval_size_final"]]
    return {
        "study": "collapse", "command": command, "wall_time_s": wall_time_s,
        "data": sources, "config": config,
        "eval_size_final": max(finals) if finals else None,
        "paper": {"dead_at_k50_percent": {cell_name(*k): {"mean": v[0], "std": v[1]}
                                          for k, v in PAPER.items()},
                  "shapes3d_over_dsprites": PAPER_RATIOS},
        "summary": {"cells": cells, "floors": floors, "controls": controls,
                    "shapes3d_over_dsprites": ratios},
        "runs": runs,
    }


def tau_label(key: str) -> str:
    """A threshold key as the report writes it: ``"0"``, ``"1e-6"``, ``"1e-3"``, ``"1e-2"``."""
    t = float(key)
    if t == 0:
        return "0"
    mantissa, _, exponent = f"{t:e}".partition("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def first_cell(results: dict) -> dict:
    """The TrainConfig dict (``to_dict``) of a results.json's first Top-k or L1 cell (else
    its first cell): the settings the study's arms share (all but dataset and method)."""
    cells = results["config"]["cells"]
    arms = results.get("summary", {}).get("cells", {})
    for name, tcfg in cells.items():
        if arms.get(name, {}).get("method") in ("topk", "l1"):
            return tcfg
    return next(iter(cells.values()))
