"""``python -m experiments revival --from DIR --out DIR2``: do dead units come back?

Continues every sparse run of a finished collapse study in ``DIR`` for more epochs at the
schedule's final k (the paper: 100 more epochs at k = 50; here the collapse preset's
``revival_epochs``, or ``--epochs``), from the runs' last checkpoints (parameters, optimiser
and controller state, data stream). After every epoch it compares each unit with its state
at the end of the collapse run, on the same fixed evaluation set, and counts the units that
fire again (per threshold). Writes ``DIR2/results.json``, ``DIR2/report.md`` and
``DIR2/revival.png``; ``--resume`` continues an interrupted revival.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from experiments.collapse import (CollapseConfig, atomic_write, cell_name,
                                  run_cells_or_exit_code)


def revival_config(collapse_cfg: dict, epochs: int | None) -> CollapseConfig:
    """The collapse study's config, continued at its final k for the revival epochs."""
    d = {k: v for k, v in collapse_cfg.items() if k != "cells"}
    d["datasets"], d["methods"] = tuple(d["datasets"]), tuple(d["methods"])
    cfg = CollapseConfig(**d)
    n = epochs or cfg.revival_epochs
    end = cfg.train_config(cfg.datasets[0], cfg.methods[0]).schedule.end
    train = {**cfg.train, "epochs": n, "schedule": {**cfg.train.get("schedule", {}),
                                                     "start": end, "end": end, "length": 1}}
    cfg = dataclasses.replace(cfg, baseline=False, train=train)
    cfg.validate()
    return cfg


def revival_table(before: dict, records: dict[str, list[dict]]) -> dict:
    """Per cell and seed, per revival epoch: units dead at the end of the collapse run that
    fire again (``revived``), and the dead fraction, at every threshold."""
    from experiments.collapse_report import TAU_KEYS, by_run, dead_masks, mean_std
    from sparsejax.metrics import revival

    out = {}
    for name, recs in records.items():
        seeds = by_run(recs)
        per_seed = {}
        for seed, rs in seeds.items():
            dead0 = dead_masks(before[name][seed])
            ever = np.zeros_like(dead0)
            rows = []
            for rec in rs:
                change = revival(dead0, dead_masks(rec))
                ever |= change.revived
                rows.append({"epoch": rec["epoch"],
                             "revived": dict(zip(TAU_KEYS, change.num_revived.tolist())),
                             "ever_revived": dict(zip(TAU_KEYS, ever.sum(1).tolist())),
                             "dead_percent": {t: 100 * rec["dead_fraction"][t] for t in TAU_KEYS},
                             "l0": rec["eval"]["l0"]})
            per_seed[seed] = {"dead_at_start": dict(zip(TAU_KEYS, dead0.sum(1).tolist())),
                              "epochs": rows}
        out[name] = {
            "seeds": per_seed,
            "ever_revived": {t: mean_std(s["epochs"][-1]["ever_revived"][t]
                                         for s in per_seed.values()) for t in TAU_KEYS},
            "dead_at_start": {t: mean_std(s["dead_at_start"][t] for s in per_seed.values())
                              for t in TAU_KEYS},
            "dead_percent_end": {t: mean_std(s["epochs"][-1]["dead_percent"][t]
                                             for s in per_seed.values()) for t in TAU_KEYS},
        }
    return out


