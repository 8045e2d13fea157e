"""``python -m launch.sweep STUDY --grid KEY=V1,V2 ... --out OUT [options] [-- STUDY ARGS]``

Spreads a study's grid over the accelerators of this machine. Every grid point becomes one
study command,

    python -m experiments STUDY [STUDY ARGS] --KEY VALUE ... --out OUT/<task-id> [--resume]

run in its own process with one device visible to it (``CUDA_VISIBLE_DEVICES`` on a GPU,
the libtpu chip-visibility variables on a TPU, ``JAX_NUM_CPU_DEVICES=1`` on a CPU), one
process per device at a time. Where a study trains several seeds in one program (the
engine's ``vmap`` over seeds), S points that differ only in their seed become one task,
``--seeds 0,1,2``; the study's profile picks S, ``--per-process S`` overrides it.

Completion is recorded per task after its process exits 0, atomically (a JSON marker under
``OUT/.sweep/done/``, written to a temporary file and renamed). Re-running the same command
skips finished points and resumes unfinished ones (``--resume`` is passed when the task's
directory already exists), each exactly once: a launcher lock refuses a second sweep on the
same OUT, and a lock per task, inherited by the study process, keeps a task from starting
again while a process of an earlier, killed sweep is still saving it.

``--shard I/N`` runs the I-th of N interleaved shares of the tasks (one share per host of a
multi-host TPU slice, say); ``--dry-run`` prints the commands and runs nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import glob
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sparsejax.atomic_io import write_atomic

from launch.common import LaunchError, parse_int_list, run_cli, shell_join, split_study_args

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._+-]+\Z")
PLATFORMS = ("auto", "cpu", "gpu", "tpu")
DEFAULT_PORT_BASE = 8476  # libtpu's own default port; slot i uses PORT_BASE + 2i and + 2i + 1


# --------------------------------------------------------------------------- the grid

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
        return ",".join(f"{k}={joined if k == self.group_key else _safe(v)}" for k, v in first.items)


def _safe(value: str) -> str:
    """A value as it appears in a directory name: itself if harmless, else a readable hash."""
    if _SAFE_VALUE.match(value) and value not in (".", ".."):
        return value
    readable = re.sub(r"[^A-Za-z0-9._+-]+", "_", value).strip("._")[:24] or "v"
    return f"{readable}~{hashlib.sha1(value.encode()).hexdigest()[:8]}"


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["dataset=dsprites,shapes3d", "seed=0,1"]`` -> ``[("dataset", [...]), ("seed", [...])]``."""
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
            if chunk and (len(chunk) == size or (contiguous and not _follows(chunk[-1], p, key))):
                tasks.append(Task(tuple(chunk), group_key=key))
                chunk = []
            chunk.append(p)
        tasks.append(Task(tuple(chunk), group_key=key))
    return tasks


def _follows(a: Point, b: Point, key: str) -> bool:
    try:
        return int(b.get(key)) == int(a.get(key)) + 1
    except ValueError:
        return False


# --------------------------------------------------------------------------- studies

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
                if not all(_follows(a, b, key) for a, b in zip(task.points, task.points[1:])):
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


def task_argv(task: Task, *, python: str, module: str, study: str, extra: Sequence[str],
              out_dir: str, resume: bool, group_flag: str | None = None, group_sep: str = ",",
              count_flag: str | None = None, out_flag: str = "--out",
              resume_flag: str = "--resume") -> list[str]:
    argv = [python, "-m", module, study, *extra,
            *task_flags(task, group_flag, group_sep, count_flag), out_flag, out_dir]
    if resume and resume_flag:
        argv.append(resume_flag)
    return argv


# --------------------------------------------------------------------------- devices

def device_env(platform: str, device: str, slot: int, port_base: int = DEFAULT_PORT_BASE) -> dict[str, str]:
    """Environment giving one process exactly one device, and its own ports."""
    runtime_port, coordinator_port = port_base + 2 * slot, port_base + 2 * slot + 1
    env = {"SPARSEJAX_SWEEP_SLOT": str(slot),
           # a unique coordinator for a study that calls jax.distributed.initialize()
           "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{coordinator_port}"}
    if platform == "cpu":
        env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    elif platform == "gpu":
        env.update(CUDA_VISIBLE_DEVICES=device)
    elif platform == "tpu":
        # One chip per process, not talking to the others (libtpu's own variables).
        env.update(TPU_VISIBLE_CHIPS=device, TPU_CHIPS_PER_PROCESS_BOUNDS="1,1,1",
                   TPU_PROCESS_BOUNDS="1,1,1", TPU_PROCESS_PORT=str(runtime_port),
                   TPU_PROCESS_ADDRESSES=f"localhost:{runtime_port}", CLOUD_TPU_TASK_ID="0")
    else:
        raise LaunchError(f"unknown platform {platform!r}; expected one of cpu, gpu, tpu")
    return env


