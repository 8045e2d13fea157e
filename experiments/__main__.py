"""``python -m experiments [<study> [args...]]``: lists the studies, or runs one.

Every study runs through :func:`experiments.errors.run_cli`: an expected failure prints one
line and exits 2 (bad input) or 1 (the run failed); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# name -> (module, one-line description). A module that does not exist yet is not listed.
STUDIES: dict[str, tuple[str, str]] = {
    "collapse": ("experiments.collapse",
                 "the flagship study: sparsify a VAE-SAE from 500 to 50 units; MIG vs dead units"),
    "remedies": ("experiments.remedies",
                 "every dead-unit remedy of SAE practice against the collapse, with a verdict"),
    "revival": ("experiments.revival", "continue collapse runs at k=50 and count revived units"),
    "train": ("experiments.train", "train one model (hybrid VAE-SAE or dense VAE) and log it"),
    "sae": ("experiments.sae",
            "train a standalone SAE on activation vectors (synthetic by default)"),
    "heads": ("experiments.heads",
              "attention heads across model scale on tasks with known ground-truth heads"),
    "attribution": ("experiments.attribution",
                    "attribution methods scored against the renderers' ground-truth masks"),
    "units": ("experiments.units", "per-unit dashboards (PNG + one HTML page) of a trained run"),
    "show-data": ("experiments.show_data", "draw factor sweeps of a dataset as a PNG"),
    "bench": ("experiments.bench", "throughput benchmarks, one JSON object per line"),
}


def available() -> dict[str, tuple[str, str]]:
    return {name: spec for name, spec in STUDIES.items()
            if importlib.util.find_spec(spec[0]) is not None}


def usage() -> str:
    rows = [f"  {name:<10} {desc}" for name, (_, desc) in available().items()]
    return ("usage: python -m experiments <study> [--help] [args...]\n\nstudies:\n"
            + "\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    studies = available()
    if name not in studies:
        print(f"error: unknown study {name!r}; expected one of: {', '.join(studies)}",
              file=sys.stderr)
        return 2
    from experiments.errors import run_cli

    module = importlib.import_module(studies[name][0])
    return run_cli(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
