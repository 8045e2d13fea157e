"""The collapse study's PNGs, drawn from ``results.json`` (and one trained run's traversals).

Each writer returns ``(file, caption)`` pairs; the report shows them in that order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.collapse_paper import METHOD_LABEL, PAPER, PAPER_K
from experiments.collapse_stats import first_cell, tau_keys, tau_label


def _series(results: dict, dataset: str, method: str, fn) -> np.ndarray:
    """float64 ``[S, E]``: ``fn(record)`` per seed and epoch of one cell (NaN-padded)."""
    rows = [[fn(r) for r in run["epochs"]] for run in results["runs"]
            if run["dataset"] == dataset and run["method"] == method]
    width = max((len(r) for r in rows), default=0)
    return np.asarray([r + [np.nan] * (width - len(r)) for r in rows], np.float64)


def write_plots(results: dict, out: Path) -> list[tuple[str, str]]:
    """Writes the study's PNGs into ``out``; returns ``(file, caption)`` pairs."""
    from sparsejax.models import SPARSE_METHODS
    from sparsejax.viz.curves import seed_band_panels

    cells = results["summary"]["cells"]
    tau0 = tau_keys(first_cell(results))[0]  # the first threshold: 0, the paper's dead
    tau0_label = tau_label(tau0)
    datasets = sorted({c["dataset"] for c in cells.values()})
    methods = [m for m in SPARSE_METHODS if any(c["method"] == m for c in cells.values())]
    all_methods = methods + (["dense"] if any(c["method"] == "dense" for c in cells.values())
                             else [])
    x = _epoch_axis(results)
    figs = []
    if methods:
        panels = {d: {METHOD_LABEL[m]: _series(results, d, m,
                                               lambda r: 100 * r["dead_fraction"][tau0])
                      for m in methods} for d in datasets}
        for d in datasets:  # one figure per dataset: each has its own paper levels
            seed_band_panels({d: panels[d]}, x=x, xlabel="epoch",
                             ylabel=f"dead units (%), tau = {tau0_label}",
                             path=out / f"dead_fraction_{d}.png", ylim=(0, 100),
                             title=f"{d}: dead units per epoch",
                             hlines={f"paper {METHOD_LABEL[m]} at k = {PAPER_K}": PAPER[(d, m)][0]
                                     for m in methods if (d, m) in PAPER})
        figs += [(f"dead_fraction_{d}.png", f"{d}: dead units (tau = {tau0_label}) per epoch, "
                  "mean over seeds, band from the lowest to the highest seed; dashed lines are "
                  f"the paper's rates at k = {PAPER_K}") for d in datasets]
    mig_panels = {}
    for d in datasets:
        mig_panels[f"{d}: latent mean"] = {
            METHOD_LABEL[m]: _series(results, d, m, lambda r: r.get("mig_mean", np.nan))
            for m in all_methods}
        if methods:
            mig_panels[f"{d}: sparse code"] = {
                METHOD_LABEL[m]: _series(results, d, m, lambda r: r.get("mig_code", np.nan))
                for m in methods}
    seed_band_panels(mig_panels, x=x, xlabel="epoch", ylabel="MIG", path=out / "mig.png",
                     title="MIG vs epoch (dlib discrete MIG, 20 bins)")
    figs.append(("mig.png", "MIG on the latent mean (all models) and on the sparse code "
                 "(sparse models) per epoch"))
    if methods:
        figs += _sparse_plots(results, out, datasets, methods, tau0)
    return figs


