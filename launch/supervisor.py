"""The supervisor of a sweep: one study process per free device, completion markers on
success, retries, and on SIGINT/SIGTERM every running task asked to save and stop."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from launch.bookkeeping import done_points, sweep_dir, try_lock, write_json_atomic
from launch.common import LaunchError, shell_join
from launch.devices import device_env
from launch.grid import Task, expand
from launch.profiles import task_argv
from launch.sweep_config import SweepConfig

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM (the engine saves and exits) if the launcher dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the task locks still keep tasks single
        pass


@dataclass
class Running:
    """A task's process while it runs, with the lock it holds and where it logs."""

    task: Task
    slot: int
    proc: subprocess.Popen
    lock_fd: int
    started: float
    argv: list[str]
    log: Path
    attempt: int = 0


class Sweep:
    """Runs the tasks of ``cfg.plan`` over ``cfg.devices``, one process per device."""

    def __init__(self, cfg: SweepConfig, log=print):
        self.cfg = cfg
        self.log = log
        self.stop_signal: int | None = None
        self.running: list[Running] = []

    def _start(self, task: Task, slot: int, lock_fd: int, attempt: int) -> Running:
        cfg = self.cfg
        resume = (cfg.out / task.id).exists()
        argv = task_argv(task, cfg, resume=resume)
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
        main_lock = try_lock(sweep_dir(cfg.out) / "sweep.lock")
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
                lock_fd = try_lock(sweep_dir(cfg.out) / "locks" / f"{task.id}.lock")
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