def detect_devices(platform: str) -> tuple[str, list[str]]:
    """This machine's platform and device ids, found without starting JAX (which would take
    hold of every TPU chip)."""
    if platform in ("auto", "tpu"):
        chips = sorted(glob.glob("/dev/accel[0-9]*"), key=lambda p: int(re.sub(r"\D", "", p)))
        if not chips:
            chips = sorted((p for p in glob.glob("/dev/vfio/*") if os.path.basename(p).isdigit()),
                           key=lambda p: int(os.path.basename(p)))
        if chips:
            return "tpu", [str(i) for i in range(len(chips))]
        if platform == "tpu":
            raise LaunchError("--platform tpu but no TPU chips found (/dev/accel*, /dev/vfio/N); "
                              "pass --devices to say which")
    if platform in ("auto", "gpu"):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip():
            return "gpu", [d.strip() for d in visible.split(",") if d.strip()]
        if shutil.which("nvidia-smi"):
            r = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                               capture_output=True, text=True)
            ids = [line.strip() for line in r.stdout.splitlines() if line.strip()]
            if r.returncode == 0 and ids:
                return "gpu", ids
        if platform == "gpu":
            raise LaunchError("--platform gpu but no GPU found (nvidia-smi); pass --devices")
    return "cpu", ["0"]


