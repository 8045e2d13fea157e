"""``python -m experiments collapse``: the flagship study (arXiv 2603.18056, reproduced).

A hybrid VAE-SAE's sparse layer (500 units) is cut from k = 500 to k = 50 active units by
a schedule, with Top-k (hard) or an L1 penalty steered to the same L0 (soft), on dSprites
and Shapes3D, several seeds per cell, a dense VAE beside each dataset as the baseline.
Every epoch records k and the achieved L0, the loss terms, MIG on the latent mean and on
the sparse code, dead fractions at every threshold and by frequency, and unit-factor
alignment (the engine's default metrics hook, ``sparsejax.train.default_metrics``). ``DIR/report.md`` puts the paper's table beside ours; ``DIR/results.json``
holds every number it shows; the plots are PNGs in ``DIR``.

    python -m experiments collapse --preset small --out runs/collapse
    python -m experiments collapse --preset small --out runs/collapse --resume

Runs live in ``DIR/runs/<dataset>-<method>/`` (one engine run directory per cell, its seeds
trained together through ``vmap``); a finished cell is marked ``DONE`` and skipped on
``--resume``, an unfinished one continues from its last checkpoint. Exit status: 0 done,
130 interrupted (rerun with --resume), 1 failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from sparsejax.atomic_io import write_atomic as atomic_write

PAPER = {  # REFERENCE.md section 1: dead-unit rate at k = 50, mean +- std (%)
    ("dsprites", "topk"): (34.4, 0.9), ("shapes3d", "topk"): (62.7, 1.3),
    ("dsprites", "l1"): (41.7, 4.4), ("shapes3d", "l1"): (90.6, 0.5),
}
PAPER_RATIOS = {"topk": 1.8, "l1": 2.2}
DATASETS = ("dsprites", "shapes3d")
METHODS = ("topk", "l1")


@dataclasses.dataclass(frozen=True)
class CollapseConfig:
    """The study's grid and how each run trains.

    Attributes:
      preset: the engine preset every run starts from (``smoke``, ``small``, ``paper``).
      datasets, methods: the grid (methods: ``topk``, ``l1``).
      baseline: also train the dense VAE on each dataset.
      num_seeds: seeds per cell, trained together in one program (``seed .. seed + S - 1``).
      seed: the first seed.
      train: overrides of the engine preset (``TrainConfig`` fields), e.g. epochs.
      revival_epochs: epochs the ``revival`` follow-up continues each run at k = 50.
      source, data_dir: where the images come from (``auto`` prefers real files).
    """

    preset: str = "small"
    datasets: tuple[str, ...] = DATASETS
    methods: tuple[str, ...] = METHODS
    baseline: bool = True
    num_seeds: int = 3
    seed: int = 0
    train: dict = dataclasses.field(default_factory=dict)
    revival_epochs: int = 10
    source: str = "auto"
    data_dir: str | None = None

    def cells(self) -> list[tuple[str, str]]:
        """``(dataset, method)`` of every run directory, the dense baselines last."""
        out = [(d, m) for d in self.datasets for m in self.methods]
        return out + ([(d, "dense") for d in self.datasets] if self.baseline else [])

    def train_config(self, dataset: str, method: str):
        """The engine's validated TrainConfig of one cell."""
        from sparsejax.train import preset

        return preset(self.preset, dataset=dataset, method=method, num_seeds=self.num_seeds,
                      seed=self.seed, source=self.source, data_dir=self.data_dir, **self.train)

    def validate(self) -> None:
        """Raises ConfigError (naming the field and what was expected) before any work."""
        from sparsejax.train import ConfigError

        bad = [d for d in self.datasets if d not in DATASETS]
        if bad or not self.datasets:
            raise ConfigError(f"datasets {list(self.datasets)}: expected a non-empty subset of "
                              f"{list(DATASETS)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"methods {list(self.methods)}: expected a subset of "
                              f"{list(METHODS)} (the dense baseline is --no-baseline's)")
        if not self.methods and not self.baseline:
            raise ConfigError("nothing to run: no methods and no baseline")
        if not isinstance(self.revival_epochs, int) or self.revival_epochs < 1:
            raise ConfigError(f"revival_epochs must be an integer >= 1, got "
                              f"{self.revival_epochs!r}")
        for d, m in self.cells():
            cfg = self.train_config(d, m)  # the engine validates every field
            if m != "dense" and cfg.schedule.length > cfg.epochs:
                raise ConfigError(f"the k schedule takes {cfg.schedule.length} epochs but the "
                                  f"run has only {cfg.epochs}: k would never reach "
                                  f"{cfg.schedule.end}")


