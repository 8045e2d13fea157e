"""Results, plots and report of the collapse study (and the tables the revival study reuses).

Every number in ``report.md`` is read from ``results.json``, which is built from the epoch
records the runs wrote; nothing is typed in by hand except the paper's figures (marked
as such, from REFERENCE.md section 1).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from experiments.collapse import PAPER, PAPER_RATIOS, atomic_write, cell_name

TAU_KEYS = ("0", "1e-06", "0.001", "0.01")  # record keys of the thresholds 0, 1e-6, 1e-3, 1e-2
METHOD_LABEL = {"topk": "Top-k", "l1": "L1", "dense": "dense VAE"}


# --------------------------------------------------------------------------- statistics
def mean_std(values) -> dict:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size), "values": v.tolist()}


def ratio_with_se(num: dict, den: dict) -> dict:
    """Ratio of two seed means with its delta-method standard error (standard errors of the
    means, sample std / sqrt(n), assumed independent)."""
    if not num["n"] or not den["n"] or not den["mean"]:
        return {"ratio": None, "se": None}
    r = num["mean"] / den["mean"]
    rel = 0.0
    for s in (num, den):
        if s["mean"]:
            rel += (s["std"] / math.sqrt(s["n"]) / s["mean"]) ** 2
    return {"ratio": r, "se": abs(r) * math.sqrt(rel)}


def by_run(records: list[dict]) -> dict[int, list[dict]]:
    """Records of one run directory grouped by seed, each list sorted by epoch."""
    runs = defaultdict(list)
    for r in records:
        runs[r["seed"]].append(r)
    return {s: sorted(rs, key=lambda r: r["epoch"]) for s, rs in sorted(runs.items())}


def dead_masks(rec: dict) -> np.ndarray:
    """bool ``[T, N]``: units that never fired above each threshold on the evaluation set."""
    return np.stack([np.asarray(rec["firing_counts"][t]) == 0 for t in TAU_KEYS])


def death_epochs(epochs: list[dict]) -> np.ndarray:
    """Per threshold and unit, the epoch its final dead streak began (-1: alive at the end)."""
    from sparsejax.metrics import update_death_epochs

    d = None
    for rec in epochs:
        dead = dead_masks(rec)
        d = update_death_epochs(np.full(dead.shape, -1) if d is None else d, dead, rec["epoch"])
    return d


# --------------------------------------------------------------------------- results
def build_results(cfg, records: dict[str, list[dict]], sources: dict, *, command: str,
                  wall_time_s: float, config: dict) -> dict:
    """The machine-readable study: per run, per epoch, and the summary the report shows."""
    runs, cells = [], {}
    for (dataset, method) in cfg.cells():
        name = cell_name(dataset, method)
        seeds = by_run(records.get(name, []))
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
        if method != "dense":
            summary.update({
                "mig_code_start": mean_std(r.get("mig_code") for r in firsts.values()),
                "mig_code_end": mean_std(r.get("mig_code") for r in finals.values()),
                "dead_final": {t: mean_std(100 * r["dead_fraction"][t] for r in finals.values())
                               for t in TAU_KEYS},
                "rare_final": {t: mean_std(100 * r["firing"][f"tau={float(t):g}"]
                                           ["rare_fraction"] for r in finals.values())
                               for t in TAU_KEYS},
                "specific_final": mean_std(r["alignment"]["specific_units"]
                                           for r in finals.values()),
                "alive_final": mean_std(r["alignment"]["alive_units"] for r in finals.values()),
                "l1_coef_final": mean_std(r["l1_coef"] for r in finals.values())
                if method == "l1" else None,
            })
            # units that were dead at some evaluation and fired again later in the schedule
            back = []
            for rs in seeds.values():
                ever_dead = np.zeros_like(dead_masks(rs[0]))
                came_back = np.zeros_like(ever_dead)
                for rec in rs:
                    dead = dead_masks(rec)
                    came_back |= ever_dead & ~dead
                    ever_dead |= dead
                back.append(came_back.sum(axis=1).tolist())
            summary["revived_during_schedule"] = dict(zip(TAU_KEYS, np.asarray(back).T.tolist())) \
                if back else {}
        cells[name] = summary
        for seed, rs in seeds.items():
            run = {"cell": name, "dataset": dataset, "method": method, "seed": seed,
                   "epochs": rs}
            if method != "dense":
                run["death_epoch"] = dict(zip(TAU_KEYS, death_epochs(rs).tolist()))
            runs.append(run)
    ratios = {}
    for method in cfg.methods:
        a, b = cells.get(cell_name("dsprites", method)), cells.get(cell_name("shapes3d", method))
        if a and b:
            ratios[method] = {t: ratio_with_se(b["dead_final"][t], a["dead_final"][t])
                              for t in TAU_KEYS}
    return {
        "study": "collapse", "command": command, "wall_time_s": wall_time_s,
        "data": sources, "config": config,
        "paper": {"dead_at_k50_percent": {cell_name(*k): {"mean": v[0], "std": v[1]}
                                          for k, v in PAPER.items()},
                  "shapes3d_over_dsprites": PAPER_RATIOS},
        "summary": {"cells": cells, "shapes3d_over_dsprites": ratios},
        "runs": runs,
    }


# --------------------------------------------------------------------------- plots
def _series(results: dict, dataset: str, method: str, fn) -> np.ndarray:
    rows = [[fn(r) for r in run["epochs"]] for run in results["runs"]
            if run["dataset"] == dataset and run["method"] == method]
    width = max((len(r) for r in rows), default=0)
    return np.asarray([r + [np.nan] * (width - len(r)) for r in rows], np.float64)


def write_plots(results: dict, out: Path) -> list[tuple[str, str]]:
    """Writes the study's PNGs; returns ``(file, caption)`` pairs for the report."""
    from sparsejax.viz.curves import density_histograms, seed_band_panels

    cells = results["summary"]["cells"]
    datasets = sorted({c["dataset"] for c in cells.values()})
    methods = [m for m in ("topk", "l1") if any(c["method"] == m for c in cells.values())]
    all_methods = methods + (["dense"] if any(c["method"] == "dense" for c in cells.values())
                             else [])
    epochs = max(c["epochs"] for c in cells.values())
    x = np.arange(1, epochs + 1)
    figs = []
    if methods:
        panels = {d: {METHOD_LABEL[m]: _series(results, d, m,
                                               lambda r: 100 * r["dead_fraction"]["0"])
                      for m in methods} for d in datasets}
        for d in datasets:  # one figure per dataset: each has its own paper levels
            seed_band_panels({d: panels[d]}, x=x, xlabel="epoch",
                             ylabel="dead units (%), tau = 0",
                             path=out / f"dead_fraction_{d}.png", ylim=(0, 100),
                             title=f"{d}: dead units per epoch",
                             hlines={f"paper {METHOD_LABEL[m]} at k = 50": PAPER[(d, m)][0]
                                     for m in methods})
        figs += [(f"dead_fraction_{d}.png", f"{d}: dead units (tau = 0) per epoch, mean over "
                  "seeds, band from the lowest to the highest seed; dashed lines are the "
                  "paper's rates at k = 50") for d in datasets]
    mig_panels = {}
    for d in datasets:
        mig_panels[f"{d}: latent mean"] = {
            METHOD_LABEL[m]: _series(results, d, m, lambda r: r.get("mig_mean", np.nan))
            for m in all_methods}
        if methods:
            mig_panels[f"{d}: sparse code"] = {
                METHOD_LABEL[m]: _series(results, d, m, lambda r: r.get("mig_code", np.nan))
                for m in methods}
    seed_band_panels(mig_panels, x=x, xlabel="epoch", ylabel="MIG", path=out / "mig.png",
                     title="MIG vs epoch (dlib discrete MIG, 20 bins)")
    figs.append(("mig.png", "MIG on the latent mean (all models) and on the sparse code "
                 "(sparse models) per epoch"))
    if methods:
        kl_panels = {}
        for d in datasets:
            series = {"target k": _series(results, d, methods[0], lambda r: r["k"])[:1]}
            for m in methods:
                series[f"L0 {METHOD_LABEL[m]}"] = _series(results, d, m,
                                                         lambda r: r["eval"]["l0"])
            kl_panels[d] = series
        seed_band_panels(kl_panels, x=x, xlabel="epoch", ylabel="active units per image",
                         path=out / "k_schedule.png", title="k schedule vs achieved mean L0 "
                         "(evaluation set)")
        figs.append(("k_schedule.png", "the k schedule and the mean L0 each method achieved"))
        al_panels = {d: {METHOD_LABEL[m]: _series(
            results, d, m, lambda r: r["alignment"]["specific_units"]) for m in methods}
            for d in datasets}
        seed_band_panels(al_panels, x=x, xlabel="epoch",
                         ylabel="alive units specific to one factor", path=out / "alignment.png",
                         title="Units alive and specific to one factor (selectivity >= 0.5, "
                               "MI >= 5% of the factor's entropy)")
        figs.append(("alignment.png", "units that are alive and specific to one factor"))
        dens = {}
        for d in datasets:
            for m in methods:
                run = next((r for r in results["runs"] if r["dataset"] == d and r["method"] == m),
                           None)
                if run is None:
                    continue
                eps = run["epochs"]
                picks = {"start": eps[0], "middle": eps[len(eps) // 2], "end": eps[-1]}
                dens[f"{d} {METHOD_LABEL[m]} (seed {run['seed']})"] = {
                    f"{lab} (epoch {r['epoch'] + 1}, k {r['k']})":
                        np.asarray(r["firing_counts"]["0"]) / r["eval_size"]
                    for lab, r in picks.items()}
        density_histograms(dens, path=out / "firing_density.png",
                           floor=1.0 / max(r["eval_size"] for run in results["runs"]
                                           for r in run["epochs"][:1]),
                           title="Firing density of the 500 units at the start, middle and end "
                                 "of the schedule")
        figs.append(("firing_density.png", "log10 firing density per unit (dead units in the "
                     "leftmost bar)"))
    return figs


def write_traversals(run_dir: Path, out: Path, num_steps: int = 9) -> tuple[str, str] | None:
    """Latent traversals of seed 0 of one trained run: each row sweeps one latent of the
    encoding of one evaluation image from -2.5 to 2.5 (others at their mean)."""
    import jax
    import jax.numpy as jnp

    from sparsejax.data import get_dataset
    from sparsejax.train import load_run
    from sparsejax.train.evaluate import eval_factors
    from sparsejax.viz.curves import image_rows

    if run_dir is None or not (run_dir / "config.json").exists():
        return None
    result = load_run(run_dir)
    cfg = result.config
    records = [r for r in result.history if r["seed"] == cfg.seeds[0]]
    k = records[-1]["k"] if records else cfg.schedule.end
    ds = get_dataset(cfg.dataset, cfg.source, cfg.data_dir)
    x = jnp.asarray(ds.render(eval_factors(ds, cfg)[:1]))
    model = result.model(0)
    mu = model.encode(x, jnp.asarray(k, jnp.int32)).mu[0]
    vals = jnp.linspace(-2.5, 2.5, num_steps)
    z = jnp.tile(mu, (mu.shape[0], num_steps, 1))  # [L, V, L]
    z = z.at[jnp.arange(mu.shape[0]), :, jnp.arange(mu.shape[0])].set(
        jnp.broadcast_to(vals, (mu.shape[0], num_steps)))
    imgs = jax.nn.sigmoid(model.decoder(z.reshape(-1, mu.shape[0])))
    imgs = np.asarray(imgs).reshape(mu.shape[0], num_steps, *imgs.shape[1:])
    rows = [np.asarray(x)] + list(imgs)
    labels = ["input"] + [f"z{i} (mu {float(m):+.2f})" for i, m in enumerate(mu)]
    image_rows(rows, labels, path=out / "traversals.png",
               title=f"{cfg.dataset} {METHOD_LABEL[cfg.method]}, seed {cfg.seeds[0]}, k {k}: "
                     "each row sweeps one latent from -2.5 to 2.5")
    return ("traversals.png", f"latent traversals of the trained {cfg.dataset} "
            f"{METHOD_LABEL[cfg.method]} model (seed {cfg.seeds[0]})")


# --------------------------------------------------------------------------- report
def _pm(s: dict | None, fmt: str = "{:.1f}") -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])}"