def report(table: dict, results: dict) -> str:
    from experiments.collapse_report import TAU_KEYS, _pm

    lines = ["# Revival: more epochs at k = 50", "",
             f"Command: `{results['command']}`  ",
             f"From the collapse study in `{results['from']}`; {results['epochs']} more epochs "
             f"per run at k = {results['k']}; wall time {results['wall_time_s']:.0f} s.", "",
             "The paper reports that 100 further epochs revive no dead unit. Revived: dead at "
             "the end of the collapse run (never above tau on the evaluation set) and firing "
             "above tau at some revival epoch. Mean ± std over seeds.", "",
             "| run | dead at start (tau = 0) | ever revived, tau = 0 | 1e-6 | 1e-3 | 1e-2 | "
             "dead % at the end (tau = 0) |", "|---|---|---|---|---|---|---|"]
    for name, c in table.items():
        lines.append(f"| {name} | {_pm(c['dead_at_start']['0'])} | "
                     + " | ".join(_pm(c["ever_revived"][t]) for t in TAU_KEYS)
                     + f" | {_pm(c['dead_percent_end']['0'])} |")
    lines += ["", "![revived units and dead fraction per revival epoch](revival.png)", "",
              "*Left: units revived (cumulative, tau = 0); right: dead units (%) per epoch.*", ""]
    return "\n".join(lines)


def plot(table: dict, path: Path) -> None:
    from sparsejax.viz.curves import seed_band_panels

    first = next(iter(table.values()))
    n = len(next(iter(first["seeds"].values()))["epochs"])
    x = np.arange(1, n + 1)
    ever = {name: np.asarray([[e["ever_revived"]["0"] for e in s["epochs"]]
                              for s in c["seeds"].values()]) for name, c in table.items()}
    dead = {name: np.asarray([[e["dead_percent"]["0"] for e in s["epochs"]]
                              for s in c["seeds"].values()]) for name, c in table.items()}
    seed_band_panels({"revived units (cumulative)": ever, "dead units (%)": dead}, x=x,
                     xlabel="revival epoch", ylabel="units / %", path=path,
                     title="Revival at k = 50 (tau = 0; band: lowest to highest seed)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments revival", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source_dir", required=True, help="a finished collapse study")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, help="revival epochs (default: the preset's)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true")
    args = p.parse_args(argv)

    from experiments.collapse_report import by_run
    from sparsejax.train import ConfigError
    from sparsejax.train.logs import read_records

    src, out = Path(args.source_dir), Path(args.out)
    res_path = src / "results.json"
    if not res_path.exists():
        print(f"error: {res_path} not found: --from must name a finished collapse study "
              "(run `python -m experiments collapse` first, or finish it with --resume)",
              file=sys.stderr)
        return 2
    if src.resolve() == out.resolve():
        print("error: --out must differ from --from (the collapse runs are kept as they are)",
              file=sys.stderr)
        return 2
    if args.epochs is not None and args.epochs < 1:
        print(f"error: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return 2
    collapse = json.loads(res_path.read_text())
    try:
        cfg = revival_config(collapse["config"], args.epochs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.resume and (out / "runs").exists():
        print(f"error: {out} already holds a revival; use --resume or another --out",
              file=sys.stderr)
        return 2
    before = {}
    for d, m in cfg.cells():
        recs = read_records(src / "runs" / cell_name(d, m) / "metrics.jsonl")
        before[cell_name(d, m)] = {s: rs[-1] for s, rs in by_run(recs).items()}
    command = "python -m experiments revival " + shlex.join(sys.argv[2:] if argv is None
                                                             else argv)
    t0 = time.perf_counter()
    ran = run_cells_or_exit_code(cfg, out, resume=args.resume, init_root=src,
                                 tensorboard=not args.no_tensorboard, label="revival")
    if isinstance(ran, int):
        return ran
    records, _, status = ran
    if status != "done":
        print(f"[revival] interrupted; continue with: {command} --resume", file=sys.stderr)
        return 130
    table = revival_table(before, records)
    results = {"study": "revival", "command": command, "from": str(src),
               "epochs": cfg.train["epochs"], "k": cfg.train["schedule"]["end"],
               "wall_time_s": time.perf_counter() - t0, "cells": table}
    plot(table, out / "revival.png")
    atomic_write(out / "results.json", json.dumps(results) + "\n")
    atomic_write(out / "report.md", report(table, results))
    print(f"[revival] done: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
