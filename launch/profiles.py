"""How each study takes a task: its profile (which grid key it runs several values of in one
program, and through which flag), and the study command a task becomes."""

from __future__ import annotations

from dataclasses import dataclass

from launch.common import LaunchError
from launch.grid import Task, follows
from launch.sweep_config import SweepConfig


@dataclass(frozen=True)
class StudyProfile:
    """How a study takes several points of one grid key in one program (its vmap over seeds).

    Either ``count_flag``: the study takes the first value as ``--KEY FIRST`` and how many
    consecutive ones as ``COUNT_FLAG N`` (``train --seed 0 --seeds 3``); or ``group_flag``:
    one flag takes the values joined by ``group_sep`` (``--seeds 0,1,2``).
    """

    group_key: str | None = None     # the grid key the study vmaps over (e.g. seed)
    count_flag: str | None = None    # e.g. --seeds (with --seed FIRST)
    group_flag: str | None = None    # e.g. --seed-list (values joined)
    group_sep: str = ","
    per_process: int = 1             # the most points per process


# Studies that train several seeds in one program through the engine's vmap. A study not
# listed here runs one point per process; --per-process, --group-key, --group-flag and
# --group-count-flag override either way.
STUDY_PROFILES: dict[str, StudyProfile] = {
    "train": StudyProfile(group_key="seed", count_flag="--seeds", per_process=3),
    "collapse": StudyProfile(group_key="seed", count_flag="--seeds", per_process=3),
}


def task_flags(task: Task, group_flag: str | None = None, group_sep: str = ",",
               count_flag: str | None = None) -> list[str]:
    """The study flags of a task: ``--KEY VALUE`` per key; the grouped key once."""
    flags: list[str] = []
    first = task.points[0]
    for key, value in first.items:
        if key == task.group_key and len(task.points) > 1:
            values = [p.get(key) for p in task.points]
            if count_flag:
                if not all(follows(a, b, key) for a, b in zip(task.points, task.points[1:])):
                    raise LaunchError(f"{count_flag} runs consecutive {key} values only, got "
                                      f"{values}")
                flags += [f"--{key}", value, count_flag, str(len(values))]
            elif group_flag:
                flags += [group_flag, group_sep.join(values)]
            else:
                raise LaunchError(f"grouping {len(task.points)} points per process needs the "
                                  f"flag that takes several {key!r} values; pass --group-flag "
                                  "or --group-count-flag")
        else:
            flags += [f"--{key}", value]
    return flags


def task_argv(task: Task, cfg: SweepConfig, *, resume: bool) -> list[str]:
    """The study command of a task, writing to ``OUT/<task-id>``; ``--resume`` if ``resume``."""
    argv = [cfg.python, "-m", cfg.module, cfg.study, *cfg.extra,
            *task_flags(task, cfg.group_flag, cfg.group_sep, cfg.count_flag),
            cfg.out_flag, str(cfg.out / task.id)]
    if resume and cfg.resume_flag:
        argv.append(cfg.resume_flag)
    return argv
