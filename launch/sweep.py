"""``python -m launch.sweep STUDY --grid KEY=V1,V2 ... --out OUT [options] [-- STUDY ARGS]``

Spreads a study's grid over the accelerators of this machine. Every grid point becomes one
study command,

    python -m experiments STUDY [STUDY ARGS] --KEY VALUE ... --out OUT/<task-id> [--resume]

run in its own process with one device visible to it (``CUDA_VISIBLE_DEVICES`` on a GPU,
the libtpu chip-visibility variables on a TPU, ``JAX_NUM_CPU_DEVICES=1`` on a CPU), one
process per device at a time. Where a study trains several seeds in one program (the
engine's ``vmap`` over seeds), S points that differ only in their seed become one task,
``--seeds 0,1,2``; the study's profile picks S, ``--per-process S`` overrides it.

Completion is recorded per task after its process exits 0, atomically (a JSON marker under
``OUT/.sweep/done/``, written to a temporary file and renamed). Re-running the same command
skips finished points and resumes unfinished ones (``--resume`` is passed when the task's
directory already exists), each exactly once: a launcher lock refuses a second sweep on the
same OUT, and a lock per task, inherited by the study process, keeps a task from starting
again while a process of an earlier, killed sweep is still saving it.

``--shard I/N`` runs the I-th of N interleaved shares of the tasks (one share per host of a
multi-host TPU slice, say); ``--dry-run`` prints the commands and runs nothing.
"""

# The parts, by concept: launch.grid (points, tasks), launch.profiles (how each study takes a
# task), launch.devices, launch.plan (shards, what is left to run), launch.bookkeeping (the
# markers and locks under OUT/.sweep/), launch.sweep_config, launch.supervisor (the processes).

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launch.bookkeeping import done_points
from launch.common import LaunchError, run_cli, shell_join, split_study_args
from launch.devices import DEFAULT_PORT_BASE, PLATFORMS, device_env, resolve_devices
from launch.grid import expand, parse_grid
from launch.plan import auto_per_process, parse_shard
from launch.profiles import STUDY_PROFILES, StudyProfile, task_argv
from launch.supervisor import Sweep
from launch.sweep_config import SweepConfig


def dry_run_lines(cfg: SweepConfig) -> list[str]:
    """The commands, slots shown round-robin (a real sweep hands out slots as they free up)."""
    done = done_points(cfg.out) if cfg.out.exists() else {}
    todo, _ = cfg.plan(done)
    lines = []
    for i, task in enumerate(todo):
        slot = i % len(cfg.devices)
        env = device_env(cfg.platform, cfg.devices[slot], slot, cfg.port_base)
        lines.append(shell_join(task_argv(task, cfg, resume=(cfg.out / task.id).exists()), env))
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="the study name, as in `python -m experiments STUDY`")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis: the study flag --KEY takes each value (repeatable)")
    p.add_argument("--out", required=True, help="root directory; each task writes OUT/<task-id>")
    p.add_argument("--module", default="experiments",
                   help="the module run with -m (default: experiments)")
    p.add_argument("--python", default=sys.executable, help="the interpreter (default: this one)")
    p.add_argument("--platform", default="auto", choices=PLATFORMS)
    p.add_argument("--devices", default=None,
                   help="how many devices (N) or which (0,2,3); default: all found")
    p.add_argument("--per-process", type=int, default=None, metavar="S",
                   help="points per process along --group-key (default: up to the study's "
                        "profile, as many as keep every device busy)")
    p.add_argument("--group-key", default=None, help="the grid key grouped per process (e.g. seed)")
    p.add_argument("--group-flag", default=None,
                   help="the study flag taking several values of --group-key, joined by "
                        "commas (e.g. seed-list -> --seed-list 0,1,2)")
    p.add_argument("--group-count-flag", default=None,
                   help="or: the study flag taking how many consecutive values follow "
                        "--KEY FIRST (e.g. seeds -> --seed 0 --seeds 3)")
    p.add_argument("--shard", default=None, metavar="I/N", help="run the I-th of N shares")
    p.add_argument("--retries", type=int, default=0,
                   help="rerun a failed task (with --resume) up to N times")
    p.add_argument("--grace", type=float, default=120.0,
                   help="seconds a task gets to save after SIGTERM before SIGKILL")
    p.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE)
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def config_from_args(args: argparse.Namespace, extra: list[str]) -> SweepConfig:
    profile = STUDY_PROFILES.get(args.study, StudyProfile())
    group_key = args.group_key or profile.group_key
    if args.group_flag and args.group_count_flag:
        raise LaunchError("pass --group-flag or --group-count-flag, not both")
    if args.group_flag or args.group_count_flag:
        group_flag, count_flag = _dashed(args.group_flag), _dashed(args.group_count_flag)
    else:
        group_flag, count_flag = profile.group_flag, profile.count_flag
    platform, devices = resolve_devices(args.platform, args.devices)
    grid = parse_grid(args.grid)
    shard = parse_shard(args.shard)
    if args.per_process is not None:
        per_process = args.per_process
    elif group_flag or count_flag:
        per_process = auto_per_process(expand(grid), group_key, profile.per_process or 3,
                                       len(devices), shard, contiguous=count_flag is not None)
    else:
        per_process = 1
    for key, _ in grid:
        if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in extra):
            raise LaunchError(f"--{key} is both a grid axis and a fixed study argument after --")
    return SweepConfig(study=args.study, grid=grid, out=Path(args.out), extra=extra,
                       module=args.module, python=args.python, platform=platform,
                       devices=devices, group_key=group_key, group_flag=group_flag,
                       count_flag=count_flag, per_process=per_process, shard=shard,
                       retries=args.retries, grace_s=args.grace, port_base=args.port_base)


def _dashed(flag: str | None) -> str | None:
    return flag if not flag or flag.startswith("-") else f"--{flag}"


def main(argv: list[str] | None = None) -> int:
    own, extra = split_study_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    cfg = config_from_args(args, extra)
    if args.dry_run:
        for line in dry_run_lines(cfg):
            print(line)
        return 0
    return Sweep(cfg, log=lambda m: print(m, file=sys.stderr, flush=True)).run()


if __name__ == "__main__":
    sys.exit(run_cli(main))
