"""``python -m launch.worker [DISTRIBUTED FLAGS] -- STUDY [ARGS]``: one process of a run.

Starts JAX's multi-controller runtime when the run spans several processes, then runs the
study exactly as ``python -m experiments STUDY ARGS`` would:

    --coordinator HOST:PORT --num-processes N --process-id I   explicit (GPU clusters, tests)
    --auto                       jax.distributed.initialize() detects everything (TPU slices,
                                 SLURM)
    (neither)                    a single process: no jax.distributed at all

On CPU the collectives go through gloo (``--cpu-collectives``). The last line on stderr is
``[launch.worker] process I/N on HOST: exit RC``, so a launcher can name a failed worker.
"""

from __future__ import annotations

import argparse
import importlib
import socket
import sys
import traceback

from launch.common import LaunchError, parse_int_list, run_cli, split_study_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch.worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0's coordinator service")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--local-device-ids", default=None, metavar="0,1",
                   help="the local devices this process uses (default: all visible)")
    p.add_argument("--auto", action="store_true",
                   help="jax.distributed.initialize() with no arguments (TPU slice, SLURM)")
    p.add_argument("--cpu-collectives", default="gloo", choices=["gloo", "mpi", "none"],
                   help="CPU collectives implementation for multi-process CPU runs")
    p.add_argument("--init-timeout", type=int, default=300,
                   help="seconds to wait for every process to join")
    p.add_argument("--module", default="experiments",
                   help="the module whose main(argv) runs the study (default: experiments)")
    return p


def distributed_kwargs(args: argparse.Namespace) -> dict | None:
    """The arguments of jax.distributed.initialize, or None for a single-process run."""
    explicit = [args.coordinator, args.num_processes, args.process_id]
    if args.auto:
        if any(v is not None for v in explicit):
            raise LaunchError("--auto detects the coordinator, process count and id; "
                              "do not also pass --coordinator/--num-processes/--process-id")
        return {"initialization_timeout": args.init_timeout}
    if all(v is None for v in explicit):
        return None
    if any(v is None for v in explicit):
        raise LaunchError("a multi-process run needs all of --coordinator HOST:PORT, "
                          "--num-processes N and --process-id I (or --auto)")
    host, sep, port = args.coordinator.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LaunchError(f"bad --coordinator {args.coordinator!r}; expected HOST:PORT")
    if args.num_processes < 1:
        raise LaunchError(f"--num-processes must be >= 1, got {args.num_processes}")
    if not 0 <= args.process_id < args.num_processes:
        raise LaunchError(f"--process-id must be in 0..{args.num_processes - 1}, "
                          f"got {args.process_id}")
    kwargs = {"coordinator_address": args.coordinator, "num_processes": args.num_processes,
              "process_id": args.process_id, "initialization_timeout": args.init_timeout}
    if args.local_device_ids is not None:
        kwargs["local_device_ids"] = parse_int_list(args.local_device_ids, "--local-device-ids")
    return kwargs


def study_main(module_name: str):
    """``module.main``, or ``module.__main__.main`` for a package run with -m (experiments)."""
    module = importlib.import_module(module_name)
    if not hasattr(module, "main"):
        module = importlib.import_module(f"{module_name}.__main__")
    return module.main


def main(argv: list[str] | None = None) -> int:
    own, study = split_study_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    if not study:
        raise LaunchError("no study given; expected: python -m launch.worker [flags] -- STUDY "
                          "[ARGS]")
    kwargs = distributed_kwargs(args)
    tag = "process 0/1"
    rc = 1
    try:
        import jax

        if kwargs is not None:
            if args.cpu_collectives != "none":
                jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
            jax.distributed.initialize(**kwargs)
            tag = f"process {jax.process_index()}/{jax.process_count()}"
        rc = int(study_main(args.module)(study) or 0)
    except SystemExit as e:  # argparse inside the study
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:
        traceback.print_exc()
        rc = 1
    finally:
        print(f"[launch.worker] {tag} on {socket.gethostname()}: exit {rc}", file=sys.stderr,
              flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(run_cli(main))
