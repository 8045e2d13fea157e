"""``python -m launch.gpu MODE [...] -- STUDY ARGS``: a study on one or several GPU machines.

    local    one machine: one process drives all its GPUs (or --gpus 0,1) through the
             engine's device mesh; no jax.distributed
    node     this machine's process of a multi-machine run: the coordinator address, process
             count and id come from --coordinator/--num-processes/--process-id, or else from
             SLURM (SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, SLURM_STEP_NODELIST or
             SLURM_JOB_NODELIST; the port as jax's own SLURM detection picks it)
    ssh      start one process on every host of --hosts over ssh (process i on host i; host 0
             runs the coordinator), wait for all, and name the hosts that failed
    sbatch   write a SLURM batch script that runs `node` on every allocated machine, submit it

Each process runs ``python -m launch.worker ... -- STUDY ARGS``, which calls
``jax.distributed.initialize`` before the study when the run spans several processes.
``--dry-run`` prints exactly the commands (for sbatch: the submit command on stdout, the
script on stderr).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from launch.common import (LaunchError, Runner, SubprocessRunner, check_name, parse_int_list,
                           run_cli, shell_join, split_study_args)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 12355
_HOST = re.compile(r"(?:[A-Za-z0-9_.-]+@)?[A-Za-z0-9_][A-Za-z0-9_.:-]*\Z")
_SLURM_VALUE = re.compile(r"[A-Za-z0-9_.:,=@/%+-]+\Z")


def worker_argv(python: str, study: list[str], *, coordinator: str | None = None,
                num_processes: int | None = None, process_id: int | None = None) -> list[str]:
    argv = [python, "-m", "launch.worker"]
    if coordinator is not None:
        argv += ["--coordinator", coordinator, "--num-processes", str(num_processes),
                 "--process-id", str(process_id)]
    return [*argv, "--", *study]


def gpu_env(gpus: str | None) -> dict[str, str]:
    if gpus is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in parse_int_list(gpus, "--gpus"))}


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'gpu[003-007,010],cpu1' -> 'gpu003'."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m or not m[1]:
        raise LaunchError(f"cannot read a host from SLURM node list {nodelist!r}")
    if m[2] is None:
        return m[1]
    first = re.split(r"[,-]", m[2])[0]
    return f"{m[1]}{first}"


def slurm_rendezvous(env: Mapping[str, str], port: int | None) -> tuple[str, int, int]:
    """(coordinator, num_processes, process_id) from SLURM's variables."""
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    needed = {"SLURM_JOB_ID": env.get("SLURM_JOB_ID"), "SLURM_NTASKS": env.get("SLURM_NTASKS"),
              "SLURM_PROCID": env.get("SLURM_PROCID"), "SLURM_STEP_NODELIST": nodelist}
    missing = [k for k, v in needed.items() if not v]
    if missing:
        raise LaunchError("node needs --coordinator HOST:PORT --num-processes N --process-id I, "
                          f"or a SLURM step (missing {', '.join(missing)}; run it under srun)")
    try:
        job, ntasks, procid = (int(env[k])
                               for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID"))
    except ValueError:
        raise LaunchError("SLURM_JOB_ID, SLURM_NTASKS and SLURM_PROCID must be integers")
    if port is None:  # the same rule as jax's SLURM detection, so both agree
        port = job % 2**12 + (65535 - 2**12 + 1)
    return f"{first_slurm_host(nodelist)}:{port}", ntasks, procid


def check_host(host: str) -> str:
    if not _HOST.match(host):
        raise LaunchError(f"bad host {host!r}; expected [user@]hostname (no spaces, not "
                          "starting with '-')")
    return host


def ssh_commands(hosts: list[str], study: list[str], *, port: int, remote_dir: str,
                 python: str, ssh: str = "ssh", gpus: str | None = None) -> dict[str, list[str]]:
    """One ssh per host: cd to the checkout, then this host's worker."""
    coordinator = f"{hosts[0].rpartition('@')[2]}:{port}"
    commands = {}
    for i, host in enumerate(hosts):
        inner = shell_join(worker_argv(python, study, coordinator=coordinator,
                                       num_processes=len(hosts), process_id=i), gpu_env(gpus))
        remote = f"cd {shlex.quote(remote_dir)} && {inner}"
        commands[f"process {i} on {host}"] = [ssh, "-o", "BatchMode=yes", "--", host, remote]
    return commands


def sbatch_script(study: list[str], *, nodes: int, gpus_per_node: int, job_name: str,
                  time_limit: str | None, partition: str | None, account: str | None,
                  workdir: str, python: str, log_dir: str) -> str:
    directives = {"job-name": job_name, "nodes": str(nodes), "ntasks-per-node": "1",
                  "gpus-per-node": str(gpus_per_node), "time": time_limit,
                  "partition": partition, "account": account,
                  "output": f"{log_dir}/%x-%j.out"}
    lines = ["#!/bin/bash"]
    for key, value in directives.items():
        if value is None:
            continue
        if not _SLURM_VALUE.match(value):
            raise LaunchError(f"bad value for SLURM --{key}: {value!r}; expected no spaces, "
                              "quotes or newlines")
        lines.append(f"#SBATCH --{key}={value}")
    lines += ["set -euo pipefail", shell_join(["cd", workdir]),
              shell_join(["srun", python, "-m", "launch.gpu", "node", "--python", python,
                          "--", *study])]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["local", "node", "ssh", "sbatch"])
    p.add_argument("--python", default=None,
                   help="interpreter (default: this one; for ssh/sbatch: .venv/bin/python)")
    p.add_argument("--gpus", default=None,
                   help="GPU ids this process may use (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--port", type=int, default=None,
                   help=f"coordinator port (ssh default {DEFAULT_PORT}; SLURM: from the job id)")
    p.add_argument("--hosts", default=None,
                   help="ssh: comma-separated hosts; the first coordinates")
    p.add_argument("--remote-dir", default="sparsejax", help="ssh: the checkout on every host")
    p.add_argument("--ssh", default="ssh", help="ssh: the ssh executable")
    p.add_argument("--nodes", type=int, default=None, help="sbatch: machines")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--time", default=None, help="sbatch: time limit, e.g. 24:00:00")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--job-name", default="sparsejax",
                   help="sbatch: the SLURM job, and its script runs/slurm/JOB_NAME.sbatch")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def main(argv: list[str] | None = None, runner: Runner | None = None,
         environ: Mapping[str, str] | None = None) -> int:
    own, study = split_study_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    runner = runner or SubprocessRunner(dry_run=args.dry_run)
    environ = os.environ if environ is None else environ
    if not study:
        raise LaunchError(f"{args.mode} needs the study after --, e.g. -- collapse --preset paper")
    if args.port is not None and not 0 < args.port < 65536:
        raise LaunchError(f"--port must be in 1..65535, got {args.port}")

    if args.mode == "local":
        argv_ = worker_argv(args.python or sys.executable, study)
        return _run_local(runner, argv_, gpu_env(args.gpus))

    if args.mode == "node":
        explicit = [args.coordinator, args.num_processes, args.process_id]
        if all(v is None for v in explicit):
            coordinator, n, i = slurm_rendezvous(environ, args.port)
        elif any(v is None for v in explicit):
            raise LaunchError("node needs all of --coordinator, --num-processes and --process-id "
                              "(or none of them, under SLURM)")
        else:
            coordinator, n, i = args.coordinator, args.num_processes, args.process_id
            if not 0 <= i < n:
                raise LaunchError(f"--process-id must be in 0..{n - 1}, got {i}")
        argv_ = worker_argv(args.python or sys.executable, study, coordinator=coordinator,
                            num_processes=n, process_id=i)
        return _run_local(runner, argv_, gpu_env(args.gpus))

    if args.mode == "ssh":
        if not args.hosts:
            raise LaunchError("ssh needs --hosts host0,host1,... (host 0 runs the coordinator)")
        hosts = [check_host(h.strip()) for h in args.hosts.split(",") if h.strip()]
        if len(set(hosts)) != len(hosts):
            raise LaunchError(f"--hosts lists a host twice: {args.hosts!r}")
        commands = ssh_commands(hosts, study, port=args.port or DEFAULT_PORT,
                                remote_dir=args.remote_dir,
                                python=args.python or ".venv/bin/python", ssh=args.ssh,
                                gpus=args.gpus)
        codes = runner.parallel(commands)
        failed = {name: rc for name, rc in codes.items() if rc != 0}
        if failed:
            runner.note("failed: " + "; ".join(f"{n} exited {rc}" for n, rc in failed.items()))
            return 1
        return 0

    # sbatch
    if not args.nodes or args.nodes < 1:
        raise LaunchError("sbatch needs --nodes N (N >= 1)")
    check_name(args.job_name, "--job-name")  # the script's file name: nothing outside the log dir
    log_dir = str(ROOT / "runs" / "slurm")
    script = sbatch_script(study, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                           job_name=args.job_name, time_limit=args.time,
                           partition=args.partition, account=args.account, workdir=str(ROOT),
                           python=args.python or ".venv/bin/python", log_dir=log_dir)
    path = Path(log_dir) / f"{args.job_name}.sbatch"
    if runner.dry_run:
        for line in script.splitlines():
            runner.note(line)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
    runner.run(["sbatch", str(path)], what="submitting the SLURM job")
    return 0


def _run_local(runner: Runner, argv: list[str], env: Mapping[str, str]) -> int:
    if runner.dry_run:
        print(shell_join(argv, env), flush=True)
        return 0
    print(f"+ {shell_join(argv, env)}", file=sys.stderr, flush=True)
    try:  # this process becomes the worker, so signals (SIGTERM: save and stop) reach it
        os.execvpe(argv[0], argv, {**os.environ, **env})
    except OSError as e:
        raise LaunchError(f"cannot start {argv[0]!r}: {e}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
