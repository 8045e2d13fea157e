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

from experiments.collapse_paper import PAPER, PAPER_RATIOS, cell_name


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


def mean_std(values: Iterable) -> dict:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values;
    ``n`` counts them and ``values`` lists them (None and NaN are dropped)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size), "values": v.tolist()}


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


def cell_summary(dataset: str, method: str, seeds: dict[int, list[dict]],
                 keys: Sequence[str]) -> dict:
    """One cell's summary: final-epoch statistics over seeds (dead and rare rates in %),
    MIG at the first and last epoch, units revived during the schedule per seed."""
    finals = {s: rs[-1] for s, rs in seeds.items()}
    firsts = {s: rs[0] for s, rs in seeds.items()}
    summary = {
        "dataset": dataset, "method": method, "seeds": list(seeds),
        "epochs": len(next(iter(seeds.values()), [])),
        "k_final": next((r["k"] for r in finals.values()), None),
        "l0_final": mean_std(r["eval"]["l0"] for r in finals.values()),
        "recon_final": mean_std(r["eval"]["recon"] for r in finals.values()),
        "kl_final": mean_std(r["eval"]["kl"] for r in finals.values()),
        "mig_mean_start": mean_std(r.get("mig_mean") for r in firsts.values()),
        "mig_mean_end": mean_std(r.get("mig_mean") for r in finals.values()),
    }
    if method == "dense":
        return summary
    summary.update({
        "mig_code_start": mean_std(r.get("mig_code") for r in firsts.values()),
        "mig_code_end": mean_std(r.get("mig_code") for r in finals.values()),
        "dead_final": {t: mean_std(100 * r["dead_fraction"][t] for r in finals.values())
                       for t in keys},
        "rare_final": {t: mean_std(100 * r["firing"][t]["rare_fraction"]
                                   for r in finals.values()) for t in keys},
        "specific_final": mean_std(r["alignment"]["specific_units"] for r in finals.values()),
        "alive_final": mean_std(r["alignment"]["alive_units"] for r in finals.values()),
        "l1_coef_final": mean_std(r["l1_coef"] for r in finals.values())
        if method == "l1" else None,
    })
    back = [revived_during(rs, keys) for rs in seeds.values()]  # [S, T]
    summary["revived_during_schedule"] = (dict(zip(keys, np.asarray(back).T.tolist()))
                                          if back else {})
    return summary


def build_results(cfg, records: dict[str, list[dict]], sources: dict, *, command: str,
                  wall_time_s: float, config: dict) -> dict:
    """The machine-readable study: per run, per epoch, and the summary the report shows.

    Args:
      cfg: the study's ``CollapseConfig`` (its cells, methods and per-cell TrainConfigs).
      records: per cell name, every record of its run directory.
      sources: per dataset, ``{"source", "location"}`` of the images.
      command, wall_time_s: how the study was run and how long it took (s).
      config: ``config_dict(cfg)``, stored as is.
    """
    runs, cells = [], {}
    keys_of = {}
    for (dataset, method) in cfg.cells():
        name = cell_name(dataset, method)
        keys = keys_of[name] = tau_keys(cfg.train_config(dataset, method))
        seeds = by_run(records.get(name, []))
        cells[name] = cell_summary(dataset, method, seeds, keys)
        for seed, rs in seeds.items():
            run = {"cell": name, "dataset": dataset, "method": method, "seed": seed,
                   "epochs": rs}
            if method != "dense":
                run["death_epoch"] = dict(zip(keys, death_epochs(rs, keys).tolist()))
            runs.append(run)
    ratios = {}
    for method in cfg.methods:
        a_name, b_name = cell_name("dsprites", method), cell_name("shapes3d", method)
        a, b = cells.get(a_name), cells.get(b_name)
        if a and b:
            ratios[method] = {t: ratio_with_se(b["dead_final"][t], a["dead_final"][t])
                              for t in keys_of[a_name]}
    return {
        "study": "collapse", "command": command, "wall_time_s": wall_time_s,
        "data": sources, "config": config,
        "paper": {"dead_at_k50_percent": {cell_name(*k): {"mean": v[0], "std": v[1]}
                                          for k, v in PAPER.items()},
                  "shapes3d_over_dsprites": PAPER_RATIOS},
        "summary": {"cells": cells, "shapes3d_over_dsprites": ratios},
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
    """The TrainConfig dict (``to_dict``) of a results.json's first cell: the settings every
    cell of the study shares (all but dataset and method)."""
    return next(iter(results["config"]["cells"].values()))
