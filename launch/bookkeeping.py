"""What a sweep keeps under ``OUT/.sweep/``: completion markers and locks.

``done/<task>.json`` is written after a task's process exits 0, atomically, and names the
points it finished; ``sweep.lock`` and ``locks/<task>.lock`` are ``flock`` locks that keep
a second sweep, and a task whose process outlived a killed sweep, from running twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from sparsejax.atomic_io import write_atomic
from sparsejax.dir_lock import try_flock

from launch.common import LaunchError


def sweep_dir(out: Path) -> Path:
    return out / ".sweep"


def done_points(out: Path) -> dict[str, str]:
    """point id -> task id, from the completion markers."""
    done: dict[str, str] = {}
    for marker in sorted((sweep_dir(out) / "done").glob("*.json")):
        try:
            record = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as e:  # the rename is atomic: this is damage
            raise LaunchError(f"unreadable completion marker {marker}: {e}; delete it to rerun "
                              "that task")
        for pid in record["points"]:
            done[pid] = record["task"]
    return done


def write_json_atomic(path: Path, record: Mapping) -> None:
    write_atomic(path, json.dumps(record, indent=1) + "\n")


def try_lock(path: Path) -> int | None:
    """An exclusive ``flock`` on ``path`` (its folder created): its fd, or None if held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return try_flock(path)
