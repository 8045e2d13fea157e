"""k schedules: how many units may fire, per epoch.

A schedule moves k from ``start`` (epoch 0) to ``end`` (epoch ``length - 1``) and holds
``end`` afterwards. With ``t = min(epoch / (length - 1), 1)``:

- ``linear``:    ``start + (end - start) t``  (default 500 -> 50 over 50 epochs: arXiv 2603.18056)
- ``cosine``:    ``end + (start - end) (1 + cos(pi t)) / 2``  (slow at both ends)
- ``geometric``: ``start (end / start)^t``  (equal ratios per epoch: fast early)
- ``step``:      ``stages`` equal-length plateaus whose levels run linearly from start to end

k is rounded to the nearest integer and kept within [min(start, end), max(start, end)].
Schedules may rise as well as fall. The epoch may be fractional: the trainer evaluates the
schedule on the host at every step (``epoch + step / steps_per_epoch``), and the value enters
the jitted step as an argument, so a moving k recompiles nothing.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

KINDS = ("linear", "cosine", "geometric", "step")


@dataclasses.dataclass(frozen=True)
class KSchedule:
    """k(epoch) from ``start`` to ``end`` over ``length`` epochs, then held.

    Attributes:
      kind: one of :data:`KINDS`.
      start: k at epoch 0 (>= 1).
      end: k from epoch ``length - 1`` on (>= 1).
      length: epochs the schedule takes (>= 1; 1 means ``end`` from the start).
      stages: number of plateaus of the ``step`` kind (>= 1; 1 means ``start`` throughout
        the schedule's length, then ``end``).
    """

    kind: str = "linear"
    start: int = 500
    end: int = 50
    length: int = 50
    stages: int = 5

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown k schedule kind {self.kind!r}: expected one of {KINDS}")
        for name in ("start", "end", "length", "stages"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"k schedule {name} must be an integer >= 1, got {v!r}")

    def fraction(self, epoch) -> np.ndarray:
        """Progress t in [0, 1] at ``epoch`` (int or array)."""
        e = np.asarray(epoch, np.float64)
        if np.any(e < 0):
            raise ValueError(f"epoch must be >= 0, got {epoch!r}")
        if self.length == 1:
            return np.ones_like(e)
        return np.minimum(e / (self.length - 1), 1.0)

    def value(self, epoch) -> np.ndarray:
        """Unrounded k at ``epoch`` (float; int or array in)."""
        s, e = float(self.start), float(self.end)
        t = self.fraction(epoch)
        if self.kind == "linear":
            return s + (e - s) * t
        if self.kind == "cosine":
            return e + (s - e) * 0.5 * (1.0 + np.cos(math.pi * t))
        if self.kind == "geometric":
            return s * (e / s) ** t
        # step: plateau i covers epochs [i L / stages, (i + 1) L / stages)
        ep = np.asarray(epoch, np.float64)
        if self.stages == 1:
            return np.where(ep >= self.length - 1, e, s) if self.length > 1 else np.full_like(ep, e)
        stage = np.minimum(np.floor(ep * self.stages / self.length), self.stages - 1)
        return s + (e - s) * stage / (self.stages - 1)

    def __call__(self, epoch) -> int | np.ndarray:
        """Integer k at ``epoch``: an int for an int epoch, an int64 array for an array."""
        k = np.clip(np.rint(self.value(epoch)), min(self.start, self.end),
                    max(self.start, self.end)).astype(np.int64)
        return int(k) if k.ndim == 0 else k

    def table(self, epochs: int) -> list[int]:
        """``[k(0), ..., k(epochs - 1)]``."""
        return [int(v) for v in self(np.arange(epochs))]