# What each preset costs is measured and stated in the README.
PRESETS: dict[str, dict[str, Any]] = {
    # CI: both datasets, both methods and the baselines, 2 seeds, a 3-epoch schedule
    "smoke": dict(preset="smoke", num_seeds=2, revival_epochs=2,
                  train=dict(epochs=3, steps_per_epoch=20, eval_size=1024, eval_batch=512,
                             schedule=dict(length=3))),
    # a 2-core CPU in about 11 minutes: k 500 -> 50 over 8 epochs, then 2 epochs held
    "small": dict(preset="small", num_seeds=3, revival_epochs=10,
                  train=dict(epochs=10, steps_per_epoch=30, eval_size=2048, eval_batch=1024,
                             schedule=dict(length=8))),
    # the paper: 50 epochs of one pass over the dataset each, k 500 -> 50 over all 50
    "paper": dict(preset="paper", num_seeds=3, revival_epochs=100, train=dict()),
}


def preset_config(name: str, **overrides) -> CollapseConfig:
    from sparsejax.train import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    base = dict(PRESETS[name])
    train = {**base.pop("train"), **overrides.pop("train", {})}
    cfg = CollapseConfig(**{**base, **overrides, "train": train})
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------- running
def run_cells(cfg: CollapseConfig, out: Path, *, resume: bool, init_root: Path | None = None,
              tensorboard: bool = True, label: str = "collapse") -> tuple[dict, dict, str]:
    """Trains every cell (or picks up finished ones); returns (records by cell, data sources,
    status). With ``init_root`` each run starts from ``init_root/runs/<cell>`` (revival).
    ``label`` prefixes the progress lines."""
    from sparsejax.data import get_dataset
    from sparsejax.train import train
    from sparsejax.train.logs import read_records

    datasets = {d: get_dataset(d, cfg.source, cfg.data_dir) for d in cfg.datasets}
    sources = {d: {"source": ds.source, "location": ds.location} for d, ds in datasets.items()}
    records: dict[str, list[dict]] = {}
    for dataset, method in cfg.cells():
        name = cell_name(dataset, method)
        run_dir = out / "runs" / name
        if (run_dir / "DONE").exists():
            records[name] = read_records(run_dir / "metrics.jsonl")
            print(f"[{label}] {name}: finished earlier, {len(records[name])} records",
                  flush=True)
            continue
        tcfg = cfg.train_config(dataset, method)
        spe = tcfg.resolved_steps_per_epoch(len(datasets[dataset]))
        print(f"[{label}] {name}: {tcfg.epochs} epochs x {spe} steps, seeds "
              f"{list(tcfg.seeds)}", flush=True)
        init_from = None if init_root is None else init_root / "runs" / name
        result = train(tcfg, run_dir, resume=resume, init_from=init_from,
                       dataset=datasets[dataset], tensorboard=tensorboard)
        records[name] = result.history
        if result.status != "done":
            return records, sources, result.status
        atomic_write(run_dir / "DONE", f"{len(result.history)} records\n")
    return records, sources, "done"


