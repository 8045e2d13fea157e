"""Writes a finished remedies study's outputs: ``results.json``, the PNGs and ``report.md``
(text in ``templates/remedies_report.md``; tables built here from results.json, with the
collapse study's rendering helpers, :mod:`experiments.collapse_render`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from experiments.collapse_paper import CONTROLS, METHOD_LABEL
from experiments.collapse_render import ci, fill, flags_text, load_template, md_table, pm
from experiments.collapse_stats import first_cell, tau_keys, tau_label
from experiments.remedies_analysis import CONSTANT_UNITS, MIG_TOL, RECON_TOL
from sparsejax.atomic_io import write_atomic
from sparsejax.sparsity.remedies import RemedyConfig

LABEL = {**METHOD_LABEL, "topk": "Top-k (plain)", "l1": "L1 (plain)", "auxk": "AuxK",
         "resample": "resampling", "batchtopk": "BatchTopK", "jumprelu": "JumpReLU",
         "tied_init": "tied init", "subspace_init": "subspace init", "whiten": "whitened input",
         "schedule_cosine": "cosine schedule", "schedule_geometric": "geometric schedule",
         "schedule_long": "schedule x2 long", "topk_norelu": "Top-k, no ReLU",
         "posthoc_sae": "post-hoc SAE on the dense VAE"}
DENSITY_PANELS = 4  # firing-density panels per PNG

CHOICES = [
    "Every remedy arm starts from the shared warm-up of the collapse grid, as plain Top-k "
    "does; the initialisation remedies (tied, subspace) and the whitening are applied to "
    "the warmed-up sparse layer at the arm's first step (its optimiser moments reset).",
    "Whitening is PCA whitening of the sparse layer's input estimated once, at the arm's "
    "start, on 1,024 images, to the input's mean variance rather than to 1 (whitened to 1, "
    "Adam's steps on the encoder grew by 1 / std of the input, a few hundred times on this "
    "layer, and every unit died in the first epoch); introduced as a reparameterisation: "
    "encoder and decoder are re-expressed so the layer computes the same function; only "
    "the coordinates Adam works in change. The estimate is not updated as the encoder "
    "moves.",
    "Subspace init: encoder and decoder directions drawn isotropically in the span of the "
    "principal directions holding 99% of the input's variance, centred on its mean.",
    "AuxK: k_aux from the preset, a unit is dead after dead_after steps without firing on a "
    "training batch; its normalised loss is weighted 1/32 against the SAE term's normalised "
    "error (in the SAE term's units: 1/32 x the target's variance).",
    "Resampling: every resample_every steps, units dead for dead_after steps; the latent "
    "head's rows that read a resampled unit are zeroed (it enters the code anew); the new "
    "decoder row gets the decoder's mean row norm (the hybrid's decoder is not unit-norm).",
    "BatchTopK: the threshold at evaluation is the moving average of "
    "the smallest activation each training batch kept (decay 0.9 per step).",
    "JumpReLU: the L0 penalty's coefficient is steered by the L1 arm's controller to the "
    "same k schedule; rectangle-kernel pseudo-derivatives of bandwidth {jump_bandwidth:g}, "
    "threshold {jump_init:g} at the start, thresholds learning at {jump_lr_scale:g} x the "
    "model's rate (Rajamanoharan et al. use 0.001 and 1 x over 10^5+ steps; in a few hundred "
    "steps the thresholds then cannot follow k); the 2025 pre-activation loss (weight "
    "{preact_coef:g}) acts on units dead for dead_after steps.",
    "Schedule x2 long: the schedule takes twice the epochs and the run is longer by as "
    "many, so the held part at the final k is as long as plain Top-k's.",
    "Post-hoc SAE: a Top-k SAE (the standalone SAE of sparsejax.train.sae, tied init, unit "
    "decoder rows, no AuxK) at the final k from its first step (no schedule), on the "
    "hidden layer of the dense VAE trained as long as a warm-up plus a sparse arm; its "
    "reconstruction and MIG are the dense VAE's own (the SAE is off the VAE's path).",
    "Cost: training images per second over the epochs after the first (compilation "
    "excluded) relative to plain Top-k; the post-hoc SAE is not costed (a different model).",
]

LIMITS = [
    "One architecture, one sparse-layer width and one optimiser setting per preset; a "
    "remedy that fails here may work at another learning rate, k_aux or interval.",
    "The verdict's tolerances (reconstruction within 2%, MIG within 0.05) are this study's; "
    "with few seeds the bootstrap intervals are coarse and a pass or a fail near the "
    "tolerance is not a robust finding.",
    "The follow-up is short (revival_epochs), not the paper's 100 epochs.",
    "No remedy was tuned, and remedies were not combined (e.g. AuxK with tied init, as "
    "Gao et al. use them together).",
    "Cells flagged not evidence (a missed L0 target, no learning, a sparse layer that "
    "reconstructs its input no better than its mean) say nothing either way.",
    "The initialisation remedies act on the warmed-up sparse layer at the arm's start, not "
    "on a fresh network: what they would do from a random start is not measured here.",
    "The post-hoc SAE answers whether a sparse code of the same features dies without the "
    "KL term behind it; it is trained at the final k from its first step, so it stands "
    "beside the fixed-k control more than beside the schedule.",
    "Only the sparse code's own dead units are counted; whether the units that remedies "
    "keep alive carry factor information is what the alignment and per-unit MI columns "
    "show, not the dead rate.",
]


def _cell(results: dict) -> dict:
    """The TrainConfig dict of the grid's first Top-k or L1 cell (what the arms share)."""
    return first_cell({"config": results["config"]["grid"], "summary": results["summary"]})


