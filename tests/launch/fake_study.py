"""A stand-in study for the sweep tests: ``python -m tests.launch.fake_study fake ...``.

It behaves like an engine study where the sweep can see it: it checkpoints every step,
refuses to overwrite a started run without ``--resume``, continues from its checkpoint with
``--resume``, saves and exits on SIGTERM, and on success writes ``results.json`` and appends
one line to a shared ledger, so a test can count how often each point finished.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from sparsejax.atomic_io import write_atomic


def _write(path: Path, record: dict) -> None:
    write_atomic(path, json.dumps(record))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "fake":
        print(f"error: unknown study {argv[:1]!r}; expected 'fake'", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="fake_study")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-s", type=float, default=0.05)
    p.add_argument("--ledger", required=True)
    p.add_argument("--seeds", default=None)
    args, rest = p.parse_known_args(argv[1:])
    grid = dict(zip(rest[0::2], rest[1::2]))
    if len(rest) % 2 or not all(k.startswith("--") for k in grid):
        print(f"error: expected --key value pairs, got {rest}", file=sys.stderr)
        return 2

    out = Path(args.out)
    ckpt = out / "ckpt.json"
    if ckpt.exists() and not args.resume:
        print(f"error: {out} holds a run; pass --resume to continue it", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    start = json.loads(ckpt.read_text())["step"] if (args.resume and ckpt.exists()) else 0
    _write(out / "pid.json", {"pid": os.getpid(), "start_step": start})

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    t0 = time.time()
    for step in range(start, args.steps):
        time.sleep(args.step_s)
        _write(ckpt, {"step": step + 1})
        if stop:
            print(f"SIGTERM: saved step {step + 1}", file=sys.stderr)
            return 143
    t1 = time.time()
    record = {"grid": grid, "seeds": args.seeds, "resumed_from": start, "pid": os.getpid(),
              "slot": os.environ.get("SPARSEJAX_SWEEP_SLOT"),
              "num_cpu_devices": os.environ.get("JAX_NUM_CPU_DEVICES"),
              "coordinator": os.environ.get("JAX_COORDINATOR_ADDRESS"),
              "t0": t0, "t1": t1, "out": str(out)}
    _write(out / "results.json", record)
    fd = os.open(args.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
