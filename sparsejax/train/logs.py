"""Where a run reports: per-epoch JSON lines, TensorBoard event files, a progress display."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sparsejax.atomic_io import RunFileError, write_atomic

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Epoch records as JSON lines in ``DIR/metrics.jsonl``, and TensorBoard events in
    ``DIR/tb/<run>/`` per run name (``seed_<s>``; tensorboardX, no TensorFlow needed)."""

    def __init__(self, out_dir: str | Path, runs: Sequence[str], *, tensorboard: bool = True):
        import jax

        self.path = Path(out_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = {}
        # multi-host: every process computes the same records; process 0 writes them
        self.writer = jax.process_index() == 0
        if tensorboard and self.writer:
            from tensorboardX import SummaryWriter

            self._tb = {r: SummaryWriter(str(Path(out_dir) / "tb" / r)) for r in runs}

    def records(self) -> list[dict]:
        """All records in the file (a torn last line from a crash is skipped; any other
        unreadable line raises :class:`RunFileError`)."""
        return read_records(self.path)

    def truncate(self, keep: Callable[[dict], bool]) -> None:
        """Keep only the records for which ``keep(record)`` holds (a resumed run drops what
        came after its checkpoint and writes it again). A damaged log raises
        :class:`RunFileError` and is left as it is; a torn last line is kept aside in
        ``metrics.jsonl.torn``."""
        if not self.writer or not self.path.exists():
            return
        kept = [r for r in self.records() if keep(r)]
        text = self.path.read_text()
        if text and not text.endswith("\n"):
            torn = text[text.rfind("\n") + 1:]
            write_atomic(self.path.with_name(self.path.name + ".torn"), torn)
            print(f"[sparsejax] {self.path}: its last line was cut short by a crash; kept "
                  f"aside in {self.path.name}.torn", file=sys.stderr)
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, records: Sequence[dict]) -> None:
        if not self.writer:
            return
        with self.path.open("a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
            f.flush()
        for r in records:
            tb = self._tb.get(r.get("run", f"seed_{r['seed']}"))
            if tb is None:
                continue
            step = r["step"]
            for group in ("train", "eval"):
                for name, v in r[group].items():
                    tb.add_scalar(f"{group}/{name}", v, step)
            tb.add_scalar("sparsity/k", r["k"], step)
            tb.add_scalar("sparsity/l1_coef", r["l1_coef"], step)
            for tau, v in r["dead_fraction"].items():
                tb.add_scalar(f"dead_fraction/tau={tau}", v, step)
            for name, v in r.items():
                if isinstance(v, (int, float)) and name.startswith("mig"):
                    tb.add_scalar(f"metrics/{name}", v, step)
            counts = r["firing_counts"].get("0")
            if counts:
                freq = np.asarray(counts, np.float64) / max(r["eval_size"], 1)
                tb.add_histogram("firing/log10_frequency",
                                 np.log10(np.maximum(freq, 1.0 / (10 * r["eval_size"]))), step)
            tb.flush()

    def step_scalars(self, runs: Sequence[str], step: int, scalars: dict[str, np.ndarray]):
        """Step-level training curves (loss terms per run) for TensorBoard."""
        for i, r in enumerate(runs):
            tb = self._tb.get(r)
            if tb is not None:
                for name, v in scalars.items():
                    tb.add_scalar(f"step/{name}", float(v[i]), step)

    def close(self) -> None:
        for tb in self._tb.values():
            tb.close()


def read_records(path: str | Path) -> list[dict]:
    """The JSON records of a ``metrics.jsonl`` (none if the file does not exist).

    Only a torn last line (no newline: the write a crash cut short) is skipped; any other
    line that is not a JSON object raises :class:`RunFileError` naming the file and line,
    so that a damaged log is never read, or rewritten, as if it were whole.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RunFileError(f"cannot read {path}: {e}") from None
    lines = text.split("\n")  # a whole file ends in "\n": its last piece is empty
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines) - 1:  # torn last line, written by a process that died
                continue
            raise RunFileError(
                f"{path} line {i + 1} is not a JSON record ({e}); the run's log is damaged. "
                "Restore it from a copy, or move the run directory aside and start again")
        out.append(rec)
    return out


class Progress:
    """A tqdm bar (step, the caller's status text, rate, ETA) on a terminal; plain log lines
    otherwise.

    Args:
      total_steps, done_steps: the run's length and where it starts (a resumed run).
      batch_items: items one step trains on (all models together), for the rate.
      unit: what an item is (``"img"``, ``"vec"``).
      tty: force the bar on/off (default: when ``stream`` is a terminal).
      stream: where to write (default stderr).
      desc: a label before the bar.
      enabled: False shows nothing at all.
    """

    def __init__(self, total_steps: int, done_steps: int, batch_items: int, *,
                 unit: str = "img", tty: bool | None = None, stream=None, desc: str = "",
                 enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and (self.stream.isatty() if tty is None else tty)
        self.total, self.done = total_steps, done_steps
        self.batch_items, self.unit = batch_items, unit
        self._t0, self._s0 = time.perf_counter(), done_steps
        self._bar = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=done_steps, unit="step", desc=desc or None,
                             file=self.stream, dynamic_ncols=True, smoothing=0.1)

    def rate(self) -> float:
        """Items per second since the last :meth:`reset_rate`."""
        dt = time.perf_counter() - self._t0
        return (self.done - self._s0) * self.batch_items / dt if dt > 0 else 0.0

    def reset_rate(self) -> None:
        self._t0, self._s0 = time.perf_counter(), self.done

    def update(self, done_steps: int, status: str) -> None:
        """Progress to ``done_steps``; ``status`` is e.g. ``"epoch 2/10 loss 3.1 k 50"``."""
        delta, self.done = done_steps - self.done, done_steps
        rate = self.rate()
        if self._bar is not None:
            self._bar.update(delta)
            self._bar.set_postfix_str(f"{status} {rate:.0f} {self.unit}/s", refresh=False)
            return
        if not self.enabled:
            return
        left = (self.total - self.done) * self.batch_items / rate if rate > 0 else math.inf
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "?"
        print(f"step {self.done}/{self.total} {status} {rate:.0f} {self.unit}/s ETA {eta}",
              file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        elif self.enabled:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
