"""One sweep, fully resolved: the study, its grid and output, the devices, how points are
grouped per process, and how its processes are supervised (see :mod:`launch.sweep`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from launch.devices import DEFAULT_PORT_BASE
from launch.grid import Task, expand
from launch.plan import plan


@dataclass
class SweepConfig:
    study: str
    grid: list[tuple[str, list[str]]]
    out: Path
    extra: list[str] = field(default_factory=list)
    module: str = "experiments"
    python: str = sys.executable
    platform: str = "cpu"
    devices: list[str] = field(default_factory=lambda: ["0"])
    group_key: str | None = None
    group_flag: str | None = None
    group_sep: str = ","
    count_flag: str | None = None
    per_process: int = 1
    shard: tuple[int, int] = (0, 1)
    retries: int = 0
    grace_s: float = 120.0
    lock_wait_s: float = 600.0
    port_base: int = DEFAULT_PORT_BASE
    out_flag: str = "--out"
    resume_flag: str = "--resume"

    def plan(self, done: Mapping[str, str]) -> tuple[list[Task], int]:
        return plan(expand(self.grid), done, self.group_key, self.per_process, self.shard,
                    contiguous=self.count_flag is not None)