def _mean_at(run: dict, fn) -> list:
    return [fn(r) for r in run["epochs"]]


def write_plots(results: dict, out: Path) -> list[tuple[str, str]]:
    """dead % against k per remedy, firing-density histograms, the Pareto front of dead %
    against reconstruction; returns ``(file, caption)`` pairs."""
    from sparsejax.viz.curves import density_histograms, xy_panels

    summary = results["summary"]
    t0 = tau_keys(_cell(results))[0]
    datasets = sorted({e["dataset"] for e in summary["remedies"]})
    arms = [e["remedy"] for e in summary["remedies"] if e["dataset"] == datasets[0]]
    figs = []
    dk = {}
    for d in datasets:
        series = {}
        for a in arms:
            runs = [r for r in results["runs"] if r["dataset"] == d and r["method"] == a]
            if not runs:
                continue
            k = np.asarray([_mean_at(r, lambda e: e["k"]) for r in runs], float).mean(0)
            dead = np.asarray([_mean_at(r, lambda e: 100 * e["dead_fraction"][t0])
                               for r in runs], float).mean(0)
            series[LABEL.get(a, a)] = (k, dead)
        dk[d] = series
    xy_panels(dk, xlabel="k (target, per epoch's evaluation)", ylabel=f"dead % (tau = "
              f"{tau_label(t0)})", path=out / "dead_vs_k.png", invert_x=True,
              title="Dead units against k along the schedule (mean over seeds)")
    figs.append(("dead_vs_k.png", "dead % against k per remedy, k falling left to right"))
    pareto = {}
    for d in datasets:
        pts = {LABEL.get(e["remedy"], e["remedy"]) + ("" if e["evidence"] else " (not ev.)"):
               ([e["recon_final"]["mean"]], [e["dead_final"][t0]["mean"]])
               for e in summary["remedies"] if e["dataset"] == d
               and e["recon_final"]["mean"] is not None}
        pareto[d] = pts
    levels = {f"{LABEL[a]}": summary["cells"][f"{d}-{a}"]["dead_final"][t0]["mean"]
              for d in datasets[:1] for a in CONTROLS if f"{d}-{a}" in summary["cells"]}
    xy_panels(pareto, xlabel="reconstruction loss (nats per image)",
              ylabel=f"dead % (tau = {tau_label(t0)})", path=out / "pareto.png",
              scatter=True, front=True, hlines=levels,
              title="Dead units against reconstruction at the end (lower left is better)")
    figs.append(("pareto.png", "the Pareto front of dead % against reconstruction; dotted: "
                 "the controls"))
    dens = {}
    for d in datasets:
        for a in arms:
            run = next((r for r in results["runs"] if r["dataset"] == d and r["method"] == a),
                       None)
            if run is not None:
                e = run["epochs"][-1]
                dens[f"{d} {LABEL.get(a, a)}"] = {
                    f"end (k {e['k']})": np.asarray(e["firing_counts"][t0]) / e["eval_size"]}
    names = list(dens)
    floor = 1.0 / max(e["eval_size_final"] or 1 for e in summary["cells"].values())
    for i in range(0, len(names), DENSITY_PANELS):
        f = f"firing_density_{i // DENSITY_PANELS + 1}.png"
        density_histograms({n: dens[n] for n in names[i:i + DENSITY_PANELS]}, path=out / f,
                           floor=floor, title="Firing density per unit at the end")
        figs.append((f, "log10 firing density per unit, dead units in the leftmost bar"))
    return figs