def _sparse_plots(results: dict, out: Path, datasets: list[str], methods: list[str],
                  tau0: str) -> list[tuple[str, str]]:
    """k schedule vs L0, alignment, and firing-density histograms of the sparse cells."""
    from sparsejax.viz.curves import density_histograms, seed_band_panels

    figs = []
    kl_panels = {}
    for d in datasets:
        series = {"target k": _series(results, d, methods[0], lambda r: r["k"])[:1]}
        for m in methods:
            series[f"L0 {METHOD_LABEL[m]}"] = _series(results, d, m, lambda r: r["eval"]["l0"])
        kl_panels[d] = series
    seed_band_panels(kl_panels, x=_epoch_axis(results), xlabel="epoch",
                     ylabel="active units per image", path=out / "k_schedule.png",
                     title="k schedule vs achieved mean L0 (evaluation set)")
    figs.append(("k_schedule.png", "the k schedule and the mean L0 each method achieved"))
    al_panels = {d: {METHOD_LABEL[m]: _series(
        results, d, m, lambda r: r["alignment"]["specific_units"]) for m in methods}
        for d in datasets}
    seed_band_panels(al_panels, x=_epoch_axis(results), xlabel="epoch",
                     ylabel="alive units specific to one factor", path=out / "alignment.png",
                     title="Units alive and specific to one factor (selectivity >= 0.5, "
                           "MI >= 5% of the factor's entropy)")
    figs.append(("alignment.png", "units that are alive and specific to one factor"))
    dens = {}
    for d in datasets:
        for m in methods:
            run = next((r for r in results["runs"] if r["dataset"] == d and r["method"] == m),
                       None)
            if run is None:
                continue
            eps = run["epochs"]
            picks = {"start": eps[0], "middle": eps[len(eps) // 2], "end": eps[-1]}
            dens[f"{d} {METHOD_LABEL[m]} (seed {run['seed']})"] = {
                f"{lab} (epoch {r['epoch'] + 1}, k {r['k']})":
                    np.asarray(r["firing_counts"][tau0]) / r["eval_size"]
                for lab, r in picks.items()}
    density_histograms(dens, path=out / "firing_density.png",
                       floor=1.0 / max(r["eval_size"] for run in results["runs"]
                                       for r in run["epochs"][:1]),
                       title=f"Firing density of the {first_cell(results)['num_units']} units "
                             "at the start, middle and end of the schedule")
    figs.append(("firing_density.png", "log10 firing density per unit (dead units in the "
                 "leftmost bar)"))
    return figs


def _epoch_axis(results: dict) -> np.ndarray:
    """``[E]``: epochs 1..E of the longest cell."""
    return np.arange(1, max(c["epochs"] for c in results["summary"]["cells"].values()) + 1)


def write_traversals(run_dir: Path | None, out: Path,
                     num_steps: int = 9) -> tuple[str, str] | None:
    """Latent traversals of the first seed of one trained run (``out/traversals.png``):
    each row sweeps one latent of the encoding of one evaluation image from -2.5 to 2.5
    (the others at their mean); None when ``run_dir`` holds no run."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sparsejax.data import get_dataset
    from sparsejax.train import load_run
    from sparsejax.train.evaluate import eval_factors
    from sparsejax.viz.curves import image_rows

    if run_dir is None or not (run_dir / "config.json").exists():
        return None
    result = load_run(run_dir)
    cfg = result.config
    records = [r for r in result.history if r["seed"] == cfg.seeds[0]]
    k = records[-1]["k"] if records else cfg.schedule.end
    ds = get_dataset(cfg.dataset, cfg.source, cfg.data_dir)
    x = jnp.asarray(ds.render(eval_factors(ds, cfg)[:1]))  # [1, H, W, C]
    graphdef, params = nnx.split(result.model(0))

    @jax.jit  # one program: op by op, the CPU would compile every op of both nets
    def sweep(params, x, k):
        model = nnx.merge(graphdef, params)
        mu = model.encode(x, k).mu[0]  # [L]
        n = mu.shape[0]
        z = jnp.tile(mu, (n, num_steps, 1))  # [L, V, L]: row i sweeps latent i
        z = z.at[jnp.arange(n), :, jnp.arange(n)].set(
            jnp.broadcast_to(jnp.linspace(-2.5, 2.5, num_steps), (n, num_steps)))
        imgs = jax.nn.sigmoid(model.decoder(z.reshape(-1, n)))  # [L * V, H, W, C]
        return mu, imgs.reshape(n, num_steps, *imgs.shape[1:])

    mu, imgs = sweep(params, x, jnp.asarray(k, jnp.int32))
    imgs = np.asarray(imgs)
    rows = [np.asarray(x)] + list(imgs)
    labels = ["input"] + [f"z{i} (mu {float(m):+.2f})" for i, m in enumerate(mu)]
    image_rows(rows, labels, path=out / "traversals.png",
               title=f"{cfg.dataset} {METHOD_LABEL[cfg.method]}, seed {cfg.seeds[0]}, k {k}: "
                     "each row sweeps one latent from -2.5 to 2.5")
    return ("traversals.png", f"latent traversals of the trained {cfg.dataset} "
            f"{METHOD_LABEL[cfg.method]} model (seed {cfg.seeds[0]})")
