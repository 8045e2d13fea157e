"""``python -m experiments show-data --dataset {dsprites,shapes3d} --out DIR``.

Writes ``DIR/<dataset>_<source>_sweeps.png``: one row per factor, sweeping it across its
whole range with the other factors fixed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from sparsejax.data import SPECS, get_dataset
from sparsejax.dir_lock import check_output_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments show-data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(SPECS))
    p.add_argument("--source", default="auto", choices=["auto", "procedural", "file", "tfds"])
    p.add_argument("--data-dir", default=None, help="real copies (default: $SPARSEJAX_DATA_DIR)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--base", type=int, nargs="*", default=None, metavar="I",
                   help="the fixed factor values (default: the middle of each range)")
    args = p.parse_args(argv)

    ds = get_dataset(args.dataset, source=args.source, data_dir=args.data_dir)
    base = (np.array(args.base) if args.base is not None
            else np.array([s // 2 for s in ds.factor_sizes]))
    try:
        ds.space.validate(base[None], what="--base")
    except ValueError as e:
        p.error(str(e))
    from sparsejax.viz.grids import save_factor_sweeps

    out = check_output_dir(args.out)
    path = save_factor_sweeps(ds, base, out / f"{ds.name}_{ds.source}_sweeps.png")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