def _tables(results: dict) -> str:
    summary = results["summary"]
    keys = tau_keys(_cell(results))
    labels = [tau_label(t) for t in keys]
    t0 = keys[0]
    parts = []
    for d in sorted({e["dataset"] for e in summary["remedies"]}):
        mine = [e for e in summary["remedies"] if e["dataset"] == d]
        death = []
        for e in mine:
            rev = e["revival"]
            death.append([LABEL.get(e["remedy"], e["remedy"]), ci(e["dead_final"][t0]),
                          *(pm(e["dead_final"][t]) for t in keys[1:]),
                          pm(e["rare_final"][t0]),
                          pm(rev["ever_revived"][t0]) if rev else "-",
                          pm(rev["dead_percent_end"][t0]) if rev else "-"])
        quality = []
        for e in mine:
            speed = e["speed_vs_topk"]
            quality.append([LABEL.get(e["remedy"], e["remedy"]),
                            f"{pm(e['l0_final'])} / {e['k_final']}", pm(e["recon_final"]),
                            pm(e["sae_fvu_final"], "{:.3f}"), pm(e["mig_mean_end"], "{:.3f}"),
                            pm(e["mig_code_end"], "{:.3f}"), pm(e["specific_final"]),
                            pm(e["alive_final"]), "-" if speed is None else f"{speed:.2f}",
                            flags_text(summary["cells"][e["cell"]])])
        parts.append(f"## {d}: dead units per remedy\n\nDead % at the end, mean ± std over "
                     f"seeds (tau = {labels[0]} with its 95% bootstrap interval); rare: fires "
                     "on fewer than 0.1% of the samples (dead by frequency); revived: units "
                     "dead at the end of the main run that fired again in the follow-up "
                     "(count); then the dead % at the follow-up's end.\n\n" + md_table(
                         ["arm", f"dead % tau = {labels[0]}", *(f"tau = {t}" for t in labels[1:]),
                          "rare %", "revived (units)", "dead % after follow-up"], death))
        parts.append(f"## {d}: reconstruction, MIG, alignment and cost\n\n" + md_table(
            ["arm", "L0 / k", "recon (nats)", "SAE FVU", "MIG (mean)", "MIG (code)",
             "specific units", "alive units", "speed vs Top-k", "flags"], quality))
    return "\n\n".join(parts)


