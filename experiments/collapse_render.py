"""``report.md`` of the collapse study: the text is ``templates/collapse_report.md``, the
tables are built here from ``results.json`` (every number the report shows is read from it;
the paper's figures come from :mod:`experiments.collapse_paper`).

Templates are ``string.Template`` text (``$field``) with optional blocks between the lines
``<!-- if NAME -->`` and ``<!-- end NAME -->``; a leading ``<!-- ... -->`` comment documents
the template and is not rendered.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from importlib import resources

from experiments.collapse_paper import (CONTROLS, METHOD_LABEL, PAPER, PAPER_BATCH, PAPER_K,
                                        PAPER_LR, PAPER_RATIOS, WARMUP)
from experiments.collapse_stats import FLAGS, first_cell, is_evidence, tau_keys, tau_label

RARE = "fires on < 0.1%"  # sparsejax.metrics.dead_units.MIN_FREQUENCY: dead by frequency
_BLOCK = re.compile(r"^<!-- if (\w+) -->\n(.*?)^<!-- end \1 -->\n", re.S | re.M)


def load_template(name: str) -> str:
    """The text of ``experiments/templates/<name>`` (shipped with the package)."""
    return resources.files("experiments").joinpath("templates", name).read_text("utf-8")


def fill(template: str, fields: Mapping[str, object],
         blocks: Mapping[str, bool] | None = None) -> str:
    """Renders a template: drops its leading comment, keeps the blocks ``blocks`` marks True
    (a block it does not name is an error), then substitutes every ``$field`` (a missing
    field is an error)."""
    if template.startswith("<!--"):
        template = template.split("-->\n", 1)[1]
    blocks = blocks or {}
    text = _BLOCK.sub(lambda m: m.group(2) if blocks[m.group(1)] else "", template)
    return string.Template(text).substitute(fields)


def pm(s: dict | None, fmt: str = "{:.1f}") -> str:
    """A :func:`~experiments.collapse_stats.mean_std` dict as ``mean ± std`` ("-": none)."""
    if not s or s.get("mean") is None:
        return "-"
    return f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])}"


def _paper(dataset: str, method: str) -> str:
    p = PAPER.get((dataset, method))
    return "-" if p is None else f"{p[0]:.1f} ± {p[1]:.1f}"


def ci(s: dict | None, fmt: str = "{:.1f}") -> str:
    """``mean ± std [lo, hi]`` with the bootstrap interval of the mean."""
    if not s or s.get("mean") is None:
        return "-"
    lo, hi = s.get("ci95", [None, None])
    return pm(s, fmt) + ("" if lo is None else f" [{fmt.format(lo)}, {fmt.format(hi)}]")


def flags_text(c: dict) -> str:
    """A cell's flags as the report prints them (**not evidence** first)."""
    text = "; ".join(FLAGS[f] for f in c["flags"])
    if not is_evidence(c):
        return f"**not evidence**: {text}"
    return text or "-"


