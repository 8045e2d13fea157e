"""A study's wall time across interrupted and resumed segments (``DIR/timing.json``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sparsejax.atomic_io import read_json, write_atomic

TIMING_FILE = "timing.json"


class WallTime:
    """Wall time of a study so far: this segment plus, on a resume, the earlier segments.

    The earlier time is read when this is made, so a damaged ``timing.json`` is reported
    before any work; :meth:`total` writes the sum back.
    """

    def __init__(self, out: Path, *, resume: bool):
        self.path = Path(out) / TIMING_FILE
        before = read_json(self.path, "study's timing file") \
            if resume and self.path.exists() else {}
        self.earlier = float(before.get("wall_time_s", 0.0))
        self.started = time.perf_counter()

    def total(self) -> float:
        """Seconds so far (all segments); saved to ``timing.json``."""
        wall = self.earlier + time.perf_counter() - self.started
        write_atomic(self.path, json.dumps({"wall_time_s": wall}) + "\n")
        return wall
