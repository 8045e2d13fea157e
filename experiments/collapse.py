"""``python -m experiments collapse``: the flagship study (arXiv 2603.18056, reproduced).

A hybrid VAE-SAE's sparse layer (500 units) is cut from k = 500 to k = 50 active units by
a schedule, with Top-k (hard) or an L1 penalty steered to the same L0 (soft), on dSprites
and Shapes3D, several seeds per cell, a dense VAE beside each dataset as the baseline.
Every epoch records k and the achieved L0, the loss terms, MIG on the latent mean and on
the sparse code, dead fractions at every threshold and by frequency, and unit-factor
alignment (the engine's default metrics hook, ``sparsejax.train.default_metrics``).
``DIR/report.md`` puts the paper's table beside ours; ``DIR/results.json`` holds every
number it shows; the plots are PNGs in ``DIR`` (``experiments.collapse_report``).

    python -m experiments collapse --preset small --out runs/collapse
    python -m experiments collapse --preset small --out runs/collapse --resume
    python -m experiments collapse --preset paper --dry-run [--rate IMAGES_PER_S]

``--dry-run`` trains nothing: it prints the study's training time (the main grid, the
revival, one cell) at a train rate measured by a short timed run of the first cell's step,
or at ``--rate`` (:func:`cost_estimate`; the ``paper_estimate`` bench row is the same).

Runs live in ``DIR/runs/<dataset>-<method>/`` (one engine run directory per cell, its seeds
trained together in one program); a finished cell is marked ``DONE`` and skipped on
``--resume``, an unfinished one continues from its last checkpoint. With ``--group on``
(the default on accelerators) a dataset's cells that Top-k's graph computes train as one
program, every seed of each (``TrainConfig.group``: L1 is Top-k at k = N with its penalty
on; the ReLU control and fixed-k Top-k are Top-k held at one k), in
``DIR/runs/<dataset>-topk+l1+.../``, as many arms per program as the device's memory
holds (``--group-size``, :func:`fill_device`); their records are split back into cells.
Exit status: 0 done, 130 interrupted (rerun with --resume), 1 failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from experiments.collapse_paper import ARM_METHOD, CONTROLS, WARMUP, cell_name
from experiments.wall_time import WallTime
from sparsejax.atomic_io import read_json, write_atomic
from sparsejax.data import DATASETS, get_dataset
from sparsejax.dir_lock import DirLock, output_path
from sparsejax.models import SPARSE_METHODS

# TrainConfig fields the grid sets per cell; a preset's or --set's ``train`` may not
GRID_FIELDS = ("dataset", "method", "num_seeds", "seed", "source", "data_dir", "group")
GROUP_CHOICES = ("auto", "on", "off")  # --group: "auto" groups on accelerators

# The study's presets, self-contained: ``train`` lists every TrainConfig field the preset sets
# (the rest keep the ``TrainConfig()`` defaults, which follow the paper). The schedule is the
# paper's, k 500 -> 50 (arXiv 2603.18056); what each preset costs is measured in the README.
PRESETS: dict[str, dict[str, Any]] = {
    # CI: both datasets, every arm and control, 2 seeds, a 3-epoch schedule; learns nothing
    # (its cells are flagged not evidence), checks that everything runs
    "smoke": dict(num_seeds=2, revival_epochs=2, warmup_epochs=1,
                  train=dict(epochs=3, steps_per_epoch=20, eval_size=1024, eval_batch=512,
                             final_eval_size=2048,
                             schedule=dict(start=500, end=50, length=3), log_every=10)),
    # a 2-core CPU in at most 15 minutes, models that learn: dSprites only, 2 seeds, a shared
    # warm-up of 150 steps, k 500 -> 50 over the first 150 of 300 steps then held; batch 32
    # and lr 1e-3 (deviations from the paper's 64 and 1e-4, written in the report). The L1
    # controller starts at 0.1, just below where the warmed-up layer first bites. 25 steps
    # per dispatch (a divisor of the epoch and the log interval, so no single-step program
    # compiles): 220 s of study time against 266 s one step per dispatch on a 2-core CPU
    "small": dict(num_seeds=2, revival_epochs=4, warmup_epochs=2, datasets=("dsprites",),
                  train=dict(epochs=4, steps_per_epoch=75, batch_size=32, eval_size=1024,
                             eval_batch=512, final_eval_size=10_000, learning_rate=1e-3,
                             schedule=dict(start=500, end=50, length=3), log_every=25,
                             controller=dict(init_coef=0.1), scan_steps=25)),
    # the paper: 50 epochs of 11,520 steps (one pass over dSprites) on both datasets,
    # k 500 -> 50 over all 50; --one-pass gives each dataset its own pass, as the paper
    # 40 steps per dispatch (divides the epoch and the log interval): an accelerator's step
    # is milliseconds, so the host's dispatch gap between single steps would be a large share
    "paper": dict(num_seeds=3, revival_epochs=100,
                  train=dict(epochs=50, steps_per_epoch=11_520, eval_size=10_000,
                             eval_batch=1000, schedule=dict(start=500, end=50, length=50),
                             log_every=200, scan_steps=40)),
}


def _small_train() -> dict:
    return copy.deepcopy(PRESETS["small"]["train"])


@dataclasses.dataclass(frozen=True)
class CollapseConfig:
    """The study's grid and how each run trains.

    Attributes:
      preset: the name of the study preset this config came from (recorded in results.json
        and the report; the settings themselves are all in ``train``).
      datasets, methods: the grid (``sparsejax.data.DATASETS``,
        ``sparsejax.models.SPARSE_METHODS``).
      baseline: also train the dense VAE on each dataset.
      num_seeds: seeds per cell, trained together in one program (``seed .. seed + S - 1``).
      seed: the first seed.
      train: ``TrainConfig`` fields every run sets, relative to ``TrainConfig()`` (nested
        ``schedule`` / ``controller`` as partial dicts); not the ones in :data:`GRID_FIELDS`.
      revival_epochs: epochs the ``revival`` follow-up continues each run at k = 50.
      controls: also run the controls (:data:`~experiments.collapse_paper.CONTROLS`).
      warmup_epochs: epochs of a shared warm-up per dataset (ReLU, k = N, no penalty) that
        every sparse arm and trained control starts from (0: none; each starts fresh).
      source, data_dir: where the images come from (``auto`` prefers real files).
      arms: further arms beside the methods (the remedies study's): per arm name, the
        ``TrainConfig`` fields it sets on top of ``train`` (``method`` default ``topk``);
        each starts from the shared warm-up and is held to its target k like Top-k.
      continue_epochs: > 0 turns the grid into its own follow-up: every method and arm
        (no warm-up, controls or baseline) trains this many epochs at its final k, with no
        data-dependent start (``sparse_init`` default), from the runs of the same grid
        (``run_cells``'s ``init_root``).
      group: ``"on"``: a dataset's cells that Top-k's graph computes train in one program
        (:attr:`grouped`, :meth:`member_of`: Top-k, L1, and the ReLU without a penalty and
        Top-k at a fixed k where they start as Top-k does; every seed of each);
        ``"off"``: a program per cell; ``"auto"``: on where the seeds are vmapped
        (accelerators), off on CPU, where runs in one program are unrolled side by side
        and gain nothing. Recorded resolved in results.json.
      group_size: with a group, the most runs (arms x seeds) one program trains, whole
        arms packed in :meth:`cells` order (at least one arm; one arm is no group); 0
        (the default) fills the device: a study resolves it before training
        (:func:`fill_device`: the arms that fit in the device's free memory, recorded in
        ``fill.json``); where the device does not report its memory (CPU), every arm
        that can join shares one program.
    """

    preset: str = "small"
    datasets: tuple[str, ...] = DATASETS
    methods: tuple[str, ...] = SPARSE_METHODS
    baseline: bool = True
    num_seeds: int = 3
    seed: int = 0
    train: dict = dataclasses.field(default_factory=_small_train)
    revival_epochs: int = 10
    controls: bool = True
    warmup_epochs: int = 0
    source: str = "auto"
    data_dir: str | None = None
    arms: dict = dataclasses.field(default_factory=dict)
    continue_epochs: int = 0
    group: str = "auto"
    group_size: int = 0

    @property
    def grouped(self) -> bool:
        """Whether each dataset's Top-k and L1 cells share one program (``group``)."""
        if not set(SPARSE_METHODS) <= set(self.methods):
            return False
        if self.group == "auto":
            from sparsejax.train.seeds import resolve_seed_map

            mode = self.train.get("seed_map", "auto")
            return resolve_seed_map(mode) == "vmap"
        return self.group == "on"

    def member_of(self, dataset: str, arm: str) -> str | None:
        """The group member (``TrainConfig.group``) that trains ``arm`` in the program of
        its dataset's Top-k cell, or None where its run differs from Top-k's in more than
        the member states: ``"l1"`` (same schedule), ``"topk@<k>"`` (an arm held at k
        from its first step: ``topk_fixed``, and ``relu_no_penalty`` at k = N)."""
        if arm == "topk":
            return "topk"
        if arm in (WARMUP, "untrained", "dense") or (self.warm_started(arm)
                                                      != self.warm_started("topk")):
            return None
        base, t = self.train_config(dataset, "topk"), self.train_config(dataset, arm)
        if t.method == "l1":
            member = "l1"
        elif t.method == "topk" and t.schedule.start == t.schedule.end:
            member = f"topk@{t.schedule.end}"
        else:
            return None
        return member if t.replace(method="topk", schedule=base.schedule) == base else None

    def units(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """``(run directory name, dataset, cells' arms)`` of every program in the order
        they run (:meth:`cells`' order; a group where its first cell would be)."""
        packs: dict[str, list[list[str]]] = {}
        if self.grouped:
            per = max(1, self.group_size // self.num_seeds) if self.group_size else None
            for d in self.datasets:
                arms = [a for dd, a in self.cells() if dd == d and self.member_of(d, a)]
                per_d = per or len(arms)
                packs[d] = [arms[i:i + per_d] for i in range(0, len(arms), per_d)] \
                    if per_d > 1 else []
        out = []
        for dataset, arm in self.cells():
            pack = next((p for p in packs.get(dataset, ()) if arm in p), None)
            if pack is None or len(pack) == 1:
                out.append((cell_name(dataset, arm), dataset, (arm,)))
            elif pack[0] == arm:
                out.append((cell_name(dataset, "+".join(pack)), dataset, tuple(pack)))
        return out

    def unit_of(self, dataset: str, arm: str) -> tuple[str, tuple[str, ...]]:
        """``(run directory name, its cells' arms)`` of the program that trains cell
        ``(dataset, arm)``."""
        for name, d, arms in self.units():
            if d == dataset and arm in arms:
                return name, arms
        raise KeyError(f"no cell {cell_name(dataset, arm)} in this study")

    def run_dir(self, out: Path, dataset: str, arm: str) -> tuple[Path, int]:
        """The run directory that holds cell ``(dataset, arm)`` and the index of its first
        run in that run's state (its seeds follow): > 0 for a group's later cells."""
        name, arms = self.unit_of(dataset, arm)
        return out / "runs" / name, arms.index(arm) * self.num_seeds

    def unit_config(self, dataset: str, arms: tuple[str, ...]):
        """The TrainConfig of one program: its cell's, or a group's (its first cell's, with
        the others' members beside it: their ``members`` line up with ``arms``)."""
        cfg = self.train_config(dataset, arms[0])
        if len(arms) == 1:
            return cfg
        return cfg.replace(group=tuple(self.member_of(dataset, a) for a in arms[1:]))

    def cells(self) -> list[tuple[str, str]]:
        """``(dataset, arm)`` of every run directory in the order they run: the shared
        warm-ups first (the arms start from them), then the methods, the controls, the
        further arms and the dense baselines."""
        if self.continue_epochs:
            return [(d, m) for d in self.datasets for m in (*self.methods, *self.arms)]
        out = [(d, WARMUP) for d in self.datasets] if self.warmup_epochs else []
        out += [(d, m) for d in self.datasets for m in self.methods]
        if self.controls:
            out += [(d, c) for d in self.datasets for c in CONTROLS]
        out += [(d, m) for d in self.datasets for m in self.arms]
        return out + ([(d, "dense") for d in self.datasets] if self.baseline else [])

    def warm_started(self, arm: str) -> bool:
        """Whether ``arm`` starts from its dataset's shared warm-up."""
        return bool(self.warmup_epochs) and arm in (*SPARSE_METHODS, "relu_no_penalty",
                                                     "topk_fixed", *self.arms)

    def arm_method(self, arm: str) -> str:
        """The engine method an arm trains."""
        if arm in self.arms:
            return self.arms[arm].get("method", "topk")
        return ARM_METHOD[arm]

    def targets_k(self, arm: str) -> bool:
        """Whether an arm's achieved L0 must meet its target k (a Top-k-like arm)."""
        from experiments.collapse_stats import TARGET_ARMS

        return arm in (*TARGET_ARMS, *self.arms)

    def train_config(self, dataset: str, arm: str):
        """The engine's validated TrainConfig of one cell: ``TrainConfig()`` with ``train``,
        the grid's fields and the arm's own settings applied.

        The arms: ``topk`` and ``l1`` follow the schedule; ``relu_no_penalty`` and the
        warm-up hold k = N with the ReLU (Top-k at k = N is ReLU: what training alone
        kills); ``topk_fixed`` holds the schedule's final k from its first step; the
        ``untrained`` network is evaluated at the final k without a step; ``dense`` trains
        as long as a warm-up plus a sparse arm.
        """
        from sparsejax.train import TrainConfig

        cfg = TrainConfig().replace(**{
            **self.train, "dataset": dataset, "method": self.arm_method(arm),
            "num_seeds": self.num_seeds, "seed": self.seed, "source": self.source,
            "data_dir": self.data_dir})
        n, end = cfg.num_units, cfg.schedule.end
        if arm in ("relu_no_penalty", WARMUP):
            cfg = cfg.replace(schedule=dict(start=n, end=n, length=1), topk_relu=True)
        elif arm in ("topk_fixed", "untrained"):
            cfg = cfg.replace(schedule=dict(start=end, end=end, length=1))
        if arm in self.arms:
            cfg = cfg.replace(**{k: v for k, v in self.arms[arm].items() if k != "method"})
        if arm == WARMUP:
            cfg = cfg.replace(epochs=self.warmup_epochs, final_eval_size=None)
        elif arm == "dense":
            cfg = cfg.replace(epochs=cfg.epochs + self.warmup_epochs)
        if self.continue_epochs:
            end = cfg.schedule.end
            cfg = cfg.replace(epochs=self.continue_epochs, sparse_init="default",
                              schedule=dict(start=end, end=end, length=1))
        return cfg

    def validate(self) -> None:
        """Raises ConfigError (naming the field and what was expected) before any work."""
        from sparsejax.train import ConfigError

        bad = [d for d in self.datasets if d not in DATASETS]
        if bad or not self.datasets:
            raise ConfigError(f"datasets {list(self.datasets)}: expected a non-empty subset of "
                              f"{list(DATASETS)}")
        clash = sorted(set(self.arms) & {*self.methods, *CONTROLS, WARMUP, "dense"})
        if clash:
            raise ConfigError(f"arms {clash} clash with the grid's own arms")
        if self.group not in GROUP_CHOICES:
            raise ConfigError(f"group {self.group!r}: expected one of {list(GROUP_CHOICES)}")
        if not isinstance(self.group_size, int) or self.group_size < 0:
            raise ConfigError(f"group_size must be an integer >= 0 (0: fill the device), got "
                              f"{self.group_size!r}")
        if not isinstance(self.continue_epochs, int) or self.continue_epochs < 0:
            raise ConfigError(f"continue_epochs must be an integer >= 0, got "
                              f"{self.continue_epochs!r}")
        bad = [m for m in self.methods if m not in SPARSE_METHODS]
        if bad:
            raise ConfigError(f"methods {list(self.methods)}: expected a subset of "
                              f"{list(SPARSE_METHODS)} (the dense baseline is --no-baseline's)")
        if not self.methods and not self.baseline:
            raise ConfigError("nothing to run: no methods and no baseline")
        if not isinstance(self.revival_epochs, int) or self.revival_epochs < 1:
            raise ConfigError(f"revival_epochs must be an integer >= 1, got "
                              f"{self.revival_epochs!r}")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be an integer >= 0, got "
                              f"{self.warmup_epochs!r}")
        grid = sorted(set(self.train) & set(GRID_FIELDS))
        if grid:
            raise ConfigError(f"train fields {grid} are set by the study's grid: use --datasets, "
                              "--methods, --seeds, --seed, --source, --data-dir")
        for _, d, arms in self.units():
            self.unit_config(d, arms)  # the engine validates every field of a group
        for d, m in self.cells():
            cfg = self.train_config(d, m)  # the engine validates every field
            if self.targets_k(m) and m != "topk_fixed" and cfg.schedule.length > cfg.epochs:
                raise ConfigError(f"the k schedule takes {cfg.schedule.length} epochs but the "
                                  f"run has only {cfg.epochs}: k would never reach "
                                  f"{cfg.schedule.end}")


def preset_config(name: str, **overrides) -> CollapseConfig:
    """The validated config of study preset ``name`` with ``overrides`` of CollapseConfig
    fields (``train`` merges field by field with the preset's)."""
    from sparsejax.train import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    base = copy.deepcopy(PRESETS[name])
    train = base.pop("train")
    for k, v in overrides.pop("train", {}).items():  # nested dicts merge with the preset's
        train[k] = {**train[k], **v} if isinstance(v, dict) and isinstance(train.get(k),
                                                                          dict) else v
    cfg = CollapseConfig(**{**base, **overrides, "preset": name, "train": train})
    cfg.validate()
    return cfg


def study_config(collapse_cfg: dict) -> CollapseConfig:
    """The collapse study of results.json's ``config`` (its run directories: ``units``),
    with the fields of studies from before them at what those studies ran."""
    d = {k: v for k, v in collapse_cfg.items() if k != "cells"}
    d["datasets"], d["methods"] = tuple(d["datasets"]), tuple(d["methods"])
    d.setdefault("group", "off")  # studies from before groups ran a program per cell
    # studies from before group sizes grouped Top-k and L1 only
    d.setdefault("group_size", 2 * d.get("num_seeds", 3))
    return CollapseConfig(**d)


def revival_config(collapse_cfg: dict, epochs: int | None) -> CollapseConfig:
    """The collapse study's config (results.json's ``config``), continued at its final k for
    ``epochs`` (default: its ``revival_epochs``), sparse cells only. The runs' settings come
    from the TrainConfigs the study recorded per cell, so a revival continues exactly the
    runs that were trained."""
    from sparsejax.train import ConfigError

    cfg = study_config(collapse_cfg)
    if not cfg.methods:
        raise ConfigError("the collapse study has no sparse runs to continue (no methods)")
    recorded = collapse_cfg.get("cells", {}).get(cell_name(cfg.datasets[0], cfg.methods[0]))
    if recorded:
        cfg = dataclasses.replace(cfg, train={k: v for k, v in recorded.items()
                                              if k not in GRID_FIELDS})
    n = epochs or cfg.revival_epochs
    end = cfg.train_config(cfg.datasets[0], cfg.methods[0]).schedule.end
    train = {**cfg.train, "epochs": n, "schedule": {**cfg.train.get("schedule", {}),
                                                     "start": end, "end": end, "length": 1}}
    cfg = dataclasses.replace(cfg, baseline=False, controls=False, warmup_epochs=0, train=train)
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------- cost
def train_images(cfg: CollapseConfig, dataset_size=None) -> dict[str, int]:
    """Images every cell of ``cfg`` trains on, all its seeds together, by cell name (0 for
    the untrained control, which is only evaluated): epochs x steps per epoch x batch x
    seeds, from the cells' own TrainConfigs. ``dataset_size(name)``: images in one pass
    over a dataset, asked only where ``steps_per_epoch`` is None (``--one-pass``)."""
    out = {}
    for dataset, arm in cfg.cells():
        t = cfg.train_config(dataset, arm)
        if arm == "untrained":
            out[cell_name(dataset, arm)] = 0
            continue
        spe = t.steps_per_epoch or t.resolved_steps_per_epoch(dataset_size(dataset))
        out[cell_name(dataset, arm)] = t.epochs * spe * t.batch_size * t.num_seeds
    return out


def cost_estimate(cfg: CollapseConfig, images_per_s: float, dataset_size=None) -> dict:
    """Training wall time of the study ``cfg`` and its revival at a train rate of
    ``images_per_s`` (images per second, all seeds of a cell together): the whole main
    grid (``main_grid_h``, hours), the revival (``revival_h``: every sparse cell for
    ``revival_epochs`` more), and one cell (``cell_min``, minutes: the first dataset's first
    method, with all its seeds). Training steps only: the per-epoch evaluations and the
    compilations come on top."""
    main = train_images(cfg, dataset_size)
    revival = train_images(revival_config(config_dict(cfg), None), dataset_size)
    cell = cell_name(cfg.datasets[0], cfg.methods[0] if cfg.methods else "dense")
    return {"preset": cfg.preset, "images_per_s": images_per_s,
            "main_grid_h": sum(main.values()) / images_per_s / 3600,
            "revival_h": sum(revival.values()) / images_per_s / 3600,
            "cell": cell, "cell_min": main[cell] / images_per_s / 60,
            "main_grid_images": sum(main.values()), "revival_images": sum(revival.values()),
            "cells": len(main), "seeds": cfg.num_seeds}


def measured_rate(cfg: CollapseConfig, min_time: float = 2.0) -> float:
    """Images/s of the real train step of ``cfg``'s first program (all its seeds; a group's
    runs; its steps per dispatch), timed for ``min_time`` seconds after compiling
    (``experiments.bench.train.measure``)."""
    from experiments.bench.train import measure

    _, dataset, arms = next(u for u in cfg.units() if u[2][0] != WARMUP)
    t = cfg.unit_config(dataset, arms)
    return measure(t.dataset, t.method, seeds=t.num_seeds, batch=t.batch_size,
                   conv_impl=t.conv_impl, min_time=min_time, group=t.group,
                   scan_steps=t.scan_steps if t.scan_steps > 1 else None)["images_per_s"]


# --------------------------------------------------------------------------- running
# Of a device's free memory, the share one group's train step may take: the rest holds the
# per-epoch evaluation program, device-resident data and the allocator's fragmentation.
FILL_FRACTION = 0.7
FILL_FILE = "fill.json"  # the group size a study resolved, so a resume packs the same runs


def fill_device(cfg: CollapseConfig, out: Path | None = None, *,
                free_bytes: int | None = None) -> CollapseConfig:
    """``cfg`` with ``group_size`` 0 ("fill the device") resolved to a number of runs.

    Where the config groups and the device reports its memory (GPU, TPU): as many whole
    arms as :data:`FILL_FRACTION` of the free bytes (``free_bytes``, default
    :func:`~sparsejax.train.memory.device_free_bytes`) holds at one arm's measured step
    (:func:`~sparsejax.train.memory.step_bytes` of the first group's first arm, all its
    seeds; a group of A arms is taken to need A times that, as its runs are vmapped), at
    least one and at most every arm that can join. ``out/fill.json`` records the choice and
    is read back instead of measuring again, so a resume on another device trains the same
    programs. Unchanged where the config does not group, sets a size, or the backend does
    not report memory (CPU: every arm that can join shares a program)."""
    if not cfg.grouped or cfg.group_size:
        return cfg
    path = None if out is None else Path(out) / FILL_FILE
    if path is not None and path.exists():
        return dataclasses.replace(cfg, group_size=int(
            read_json(path, "the study's group size")["group_size"]))
    groups = [u for u in cfg.units() if len(u[2]) > 1]
    if not groups:
        return cfg
    from sparsejax.train import memory
    from sparsejax.train.mesh import device_label

    if free_bytes is None:
        free_bytes = memory.device_free_bytes()
        if free_bytes is None:
            return cfg
    _, dataset, arms = groups[0]
    arm_bytes = memory.step_bytes(cfg.unit_config(dataset, arms[:1]),
                                  get_dataset(dataset, cfg.source, cfg.data_dir))
    most = max(len(u[2]) for u in groups)
    fit = int(FILL_FRACTION * free_bytes // arm_bytes)
    size = max(1, min(fit, most)) * cfg.num_seeds
    device = device_label()
    print(f"[collapse] group size {size} runs ({size // cfg.num_seeds} of {most} arms x "
          f"{cfg.num_seeds} seeds): one arm's step takes {arm_bytes / 2**20:.0f} MiB of "
          f"{free_bytes / 2**20:.0f} MiB free on {device}", flush=True)
    if path is not None:
        write_atomic(path, json.dumps({
            "group_size": size, "arm_bytes": arm_bytes, "free_bytes": free_bytes,
            "fill_fraction": FILL_FRACTION, "arms_that_fit": fit, "device": device})
            + "\n")
    return dataclasses.replace(cfg, group_size=size)


def run_cells(cfg: CollapseConfig, out: Path, *, resume: bool, init_root: Path | None = None,
              init_cfg: CollapseConfig | None = None, tensorboard: bool = True,
              label: str = "collapse") -> tuple[dict, dict, str]:
    """Trains every cell (or picks up finished ones); returns (records by cell, data sources,
    status). With ``init_root`` each run starts from its cell's run in the study there
    (``init_cfg``'s run directories, default ``cfg``'s: a revival). ``label`` prefixes the
    progress lines."""
    from sparsejax.train import train
    from sparsejax.train.logs import read_records
    from sparsejax.train.loop import evaluate_init

    datasets = {d: get_dataset(d, cfg.source, cfg.data_dir) for d in cfg.datasets}
    sources = {d: {"source": ds.source, "location": ds.location} for d, ds in datasets.items()}
    records: dict[str, list[dict]] = {}
    for unit, dataset, arms in cfg.units():
        run_dir = out / "runs" / unit
        method = arms[0]
        if (run_dir / "DONE").exists():
            history = read_records(run_dir / "metrics.jsonl")
            _split(cfg, records, dataset, arms, history)
            print(f"[{label}] {unit}: finished earlier, {len(history)} records", flush=True)
            continue
        tcfg = cfg.unit_config(dataset, arms)
        if method == "untrained":
            print(f"[{label}] {unit}: the initial parameters at k = {tcfg.schedule.end}, "
                  f"seeds {list(tcfg.seeds)}", flush=True)
            history = evaluate_init(tcfg, run_dir, dataset=datasets[dataset])
            _split(cfg, records, dataset, arms, history)
            write_atomic(run_dir / "DONE", f"{len(history)} records\n")
            continue
        spe = tcfg.resolved_steps_per_epoch(len(datasets[dataset]))
        init_from = None if init_root is None else init_root / "runs" / (
            init_cfg or cfg).unit_of(dataset, method)[0]
        if init_root is None and cfg.warm_started(method):
            init_from = out / "runs" / cell_name(dataset, WARMUP)
        print(f"[{label}] {unit}: {tcfg.epochs} epochs x {spe} steps, seeds "
              f"{list(tcfg.seeds)}" + (f" of {' and '.join(arms)} in one program"
                                       if len(arms) > 1 else "")
              + (f", from {init_from.name}" if init_from else ""), flush=True)
        result = train(tcfg, run_dir, resume=resume, init_from=init_from,
                       dataset=datasets[dataset], tensorboard=tensorboard)
        _split(cfg, records, dataset, arms, result.history)
        if result.status != "done":
            return records, sources, result.status
        write_atomic(run_dir / "DONE", f"{len(result.history)} records\n")
    return records, sources, "done"


def _split(cfg: CollapseConfig, records: dict, dataset: str, arms: tuple[str, ...],
           history: list[dict]) -> None:
    """The records of one program into its cells' (a group's by each record's member;
    records from before members name their method)."""
    if len(arms) == 1:
        records[cell_name(dataset, arms[0])] = history
        return
    for arm, member in zip(arms, cfg.unit_config(dataset, arms).members):
        records[cell_name(dataset, arm)] = [r for r in history
                                            if r.get("member", r["method"]) == member]


def cell_records(cfg: CollapseConfig, out: Path, dataset: str, arm: str) -> list[dict]:
    """The records of one cell of the study in ``out`` (a group's, of that arm only)."""
    from sparsejax.train.logs import read_records

    unit, arms = cfg.unit_of(dataset, arm)
    records: dict[str, list[dict]] = {}
    _split(cfg, records, dataset, arms, read_records(out / "runs" / unit / "metrics.jsonl"))
    return records[cell_name(dataset, arm)]


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


def config_dict(cfg: CollapseConfig) -> dict:
    """The study's config as results.json records it: its fields and, per cell, the full
    TrainConfig (``to_dict``)."""
    from sparsejax.train.config import to_dict

    d = dataclasses.asdict(cfg)
    d["group"] = "on" if cfg.grouped else "off"  # resolved: a revival finds the same runs
    d["cells"] = {cell_name(*c): to_dict(cfg.train_config(*c)) for c in cfg.cells()}
    return d


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments collapse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help=f"one of {sorted(PRESETS)} (default small)")
    p.add_argument("--out", help="study directory (required unless --dry-run)")
    p.add_argument("--resume", action="store_true", help="continue a study in DIR")
    p.add_argument("--seeds", type=int, help="seeds per cell (default: the preset's)")
    p.add_argument("--seed", type=int, help="the first seed (default 0)")
    p.add_argument("--datasets", nargs="+", help=f"subset of {list(DATASETS)}")
    p.add_argument("--methods", nargs="+", help=f"subset of {list(SPARSE_METHODS)}")
    p.add_argument("--no-baseline", action="store_true", help="skip the dense VAE baseline")
    p.add_argument("--no-controls", action="store_true",
                   help="skip the controls (untrained, ReLU without penalty, fixed k)")
    p.add_argument("--warmup-epochs", type=int,
                   help="epochs of the shared ReLU warm-up (default: the preset's; 0: none)")
    p.add_argument("--one-pass", action="store_true",
                   help="epochs of one pass over each dataset, as the paper (unequal steps)")
    p.add_argument("--group", choices=GROUP_CHOICES, default="auto",
                   help="train each dataset's cells that Top-k's graph computes (Top-k, L1, "
                        "the ReLU and fixed-k controls) in one program (auto: on where "
                        "seeds are vmapped, i.e. accelerators; off on CPU)")
    p.add_argument("--group-size", type=int, default=0,
                   help="with a group: the most runs (arms x seeds) per program, whole "
                        "arms packed (default 0: fill the device, as many arms as its "
                        "free memory holds; every arm that can join where it does not "
                        "say, as on CPU)")
    p.add_argument("--source", default="auto", help="auto | procedural | file | tfds")
    p.add_argument("--data-dir", help="real dataset copies (default: $SPARSEJAX_DATA_DIR)")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--steps-per-epoch", type=int, help="override the preset's steps per epoch")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any engine config field, e.g. --set schedule.kind=cosine")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--dry-run", action="store_true",
                   help="print the study's estimated training time as one JSON line and exit "
                        "(trains nothing; the rate from --rate, else a short timed run of the "
                        "first cell's train step)")
    p.add_argument("--rate", type=float, metavar="IMAGES_PER_S",
                   help="with --dry-run: the train rate to estimate at (images/s per cell)")
    return p


def config_from_args(args) -> CollapseConfig:
    from sparsejax.train import config as config_lib

    overrides: dict[str, Any] = {"source": args.source, "data_dir": args.data_dir,
                                 "group": args.group, "group_size": args.group_size}
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
    if args.no_controls:
        overrides["controls"] = False
    if args.warmup_epochs is not None:
        overrides["warmup_epochs"] = args.warmup_epochs
    train: dict[str, Any] = {}
    if args.one_pass:
        train["steps_per_epoch"] = None
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
        overrides["train"] = train
    return preset_config(args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and not args.dry_run:
        parser.error("the following arguments are required: --out")
    if args.rate is not None and not args.rate > 0:
        parser.error(f"--rate must be > 0 images/s, got {args.rate}")
    from sparsejax.train import ConfigError

    try:
        cfg = config_from_args(args)
    except (ConfigError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(cfg, args.rate)
    started = study_dir(args, "collapse", argv)
    if isinstance(started, int):
        return started
    return execute(cfg, *started, resume=args.resume, tensorboard=not args.no_tensorboard)


def study_dir(args, study: str, argv: list[str] | None) -> tuple[Path, str] | int:
    """``(out, command)`` of a study's CLI run, or exit code 2 (a study already in
    ``--out`` without ``--resume``) with the error on stderr."""
    out = output_path(args.out)
    if not args.resume and (out / "runs").exists():
        print(f"error: {out} already holds a study; continue it with --resume or choose "
              "another --out", file=sys.stderr)
        return 2
    return out, f"python -m experiments {study} " + shlex.join(
        sys.argv[2:] if argv is None else argv)


def dry_run(cfg: CollapseConfig, rate: float | None) -> int:
    """Prints :func:`cost_estimate` of ``cfg`` as one JSON line (the ``paper_estimate``
    bench row's fields) and trains nothing."""
    from sparsejax.train.mesh import device_label

    def dataset_size(name: str) -> int:
        return len(get_dataset(name, cfg.source, cfg.data_dir))

    est = cost_estimate(cfg, rate or measured_rate(fill_device(cfg)), dataset_size)
    est["rate_from"] = "--rate" if rate else "measured"
    print(json.dumps({**est, "device": device_label()}))
    return 0


def execute(cfg: CollapseConfig, out: Path, command: str, *, resume: bool,
            tensorboard: bool = True) -> int:
    """Runs (or resumes) the study and writes results.json, report.md and the plots."""
    from experiments.collapse_report import write_all
    from experiments.collapse_stats import build_results

    with DirLock(out):  # one process per study directory
        clock = WallTime(out, resume=resume)
        cfg = fill_device(cfg, out)
        ran = run_cells_or_exit_code(cfg, out, resume=resume, tensorboard=tensorboard)
        if isinstance(ran, int):
            return ran
        records, sources, status = ran
        wall = clock.total()
        if status != "done":
            print(f"[collapse] interrupted after {wall:.0f} s; finished cells are kept. "
                  f"Continue with: {command} --resume", file=sys.stderr)
            return 130
        results = build_results(cfg, records, sources, command=command, wall_time_s=wall,
                                config=config_dict(cfg), recon_floors=recon_floors(cfg))
        write_all(results, out, run_dir_for_traversal=_traversal_run(cfg, out))
    print(f"[collapse] done in {wall:.0f} s: {out / 'report.md'}")
    return 0


def recon_floors(cfg: CollapseConfig) -> dict[str, float]:
    """Per dataset, the mean image's reconstruction loss (nats per image) on the final
    evaluation set of its first cell (:func:`sparsejax.metrics.mean_image_nll`)."""
    import jax
    import numpy as np

    from sparsejax.metrics import mean_image_nll
    from sparsejax.train.evaluate import eval_factors

    floors = {}
    for d in cfg.datasets:
        ds = get_dataset(d, cfg.source, cfg.data_dir)
        tcfg = cfg.train_config(*next(c for c in cfg.cells() if c[0] == d and c[1] != WARMUP))
        f = eval_factors(ds, tcfg, tcfg.last_eval_size)
        render = jax.jit(ds.render) if ds.on_device else ds.render
        b = tcfg.eval_batch
        floors[d] = mean_image_nll(np.asarray(render(f[i:i + b])) for i in range(0, len(f), b))
    return floors


def _traversal_run(cfg: CollapseConfig, out: Path) -> Path | None:
    """The run directory of the first sparse cell, whose first seed is run 0 there (a
    group's Top-k runs come first)."""
    for d, m in cfg.cells():
        if m in SPARSE_METHODS:
            return cfg.run_dir(out, d, m)[0]
    return None


if __name__ == "__main__":
    sys.exit(main())