def _num(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table: header, separator, one line per row (no trailing newline)."""
    def line(cols):
        return "| " + " | ".join(str(c) for c in cols) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def report_markdown(results: dict, figs: list[tuple[str, str]]) -> str:
    """The report of one study from its results.json; ``figs``: ``(file, caption)`` pairs
    (at least one: :func:`~experiments.collapse_plots.write_plots` always draws mig.png)."""
    summary = results["summary"]
    cells, floors, controls = summary["cells"], summary["floors"], summary["controls"]
    cfg = results["config"]
    cell = first_cell(results)
    schedule = cell["schedule"]
    keys = tau_keys(cell)
    labels = [tau_label(t) for t in keys]
    t0, tau0 = keys[0], f"tau = {labels[0]}"
    trained = [c for c in cells.values() if c["method"] != WARMUP]
    sparse = [c for c in trained if c["model"] != "dense"]
    main = [c for c in sparse if c["method"] in METHOD_LABEL and c["method"] not in CONTROLS]
    ratios = summary["shapes3d_over_dsprites"]
    label = METHOD_LABEL

    tables = []
    for d in cfg["datasets"]:
        f = floors[d]
        rows = []
        for c in (c for c in trained if c["dataset"] == d):
            is_sparse = c["model"] != "dense"
            rows.append([
                label[c["method"]], len(c["seeds"]), c["k_final"] if is_sparse else "-",
                pm(c["l0_final"]) if is_sparse else "-",
                *((ci(c["dead_final"][t]) if is_sparse else "-") for t in keys[:1]),
                *((pm(c["dead_final"][t]) if is_sparse else "-") for t in keys[1:]),
                pm(c["rare_final"][t0]) if is_sparse else "-",
                pm(c["recon_final"]), pm(c["mig_mean_end"], "{:.3f}"),
                pm(c.get("mig_code_end"), "{:.3f}") if is_sparse else "-", flags_text(c)])
        table = md_table(
            ["arm", "seeds", "k", "L0, end", f"dead % ({tau0}) [95% CI]",
             *(f"tau = {lab}" for lab in labels[1:]), f"{RARE} %", "recon (nats)",
             "MIG latent mean", "MIG sparse code", "flags"], rows)
        tables.append(
            f"## {d}: every arm at the end of its run\n\n"
            f"Floors: reconstruction of the mean image {_num(f['recon_mean_image'], '{:.1f}')} "
            f"nats; MIG with shuffled factors {_num(f['mig_shuffled'], '{:.3f}')}; MIG of the "
            f"untrained encoder {_num(f.get('mig_untrained'), '{:.3f}')}.\n\n{table}")

    ctrl = md_table(
        ["dataset", "arm", "dead %", *(label[a] for a in CONTROLS), "paper"],
        [[c["dataset"], label[c["method"]] + ("" if is_evidence(c) else " (not evidence)"),
          pm(c["dead_final"][t0]),
          *(pm(controls[c["dataset"]][a]["dead_final"][t0]) if a in controls[c["dataset"]]
            else "-" for a in CONTROLS),
          _paper(c["dataset"], c["method"])] for c in main])
    evidence = [c for c in main if is_evidence(c) and (c["dataset"], c["method"]) in PAPER]
    paper = md_table(
        ["dataset", "method", "paper", "ours", f"ours, never above {labels[-1]}",
         f"ours, {RARE}"],
        [[c["dataset"], label[c["method"]], _paper(c["dataset"], c["method"]),
          pm(c["dead_final"][t0]), pm(c["dead_final"][keys[-1]]), pm(c["rare_final"][t0])]
         for c in evidence]) if evidence else (
        "No cell of this run is evidence: nothing to set beside the paper.")
    ratio = md_table(
        ["method", "paper", f"ours, {tau0}", *(f"tau = {lab}" for lab in labels[1:])],
        [[label[m], f"{PAPER_RATIOS[m]:.1f}x",
          *("-" if r[t]["ratio"] is None else f"{r[t]['ratio']:.2f} ± {r[t]['se']:.2f}"
            for t in keys)] for m, r in ratios.items()])
    threshold = md_table(
        ["dataset", "arm", tau0, *labels[1:], f"{RARE} ({tau0})",
         f"revived during the run ({tau0}, per seed)"],
        [[c["dataset"], label[c["method"]], *(pm(c["dead_final"][t]) for t in keys),
          pm(c["rare_final"][t0]), c["revived_during_schedule"].get(t0, "-")] for c in sparse])
    mig = md_table(
        ["dataset", "arm", "MIG latent mean, start", "end", "MIG sparse code, start", "end",
         "MIG shuffled factors, end", "recon (nats), end"],
        [[c["dataset"], label[c["method"]],
          *(pm(c.get(k), "{:.3f}") for k in ("mig_mean_start", "mig_mean_end",
                                              "mig_code_start", "mig_code_end",
                                              "mig_shuffled_end")),
          pm(c["recon_final"])] for c in trained])
    units = md_table(
        ["dataset", "arm", "alive units", "alive and specific", "L1 coefficient at the end"],
        [[c["dataset"], label[c["method"]], pm(c["alive_final"]), pm(c["specific_final"]),
          pm(c["l1_coef_final"], "{:.3g}") if c.get("l1_coef_final") else "-"] for c in sparse])
    data = "; ".join(f"{d}: {v['source']}" + (f" ({v['location']})" if v["location"]
                                                else " (JAX renderer, on the device)")
                     for d, v in results["data"].items())
    spe = cell["steps_per_epoch"]
    warm = cfg.get("warmup_epochs", 0)
    ctl = cell["controller"]
    fields = {
        "scale": "paper" if cfg["preset"] == "paper" else "small",
        "command": results["command"], "wall_time": f"{results['wall_time_s']:.0f}",
        "preset": cfg["preset"], "num_seeds": cfg["num_seeds"], "seed_first": cfg["seed"],
        "seed_last": cfg["seed"] + cfg["num_seeds"] - 1, "data": data,
        "k_start": schedule["start"], "k_end": schedule["end"],
        "schedule_kind": schedule["kind"], "schedule_length": schedule["length"],
        "epochs": cell["epochs"],
        "steps_per_epoch": f"{spe} steps" if spe else "one pass over the dataset",
        "steps_choice": (f"{spe} on every dataset (the same training for each, so the "
                         "datasets' dead rates compare at equal steps)" if spe else
                         "one pass over each dataset, as the paper (dSprites 11,520 steps, "
                         "Shapes3D 7,500: unequal training)"),
        "warmup_text": (f", after a shared warm-up of {warm} epoch(s)" if warm else ""),
        "warmup_choice": (f"{warm} epoch(s) of the ReLU hybrid (Top-k at k = N) per dataset "
                          "and seed; every sparse arm and trained control starts from its "
                          "checkpoint; the dense VAE trains as many steps in total" if warm
                          else "none: every run starts from its initial parameters"),
        "batch_size": cell["batch_size"], "eval_size": cell["eval_size"],
        "eval_size_final": results.get("eval_size_final"),
        "paper_k": PAPER_K, "tau_first": labels[0], "tau_set": ", ".join(labels),
        "dataset_tables": "\n\n".join(tables), "controls_table": ctrl, "paper_table": paper,
        "ratio_table": ratio, "threshold_table": threshold,
        "mig_table": mig, "units_table": units, "conclusion": conclusion(results),
        "plots": "\n\n".join(f"![{cap}]({f})\n\n*{cap}*" for f, cap in figs),
        "num_latents": cell["num_latents"], "num_units": cell["num_units"],
        "placement": cell["placement"], "beta": cell["beta"], "sae_weight": cell["sae_weight"],
        "topk_form": ("h = ReLU(TopK(pre)): at most k active" if cell.get("topk_relu", True)
                      else "h = TopK(pre): exactly k active"),
        "controller_gain": ctl["gain"], "controller_p_gain": ctl.get("p_gain", 0.0),
        "controller_ema": ctl["ema"], "controller_init_coef": ctl["init_coef"],
        "controller_horizon": f'{ctl.get("horizon", 0.0):g}',
        "controller_min_coef": f'{ctl.get("min_coef", ctl["init_coef"]):g}',
        "learning_rate": cell["learning_rate"],
        "lr_note": ("" if (cell["learning_rate"], cell["batch_size"]) == (PAPER_LR, PAPER_BATCH)
                    else f" (a deviation: the paper's disentanglement_lib setting is lr "
                    f"{PAPER_LR:g}, batch {PAPER_BATCH}; changed so that a short CPU run learns)"),
    }
    return fill(load_template("collapse_report.md"), fields,
                blocks={"ratios": bool(ratios), "units": bool(sparse)})


def conclusion(results: dict) -> str:
    """The closing paragraph: what the run's own numbers support, cell by cell, and what
    they cannot show."""
    summary = results["summary"]
    cells, controls = summary["cells"], summary["controls"]
    t0 = tau_keys(first_cell(results))[0]
    out = []
    for d in results["config"]["datasets"]:
        main = [c for c in cells.values() if c["dataset"] == d and c["method"] in ("topk", "l1")]
        dense = cells.get(f"{d}-dense")
        floor = summary["floors"][d]
        if dense:
            r, fl = dense["recon_final"]["mean"], floor["recon_mean_image"]
            learnt = r is not None and fl is not None and r <= 0.5 * fl
            out.append(f"On {d} the dense VAE reconstructs at {_num(r, '{:.1f}')} nats against "
                       f"the mean image's {_num(fl, '{:.1f}')} ("
                       + ("it learnt: at most half the floor" if learnt else
                          "more than half the floor: the backbone has learnt little") + "); "
                       f"its MIG is {_num(dense['mig_mean_end']['mean'], '{:.3f}')} against "
                       f"{_num(floor['mig_shuffled'], '{:.3f}')} with shuffled factors.")
        for c in main:
            dead = c["dead_final"][t0]["mean"]
            lab = METHOD_LABEL[c["method"]]
            if not is_evidence(c):
                why = "; ".join(FLAGS[f] for f in c["flags"])
                out.append(f"{d} {lab} is not evidence ({why}).")
                continue
            ctl = controls.get(d, {})
            parts = [f"{METHOD_LABEL[a]} {ctl[a]['dead_final'][t0]['mean']:.1f}%"
                     for a in CONTROLS if a in ctl and ctl[a]["dead_final"][t0]["mean"] is not None]
            base = max((ctl[a]["dead_final"][t0]["mean"] for a in ("untrained", "relu_no_penalty")
                        if a in ctl and ctl[a]["dead_final"][t0]["mean"] is not None), default=None)
            verdict = ("above both the untrained network and training without sparsity: "
                       "sparsification kills units beyond what the input and training alone do"
                       if base is not None and dead > base else
                       "not above what the untrained network or training without sparsity "
                       "already leaves dead: this run does not separate sparsification from "
                       "those causes")
            out.append(f"{d} {lab}: {dead:.1f}% dead at k = {c['k_final']} (L0 "
                       f"{c['l0_final']['mean']:.1f}), beside " + ", ".join(parts)
                       + f"; {verdict}.")
    out.append("What it does not show: the paper's exact rates (its 50 full epochs on the real "
               "datasets are the `paper` preset on an accelerator); whether any remedy prevents "
               "the collapse (the `remedies` study); at 2-3 seeds the intervals are coarse.")
    return "\n\n".join(out)