def report_markdown(results: dict, figs: list[tuple[str, str]]) -> str:
    cells = results["summary"]["cells"]
    cfg = results["config"]
    sparse = [c for c in cells.values() if c["method"] != "dense"]
    first_cell = next(iter(cfg["cells"].values()))
    lines = [
        "# Sparsification collapse: arXiv 2603.18056 reproduced", "",
        f"Command: `{results['command']}`  ",
        f"Wall time: {results['wall_time_s']:.0f} s; preset `{cfg['preset']}`; "
        f"{cfg['num_seeds']} seed(s) per cell (seeds {cfg['seed']}..{cfg['seed'] + cfg['num_seeds'] - 1}), "
        "trained together in one program per cell.  ",
        "Data: " + "; ".join(f"{d}: {v['source']}" + (f" ({v['location']})" if v["location"]
                                                         else " (JAX renderer, on the device)")
                             for d, v in results["data"].items()) + ".", "",
        f"Schedule: k from {first_cell['schedule']['start']} to {first_cell['schedule']['end']} "
        f"({first_cell['schedule']['kind']}) over {first_cell['schedule']['length']} epochs, "
        f"then held; {first_cell['epochs']} epochs of "
        f"{first_cell['steps_per_epoch'] or 'one pass over the dataset in'} steps at batch "
        f"{first_cell['batch_size']}; evaluation on {first_cell['eval_size']} fixed samples.",
        "",
        "## Dead units at k = 50: the paper beside this run", "",
        "Dead: never above tau = 0 on the whole evaluation set, at the last epoch (k = "
        f"{sparse[0]['k_final'] if sparse else '-'}). Mean ± std over seeds, %.", "",
        "| dataset | method | paper | ours | ours, never above 1e-2 | ours, fires on < 0.1% |",
        "|---|---|---|---|---|---|",
    ]
    for c in sparse:
        p = PAPER[(c["dataset"], c["method"])]
        lines.append(f"| {c['dataset']} | {METHOD_LABEL[c['method']]} | {p[0]:.1f} ± {p[1]:.1f} | "
                     f"{_pm(c['dead_final']['0'])} | {_pm(c['dead_final']['0.01'])} | "
                     f"{_pm(c['rare_final']['0'])} |")
    ratios = results["summary"]["shapes3d_over_dsprites"]
    if ratios:
        lines += ["", "## Complexity scaling: Shapes3D / dSprites dead rate", "",
                  "Ratio of the seed means; ± its delta-method standard error from the two "
                  "cells' standard errors of the mean.", "",
                  "| method | paper | ours, tau = 0 | tau = 1e-6 | tau = 1e-3 | tau = 1e-2 |",
                  "|---|---|---|---|---|---|"]
        for m, r in ratios.items():
            cols = [("-" if r[t]["ratio"] is None else f"{r[t]['ratio']:.2f} ± {r[t]['se']:.2f}")
                    for t in TAU_KEYS]
            lines.append(f"| {METHOD_LABEL[m]} | {PAPER_RATIOS[m]:.1f}x | " + " | ".join(cols)
                         + " |")
    lines += ["", "## Threshold robustness: dead rate (%) at the last epoch under every "
              "definition", "",
              "| dataset | method | tau = 0 | 1e-6 | 1e-3 | 1e-2 | fires on < 0.1% (tau = 0) | "
              "revived during the schedule (tau = 0, per seed) |",
              "|---|---|---|---|---|---|---|---|"]
    for c in sparse:
        lines.append(f"| {c['dataset']} | {METHOD_LABEL[c['method']]} | "
                     + " | ".join(_pm(c["dead_final"][t]) for t in TAU_KEYS)
                     + f" | {_pm(c['rare_final']['0'])} | "
                     f"{c['revived_during_schedule'].get('0', '-')} |")
    lines += ["", "## MIG at the start and end of the schedule", "",
              "Start: after the first epoch (k = 500); end: the last epoch. Mean ± std over "
              "seeds.", "",
              "| dataset | method | MIG latent mean, start | end | MIG sparse code, start | "
              "end | mean L0, end | recon (nats), end |", "|---|---|---|---|---|---|---|---|"]
    for c in cells.values():
        lines.append(f"| {c['dataset']} | {METHOD_LABEL[c['method']]} | "
                     f"{_pm(c['mig_mean_start'], '{:.3f}')} | {_pm(c['mig_mean_end'], '{:.3f}')} | "
                     f"{_pm(c.get('mig_code_start'), '{:.3f}')} | "
                     f"{_pm(c.get('mig_code_end'), '{:.3f}')} | {_pm(c['l0_final'])} | "
                     f"{_pm(c['recon_final'])} |")
    if sparse:
        lines += ["", "## What the surviving units mean", "",
                  "Alive: fires at least once (tau = 0). Specific: at least half of the unit's "
                  "MI goes to one factor, and that MI is at least 5% of the factor's entropy.",
                  "", "| dataset | method | alive units | alive and specific | "
                  "L1 coefficient at the end |", "|---|---|---|---|---|"]
        for c in sparse:
            coef = _pm(c["l1_coef_final"], "{:.3g}") if c.get("l1_coef_final") else "-"
            lines.append(f"| {c['dataset']} | {METHOD_LABEL[c['method']]} | "
                         f"{_pm(c['alive_final'])} | {_pm(c['specific_final'])} | {coef} |")
    lines += ["", "## Plots", ""]
    for f, cap in figs:
        lines += [f"![{cap}]({f})", "", f"*{cap}*", ""]
    lines += ["## Choices the paper does not specify (ours)", "",
              "| choice | this study |", "|---|---|",
              "| backbone | disentanglement_lib conv encoder/decoder, "
              f"{first_cell['num_latents']} latents, Bernoulli loss |",
              f"| sparse layer | {first_cell['num_units']} units on the encoder's 256-d hidden "
              f"layer (placement `{first_cell['placement']}`); SAE decoder reconstructs "
              "stop_gradient(f); the latent head reads the sparse code |",
              f"| loss | recon + beta KL + lambda SAE-MSE (+ L1 term): beta = {first_cell['beta']}, "
              f"lambda = {first_cell['sae_weight']} |",
              "| Top-k arm | h = ReLU(TopK(pre)), exact top-k, k from the schedule |",
              "| L1 arm | ReLU + L1 penalty; its coefficient is steered each step so that the "
              f"measured L0 tracks the same schedule (integral controller in log space, gain "
              f"{first_cell['controller']['gain']}, start {first_cell['controller']['init_coef']}) |",
              f"| schedule | {first_cell['schedule']['kind']}, {first_cell['schedule']['start']} "
              f"-> {first_cell['schedule']['end']} over {first_cell['schedule']['length']} epochs, "
              "then held |",
              "| dead unit | never above tau on the fixed evaluation set; tau in {0, 1e-6, 1e-3, "
              "1e-2}; also firing on fewer than 0.1% of samples |",
              "| MIG | disentanglement_lib discrete MIG, 20 equal-width bins, nats, normalised "
              "by factor entropy, on the evaluation set (latent mean, and sparse code) |",
              f"| optimiser | Adam, lr {first_cell['learning_rate']}, batch "
              f"{first_cell['batch_size']} |",
              f"| seeds | {cfg['num_seeds']} per cell |",
              "| data | dSprites with colour dropped (5 factors); Shapes3D (6 factors); the "
              "procedural renderers are approximations of the real images (README) |",
              "", "The paper's figures are from its abstract (REFERENCE.md section 1); every "
              "other number above comes from this run (`results.json`).", ""]
    return "\n".join(lines)


def write_all(results: dict, out: Path, *, run_dir_for_traversal: Path | None) -> None:
    """results.json, the plots and report.md (each written atomically)."""
    figs = write_plots(results, out)
    trav = write_traversals(run_dir_for_traversal, out)
    if trav:
        figs.append(trav)
    atomic_write(out / "results.json", json.dumps(results) + "\n")
    atomic_write(out / "report.md", report_markdown(results, figs))