def _controls(results: dict) -> str:
    summary = results["summary"]
    keys = tau_keys(_cell(results))
    rows = []
    for d, arms in summary["controls"].items():
        for a, c in arms.items():
            rows.append([d, LABEL.get(a, a), *(pm(c["dead_final"][t]) for t in keys)])
        f = summary["floors"][d]
        rows.append([d, "floors: recon of the mean image / MIG shuffled",
                     f"{f['recon_mean_image']:.1f}" if f["recon_mean_image"] else "-",
                     f"{f['mig_shuffled']:.3f}" if f["mig_shuffled"] is not None else "-",
                     *([""] * (len(keys) - 2))])
    return md_table(["dataset", "control", *(f"dead % tau = {tau_label(t)}" for t in keys)],
                    rows)


def _blind(results: dict) -> str:
    parts = []
    for d, b in results["summary"]["mig_blind_spot"].items():
        rows = [[name, r["units"], r["alive_units"], f"{r['mig']:.3f}",
                 f"{100 * r['coverage']:.0f}%", r["specific_units"],
                 f"{r['per_unit_mi_mean']:.3f}", f"{r['per_unit_mi_alive_mean']:.3f}"]
                for name, r in b["rows"].items()]
        parts.append(f"{d}: the code of `{b['cell']}` (seed {b['seed']}) at k = {b['k']} on "
                     f"{b['eval_size']} samples.\n\n" + md_table(
                         ["code", "units", "alive", "MIG", "factors covered",
                          "specific units", "per-unit MI (all units)",
                          "per-unit MI (alive)"], rows))
    return "\n\n".join(parts)


def report_markdown(results: dict, figs: list[tuple[str, str]]) -> str:
    summary = results["summary"]
    cfg = results["config"]
    grid = cfg["grid"]
    cell = _cell(results)
    sch = cell["schedule"]
    data = "; ".join(f"{d}: {s['source']}" + (f" ({s['location']})" if s.get("location") else "")
                     for d, s in results["data"].items())
    return fill(load_template("remedies_report.md"), {
        "command": results["command"], "wall_time": f"{results['wall_time_s']:.0f}",
        "preset": cfg["preset"], "grid_preset": grid["preset"],
        "num_seeds": grid["num_seeds"], "data": data,
        "warmup_epochs": grid["warmup_epochs"], "k_start": sch["start"], "k_end": sch["end"],
        "schedule_length": sch["length"], "steps_per_epoch": cell["steps_per_epoch"],
        "epochs": cell["epochs"], "batch_size": cell["batch_size"],
        "revival_epochs": grid["revival_epochs"],
        "eval_size_final": results["eval_size_final"],
        "verdicts": "\n\n".join(f"**{d}.** {v['text']}" for d, v in summary["verdict"].items()),
        "tau_first": tau_label(tau_keys(cell)[0]), "recon_tol_pct": f"{100 * RECON_TOL:.0f}",
        "mig_tol": MIG_TOL, "dataset_tables": _tables(results),
        "controls_table": _controls(results), "blind_tables": _blind(results),
        "constant_units": CONSTANT_UNITS,
        "choices": "\n".join(f"- {c}".format(**_jump_settings(cfg["remedy"])) for c in CHOICES),
        "limits": "\n".join(f"- {c}" for c in LIMITS),
        "figures": "\n\n".join(f"![{cap}]({f})  \n{cap}" for f, cap in figs)})


def _jump_settings(remedy: dict) -> dict:
    """The JumpReLU arm's settings: the study's remedy settings over RemedyConfig's
    defaults (for the choices)."""
    names = ("jump_bandwidth", "jump_init", "jump_lr_scale", "preact_coef")
    return {n: remedy.get(n, getattr(RemedyConfig(), n)) for n in names}


def write_all(results: dict, out: Path) -> None:
    """``out/results.json``, the plots and ``out/report.md``, each written atomically."""
    figs = write_plots(results, out)
    write_atomic(out / "results.json", json.dumps(results) + "\n")
    write_atomic(out / "report.md", report_markdown(results, figs))
