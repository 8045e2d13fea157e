"""``python -m experiments units --from RUN_DIR --out DIR [--units U] [--samples N]``.

Per-unit dashboards of a trained hybrid run (a ``train`` or ``collapse`` run directory with
``config.json`` and ``checkpoints/``): the newest checkpoint is restored
(:func:`sparsejax.train.loop.load_run`), ``--samples`` procedural images are encoded at the
schedule's final k, and for the ``--units`` most frequently firing units it draws the
top-activating images, an activation-maximisation image, the mean response over every
factor, alive/dead and the most informative factor (``DIR/unit_<i>.png`` and one
self-contained ``DIR/units.html``). ``DIR/results.json`` holds every unit's statistics, the
surrogate decision trees from the code to each factor with their fidelity (rule
extraction) and a factor sweep of the shown units (sensitivity analysis).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from sparsejax.atomic_io import write_atomic
from sparsejax.dir_lock import DirLock, output_path


def dashboards(model, ds, k: int, out: Path, *, units: int = 16, samples: int = 2048,
               top: int = 6, act_steps: int = 64, seed: int = 0, batch: int = 256) -> dict:
    """Writes the PNGs, the HTML page and ``results.json`` for ``model`` (a VAE-SAE hybrid)."""
    import jax
    import jax.numpy as jnp

    from sparsejax.interp import units as U
    from sparsejax.viz.units import dashboard_html, unit_png

    key = jax.random.key(seed)
    k_f, k_am = jax.random.split(key)
    factors = np.asarray(ds.sample_factors(k_f, samples))
    encode = jax.jit(lambda x: model.encode(x, jnp.asarray(k)).h)
    images, codes = [], []
    for i in range(0, samples, batch):
        x = ds.render(factors[i:i + batch])
        images.append(np.asarray(x))
        codes.append(np.asarray(encode(x)))
    images, codes = np.concatenate(images), np.concatenate(codes)
    stats = U.unit_stats(codes, factors, ds.factor_sizes)
    order = np.argsort(-stats["density"], kind="stable")[:units]
    top_idx = U.top_activating(codes[:, order], top)
    x0 = jnp.full((len(order), *ds.observation_shape), 0.5, jnp.float32)
    am = U.activation_maximisation(
        lambda x: jnp.take_along_axis(model.encode(x, jnp.asarray(k)).h,
                                      jnp.asarray(order)[:, None], 1)[:, 0],
        x0, key=k_am, steps=act_steps)
    pngs = []
    for r, u in enumerate(order):
        best = int(stats["best_factor"][u])
        name = ds.factor_names[best] if best >= 0 else "none"
        png = unit_png(out / f"unit_{u}.png", int(u), images[top_idx[r]],
                       stats["response"][u], ds.factor_names, ds.factor_sizes,
                       density=float(stats["density"][u]), alive=bool(stats["alive"][u]),
                       best=name, nmi=float(stats["nmi"][u].max()), act_max=np.asarray(am[r]))
        pngs.append((f"unit {u}: density {stats['density'][u]:.3f}, best factor {name}", png))
    trees = U.surrogate_trees(codes, factors, ds.factor_names, seed=seed)
    sweep = U.factor_sweeps(lambda x: encode(x), ds.render, factors[0], ds.factor_sizes)
    alive = int(stats["alive"].sum())
    summary = (f"{alive}/{codes.shape[1]} units alive on {samples} samples (k = {k}); "
               "surrogate trees (depth 4) from the code to each factor, held-out accuracy vs "
               "majority: " + "; ".join(f"{n} {t['fidelity']:.3f} vs {t['majority']:.3f}"
                                         for n, t in trees.items()))
    dashboard_html(out / "units.html", "Unit dashboards", summary, pngs)
    res = {"alive": alive, "units": codes.shape[1], "k": k, "samples": samples,
           "shown": order.tolist(),
           "density": stats["density"].tolist(), "best_factor": stats["best_factor"].tolist(),
           "nmi": stats["nmi"].tolist(),
           "trees": {n: {key: v for key, v in t.items()} for n, t in trees.items()},
           "sweep": {"base": factors[0].tolist(),
                     "codes_of_shown": np.nan_to_num(sweep[..., order], nan=-1).tolist()}}
    write_atomic(out / "results.json", json.dumps(res) + "\n")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments units", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="run_dir", required=True, help="a trained hybrid run")
    p.add_argument("--out", required=True)
    p.add_argument("--units", type=int, default=16)
    p.add_argument("--samples", type=int, default=2048)
    args = p.parse_args(argv)
    if args.units < 1 or args.samples < 2:
        raise ValueError(f"--units must be >= 1 and --samples >= 2, got {args.units}, "
                         f"{args.samples}")
    src = Path(args.run_dir)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src / 'config.json'} not found: --from must name a run "
                                "directory written by `python -m experiments train`")
    from sparsejax.data import get_dataset
    from sparsejax.train.loop import load_run

    run = load_run(src)
    if run.config.method == "dense":
        raise ValueError(f"{src} is a dense VAE: it has no sparse code to show")
    out = output_path(args.out)
    with DirLock(out):
        ds = get_dataset(run.config.dataset, "procedural")
        res = dashboards(run.model(0), ds, int(run.config.schedule.end), out,
                         units=args.units, samples=args.samples)
    print(f"[units] {res['alive']}/{res['units']} units alive; wrote {out}/units.html "
          f"(python -m experiments units {shlex.join(argv or sys.argv[1:])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
