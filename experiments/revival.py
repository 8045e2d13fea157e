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
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from experiments.collapse import (cell_records, fill_device, revival_config,
                                  run_cells_or_exit_code, study_config)
from experiments.collapse_paper import PAPER_K, cell_name
from experiments.collapse_render import fill, load_template, md_table, pm
from experiments.collapse_stats import by_run, dead_masks, mean_std, tau_keys, tau_label
from experiments.wall_time import WallTime
from sparsejax.atomic_io import RunFileError, read_json, write_atomic
from sparsejax.dir_lock import DirLock, output_path


def revival_table(before: dict, records: dict[str, list[dict]],
                  keys: tuple[str, ...] | None = None) -> dict:
    """Per cell and seed, per revival epoch: units dead at the end of the collapse run that
    fire again (``revived``), and the dead fraction, at every threshold (``keys``, as
    :func:`~experiments.collapse_stats.tau_keys`).

    Args:
      before: per cell name, per seed, the collapse run's last record.
      records: per cell name, every record of its revival run directory.
    """
    from sparsejax.metrics import revival

    keys = tau_keys() if keys is None else keys
    out = {}
    for name, recs in records.items():
        seeds = by_run(recs)
        per_seed = {}
        for seed, rs in seeds.items():
            dead0 = dead_masks(before[name][seed], keys)  # [T, N]
            ever = np.zeros_like(dead0)
            rows = []
            for rec in rs:
                change = revival(dead0, dead_masks(rec, keys))
                ever |= change.revived
                rows.append({"epoch": rec["epoch"],
                             "revived": dict(zip(keys, change.num_revived.tolist())),
                             "ever_revived": dict(zip(keys, ever.sum(1).tolist())),
                             "dead_percent": {t: 100 * rec["dead_fraction"][t] for t in keys},
                             "l0": rec["eval"]["l0"]})
            per_seed[seed] = {"dead_at_start": dict(zip(keys, dead0.sum(1).tolist())),
                              "epochs": rows}
        out[name] = {
            "seeds": per_seed,
            "ever_revived": {t: mean_std(s["epochs"][-1]["ever_revived"][t]
                                         for s in per_seed.values()) for t in keys},
            "dead_at_start": {t: mean_std(s["dead_at_start"][t] for s in per_seed.values())
                              for t in keys},
            "dead_percent_end": {t: mean_std(s["epochs"][-1]["dead_percent"][t]
                                             for s in per_seed.values()) for t in keys},
        }
    return out


def _keys(table: dict) -> tuple[str, ...]:
    """The threshold keys of a revival table, in order (the engine's defaults if empty)."""
    first = next(iter(table.values()), None)
    return tuple(first["ever_revived"]) if first else tau_keys()


def report(table: dict, results: dict) -> str:
    """``report.md`` of a revival (``templates/revival_report.md``)."""
    keys = _keys(table)
    labels = [tau_label(t) for t in keys]
    rows = [[name, pm(c["dead_at_start"][keys[0]]), *(pm(c["ever_revived"][t]) for t in keys),
             pm(c["dead_percent_end"][keys[0]])] for name, c in table.items()]
    header = ["run", f"dead at start (tau = {labels[0]})", f"ever revived, tau = {labels[0]}",
              *labels[1:], f"dead % at the end (tau = {labels[0]})"]
    return fill(load_template("revival_report.md"), {
        "paper_k": PAPER_K, "command": results["command"], "source": results["from"],
        "epochs": results["epochs"], "k": results["k"],
        "wall_time": f"{results['wall_time_s']:.0f}", "tau_first": labels[0],
        "table": md_table(header, rows)})


def plot(table: dict, path: Path) -> None:
    """``revival.png``: per cell, units revived (cumulative) and dead % per revival epoch,
    at the first threshold, mean over seeds with a lowest-to-highest band."""
    from sparsejax.viz.curves import seed_band_panels

    t0 = _keys(table)[0]
    first = next(iter(table.values()))
    n = len(next(iter(first["seeds"].values()))["epochs"])
    x = np.arange(1, n + 1)
    ever = {name: np.asarray([[e["ever_revived"][t0] for e in s["epochs"]]
                              for s in c["seeds"].values()]) for name, c in table.items()}
    dead = {name: np.asarray([[e["dead_percent"][t0] for e in s["epochs"]]
                              for s in c["seeds"].values()]) for name, c in table.items()}
    seed_band_panels({"revived units (cumulative)": ever, "dead units (%)": dead}, x=x,
                     xlabel="revival epoch", ylabel="units / %", path=path,
                     title=f"Revival at k = {PAPER_K} (tau = {tau_label(t0)}; band: lowest to "
                           "highest seed)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments revival", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source_dir", required=True, help="a finished collapse study")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, help="revival epochs (default: the preset's)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true")
    args = p.parse_args(argv)

    from sparsejax.train import ConfigError

    src, out = Path(args.source_dir), output_path(args.out)
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
    collapse = read_json(res_path, "collapse study's results")
    if not isinstance(collapse, dict) or not isinstance(collapse.get("config"), dict):
        raise RunFileError(f"{res_path} holds no study config: --from must name a finished "
                           "collapse study")
    try:
        cfg = revival_config(collapse["config"], args.epochs)
        source_cfg = study_config(collapse["config"])  # the run directories there
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.resume and (out / "runs").exists():
        print(f"error: {out} already holds a revival; use --resume or another --out",
              file=sys.stderr)
        return 2
    before = {}
    for d, m in cfg.cells():
        recs = cell_records(source_cfg, src, d, m)
        before[cell_name(d, m)] = {s: rs[-1] for s, rs in by_run(recs).items()}
    command = "python -m experiments revival " + shlex.join(sys.argv[2:] if argv is None
                                                             else argv)
    with DirLock(out):  # one process per study directory
        clock = WallTime(out, resume=args.resume)
        cfg = fill_device(cfg, out)
        ran = run_cells_or_exit_code(cfg, out, resume=args.resume, init_root=src,
                                     init_cfg=source_cfg, tensorboard=not args.no_tensorboard, label="revival")
        if isinstance(ran, int):
            return ran
        records, _, status = ran
        wall = clock.total()
        if status != "done":
            print(f"[revival] interrupted; continue with: {command} --resume", file=sys.stderr)
            return 130
        keys = tau_keys(cfg.train_config(*cfg.cells()[0]))
        table = revival_table(before, records, keys)
        results = {"study": "revival", "command": command, "from": str(src),
                   "epochs": cfg.train["epochs"], "k": cfg.train["schedule"]["end"],
                   "wall_time_s": wall, "cells": table}
        plot(table, out / "revival.png")
        write_atomic(out / "results.json", json.dumps(results) + "\n")
        write_atomic(out / "report.md", report(table, results))
        print(f"[revival] done: {out / 'report.md'}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
