"""One call's worth of accelerator checks, for a machine lent for minutes.

    python -m launch.device_check [--dry-run] OUT [SECTION ...]

Runs each section in its own process under a time limit, so one that hangs or fails
leaves the others' results, and writes everything under ``OUT`` (at most eight files):

* ``env``: the devices, their memory and the library versions (``env.txt``);
* ``tests``: the kernel tests (``tests/ops``: Top-k, the Pallas kernels compiled for the
  accelerator) with ``JAX_PLATFORMS`` set to the one found (:mod:`launch.devices`),
  ``tests.log``;
* ``bench``: ``python -m experiments bench`` rows of training throughput (one model, the
  scanned step, seeds and groups, the group-size sweep in float32 and bfloat16), the
  evaluation's share, the paper estimate and Top-k, into ``bench.jsonl``;
* ``profile``: the GPU kernels of the collapse study's group step (12 runs, scanned)
  ranked by their time per step, from a ``jax.profiler`` trace (``profile.txt``);
* ``dry_run``: ``python -m experiments collapse --preset paper --dry-run``;
* ``cell``: one epoch of the ``paper`` preset's first cell (dSprites, Top-k, 3 seeds,
  11,520 steps, the per-epoch evaluation on 10,000 images) through ``python -m
  experiments train``, its wall time and results (``cell.json``).

Every section's output goes to ``log.txt``; ``summary.txt`` ends the run with a table of
the bench rows. ``DEVICE_CHECK_SMALL=1`` shrinks each section (a CPU run that checks the
script itself). Sections: :data:`DEFAULT`, in that order, by default. ``--dry-run`` prints
the command of each section, one per line, and runs nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

SMALL = os.environ.get("DEVICE_CHECK_SMALL") == "1"
DRY = {"run": False}  # --dry-run: print each section's command instead of running it
# per section: its time limit in seconds
# (the default sections' sum, 570 s, leaves a 600 s call time to write the summary)
LIMITS = {"env": 30, "profile": 60, "bench": 250, "tests": 80, "dry_run": 90, "cell": 150}
DEFAULT = ("env", "profile", "bench", "tests", "cell")  # the order of a call's priorities
BENCHES = ("train_scale", "train_hybrid", "paper_estimate", "eval_hybrid", "topk")
TESTS = ("tests/ops",)
JAX_PLATFORM = {"gpu": "cuda", "tpu": "tpu", "cpu": "cpu"}  # JAX_PLATFORMS per detected kind


def _run(argv: list[str], out: Path, limit: float, env: dict | None = None,
         stdout=None) -> int:
    """``argv`` with its stderr (and stdout, unless given) appended to ``out/log.txt``."""
    if DRY["run"]:
        print(shlex.join([*(f"{k}={v}" for k, v in (env or {}).items()), *argv]))
        return 0
    with open(out / "log.txt", "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(argv, stdout=stdout or log, stderr=log, timeout=limit,
                                env={**os.environ, **(env or {})}, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        log.write(f"# rc {rc} after {time.perf_counter() - t0:.1f} s\n")
    return rc


def env(out: Path) -> int:
    code = ("import jax, flax, optax, numpy; d = jax.devices(); print(jax.__version__, "
            "flax.__version__, optax.__version__, numpy.__version__); print(d); "
            "print(d[0].memory_stats())")
    commands = (["nvidia-smi"], [sys.executable, "-c", code])
    if DRY["run"]:
        print("\n".join(map(shlex.join, commands)))
        return 0
    with open(out / "env.txt", "w") as f:
        for argv in commands:
            try:
                f.write(subprocess.run(argv, capture_output=True, text=True, check=False,
                                       timeout=LIMITS["env"]).stdout)
            except (OSError, subprocess.TimeoutExpired) as e:
                f.write(f"{argv[0]}: {e}\n")
    return 0


def tests(out: Path) -> int:
    from launch.devices import detect_devices  # without starting JAX

    platform = JAX_PLATFORM[detect_devices("auto")[0]]
    with open(os.devnull if DRY["run"] else out / "tests.log", "w") as f:
        return _run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p",
                     "no:cacheprovider", *TESTS], out, LIMITS["tests"],
                    env={"JAX_PLATFORMS": platform, "XLA_FLAGS": ""}, stdout=f)


def bench(out: Path) -> int:
    names = ("train_scale",) if SMALL else BENCHES
    argv = [sys.executable, "-m", "experiments", "bench"]
    for n in names:
        argv += ["--only", n]
    with open(os.devnull if DRY["run"] else out / "bench.jsonl", "a") as f:
        return _run(argv, out, LIMITS["bench"], stdout=f)


def profile(out: Path) -> int:
    return _run([sys.executable, "-m", "launch.device_check", "--profile", str(out)], out,
                LIMITS["profile"])


def dry_run(out: Path) -> int:
    return _run([sys.executable, "-m", "experiments", "collapse", "--preset",
                 "smoke" if SMALL else "paper", "--dry-run"], out, LIMITS["dry_run"])


def cell(out: Path) -> int:
    import tempfile

    run_dir = Path(tempfile.gettempdir()) / "device_check_cell_XXXX" if DRY["run"] else \
        Path(tempfile.mkdtemp(prefix="device_check_cell_"))
    argv = [sys.executable, "-m", "experiments", "train", "--preset",
            "smoke" if SMALL else "paper", "--dataset", "dsprites", "--method", "topk",
            "--seeds", "3", "--epochs", "1", "--set", f"scan_steps={5 if SMALL else 40}",
            "--no-tensorboard",
            "--out", str(run_dir)]
    t0 = time.perf_counter()
    rc = _run(argv, out, LIMITS["cell"])
    if DRY["run"]:
        return rc
    result = {"argv": argv, "rc": rc, "wall_s": round(time.perf_counter() - t0, 1)}
    if (run_dir / "results.json").exists():
        result["results"] = json.loads((run_dir / "results.json").read_text())
    if (run_dir / "report.md").exists():
        result["report"] = (run_dir / "report.md").read_text()
    (out / "cell.json").write_text(json.dumps(result, indent=1) + "\n")
    return rc


def summary(out: Path) -> None:
    lines = [(f"{'bench':<15}{'runs':>5}{'dtype':>9}{'T':>4}{'images/s':>12}{'ms/step':>9}"
              f"{'floor':>12}  note")]
    path = out / "bench.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "images_per_s" in r and "runs" in r:
            note = ",".join(f"{k}={r[k]}" for k in ("vs_one_model", "vs_one_step") if k in r)
            lines.append(f"{r['bench']:<15}{r['runs']:>5}{r.get('compute_dtype', ''):>9}"
                         f"{r.get('scan_steps', 1):>4}{r['images_per_s']:>12.0f}"
                         f"{r['ms_per_step']:>9.2f}{r['floor_images_per_s']:>12.0f}  {note}")
        else:
            lines.append(json.dumps(r)[:200])
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# ---------------------------------------------------------------- the profile section
def kernel_table(trace_dir: Path, steps: int, top: int = 25) -> str:
    """The device's events in the perfetto trace under ``trace_dir`` (the GPU's streams;
    on CPU, the host's XLA ops), summed by name and divided by ``steps``: ms per step,
    calls per step and the share of the device's busy time, the largest first."""
    path = next(trace_dir.rglob("*.trace.json.gz"))
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    meta = [e for e in events if e.get("ph") == "M"]
    names = {e["pid"]: e["args"]["name"] for e in meta if e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta
               if e.get("name") == "thread_name"}
    device = [p for p, n in names.items() if "GPU" in n or "TPU" in n] or \
        [p for p, n in names.items() if "CPU" in n]
    # a device's kernels are on its stream lines; its "XLA Ops"/"XLA Modules" lines span them
    streams = {t for t, n in threads.items() if t[0] in device and "Stream" in n}
    total, calls, per_line = defaultdict(float), defaultdict(int), defaultdict(float)
    for e in events:
        if e.get("ph") != "X" or e.get("pid") not in device:
            continue
        line = (e["pid"], e.get("tid"))
        per_line[threads.get(line, str(line))] += e.get("dur", 0.0) / 1e3 / steps
        if streams and line not in streams:
            continue
        total[e["name"]] += e.get("dur", 0.0) / 1e3
        calls[e["name"]] += 1
    busy = sum(total.values())
    rows = [f"device processes: {[names[p] for p in device]}",
            "ms per step by line: " + ", ".join(f"{n}: {v:.3f}" for n, v in sorted(
                per_line.items(), key=lambda kv: -kv[1])[:8]),
            f"busy {busy / steps:.3f} ms per step over {len(total)} distinct events",
            f"{'ms/step':>9}{'calls/step':>11}{'share':>7}  name"]
    for name, ms in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        rows.append(f"{ms / steps:>9.4f}{calls[name] / steps:>11.1f}{ms / busy:>7.1%}  "
                    f"{name[:110]}")
    return "\n".join(rows)