def run_cells_or_exit_code(cfg: CollapseConfig, out: Path, **kwargs):
    """:func:`run_cells`, or the CLI's exit code (2 refused, 1 failed) with the error on
    stderr."""
    from sparsejax.train import CheckpointError, ConfigError, RunExistsError, TrainingDiverged

    try:
        return run_cells(cfg, out, **kwargs)
    except (ConfigError, RunExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TrainingDiverged, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def cell_name(dataset: str, method: str) -> str:
    return f"{dataset}-{method}"


def config_dict(cfg: CollapseConfig) -> dict:
    from sparsejax.train.config import to_dict

    d = dataclasses.asdict(cfg)
    d["cells"] = {cell_name(*c): to_dict(cfg.train_config(*c)) for c in cfg.cells()}
    return d


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments collapse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help=f"one of {sorted(PRESETS)} (default small)")
    p.add_argument("--out", required=True, help="study directory")
    p.add_argument("--resume", action="store_true", help="continue a study in DIR")
    p.add_argument("--seeds", type=int, help="seeds per cell (default: the preset's)")
    p.add_argument("--seed", type=int, help="the first seed (default 0)")
    p.add_argument("--datasets", nargs="+", help=f"subset of {list(DATASETS)}")
    p.add_argument("--methods", nargs="+", help=f"subset of {list(METHODS)}")
    p.add_argument("--no-baseline", action="store_true", help="skip the dense VAE baseline")
    p.add_argument("--source", default="auto", help="auto | procedural | file | tfds")
    p.add_argument("--data-dir", help="real dataset copies (default: $SPARSEJAX_DATA_DIR)")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--steps-per-epoch", type=int, help="override the preset's steps per epoch")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any engine config field, e.g. --set schedule.kind=cosine")
    p.add_argument("--no-tensorboard", action="store_true")
    return p


def config_from_args(args) -> CollapseConfig:
    from sparsejax.train import config as config_lib

    overrides: dict[str, Any] = {"source": args.source, "data_dir": args.data_dir}
    if args.seeds is not None:
        overrides["num_seeds"] = args.seeds
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.datasets:
        overrides["datasets"] = tuple(args.datasets)
    if args.methods:
        overrides["methods"] = tuple(args.methods)
    if args.no_baseline:
        overrides["baseline"] = False
    train: dict[str, Any] = {}
    if args.epochs is not None:
        train["epochs"] = args.epochs
    if args.steps_per_epoch is not None:
        train["steps_per_epoch"] = args.steps_per_epoch
    for item in args.set:
        name, eq, text = item.partition("=")
        if not eq:
            raise config_lib.ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        value = config_lib.parse_value(name, text)
        top, _, sub = name.partition(".")
        if sub:
            train.setdefault(top, {})
            if isinstance(train[top], dict):
                train[top][sub] = value
        else:
            train[top] = value
    if train:
        base_train = PRESETS.get(args.preset, {}).get("train", {})
        for k, v in list(train.items()):  # nested dicts merge with the preset's
            if isinstance(v, dict) and isinstance(base_train.get(k), dict):
                train[k] = {**base_train[k], **v}
        overrides["train"] = train
    return preset_config(args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sparsejax.train import ConfigError

    try:
        cfg = config_from_args(args)
    except (ConfigError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if not args.resume and (out / "runs").exists():
        print(f"error: {out} already holds a study; continue it with --resume or choose "
              "another --out", file=sys.stderr)
        return 2
    command = "python -m experiments collapse " + shlex.join(
        sys.argv[2:] if argv is None else argv)
    return execute(cfg, out, resume=args.resume, command=command,
                   tensorboard=not args.no_tensorboard)


def execute(cfg: CollapseConfig, out: Path, *, resume: bool, command: str,
            tensorboard: bool = True) -> int:
    """Runs (or resumes) the study and writes results.json, report.md and the plots."""
    from experiments import collapse_report

    out.mkdir(parents=True, exist_ok=True)
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if resume and timing_path.exists() else {}
    t0 = time.perf_counter()
    ran = run_cells_or_exit_code(cfg, out, resume=resume, tensorboard=tensorboard)
    if isinstance(ran, int):
        return ran
    records, sources, status = ran
    wall = timing.get("wall_time_s", 0.0) + time.perf_counter() - t0
    atomic_write(timing_path, json.dumps({"wall_time_s": wall}) + "\n")
    if status != "done":
        print(f"[collapse] interrupted after {wall:.0f} s; finished cells are kept. Continue "
              f"with: {command} --resume", file=sys.stderr)
        return 130
    results = collapse_report.build_results(cfg, records, sources, command=command,
                                            wall_time_s=wall, config=config_dict(cfg))
    collapse_report.write_all(results, out, run_dir_for_traversal=_traversal_run(cfg, out))
    print(f"[collapse] done in {wall:.0f} s: {out / 'report.md'}")
    return 0


def _traversal_run(cfg: CollapseConfig, out: Path) -> Path | None:
    for d, m in cfg.cells():
        if m != "dense":
            return out / "runs" / cell_name(d, m)
    return None


if __name__ == "__main__":
    sys.exit(main())