def resolve_devices(platform: str, devices: str | None) -> tuple[str, list[str]]:
    """``--devices N`` (a count) or ``--devices 0,2,3`` (ids) on top of what was detected."""
    if devices is None:
        return detect_devices(platform)
    if platform == "auto":
        platform = detect_devices("auto")[0]
    if "," not in devices and devices.isdigit():
        count = int(devices)
        if count < 1:
            raise LaunchError(f"--devices must be >= 1, got {devices}")
        return platform, [str(i) for i in range(count)]
    return platform, [str(i) for i in parse_int_list(devices, "--devices")]


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or int(m[2]) < 1 or int(m[1]) >= int(m[2]):
        raise LaunchError(f"bad --shard {text!r}; expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m[1]), int(m[2])


# --------------------------------------------------------------------------- bookkeeping

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


def _try_lock(path: Path) -> int | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM (the engine saves and exits) if the launcher dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the task locks still keep tasks single
        pass


# --------------------------------------------------------------------------- running

@dataclass
class Running:
    task: Task
    slot: int
    proc: subprocess.Popen
    lock_fd: int
    started: float
    argv: list[str]
    log: Path
    attempt: int = 0


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

    def argv(self, task: Task, resume: bool) -> list[str]:
        return task_argv(task, python=self.python, module=self.module, study=self.study,
                         extra=self.extra, out_dir=str(self.out / task.id), resume=resume,
                         group_flag=self.group_flag, group_sep=self.group_sep,
                         count_flag=self.count_flag, out_flag=self.out_flag,
                         resume_flag=self.resume_flag)

    def plan(self, done: Mapping[str, str]) -> tuple[list[Task], int]:
        return plan(expand(self.grid), done, self.group_key, self.per_process, self.shard,
                    contiguous=self.count_flag is not None)


def dry_run_lines(cfg: SweepConfig) -> list[str]:
    """The commands, slots shown round-robin (a real sweep hands out slots as they free up)."""
    done = done_points(cfg.out) if cfg.out.exists() else {}
    todo, _ = cfg.plan(done)
    lines = []
    for i, task in enumerate(todo):
        slot = i % len(cfg.devices)
        env = device_env(cfg.platform, cfg.devices[slot], slot, cfg.port_base)
        lines.append(shell_join(cfg.argv(task, resume=(cfg.out / task.id).exists()), env))
    return lines


class Sweep:
    def __init__(self, cfg: SweepConfig, log=print):
        self.cfg = cfg
        self.log = log
        self.stop_signal: int | None = None
        self.running: list[Running] = []

    def _start(self, task: Task, slot: int, lock_fd: int, attempt: int) -> Running:
        cfg = self.cfg
        resume = (cfg.out / task.id).exists()
        argv = cfg.argv(task, resume)
        env = {**os.environ, **device_env(cfg.platform, cfg.devices[slot], slot, cfg.port_base)}
        log_path = sweep_dir(cfg.out) / "logs" / f"{task.id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as logf:
            logf.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} slot {slot} "
                       f"device {cfg.devices[slot]}: {shell_join(argv)}\n")
            logf.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    pass_fds=(lock_fd,), preexec_fn=_die_with_parent)
        self.log(f"[sweep] start {task.id} on {cfg.platform}:{cfg.devices[slot]} "
                 f"(pid {proc.pid}{', resuming' if resume else ''})")
        return Running(task, slot, proc, lock_fd, time.time(), argv, log_path, attempt)

    def _finish(self, run: Running, rc: int) -> None:
        if rc == 0:
            write_json_atomic(sweep_dir(self.cfg.out) / "done" / f"{run.task.id}.json", {
                "task": run.task.id, "points": [p.id for p in run.task.points],
                "grid": [dict(p.items) for p in run.task.points],
                "out": str(self.cfg.out / run.task.id), "argv": run.argv, "returncode": 0,
                "device": f"{self.cfg.platform}:{self.cfg.devices[run.slot]}",
                "host": socket.gethostname(), "wall_s": round(time.time() - run.started, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.close(run.lock_fd)  # after the marker: a waiting sweep then sees the task done

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    def run(self) -> int:
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        main_lock = _try_lock(sweep_dir(cfg.out) / "sweep.lock")
        if main_lock is None:
            raise LaunchError(f"another sweep is running on {cfg.out} (lock "
                              f"{sweep_dir(cfg.out) / 'sweep.lock'}); wait for it or stop it")
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._loop()
        except BaseException:
            if self.running:  # do not leave tasks behind on an unexpected error
                self.stop_signal = self.stop_signal or signal.SIGTERM
                self._interrupt(self.running)
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            os.close(main_lock)

    def _loop(self) -> int:
        cfg = self.cfg
        points = expand(cfg.grid)
        todo, finished = cfg.plan(done_points(cfg.out))
        write_json_atomic(sweep_dir(cfg.out) / "plan.json", {
            "study": cfg.study, "module": cfg.module, "grid": cfg.grid, "extra": cfg.extra,
            "per_process": cfg.per_process, "shard": list(cfg.shard),
            "tasks": [{"task": t.id, "points": [p.id for p in t.points]} for t in todo]})
        self.log(f"[sweep] {len(points)} points; {finished} already done in this shard, "
                 f"{sum(len(t.points) for t in todo)} to run as {len(todo)} task(s) on "
                 f"{len(cfg.devices)} {cfg.platform} device(s)")
        pending: deque[tuple[Task, int]] = deque((t, 0) for t in todo)
        free = list(range(len(cfg.devices)))
        running = self.running
        failed: list[tuple[Running, int]] = []
        waiting_since: dict[str, float] = {}
        while (pending or running) and self.stop_signal is None:
            for _ in range(len(pending)):
                if not free:
                    break
                task, attempt = pending.popleft()
                lock_fd = _try_lock(sweep_dir(cfg.out) / "locks" / f"{task.id}.lock")
                if lock_fd is None:  # a process of an earlier sweep still holds it
                    first = waiting_since.setdefault(task.id, time.time())
                    if time.time() - first > cfg.lock_wait_s:
                        raise LaunchError(f"task {task.id} is still held by a process of an "
                                          f"earlier sweep after {cfg.lock_wait_s:.0f} s; stop "
                                          "that process and run the sweep again")
                    pending.append((task, attempt))
                    continue
                if all(p.id in done_points(cfg.out) for p in task.points):
                    os.close(lock_fd)  # finished by the process we waited for
                    continue
                running.append(self._start(task, free.pop(0), lock_fd, attempt))
            time.sleep(0.05)
            for run in list(running):
                rc = run.proc.poll()
                if rc is None:
                    continue
                running.remove(run)
                free.append(run.slot)
                free.sort()
                self._finish(run, rc)
                if rc == 0:
                    self.log(f"[sweep] done  {run.task.id} in {time.time() - run.started:.1f} s")
                elif run.attempt < cfg.retries:
                    self.log(f"[sweep] retry {run.task.id}: exit code {rc} (log {run.log})")
                    pending.append((run.task, run.attempt + 1))
                else:
                    self.log(f"[sweep] FAIL  {run.task.id}: exit code {rc} (log {run.log})")
                    failed.append((run, rc))
        if self.stop_signal is not None:
            return self._interrupt(running)
        for run, rc in failed:
            self.log(f"[sweep] {run.task.id} failed with exit code {rc}; last lines of {run.log}:")
            for line in run.log.read_text(errors="replace").splitlines()[-5:]:
                self.log(f"    {line}")
        total_done = len(done_points(cfg.out))
        self.log(f"[sweep] {total_done}/{len(points)} points done"
                 + (f"; {len(failed)} task(s) failed: run the same command again to resume them"
                    if failed else ""))
        return 1 if failed else 0

    def _interrupt(self, running: list[Running]) -> int:
        name = signal.Signals(self.stop_signal).name
        self.log(f"[sweep] {name}: asking {len(running)} running task(s) to save and stop")
        for run in running:
            try:
                os.killpg(run.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + self.cfg.grace_s
        for run in running:
            try:
                rc = run.proc.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(run.proc.pid, signal.SIGKILL)
                rc = run.proc.wait()
            self._finish(run, rc)
        running.clear()
        self.log("[sweep] stopped; run the same command again to resume")
        return 128 + int(self.stop_signal)


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="the study name, as in `python -m experiments STUDY`")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis: the study flag --KEY takes each value (repeatable)")
    p.add_argument("--out", required=True, help="root directory; each task writes OUT/<task-id>")
    p.add_argument("--module", default="experiments",
                   help="the module run with -m (default: experiments)")
    p.add_argument("--python", default=sys.executable, help="the interpreter (default: this one)")
    p.add_argument("--platform", default="auto", choices=PLATFORMS)
    p.add_argument("--devices", default=None,
                   help="how many devices (N) or which (0,2,3); default: all found")
    p.add_argument("--per-process", type=int, default=None, metavar="S",
                   help="points per process along --group-key (default: up to the study's "
                        "profile, as many as keep every device busy)")
    p.add_argument("--group-key", default=None, help="the grid key grouped per process (e.g. seed)")
    p.add_argument("--group-flag", default=None,
                   help="the study flag taking several values of --group-key, joined by "
                        "commas (e.g. seed-list -> --seed-list 0,1,2)")
    p.add_argument("--group-count-flag", default=None,
                   help="or: the study flag taking how many consecutive values follow "
                        "--KEY FIRST (e.g. seeds -> --seed 0 --seeds 3)")
    p.add_argument("--shard", default=None, metavar="I/N", help="run the I-th of N shares")
    p.add_argument("--retries", type=int, default=0, help="rerun a failed task (with --resume) up to N times")
    p.add_argument("--grace", type=float, default=120.0,
                   help="seconds a task gets to save after SIGTERM before SIGKILL")
    p.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE)
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def config_from_args(args: argparse.Namespace, extra: list[str]) -> SweepConfig:
    profile = STUDY_PROFILES.get(args.study, StudyProfile())
    group_key = args.group_key or profile.group_key
    if args.group_flag and args.group_count_flag:
        raise LaunchError("pass --group-flag or --group-count-flag, not both")
    if args.group_flag or args.group_count_flag:
        group_flag, count_flag = _dashed(args.group_flag), _dashed(args.group_count_flag)
    else:
        group_flag, count_flag = profile.group_flag, profile.count_flag
    platform, devices = resolve_devices(args.platform, args.devices)
    grid = parse_grid(args.grid)
    shard = parse_shard(args.shard)
    if args.per_process is not None:
        per_process = args.per_process
    elif group_flag or count_flag:
        per_process = auto_per_process(expand(grid), group_key, profile.per_process or 3,
                                       len(devices), shard, contiguous=count_flag is not None)
    else:
        per_process = 1
    for key, _ in grid:
        if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in extra):
            raise LaunchError(f"--{key} is both a grid axis and a fixed study argument after --")
    return SweepConfig(study=args.study, grid=grid, out=Path(args.out), extra=extra,
                       module=args.module, python=args.python, platform=platform,
                       devices=devices, group_key=group_key, group_flag=group_flag,
                       count_flag=count_flag, per_process=per_process, shard=shard,
                       retries=args.retries, grace_s=args.grace, port_base=args.port_base)


def _dashed(flag: str | None) -> str | None:
    return flag if not flag or flag.startswith("-") else f"--{flag}"


def main(argv: list[str] | None = None) -> int:
    own, extra = split_study_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    cfg = config_from_args(args, extra)
    if args.dry_run:
        for line in dry_run_lines(cfg):
            print(line)
        return 0
    return Sweep(cfg, log=lambda m: print(m, file=sys.stderr, flush=True)).run()


if __name__ == "__main__":
    sys.exit(run_cli(main))
