"""``python -m launch.tpu_vm ACTION --name N --zone Z --accelerator-type T [...] [-- STUDY ARGS]``

Runs a study on a Cloud TPU VM (one host) or slice (several hosts) through ``gcloud``:

    create   a TPU VM, or a queued resource (--queued) that provisions one when capacity frees
    setup    on every worker: the code (this tree's HEAD, copied over, or --ref TAG cloned from
             --repo), uv, the locked environment, and the TPU build of the locked JAX version
    run      the study on every worker at once (--worker=all): one program over the whole
             slice, jax.distributed.initialize() only when the slice has several hosts; with
             --grid, a sweep instead: every host spreads its share of the grid over its chips
    fetch    copy the results back (from --bucket if one mirrors them, else scp)
    delete   delete the VM (or the queued resource and its VM)
    up       create, setup, run, fetch, then delete (kept on failure, or with --keep)
    watch    like up, but keeps the run alive: a preempted or terminated VM is deleted,
             recreated and set up again, and the run restarted with --resume
    status   print the VM's state
    types    list the known accelerator types, zones, runtime versions and price estimates

Results live on the workers under ~/sparsejax-runs/RUN (RUN = --run-id, default the VM name).
A recreated VM has a new disk: give --bucket gs://BUCKET/PREFIX to mirror the results and
checkpoints there every few minutes and restore them before a restarted run, so --resume
continues where the preempted run stopped.

Every action takes --dry-run and then prints exactly the commands it would run, one per line.
Config values reach the remote shell only through shlex quoting.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launch import catalog
from launch.common import (LaunchError, Runner, SubprocessRunner, check_name,
                           require_executable, run_cli, shell_script, split_study_args)

ROOT = Path(__file__).resolve().parents[1]
REMOTE_CODE = "sparsejax"            # the checkout on each worker, relative to its home
REMOTE_RUNS = "sparsejax-runs"       # results, relative to its home
REMOTE_TARBALL = "sparsejax-src.tar.gz"
UV_INSTALLER = "https://astral.sh/uv/install.sh"
MIRROR_EVERY_S = 300                 # seconds between the pushes of results to --bucket
_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")
_PROJECT = re.compile(r"(?:[a-z][-a-z0-9.]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]\Z")
_BUCKET = re.compile(r"gs://[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](?:/[^\s]*)?\Z")
_WORKER_TAG = re.compile(r"\[launch\.worker\] process (\d+)/(\d+) on (\S+): exit (-?\d+)")

# VM states (`gcloud compute tpus tpu-vm describe`), and queued-resource states mapped onto them.
TRANSIENT = {"CREATING", "STARTING", "RESTARTING", "REPAIRING", "DELETING", "STOPPING",
             "UPDATING"}
LOST = {"PREEMPTED", "TERMINATED"}
QUEUED_TO_VM = {"ACTIVE": "READY", "ACCEPTED": "CREATING", "PROVISIONING": "CREATING",
                "WAITING_FOR_RESOURCES": "CREATING", "CREATING": "CREATING",
                "DELETING": "DELETING", "SUSPENDING": "PREEMPTED", "SUSPENDED": "PREEMPTED",
                "FAILED": "TERMINATED"}


# --------------------------------------------------------------------------- the VM

@dataclass(frozen=True)
class Tpu:
    name: str
    zone: str
    type: catalog.TpuType
    version: str
    project: str | None = None
    spot: bool = False
    queued: bool = False
    gcloud: str = "gcloud"

    def _gcloud(self, *args: str) -> list[str]:
        tail = [f"--project={self.project}"] if self.project else []
        return [self.gcloud, "compute", "tpus", *args, f"--zone={self.zone}", *tail]

    def create_argv(self) -> list[str]:
        spot = ["--spot"] if self.spot else []
        if self.queued:
            return self._gcloud("queued-resources", "create", self.name, f"--node-id={self.name}",
                                f"--accelerator-type={self.type.name}",
                                f"--runtime-version={self.version}", *spot)
        return self._gcloud("tpu-vm", "create", self.name, f"--accelerator-type={self.type.name}",
                            f"--version={self.version}", *spot)

    def describe_argv(self) -> list[str]:
        if self.queued:
            return self._gcloud("queued-resources", "describe", self.name,
                                "--format=value(state.state)")
        return self._gcloud("tpu-vm", "describe", self.name, "--format=value(state)")

    def delete_argv(self) -> list[str]:
        if self.queued:  # --force deletes the VM with its queued resource
            return self._gcloud("queued-resources", "delete", self.name, "--force", "--quiet")
        return self._gcloud("tpu-vm", "delete", self.name, "--quiet")

    def ssh_argv(self, command: str, worker: int | str = "all") -> list[str]:
        return self._gcloud("tpu-vm", "ssh", self.name, f"--worker={worker}",
                            f"--command={command}", "--quiet")

    def scp_to_argv(self, local: str, remote: str, worker: int | str = "all") -> list[str]:
        return self._gcloud("tpu-vm", "scp", local, f"{self.name}:{remote}",
                            f"--worker={worker}", "--quiet")

    def scp_from_argv(self, remote: str, local: str, worker: int | str) -> list[str]:
        return self._gcloud("tpu-vm", "scp", "--recurse", f"{self.name}:{remote}", local,
                            f"--worker={worker}", "--quiet")


def normalize_state(raw: str, queued: bool) -> str:
    state = raw.strip().upper() or "UNKNOWN"
    return QUEUED_TO_VM.get(state, state) if queued else state


# --------------------------------------------------------------------------- what runs

@dataclass(frozen=True)
class Job:
    study: tuple[str, ...]               # STUDY ARGS, without --out
    run_id: str
    grid: tuple[str, ...] = ()           # non-empty: a sweep over the grid
    per_process: int | None = None
    bucket: str | None = None
    python: str = ".venv/bin/python"
    add_out: bool = True                 # False: the study args verbatim (e.g. bench)
    mirror_every_s: int = MIRROR_EVERY_S

    @property
    def out(self) -> str:
        return f"../{REMOTE_RUNS}/{self.run_id}"  # relative to the remote checkout

    def command(self, tpu: Tpu, *, resume: bool,
                shard: tuple[int, int] | None = None) -> list[str]:
        if not self.study:
            raise LaunchError("no study given; expected: ... -- STUDY [ARGS]")
        name, args = self.study[0], list(self.study[1:])
        if self.grid:
            argv = [self.python, "-m", "launch.sweep", name]
            for g in self.grid:
                argv += ["--grid", g]
            argv += ["--out", self.out, "--platform", "tpu"]
            if self.per_process is not None:
                argv += ["--per-process", str(self.per_process)]
            if shard is not None and shard[1] > 1:
                argv += ["--shard", f"{shard[0]}/{shard[1]}"]
            return argv + ["--", *args]
        worker = [self.python, "-m", "launch.worker"] + (["--auto"] if tpu.type.hosts > 1 else [])
        if not self.add_out:
            return [*worker, "--", name, *args]
        return [*worker, "--", name, *args, "--out", self.out, *(["--resume"] if resume else [])]


def setup_script(ref: str | None, repo: str | None, jax_version: str) -> str:
    if ref:
        fetch_code = shell_script(["rm", "-rf", REMOTE_CODE],
                                  ["git", "clone", "--depth", "1", "--branch", ref, repo,
                                   REMOTE_CODE])
    else:
        fetch_code = shell_script(["mkdir", "-p", REMOTE_CODE],
                                  ["tar", "-xzf", REMOTE_TARBALL, "-C", REMOTE_CODE],
                                  ["rm", "-f", REMOTE_TARBALL])
    return shell_script(
        'export PATH="$HOME/.local/bin:$PATH"',
        fetch_code,
        f"{{ command -v uv >/dev/null || curl -LsSf {UV_INSTALLER} | sh; }}",
        ["cd", REMOTE_CODE],
        ["uv", "sync", "--frozen"],
        ["uv", "pip", "install", f"jax[tpu]=={jax_version}"],
        [".venv/bin/python", "-c", "import jax, launch; print(jax.__version__)"])


def run_script(command: Sequence[str], job: Job) -> str:
    """The remote shell text: cd, optional restore and periodic mirror, the command, exit code.

    The mirror is a background subshell that pushes every ``mirror_every_s`` seconds. It sleeps
    one second at a time in a background ``sleep`` that it ``wait``s for, so the TERM that stops
    it ends it within a second (at once where the shell's ``wait`` is interrupted, as it should
    be; dash can miss a signal that comes just before) and its trap kills that ``sleep``:
    nothing of the mirror outlives the run (a leftover ``sleep`` held the ssh session open for
    minutes). A TERM during a push lets the push finish, and the run waits for the mirror, so
    its last push never overlaps the final one. Its output goes to /dev/null regardless.
    """
    out = job.out
    steps = ['export PATH="$HOME/.local/bin:$PATH"',
             f"cd {shlex.quote(REMOTE_CODE)} || exit 1",
             shlex.join(["mkdir", "-p", out])]
    if job.bucket:
        dest = f"{job.bucket.rstrip('/')}/{job.run_id}"
        push = shlex.join(["gcloud", "storage", "rsync", "--recursive", out, dest])
        mirror = "; ".join([
            "stop=; nap=; slept=0",
            """trap 'stop=1; [ -z "$nap" ] || kill "$nap" 2>/dev/null' TERM""",
            'while [ -z "$stop" ]; do sleep 1 & nap=$!',
            '[ -z "$stop" ] || kill "$nap"',  # a TERM that came before nap was set
            'wait "$nap" || { stop=1; wait "$nap"; }',
            "nap=; slept=$((slept + 1))",
            f'[ -n "$stop" ] || [ "$slept" -lt {int(job.mirror_every_s)} ] || '
            f"{{ slept=0; {push}; }}",
            "done"])
        steps += [f"{shlex.join(['gcloud', 'storage', 'rsync', '--recursive', dest, out])} "
                  "2>/dev/null || true",
                  f"( {mirror} ) >/dev/null 2>&1 </dev/null & mirror=$!",
                  f"{shlex.join(command)}; rc=$?",
                  'kill "$mirror" 2>/dev/null; wait "$mirror"',
                  push,
                  'exit "$rc"']
    else:
        steps.append(shlex.join(command))
    return "; ".join(steps)


def locked_jax_version(lock: Path = ROOT / "uv.lock") -> str:
    try:
        text = lock.read_text()
    except OSError as e:
        raise LaunchError(f"cannot read {lock} to pin the TPU build of JAX: {e}")
    m = re.search(r'^name = "jax"\nversion = "([^"]+)"', text, re.M)
    if not m:
        raise LaunchError(f"{lock} has no locked jax version; run `uv lock`")
    return m[1]


# --------------------------------------------------------------------------- actions

@dataclass
class Flow:
    tpu: Tpu
    runner: Runner
    job: Job = field(default_factory=lambda: Job((), "run"))
    ref: str | None = None
    repo: str | None = None
    to: str = "runs/tpu"
    sleep: Callable[[float], None] = time.sleep
    poll_s: float = 60.0

    # ---- single actions
    def create(self) -> None:
        self.runner.note(catalog.cost_note(self.tpu.type))
        self.runner.run(self.tpu.create_argv(), what="creating the TPU")
        if self.tpu.queued:
            self.wait_ready()

    def state(self) -> str:
        r = self.runner.run(self.tpu.describe_argv(), capture=True, check=False)
        if r.returncode != 0:
            if re.search(r"NOT_FOUND|not found", r.stderr, re.I):
                return "NOT_FOUND"
            raise LaunchError(f"describing {self.tpu.name} failed (exit {r.returncode}): "
                              f"{r.stderr.strip() or r.stdout.strip()}")
        return normalize_state(r.stdout, self.tpu.queued)

    def wait_ready(self, timeout_s: float = 24 * 3600) -> None:
        if self.runner.dry_run:
            self.runner.note(f"(repeated every {self.poll_s:.0f} s until the state is "
                             "READY/ACTIVE)")
            self.runner.run(self.tpu.describe_argv(), capture=True, check=False)
            return
        start = time.time()
        while (state := self.state()) != "READY":
            if state in LOST or state == "NOT_FOUND":
                raise LaunchError(f"{self.tpu.name} is {state} while waiting for it to be READY")
            if time.time() - start > timeout_s:
                raise LaunchError(f"{self.tpu.name} still {state} after {timeout_s:.0f} s")
            self.runner.note(f"{self.tpu.name}: {state}; waiting")
            self.sleep(self.poll_s)

    def setup(self) -> None:
        if self.ref:
            if not self.repo:
                raise LaunchError("--ref needs --repo URL (the git repository to clone on the "
                                  "workers)")
        else:
            tarball = ROOT / "runs" / "launch" / f"{self.tpu.name}-src.tar.gz"
            if not self.runner.dry_run:
                tarball.parent.mkdir(parents=True, exist_ok=True)
                dirty = self.runner.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                         "--untracked-files=no"], capture=True, check=False)
                if dirty.stdout.strip():
                    self.runner.note("note: uncommitted changes are not copied; the workers get "
                                     "HEAD (commit first, or use --ref)")
            self.runner.run(["git", "-C", str(ROOT), "archive", "--format=tar.gz",
                             f"--output={tarball}", "HEAD"], what="packing HEAD")
            self.runner.run(self.tpu.scp_to_argv(str(tarball), REMOTE_TARBALL),
                            what="copying the code to the workers")
        script = setup_script(self.ref, self.repo, locked_jax_version())
        if self.runner.dry_run:
            self.runner.note(f"on every worker: {script}")
        self.runner.run(self.tpu.ssh_argv(script), what="setting up the workers")

    def run(self, resume: bool = False) -> int:
        """Run the job on every worker; 0, or the exit code after naming the failed workers."""
        job = self.job
        hosts = self.tpu.type.hosts
        if job.grid:  # each host its share of the grid, through its own ssh
            commands = {f"worker {w}": self.tpu.ssh_argv(
                run_script(job.command(self.tpu, resume=resume, shard=(w, hosts)), job), worker=w)
                for w in range(hosts)}
            codes = self.runner.parallel(commands)
            bad = {name: rc for name, rc in codes.items() if rc != 0}
            if bad:
                failed = ", ".join(f"{n} (exit {rc})" for n, rc in bad.items())
                self.runner.note(f"sweep failed on {failed}; see its log under "
                                 f"~/{REMOTE_RUNS}/{job.run_id}/.sweep/logs/ on that worker, "
                                 "then run again: finished points are skipped")
                return max(bad.values(), key=abs) or 1
            return 0
        script = run_script(job.command(self.tpu, resume=resume), job)
        if self.runner.dry_run:
            self.runner.note(f"on every worker: {script}")
        rc, lines = self.runner.stream(self.tpu.ssh_argv(script))
        if self.runner.dry_run:
            return 0
        return report_workers(rc, lines, hosts, self.runner.note)

    def fetch(self) -> None:
        job = self.job
        local = Path(self.to)
        if not self.runner.dry_run:
            local.mkdir(parents=True, exist_ok=True)
        if job.bucket:
            self.runner.run(["gcloud", "storage", "rsync", "--recursive",
                             f"{job.bucket.rstrip('/')}/{job.run_id}", str(local / job.run_id)],
                            what="fetching the results from the bucket")
            return
        workers = range(self.tpu.type.hosts) if job.grid else range(1)
        for w in workers:  # sweep shares are disjoint, so they merge into one directory
            self.runner.run(self.tpu.scp_from_argv(f"{REMOTE_RUNS}/{job.run_id}", str(local), w),
                            what=f"fetching the results from worker {w}")

    def delete(self) -> None:
        self.runner.run(self.tpu.delete_argv(), what="deleting the TPU")

    # ---- compound actions
    def up(self, keep: bool = False) -> int:
        self.create()
        self.setup()
        rc = self.run()
        self.fetch()
        if rc == 0 and not keep:
            self.delete()
        elif rc != 0:
            self.runner.note(f"{self.tpu.name} is kept for a look and a rerun with --resume; it "
                             f"costs money while it exists. Delete it with: "
                             f"{shlex.join(self.tpu.delete_argv())}")
        return rc

    def watch(self, policy: WatchPolicy) -> int:
        return watch(self, policy)


def report_workers(rc: int, lines: Sequence[str], hosts: int, note: Callable[[str], None]) -> int:
    """Name the workers that failed, from the ``[launch.worker]`` lines each one prints last."""
    exits: dict[int, tuple[str, int]] = {}
    for line in lines:
        if m := _WORKER_TAG.search(line):
            exits[int(m[1])] = (m[3], int(m[4]))
    failed = {p: v for p, v in exits.items() if v[1] != 0}
    silent = hosts - len(exits)
    if not failed and silent <= 0 and rc == 0:
        return 0
    parts = [f"process {p} on {host} exited {code}" for p, (host, code) in sorted(failed.items())]
    if silent > 0:
        parts.append(f"{silent} of {hosts} worker(s) ended without the study's exit line (ssh "
                     "lost, setup missing, or killed: run `setup` again or look at that worker)")
    if not parts:
        parts.append(f"gcloud exited {rc}")
    note("run failed: " + "; ".join(parts))
    return rc or 1


# --------------------------------------------------------------------------- the watcher

@dataclass
class WatchPolicy:
    max_failures: int = 3        # failed runs on a healthy VM before giving up (a real bug)
    max_recreations: int = 20    # preemptions survived
    max_unknown: int = 10        # consecutive unreadable states
    max_create_failures: int = 10  # consecutive failed creations (no capacity, quota)
    delete_when_done: bool = True


@dataclass
class WatchState:
    setup_done: bool = False     # since the VM was last created
    started: bool = False        # a run has been started at least once (later ones resume)
    last_rc: int | None = None   # the last run on this VM; None: none since creation
    failures: int = 0
    recreations: int = 0
    unknown: int = 0
    create_failures: int = 0
    log: list[str] = field(default_factory=list)


def decide(state: str, ws: WatchState, policy: WatchPolicy) -> str:
    """What the watcher does next, given the VM's state: one of create, recreate, wait, setup,
    run, finish, give_up."""
    if state in LOST:
        return "give_up" if ws.recreations >= policy.max_recreations else "recreate"
    if state == "NOT_FOUND":
        return "give_up" if ws.create_failures >= policy.max_create_failures else "create"
    if state == "READY":
        if ws.last_rc == 0:
            return "finish"
        if ws.failures >= policy.max_failures:
            return "give_up"
        return "run" if ws.setup_done else "setup"
    if state == "STOPPED":
        return "give_up"  # stopped by someone: not ours to restart
    if state in TRANSIENT:
        return "wait"
    return "give_up" if ws.unknown >= policy.max_unknown else "wait"


def give_up_reason(state: str, ws: WatchState) -> str:
    if state == "STOPPED":
        return "it was stopped outside the watcher; start or delete it yourself"
    if state == "READY":
        return (f"the run failed {ws.failures} time(s) on a healthy VM (last exit code "
                f"{ws.last_rc}): a bug, not a preemption; see the output above")
    if state in LOST:
        return f"it was lost {ws.recreations} time(s) (--max-recreations)"
    if state == "NOT_FOUND":
        return f"creating it failed {ws.create_failures} time(s) in a row (see the errors above)"
    return f"its state could not be read {ws.unknown} time(s) in a row"


def watch(flow: Flow, policy: WatchPolicy) -> int:
    """Keep the job running until it succeeds: recreate lost VMs, set up, rerun with --resume."""
    ws = WatchState()
    note = flow.runner.note
    if not flow.job.bucket:
        note("no --bucket: a recreated VM has a new disk, so a run restarted after a preemption "
             "starts from scratch; pass --bucket gs://... to keep its checkpoints")
    if flow.runner.dry_run:  # one pass through a preemption, to show the commands
        note("dry run: the commands of one cycle: create, set up, run, and after a "
             "preemption delete, create, set up, run with --resume, then fetch and delete")
        flow.create(), flow.setup(), flow.run()
        flow.runner.run(flow.tpu.describe_argv(), capture=True, check=False)
        flow.delete(), flow.create(), flow.setup(), flow.run(resume=True), flow.fetch()
        if policy.delete_when_done:
            flow.delete()
        return 0
    while True:
        try:
            state = flow.state()
            ws.unknown = 0
        except LaunchError as e:
            ws.unknown += 1
            state = "UNKNOWN"
            note(f"watch: {e}")
        action = decide(state, ws, policy)
        ws.log.append(f"{state}:{action}")
        note(f"watch: {flow.tpu.name} is {state} -> {action}")
        if action == "wait":
            flow.sleep(flow.poll_s)
        elif action in ("create", "recreate"):
            if action == "recreate":
                ws.recreations += 1
                flow.delete()
            ws.setup_done, ws.last_rc = False, None
            try:
                flow.create()
                ws.create_failures = 0
            except LaunchError as e:  # a stockout or quota: try again after a pause
                ws.create_failures += 1
                note(f"watch: {e}")
                flow.sleep(flow.poll_s)
        elif action == "setup":
            try:
                flow.setup()
                ws.setup_done = True
            except LaunchError as e:
                ws.failures += 1
                note(f"watch: setup failed ({e}); checking the VM")
        elif action == "run":
            ws.last_rc = flow.run(resume=ws.started)
            ws.started = True
            if ws.last_rc != 0:
                ws.failures += 1
                note(f"watch: run exited {ws.last_rc}; checking whether the VM was preempted")
                flow.sleep(flow.poll_s)
        elif action == "finish":
            flow.fetch()
            if policy.delete_when_done:
                flow.delete()
            note(f"watch: done after {ws.recreations} recreation(s)")
            return 0
        else:
            raise LaunchError(f"watch gives up on {flow.tpu.name}: {give_up_reason(state, ws)}")


# --------------------------------------------------------------------------- CLI

ACTIONS = ("create", "setup", "run", "fetch", "delete", "up", "watch", "status", "types")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch.tpu_vm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("--name", help="the TPU VM (and queued resource) name")
    p.add_argument("--zone", help="e.g. us-central2-b (see `types`)")
    p.add_argument("--accelerator-type", help="e.g. v5litepod-8, v4-32 (see `types`)")
    p.add_argument("--project", default=None, help="GCP project (default: gcloud's configured one)")
    p.add_argument("--version", default=None, help="TPU runtime version (default: per generation)")
    p.add_argument("--spot", action="store_true", help="Spot capacity: cheaper, can be preempted")
    p.add_argument("--queued", action="store_true", help="request through a queued resource")
    p.add_argument("--allow-unknown", action="store_true",
                   help="accept a zone or accelerator type missing from the known list")
    p.add_argument("--hosts", type=int, default=None,
                   help="hosts of an unknown accelerator type (with --allow-unknown)")
    p.add_argument("--gcloud", default="gcloud", help="the gcloud executable")
    p.add_argument("--ref", default=None, help="set up from this git tag/branch of --repo "
                                               "(default: copy this tree's HEAD)")
    p.add_argument("--repo", default=None, help="git URL to clone with --ref")
    p.add_argument("--run-id", default=None, help="results directory name (default: --name)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="run a sweep over this grid axis instead of one run (repeatable)")
    p.add_argument("--per-process", type=int, default=None, help="sweep: points per process")
    p.add_argument("--bucket", default=None, metavar="gs://BUCKET/PREFIX",
                   help="mirror results and checkpoints here (survives preemption)")
    p.add_argument("--to", default="runs/tpu", help="local directory for fetched results")
    p.add_argument("--resume", action="store_true", help="run: continue from the checkpoints")
    p.add_argument("--no-out", action="store_true",
                   help="run: pass the study args verbatim, without --out (e.g. -- bench)")
    p.add_argument("--keep", action="store_true", help="up: do not delete the VM at the end")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between state checks")
    p.add_argument("--max-failures", type=int, default=3,
                   help="watch: failed runs on a READY VM before giving up")
    p.add_argument("--max-recreations", type=int, default=20)
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def flow_from_args(args: argparse.Namespace, study: list[str], runner: Runner) -> Flow:
    missing = [f"--{k.replace('_', '-')}" for k in ("name", "zone", "accelerator_type")
               if not getattr(args, k)]
    if missing:
        raise LaunchError(f"{args.action} needs {', '.join(missing)}")
    if not _NAME.match(args.name):
        raise LaunchError(f"bad --name {args.name!r}; expected lowercase letters, digits and "
                          "hyphens, starting with a letter (at most 63)")
    if args.project is not None and not _PROJECT.match(args.project):
        raise LaunchError(f"bad --project {args.project!r}; expected a project id like my-proj-123")
    tpu_type = catalog.tpu_type(args.accelerator_type, allow_unknown=args.allow_unknown,
                                hosts=args.hosts)
    catalog.check_zone(args.zone, tpu_type, allow_unknown=args.allow_unknown)
    if args.bucket is not None and not _BUCKET.match(args.bucket):
        raise LaunchError(f"bad --bucket {args.bucket!r}; expected gs://BUCKET[/PREFIX]")
    run_id = check_name(args.run_id or args.name, "--run-id")  # a directory here and remotely
    if args.grid:
        from launch.grid import parse_grid  # same checks as the sweep on the worker
        parse_grid(args.grid)
    if study:
        from experiments.__main__ import STUDIES

        if study[0] not in STUDIES:
            raise LaunchError(f"unknown study {study[0]!r} after --; expected one of: "
                              f"{', '.join(STUDIES)}")
    if any(a == "--out" or a.startswith("--out=") for a in study):
        raise LaunchError(f"do not pass --out to the study: results go to "
                          f"~/{REMOTE_RUNS}/{run_id} on the workers (see --run-id)")
    if args.bucket and tpu_type.hosts > 1 and not args.grid:
        raise LaunchError(f"--bucket mirrors each host's local results, but one program over the "
                          f"{tpu_type.hosts} hosts of {tpu_type.name} checkpoints through all of "
                          "them at once, which needs shared storage for its --out; run a sweep "
                          "(--grid) or use a single-host type (e.g. v5litepod-8, v4-8, v6e-8)")
    if args.no_out and (args.grid or args.action in ("up", "watch")):
        raise LaunchError("--no-out is for a one-off `run` (e.g. -- bench); sweeps, up and watch "
                          "keep their results under --out")
    job = Job(tuple(study), run_id, tuple(args.grid), args.per_process, args.bucket,
              add_out=not args.no_out)
    tpu = Tpu(args.name, args.zone, tpu_type, catalog.runtime_version(tpu_type, args.version),
              args.project, args.spot, args.queued, args.gcloud)
    return Flow(tpu, runner, job, args.ref, args.repo, args.to, poll_s=args.poll)


def main(argv: list[str] | None = None, runner: Runner | None = None) -> int:
    own, study = split_study_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    if args.action == "types":
        print(catalog.table())
        return 0
    runner = runner or SubprocessRunner(dry_run=args.dry_run)
    flow = flow_from_args(args, study, runner)
    if not runner.dry_run:
        require_executable(args.gcloud, "Install the Google Cloud SDK "
                           "(https://cloud.google.com/sdk/docs/install), run `gcloud init`, "
                           "or pass --gcloud PATH.")
    if args.action in ("run", "up", "watch") and not flow.job.study:
        raise LaunchError(f"{args.action} needs the study after --, e.g. -- collapse "
                          "--preset paper")
    if args.action == "create":
        flow.create()
    elif args.action == "setup":
        flow.setup()
    elif args.action == "run":
        return flow.run(resume=args.resume)
    elif args.action == "fetch":
        flow.fetch()
    elif args.action == "delete":
        flow.delete()
    elif args.action == "status":
        if runner.dry_run:
            runner.run(flow.tpu.describe_argv(), capture=True, check=False)
        else:
            print(flow.state())
    elif args.action == "up":
        return flow.up(keep=args.keep)
    elif args.action == "watch":
        return flow.watch(WatchPolicy(max_failures=args.max_failures,
                                      max_recreations=args.max_recreations,
                                      delete_when_done=not args.keep))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