def _profile(out: Path) -> None:
    import tempfile

    import jax

    from experiments.bench.train import SCAN_STEPS, compile_step, study_group
    from sparsejax.data import get_dataset
    from sparsejax.train import preset
    from sparsejax.train.mesh import make_mesh

    seeds, dispatches = (1, 2) if SMALL else (3, 10)
    cfg = preset("paper", num_seeds=seeds, batch_size=64, group=study_group())
    compiled, state, k = compile_step(cfg, get_dataset("dsprites", "procedural"),
                                      make_mesh(), SCAN_STEPS)
    for _ in range(3):
        state, m = compiled(state, k)
    jax.block_until_ready(m)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(dispatches):
                state, m = compiled(state, k)
            jax.block_until_ready(m)
        wall = time.perf_counter() - t0
        steps = dispatches * SCAN_STEPS
        table = kernel_table(Path(d), steps)
    text = (f"{cfg.num_runs} runs (study group, {seeds} seeds), {SCAN_STEPS} steps per "
            f"dispatch, {dispatches} dispatches: {1e3 * wall / steps:.3f} ms per step of "
            f"wall time under the profiler\n{table}\n")
    (out / "profile.txt").write_text(text)
    print(text)


SECTIONS = {"env": env, "profile": profile, "bench": bench, "tests": tests,
            "dry_run": dry_run, "cell": cell}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--profile"]:
        _profile(Path(argv[1]))
        return 0
    DRY["run"] = argv[:1] == ["--dry-run"]
    argv = argv[1:] if DRY["run"] else argv
    if not argv or any(s not in SECTIONS for s in argv[1:]):
        print(__doc__, file=sys.stderr)
        print(f"expected [--dry-run] OUT [SECTION ...], sections: {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 2
    out = Path(argv[0])
    if not DRY["run"]:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name in argv[1:] or DEFAULT:
        t = time.perf_counter()
        rc = SECTIONS[name](out)
        if not DRY["run"]:
            print(f"[device_check] {name}: rc {rc} in {time.perf_counter() - t:.0f} s",
                  flush=True)
    if DRY["run"]:
        return 0
    summary(out)
    print(f"[device_check] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
