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

from experiments.collapse_paper import METHOD_LABEL, PAPER, PAPER_K, PAPER_RATIOS
from experiments.collapse_stats import first_cell, tau_keys, tau_label

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


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table: header, separator, one line per row (no trailing newline)."""
    def line(cols):
        return "| " + " | ".join(str(c) for c in cols) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def report_markdown(results: dict, figs: list[tuple[str, str]]) -> str:
    """The report of one study from its results.json; ``figs``: ``(file, caption)`` pairs
    (at least one: :func:`~experiments.collapse_plots.write_plots` always draws mig.png)."""
    cells = results["summary"]["cells"]
    cfg = results["config"]
    cell = first_cell(results)
    schedule = cell["schedule"]
    keys = tau_keys(cell)
    labels = [tau_label(t) for t in keys]
    t0, tau0 = keys[0], f"tau = {labels[0]}"
    sparse = [c for c in cells.values() if c["method"] != "dense"]
    ratios = results["summary"]["shapes3d_over_dsprites"]

    dead = md_table(
        ["dataset", "method", "paper", "ours", f"ours, never above {labels[-1]}",
         f"ours, {RARE}"],
        [[c["dataset"], METHOD_LABEL[c["method"]],
          _paper(c["dataset"], c["method"]),
          pm(c["dead_final"][t0]), pm(c["dead_final"][keys[-1]]), pm(c["rare_final"][t0])]
         for c in sparse])
    ratio = md_table(
        ["method", "paper", f"ours, {tau0}", *(f"tau = {lab}" for lab in labels[1:])],
        [[METHOD_LABEL[m], f"{PAPER_RATIOS[m]:.1f}x",
          *("-" if r[t]["ratio"] is None else f"{r[t]['ratio']:.2f} ± {r[t]['se']:.2f}"
            for t in keys)] for m, r in ratios.items()])
    threshold = md_table(
        ["dataset", "method", tau0, *labels[1:], f"{RARE} ({tau0})",
         f"revived during the schedule ({tau0}, per seed)"],
        [[c["dataset"], METHOD_LABEL[c["method"]], *(pm(c["dead_final"][t]) for t in keys),
          pm(c["rare_final"][t0]), c["revived_during_schedule"].get(t0, "-")] for c in sparse])
    mig = md_table(
        ["dataset", "method", "MIG latent mean, start", "end", "MIG sparse code, start", "end",
         "mean L0, end", "recon (nats), end"],
        [[c["dataset"], METHOD_LABEL[c["method"]],
          *(pm(c.get(k), "{:.3f}") for k in ("mig_mean_start", "mig_mean_end",
                                              "mig_code_start", "mig_code_end")),
          pm(c["l0_final"]), pm(c["recon_final"])] for c in cells.values()])
    units = md_table(
        ["dataset", "method", "alive units", "alive and specific", "L1 coefficient at the end"],
        [[c["dataset"], METHOD_LABEL[c["method"]], pm(c["alive_final"]), pm(c["specific_final"]),
          pm(c["l1_coef_final"], "{:.3g}") if c.get("l1_coef_final") else "-"] for c in sparse])
    data = "; ".join(f"{d}: {v['source']}" + (f" ({v['location']})" if v["location"]
                                                else " (JAX renderer, on the device)")
                     for d, v in results["data"].items())
    fields = {
        "command": results["command"], "wall_time": f"{results['wall_time_s']:.0f}",
        "preset": cfg["preset"], "num_seeds": cfg["num_seeds"], "seed_first": cfg["seed"],
        "seed_last": cfg["seed"] + cfg["num_seeds"] - 1, "data": data,
        "k_start": schedule["start"], "k_end": schedule["end"],
        "schedule_kind": schedule["kind"], "schedule_length": schedule["length"],
        "epochs": cell["epochs"],
        "steps_per_epoch": cell["steps_per_epoch"] or "one pass over the dataset in",
        "batch_size": cell["batch_size"], "eval_size": cell["eval_size"],
        "paper_k": PAPER_K, "tau_first": labels[0], "tau_set": ", ".join(labels),
        "k_final": sparse[0]["k_final"] if sparse else "-",
        "dead_table": dead, "ratio_table": ratio, "threshold_table": threshold,
        "mig_table": mig, "units_table": units,
        "plots": "\n\n".join(f"![{cap}]({f})\n\n*{cap}*" for f, cap in figs),
        "num_latents": cell["num_latents"], "num_units": cell["num_units"],
        "placement": cell["placement"], "beta": cell["beta"], "sae_weight": cell["sae_weight"],
        "controller_gain": cell["controller"]["gain"],
        "controller_init_coef": cell["controller"]["init_coef"],
        "learning_rate": cell["learning_rate"],
    }
    return fill(load_template("collapse_report.md"), fields,
                blocks={"ratios": bool(ratios), "units": bool(sparse)})
