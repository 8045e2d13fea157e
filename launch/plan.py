"""Which tasks a sweep runs: the grid's points grouped into tasks, cut into shards, minus
those already done, and how many points per process keep every device busy."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from launch.common import LaunchError
from launch.grid import Point, Task, group_points


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or int(m[2]) < 1 or int(m[1]) >= int(m[2]):
        raise LaunchError(f"bad --shard {text!r}; expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m[1]), int(m[2])


def plan(points: Sequence[Point], done: Mapping[str, str], group_key: str | None,
         per_process: int, shard: tuple[int, int] = (0, 1), *,
         contiguous: bool = False) -> tuple[list[Task], int]:
    """The tasks still to run in this shard, and how many of the shard's points are done.

    Shares are cut from the task list of the whole grid, so they stay the same from run to
    run; points already done are dropped from their task (which splits it where its values
    must stay consecutive).
    """
    index, count = shard
    todo, finished = [], 0
    for i, task in enumerate(group_points(points, group_key, per_process, contiguous=contiguous)):
        if i % count != index:
            continue
        left = [p for p in task.points if p.id not in done]
        finished += len(task.points) - len(left)
        if left:
            todo += group_points(left, task.group_key, len(left), contiguous=contiguous) \
                if task.group_key else [Task(tuple(left))]
    return todo, finished


def auto_per_process(points: Sequence[Point], group_key: str | None, most: int, devices: int,
                     shard: tuple[int, int] = (0, 1), *, contiguous: bool = False) -> int:
    """Points per process (1..``most``): the fewest waves of tasks over the devices, and
    among those the fewest points per task.

    A task of S vmapped seeds takes longer than one of a single seed, but less than S of
    them; the wall time is about (waves) x (time of a task). So 4 cells x 3 seeds run 3 per
    process on 4 devices (1 wave), 2 per process on 8 (1 wave, faster tasks), 1 on 12.
    """
    best, best_waves = 1, None
    for size in range(1, max(1, most) + 1):
        tasks = sum(1 for i, _ in enumerate(group_points(points, group_key, size,
                                                          contiguous=contiguous))
                    if i % shard[1] == shard[0])
        waves = -(-tasks // devices)
        if best_waves is None or waves < best_waves:
            best, best_waves = size, waves
    return best
