"""The grid of a sweep: ``--grid KEY=V1,V2`` axes, their points, and the tasks they make.

A :class:`Point` is one combination of values; a :class:`Task` is what one process runs,
one point or several that differ only in one key (the seeds a study ``vmap``s over). Both
have an id that is a safe, readable directory name (``dataset=dsprites,seed=0+1+2``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from launch.common import NON_NAME_CHARS, ONLY_NAME_CHARS, LaunchError

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class Point:
    """One grid point: (key, value) pairs in the grid's key order."""

    items: tuple[tuple[str, str], ...]

    @property
    def id(self) -> str:
        return ",".join(f"{k}={_safe(v)}" for k, v in self.items)

    def get(self, key: str) -> str | None:
        return dict(self.items).get(key)


@dataclass(frozen=True)
class Task:
    """What one process runs: one point, or S points differing only in the grouped key."""

    points: tuple[Point, ...]
    group_key: str | None = None

    @property
    def id(self) -> str:
        if len(self.points) == 1 or self.group_key is None:
            return self.points[0].id
        first = self.points[0]
        joined = "+".join(_safe(p.get(self.group_key)) for p in self.points)
        return ",".join(f"{k}={joined if k == self.group_key else _safe(v)}"
                        for k, v in first.items)


def _safe(value: str) -> str:
    """A value as it appears in a directory name: itself if harmless, else a readable hash."""
    if ONLY_NAME_CHARS.match(value) and value not in (".", ".."):  # after 'key=': never hidden
        return value
    readable = NON_NAME_CHARS.sub("_", value).strip("._")[:24] or "v"
    return f"{readable}~{hashlib.sha1(value.encode()).hexdigest()[:8]}"


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["dataset=dsprites,shapes3d", "seed=0,1"]`` ->
    ``[("dataset", ["dsprites", "shapes3d"]), ("seed", ["0", "1"])]``."""
    grid: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for spec in specs:
        key, sep, rest = spec.partition("=")
        if not sep or not _KEY.match(key):
            raise LaunchError(f"bad --grid {spec!r}; expected KEY=V1,V2,... with KEY a study flag "
                              "name without dashes (letters, digits, _ or -), e.g. seed=0,1,2")
        values = rest.split(",")
        if any(v == "" for v in values):
            raise LaunchError(f"--grid {spec!r} has an empty value; expected KEY=V1,V2,...")
        if len(set(values)) != len(values):
            raise LaunchError(f"--grid {spec!r} repeats a value")
        if key in seen:
            raise LaunchError(f"--grid key {key!r} given twice; list all its values in one --grid")
        seen.add(key)
        grid.append((key, values))
    if not grid:
        raise LaunchError("no --grid given; expected at least one, e.g. --grid seed=0,1,2")
    return grid


def expand(grid: Sequence[tuple[str, Sequence[str]]]) -> list[Point]:
    """Every combination, the last key varying fastest."""
    keys = [k for k, _ in grid]
    points = [Point(tuple(zip(keys, combo))) for combo in itertools.product(*(v for _, v in grid))]
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):  # only possible through hashing collisions of odd values
        raise LaunchError("two grid points map to the same directory name; rename the values")
    return points


def group_points(points: Sequence[Point], key: str | None, size: int, *,
                 contiguous: bool = False) -> list[Task]:
    """Chunks of up to ``size`` points that differ only in ``key``, in grid order.

    With ``contiguous``, a chunk holds consecutive integers only (a study that takes a first
    seed and a count: 0,1,2 is one chunk, 0,2 two).
    """
    if size < 1:
        raise LaunchError(f"--per-process must be >= 1, got {size}")
    if key is None or size == 1 or not points or points[0].get(key) is None:
        return [Task((p,)) for p in points]
    cells: dict[tuple, list[Point]] = {}
    for p in points:
        cells.setdefault(tuple((k, v) for k, v in p.items if k != key), []).append(p)
    tasks = []
    for members in cells.values():
        chunk: list[Point] = []
        for p in members:
            if chunk and (len(chunk) == size or (contiguous and not follows(chunk[-1], p, key))):
                tasks.append(Task(tuple(chunk), group_key=key))
                chunk = []
            chunk.append(p)
        tasks.append(Task(tuple(chunk), group_key=key))
    return tasks


def follows(a: Point, b: Point, key: str) -> bool:
    """Whether ``b``'s value of ``key`` is the integer after ``a``'s."""
    try:
        return int(b.get(key)) == int(a.get(key)) + 1
    except ValueError:
        return False
