"""``python -m experiments remedies``: is the collapse fundamental? Every dead-unit remedy of
sparse-autoencoder practice, run against arXiv 2603.18056's claim.

The flagship grid (:mod:`experiments.collapse`: shared warm-up, Top-k and L1, the three
controls, the dense VAE, floors and flags) with one more arm per remedy, each on the same
seeds, warm-up and k schedule as plain Top-k:

=====================  ===================================================================
``auxk``               AuxK: the top k_aux dead units reconstruct the SAE's residual
``resample``           Anthropic resampling of dead units (optimiser rows reset)
``batchtopk``          BatchTopK; its training-estimated threshold at evaluation
``jumprelu``           JumpReLU, L0 steered to k, pre-activation loss on dead units
``tied_init``          encoder = decoder transpose at the arm's start
``subspace_init``      the sparse layer re-drawn inside its input's active subspace
``whiten``             PCA-whitened input of the sparse layer (estimated at the start)
``schedule_cosine``    the k schedule's shape: cosine
``schedule_geometric`` geometric
``schedule_long``      twice as long (the held part unchanged)
``topk_norelu``        Top-k without the ReLU: exactly k active
``posthoc_sae``        a Top-k SAE trained on the hidden layer of the frozen dense VAE
=====================  ===================================================================

Then every sparse arm continues at the final k for ``revival_epochs`` (are dead units
revived?), and the report adds the MIG blind spot: MIG of a trained code, with its dead
units removed, and with 100 constant units added, beside metrics that see the collapse.

    python -m experiments remedies --preset small --out runs/remedies
    python -m experiments remedies --preset small --out runs/remedies --resume

Runs live in ``DIR/runs/<dataset>-<arm>/`` and ``DIR/revival/runs/...``; a finished cell is
skipped on ``--resume``, an unfinished one continues from its last checkpoint. Exit status:
0 done, 130 interrupted, 1 failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

from experiments.collapse import (CollapseConfig, config_dict, fill_device, recon_floors,
                                  run_cells_or_exit_code, study_dir)
from experiments.remedies_analysis import POSTHOC
from experiments.wall_time import WallTime
from sparsejax.data import DATASETS
from sparsejax.dir_lock import DirLock

# the arms trained inside the hybrid, in the report's order (the post-hoc SAE comes last)
HYBRID_REMEDIES = ("auxk", "resample", "batchtopk", "jumprelu", "tied_init", "subspace_init",
                   "whiten", "schedule_cosine", "schedule_geometric", "schedule_long",
                   "topk_norelu")
REMEDIES = (*HYBRID_REMEDIES, POSTHOC)
BASELINES = ("topk", "l1")  # plain Top-k and L1, beside every remedy

# The study's presets. ``collapse`` names the flagship preset whose grid (warm-up, schedule,
# controls, seeds) the remedies stand beside; ``grid`` overrides its fields; ``remedy``
# holds the remedies' own settings; ``posthoc`` the post-hoc SAE's training.
PRESETS: dict[str, dict[str, Any]] = {
    # CI: dSprites, one seed, 4 steps of 16 images per epoch; learns nothing (every cell
    # flagged not evidence); every remedy's program is compiled and run once or more, so
    # compiling is its cost: XLA's own convolutions, the fastest to compile on XLA:CPU
    "smoke": dict(collapse="smoke",
                  grid=dict(datasets=("dsprites",), num_seeds=1, revival_epochs=1,
                            warmup_epochs=1,
                            train=dict(steps_per_epoch=4, batch_size=16, eval_size=256,
                                       eval_batch=256, final_eval_size=512, log_every=2,
                                       conv_impl="lax")),
                  remedy=dict(k_aux=128, dead_after=4, resample_every=8, preact_coef=0.1,
                              jump_lr_scale=100.0, jump_bandwidth=0.01),
                  posthoc=dict(vectors=1024, batch_size=256, epochs=1, lr=1e-3)),
    # the collapse study's CPU preset (dSprites, 2 seeds, 150 warm-up steps, 500 -> 50 over
    # 150 steps, 150 held), 2 follow-up epochs at k = 50. JumpReLU's thresholds learn at
    # 100 x the model's rate with a 0.01-wide kernel: measured on one seed of this preset,
    # L0 ended at 58.6 for k = 50 (at 1 x and 0.001, the paper's, it stayed at 230 while
    # the coefficient sat at its cap; the pre-activations grow about 50-fold in the arm, so
    # a 0.001 window sees almost none of them)
    "small": dict(collapse="small", grid=dict(revival_epochs=2),
                  remedy=dict(k_aux=128, dead_after=50, resample_every=75, preact_coef=0.1,
                              jump_lr_scale=100.0, jump_bandwidth=0.01),
                  posthoc=dict(vectors=32_768, batch_size=256, epochs=4, lr=1e-3)),
    # the paper's grid (both datasets, 3 seeds, 50 epochs of one pass), 10 follow-up epochs;
    # its 50 x more steps per epoch leave JumpReLU's thresholds 10 x the model's rate (not
    # measured at this scale)
    "paper": dict(collapse="paper", grid=dict(revival_epochs=10),
                  remedy=dict(k_aux=128, dead_after=1000, resample_every=11_520,
                              preact_coef=0.1, jump_lr_scale=10.0, jump_bandwidth=0.01),
                  posthoc=dict(vectors=262_144, batch_size=1024, epochs=10, lr=4e-4)),
}


def remedy_arms(train, remedy: dict, names: tuple[str, ...]) -> dict[str, dict]:
    """Per hybrid remedy in ``names``, the TrainConfig fields its arm sets on top of the
    grid's (``train``: the plain Top-k arm's TrainConfig)."""
    n_sched = train.schedule.length
    dead = {"dead_after": remedy["dead_after"]}
    arms = {
        "auxk": {"remedy": {"k_aux": remedy["k_aux"], **dead}},
        "resample": {"remedy": {"resample_every": remedy["resample_every"], **dead}},
        "batchtopk": {"method": "batchtopk"},
        "jumprelu": {"method": "jumprelu",
                     "remedy": {"preact_coef": remedy["preact_coef"], **dead,
                                **{n: remedy[n] for n in ("jump_lr_scale", "jump_bandwidth")}}},
        "tied_init": {"sparse_init": "tied"},
        "subspace_init": {"sparse_init": "subspace"},
        "whiten": {"sparse_input": "whiten"},
        "schedule_cosine": {"schedule": {"kind": "cosine"}},
        "schedule_geometric": {"schedule": {"kind": "geometric"}},
        # k reaches its end at epoch 2L - 1 instead of L - 1: L more epochs keep the held part
        "schedule_long": {"schedule": {"length": 2 * n_sched}, "epochs": train.epochs + n_sched},
        "topk_norelu": {"topk_relu": False},
    }
    return {a: arms[a] for a in names if a in arms}


@dataclasses.dataclass(frozen=True)
class RemediesConfig:
    """The study: the flagship grid with the remedy arms (``grid``), which remedies, the
    follow-up, and the post-hoc SAE's training.

    Attributes:
      preset: the study preset's name.
      grid: the :class:`~experiments.collapse.CollapseConfig` every hybrid cell runs from
        (its ``arms`` are the hybrid remedies).
      remedies: the remedies run (a subset of :data:`REMEDIES`, in its order).
      remedy: the remedies' settings (k_aux, dead_after in steps, resample_every in steps,
        JumpReLU's preact_coef, jump_lr_scale and jump_bandwidth).
      posthoc: the post-hoc SAE's training (``vectors`` hidden-layer vectors of the dense
        VAE, ``batch_size``, ``epochs``, Adam ``lr``).
    """

    preset: str
    grid: CollapseConfig
    remedies: tuple[str, ...]
    remedy: dict
    posthoc: dict

    @property
    def follow_up(self) -> CollapseConfig:
        """The follow-up grid: every sparse arm continued at its final k."""
        return dataclasses.replace(self.grid, continue_epochs=self.grid.revival_epochs,
                                   baseline=False, controls=False, warmup_epochs=0)


def preset_config(name: str, *, remedies: tuple[str, ...] | None = None,
                  datasets: tuple[str, ...] | None = None, num_seeds: int | None = None,
                  source: str = "auto", data_dir: str | None = None,
                  train: dict | None = None) -> RemediesConfig:
    """The validated config of study preset ``name``; raises ConfigError before any work.
    ``train``: TrainConfig fields merged into the grid's (e.g. a shorter run in tests)."""
    from experiments.collapse import preset_config as collapse_preset
    from sparsejax.train import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    p = copy.deepcopy(PRESETS[name])
    chosen = REMEDIES if remedies is None else tuple(remedies)
    bad = [r for r in chosen if r not in REMEDIES]
    if bad or not chosen:
        raise ConfigError(f"remedies {list(chosen)}: expected a non-empty subset of "
                          f"{list(REMEDIES)}")
    chosen = tuple(r for r in REMEDIES if r in chosen)
    grid = dict(p["grid"], source=source, data_dir=data_dir)
    if datasets is not None:
        grid["datasets"] = tuple(datasets)
    if num_seeds is not None:
        grid["num_seeds"] = num_seeds
    if train:
        grid["train"] = {**grid.get("train", {}), **train}
    grid["baseline"] = POSTHOC in chosen  # the dense VAE is the post-hoc SAE's model
    base = collapse_preset(p["collapse"], **grid)
    arms = remedy_arms(base.train_config(base.datasets[0], "topk"), p["remedy"], chosen)
    cfg = dataclasses.replace(base, arms=arms)
    try:
        cfg.validate()
    except ValueError as e:  # a remedy's own settings (RemedyConfig)
        raise ConfigError(str(e)) from None
    post = p["posthoc"]
    if POSTHOC in chosen and post["vectors"] < post["batch_size"]:
        raise ConfigError(f"posthoc vectors = {post['vectors']} is fewer than one batch "
                          f"({post['batch_size']})")
    return RemediesConfig(name, cfg, chosen, p["remedy"], post)


