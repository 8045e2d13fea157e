"""``python -m experiments train``: train one model (hybrid VAE-SAE or dense VAE) and log it.

    python -m experiments train --dataset dsprites --method topk --preset smoke --out DIR
    python -m experiments train ... --out DIR --resume          # continue an interrupted run

Writes ``DIR/metrics.jsonl`` (one record per epoch and seed), ``DIR/checkpoints/``,
``DIR/tb/`` (TensorBoard), ``DIR/training.png`` (losses, k schedule vs achieved L0, dead
units), ``DIR/results.json`` and ``DIR/report.md``. Exit status: 0 done, 130 interrupted
(checkpoint saved; rerun with --resume), 1 diverged or failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from experiments.wall_time import WallTime
from sparsejax.atomic_io import write_atomic
from sparsejax.dir_lock import output_path
from sparsejax.train import config as config_lib
from sparsejax.train.config import PRESETS, ConfigError
from sparsejax.viz.grids import save_figure


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="dsprites", help="dsprites | shapes3d")
    p.add_argument("--method", default="topk", help="topk | l1 | dense")
    p.add_argument("--preset", default="smoke", help=f"one of {sorted(PRESETS)}")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints")
    p.add_argument("--init-from", metavar="DIR", help="start from another run's newest checkpoint")
    p.add_argument("--source", help="data source: auto | procedural | file | tfds")
    p.add_argument("--data-dir", help="where real dataset files live")
    p.add_argument("--seeds", type=int, help="number of seeds trained together")
    p.add_argument("--seed", type=int, help="first seed")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any config field, e.g. --set schedule.kind=cosine --set num_units=256")
    p.add_argument("--no-tensorboard", action="store_true")
    return p


def config_from_args(args) -> config_lib.TrainConfig:
    """The validated config the arguments describe (ConfigError otherwise)."""
    overrides: dict = {"dataset": args.dataset, "method": args.method}
    for flag, field in (("source", "source"), ("data_dir", "data_dir"), ("seeds", "num_seeds"),
                        ("seed", "seed"), ("epochs", "epochs"),
                        ("steps_per_epoch", "steps_per_epoch"), ("batch_size", "batch_size")):
        v = getattr(args, flag)
        if v is not None:
            overrides[field] = v
    overrides.update(config_lib.parse_overrides(args.set))
    try:
        return config_lib.preset(args.preset, **overrides)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from sparsejax.train import CheckpointError, RunExistsError, TrainingDiverged, train

    out = output_path(args.out)
    clock = WallTime(out, resume=args.resume)
    try:
        result = train(cfg, out, resume=args.resume, init_from=args.init_from,
                       tensorboard=not args.no_tensorboard)
    except (ConfigError, RunExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TrainingDiverged, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    wall = clock.total()
    command = "python -m experiments train " + shlex.join(sys.argv[2:] if argv is None else argv)
    write_outputs(out, result.config, result.history, result.status, wall, command)
    print(f"{result.status}: {len(result.history)} epoch records in {out} ({wall:.1f} s)")
    return 0 if result.status == "done" else 130


def write_outputs(out: Path, cfg, history: list[dict], status: str, wall_s: float,
                  command: str) -> None:
    """results.json, report.md and training.png from the epoch records."""
    write_atomic(out / "results.json", json.dumps(
        {"command": command, "status": status, "wall_time_s": wall_s,
         "config": config_lib.to_dict(cfg), "history": history}) + "\n")
    plot_training(history, out / "training.png")
    lines = [f"# train: {cfg.dataset}, {cfg.method}", "", f"Command: `{command}`", "",
             f"Status: {status}; wall time {wall_s:.1f} s; seeds {list(cfg.seeds)}.", "",
             "![training curves](training.png)", "",
             "| epoch | seed | k | eval L0 | train loss | eval recon | eval KL | eval SAE | "
             "dead (tau=0) | MIG mean | MIG code |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in history:
        dead = r["dead_fraction"].get("0")
        lines.append("| {} | {} | {} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {:.3f} | {} | {} | {} |"
                     .format(r["epoch"], r["seed"], r["k"], r["eval"]["l0"], r["train"]["loss"],
                             r["eval"]["recon"], r["eval"]["kl"], r["eval"]["sae"],
                             "-" if dead is None else f"{100 * dead:.1f}%",
                             _fmt(r.get("mig_mean")), _fmt(r.get("mig_code"))))
    write_atomic(out / "report.md", "\n".join(lines) + "\n")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def plot_training(history: list[dict], path: Path) -> None:
    """Left: train and eval loss per epoch. Right: target k, achieved eval L0, dead units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_k) = plt.subplots(1, 2, figsize=(11, 4))
    seeds = sorted({r["seed"] for r in history})
    for s in seeds:
        rs = sorted((r for r in history if r["seed"] == s), key=lambda r: r["epoch"])
        ep = [r["epoch"] for r in rs]
        ax_l.plot(ep, [r["train"]["loss"] for r in rs], "-o", ms=3, label=f"train, seed {s}")
        ax_l.plot(ep, [r["eval"]["loss"] for r in rs], "--s", ms=3, label=f"eval, seed {s}")
        ax_k.plot(ep, [r["eval"]["l0"] for r in rs], "-o", ms=3, label=f"achieved L0, seed {s}")
    if history:
        rs = sorted((r for r in history if r["seed"] == seeds[0]), key=lambda r: r["epoch"])
        ax_k.step([r["epoch"] for r in rs], [r["k"] for r in rs], "k-", where="mid",
                  label="target k")
        if rs[0]["dead_fraction"]:
            ax_d = ax_k.twinx()
            for s in seeds:
                rr = sorted((r for r in history if r["seed"] == s), key=lambda r: r["epoch"])
                ax_d.plot([r["epoch"] for r in rr], [100 * r["dead_fraction"]["0"] for r in rr],
                          ":", color="tab:red")
            ax_d.set_ylabel("dead units (tau = 0), % (dotted)", color="tab:red")
            ax_d.set_ylim(0, 100)
    ax_l.set(xlabel="epoch", ylabel="loss (nats per image)", title="loss")
    ax_k.set(xlabel="epoch", ylabel="active units", title="k schedule vs achieved L0")
    ax_l.legend(fontsize=7)
    ax_k.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
