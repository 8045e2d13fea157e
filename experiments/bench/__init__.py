"""``python -m experiments bench [--only NAME ...] [--list]``.

Every module in this package defines ``CASES: dict[str, Callable[[], Iterable[dict]]]``;
each case yields result rows, which are printed as one JSON object per line with a
``"bench"`` field. A row carries its peer (the reference implementation it competes
with) or its limit (a FLOP or memory-bandwidth floor) measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time

_HELPERS = {"timing"}  # modules of this package that hold no cases


def discover() -> dict:
    cases = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _HELPERS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, fn in getattr(module, "CASES", {}).items():
            if name in cases:
                raise RuntimeError(f"bench case {name!r} defined twice")
            cases[name] = fn
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this bench (repeatable); see --list")
    parser.add_argument("--list", action="store_true", help="list the bench names and exit")
    args = parser.parse_args(argv)
    cases = discover()
    if args.list:
        print("\n".join(cases))
        return 0
    unknown = [n for n in args.only if n not in cases]
    if unknown:
        parser.error(f"unknown bench {', '.join(map(repr, unknown))}; expected one of: "
                     f"{', '.join(cases)}")
    selected = args.only or list(cases)
    from sparsejax.train.mesh import device_label  # after the checks: no wait for JAX

    device = device_label()
    t0 = time.perf_counter()
    for name in selected:
        for row in cases[name]():
            row = {"bench": name, **row, "device": device}
            print(json.dumps(row), flush=True)
    print(f"# {len(selected)} bench(es) in {time.perf_counter() - t0:.1f} s on {device}",
          file=sys.stderr)
    return 0