def config_record(cfg: RemediesConfig) -> dict:
    """The study's config as results.json records it (the grid with every cell's
    TrainConfig, :func:`experiments.collapse.config_dict`)."""
    return {"preset": cfg.preset, "remedies": list(cfg.remedies), "remedy": cfg.remedy,
            "posthoc": cfg.posthoc, "grid": config_dict(cfg.grid),
            "follow_up": config_dict(cfg.follow_up)}


# --------------------------------------------------------------------------- running
def execute(cfg: RemediesConfig, out: Path, command: str, *, resume: bool,
            tensorboard: bool = True) -> int:
    """Runs (or resumes) the study; writes results.json, report.md and the plots."""
    from experiments import remedies_analysis, remedies_report

    with DirLock(out):
        clock = WallTime(out, resume=resume)
        cfg = dataclasses.replace(cfg, grid=fill_device(cfg.grid, out))
        ran = run_cells_or_exit_code(cfg.grid, out, resume=resume, tensorboard=tensorboard,
                                     label="remedies")
        if isinstance(ran, int):
            return ran
        records, sources, status = ran
        if status == "done":
            ran = run_cells_or_exit_code(cfg.follow_up, out / "revival", resume=resume,
                                         init_root=out, init_cfg=cfg.grid,
                                         tensorboard=tensorboard,
                                         label="remedies follow-up")
            if isinstance(ran, int):
                return ran
            follow, _, status = ran
        if status != "done":
            print(f"[remedies] interrupted after {clock.total():.0f} s; finished cells are "
                  f"kept. Continue with: {command} --resume", file=sys.stderr)
            return 130
        posthoc = {}
        if POSTHOC in cfg.remedies:
            for d in cfg.grid.datasets:
                posthoc[d] = remedies_analysis.posthoc_sae(cfg, out, d)
        blind = {d: remedies_analysis.mig_blind_spot(cfg.grid, out, d)
                 for d in cfg.grid.datasets}
        wall = clock.total()
        results = remedies_analysis.build_results(
            cfg, records, follow, posthoc, blind, sources, command=command, wall_time_s=wall,
            config=config_record(cfg), recon_floors=recon_floors(cfg.grid))
        remedies_report.write_all(results, out)
    print(f"[remedies] done in {wall:.0f} s: {out / 'report.md'}")
    return 0


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments remedies", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help=f"one of {sorted(PRESETS)} (default small)")
    p.add_argument("--out", required=True, help="study directory")
    p.add_argument("--resume", action="store_true", help="continue a study in DIR")
    p.add_argument("--remedies", nargs="+", help=f"subset of {list(REMEDIES)} (default all)")
    p.add_argument("--datasets", nargs="+", help=f"subset of {list(DATASETS)}")
    p.add_argument("--seeds", type=int, help="seeds per cell (default: the preset's)")
    p.add_argument("--source", default="auto", help="auto | procedural | file | tfds")
    p.add_argument("--data-dir", help="real dataset copies (default: $SPARSEJAX_DATA_DIR)")
    p.add_argument("--no-tensorboard", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sparsejax.train import ConfigError

    try:
        cfg = preset_config(args.preset, remedies=args.remedies,
                            datasets=tuple(args.datasets) if args.datasets else None,
                            num_seeds=args.seeds, source=args.source, data_dir=args.data_dir)
    except (ConfigError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = study_dir(args, "remedies", argv)
    if isinstance(started, int):
        return started
    return execute(cfg, *started, resume=args.resume, tensorboard=not args.no_tensorboard)


if __name__ == "__main__":
    sys.exit(main())
