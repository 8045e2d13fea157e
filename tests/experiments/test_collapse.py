"""The flagship study: config checks, the results and report built from canned records, and
one tiny study end to end (+ resume, revival) in seconds."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments import collapse, collapse_render, revival
from experiments.collapse_plots import write_plots
from experiments.collapse_paper import CONTROLS, WARMUP
from experiments.collapse_stats import (FLAGS, bootstrap_ci, build_results, cell_flags,
                                       is_evidence, mean_std, ratio_with_se, tau_label)
from sparsejax.metrics import TAU_KEYS
from sparsejax.train import ConfigError, TrainConfig
from sparsejax.train.config import to_dict

HERE = Path(__file__).parent


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("argv,message", [
    (["--datasets", "mnist"], "datasets ['mnist']: expected a non-empty subset"),
    (["--methods", "dense"], "expected a subset of ['topk', 'l1']"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--epochs", "2"], "the k schedule takes 3 epochs but the run has only 2"),
    (["--set", "num_units=40"], "schedule.start = 500 is out of range"),
    (["--seeds", "0"], "num_seeds must be >= 1"),
    (["--set", "dataset=shapes3d"], "train fields ['dataset'] are set by the study's grid"),
    (["--set", "schedule.nope=1"], "unknown schedule field 'nope'"),
])
def test_bad_config_is_refused_before_work(tmp_path, capsys, argv, message):
    argv = ["--out", str(tmp_path / "s"), *(["--preset", "smoke"] if "--preset" not in argv
                                           else []), *argv]
    assert collapse.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s" / "runs").exists()


def test_existing_study_needs_resume(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert collapse.main(["--preset", "smoke", "--out", str(tmp_path)]) == 2
    assert "already holds a study" in capsys.readouterr().err


def test_preset_grid():
    cfg = collapse.preset_config("paper")
    main = [("dsprites", "topk"), ("dsprites", "l1"), ("shapes3d", "topk"), ("shapes3d", "l1")]
    controls = [(d, c) for d in ("dsprites", "shapes3d") for c in CONTROLS]
    assert cfg.cells() == main + controls + [("dsprites", "dense"), ("shapes3d", "dense")]
    t = cfg.train_config("shapes3d", "l1")
    assert (t.schedule.start, t.schedule.end, t.schedule.length, t.epochs) == (500, 50, 50, 50)
    # the same steps per epoch on both datasets by default; --one-pass: the paper's passes
    assert t.num_seeds == 3 and t.steps_per_epoch == 11_520 and t.last_eval_size == 10_000
    one_pass = collapse.config_from_args(collapse.build_parser().parse_args(
        ["--preset", "paper", "--out", "x", "--one-pass"]))
    assert one_pass.train_config("shapes3d", "topk").steps_per_epoch is None
    with pytest.raises(ConfigError):
        collapse.preset_config("smoke", revival_epochs=0)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        collapse.preset_config("smoke", warmup_epochs=-1)


def test_arms_and_controls_train_what_they_say():
    cfg = collapse.preset_config("small")
    assert cfg.datasets == ("dsprites",) and cfg.warmup_epochs > 0
    assert [a for _, a in cfg.cells()] == [WARMUP, "topk", "l1", *CONTROLS, "dense"]
    base = cfg.train_config("dsprites", "topk")
    n, end = base.num_units, base.schedule.end
    relu = cfg.train_config("dsprites", "relu_no_penalty")
    assert relu.method == "topk" and relu.topk_relu
    assert (relu.schedule.start, relu.schedule.end) == (n, n)
    fixed = cfg.train_config("dsprites", "topk_fixed")
    assert fixed.k_at(0, 0, 10) == end and fixed.epochs == base.epochs
    warm = cfg.train_config("dsprites", WARMUP)
    assert warm.epochs == cfg.warmup_epochs and warm.k_at(0, 0, 10) == n
    assert cfg.train_config("dsprites", "dense").epochs == base.epochs + cfg.warmup_epochs
    assert cfg.train_config("dsprites", "untrained").schedule.end == end
    assert [cfg.warm_started(a) for a in ("topk", "l1", "relu_no_penalty", "topk_fixed",
                                          "untrained", "dense", WARMUP)] == [True] * 4 + [False] * 3
    # k moves every step: the schedule at the fractional epoch
    spe = base.steps_per_epoch
    ks = [base.k_at(e, i, spe) for e in range(base.epochs) for i in range(spe)]
    assert ks[0] == 500 and ks[-1] == 50 and len(set(ks)) > 2 * spe
    assert all(a >= b for a, b in zip(ks, ks[1:]))
    assert base.k_at(1, spe // 2, spe) == base.schedule(1 + (spe // 2) / spe)


# what each study preset trains: (epochs, steps, eval size, final eval size, eval batch,
# schedule length, log_every, learning rate, L1 controller start, batch, steps per dispatch);
# everything else is TrainConfig()'s default
PRESET_RUNS = {"smoke": (3, 20, 1024, 2048, 512, 3, 10, 1e-4, {}, 64, 1),
               "small": (4, 75, 1024, 10_000, 512, 3, 25, 1e-3, dict(init_coef=0.1), 32, 25),
               "paper": (50, 11_520, 10_000, None, 1000, 50, 200, 1e-4, {}, 64, 40)}


@pytest.mark.parametrize("name", sorted(PRESET_RUNS))
def test_presets_are_self_contained(name, monkeypatch):
    from sparsejax.train import config as config_lib

    monkeypatch.setattr(config_lib, "PRESETS", {})  # the engine's presets play no part
    cfg = collapse.preset_config(name)
    epochs, steps, eval_size, final, eval_batch, length, log_every, lr, ctl, b, t = \
        PRESET_RUNS[name]
    for d, m in cfg.cells():
        if m not in ("topk", "l1"):
            continue
        expect = TrainConfig(
            dataset=d, method=m, num_seeds=cfg.num_seeds, epochs=epochs, steps_per_epoch=steps,
            eval_size=eval_size, final_eval_size=final, eval_batch=eval_batch,
            log_every=log_every, learning_rate=lr, batch_size=b, scan_steps=t,
            schedule=dataclasses.replace(TrainConfig().schedule, start=500, end=50,
                                         length=length),
            controller=dataclasses.replace(TrainConfig().controller, **ctl))
        assert to_dict(cfg.train_config(d, m)) == to_dict(expect), (d, m)
    assert cfg.preset == name


def test_nested_overrides_merge_with_the_preset():
    cfg = collapse.preset_config("small", train={"schedule": {"kind": "cosine"}})
    s = cfg.train_config("dsprites", "topk").schedule
    assert (s.kind, s.start, s.end, s.length) == ("cosine", 500, 50, 3)


# --------------------------------------------------------------------------- cost
def test_paper_cost_estimate_against_a_hand_count():
    """The paper preset: per dataset, Top-k, L1, ReLU-no-penalty, fixed-k and the dense
    baseline train (the untrained control does not), 50 epochs x 11,520 steps x batch 64 x
    3 seeds each; the revival continues the 4 sparse cells 100 epochs."""
    cell = 50 * 11_520 * 64 * 3
    est = collapse.cost_estimate(collapse.preset_config("paper"), images_per_s=1000.0)
    assert est["main_grid_images"] == 2 * 5 * cell
    assert est["revival_images"] == 2 * 2 * 100 * 11_520 * 64 * 3
    assert est["main_grid_h"] == pytest.approx(2 * 5 * cell / 1000 / 3600)  # 307.2 h
    assert est["revival_h"] == pytest.approx(4 * 100 * 11_520 * 64 * 3 / 1000 / 3600)
    assert est["cell"] == "dsprites-topk" and est["cell_min"] == pytest.approx(cell / 1000 / 60)
    assert est["cells"] == 12 and est["seeds"] == 3


def test_cost_counts_warmups_and_one_pass_epochs():
    cfg = collapse.preset_config("small", warmup_epochs=2, controls=False, baseline=False,
                                 train={"steps_per_epoch": None})
    images = collapse.train_images(cfg, dataset_size=lambda name: 3200)
    steps = 3200 // 32  # one pass at the small preset's batch 32
    assert images == {"dsprites-warmup": 2 * steps * 32 * 2,
                      "dsprites-topk": 4 * steps * 32 * 2, "dsprites-l1": 4 * steps * 32 * 2}


def test_dry_run_prints_the_estimate_and_trains_nothing(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not train or time anything")

    monkeypatch.setattr(collapse, "run_cells", refuse)
    monkeypatch.setattr(collapse, "measured_rate", refuse)
    assert collapse.main(["--preset", "paper", "--dry-run", "--rate", "1000",
                          "--out", str(tmp_path / "s")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row == {**collapse.cost_estimate(collapse.preset_config("paper"), 1000.0),
                   "rate_from": "--rate", "device": row["device"]}
    assert not (tmp_path / "s").exists()


def test_dry_run_needs_no_out_but_a_positive_rate(capsys):
    with pytest.raises(SystemExit):
        collapse.main(["--preset", "paper", "--dry-run", "--rate", "0"])
    assert "--rate must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        collapse.main(["--preset", "paper"])
    assert "required: --out" in capsys.readouterr().err


def test_paper_estimate_bench_row(monkeypatch):
    from experiments.bench import paper

    monkeypatch.setattr(paper, "measured_rate", lambda cfg, min_time: 2000.0)
    (row,) = paper.paper_estimate()
    assert row == {**collapse.cost_estimate(collapse.preset_config("paper"), 2000.0),
                   "rate_from": "measured"}
    assert {"main_grid_h", "revival_h", "cell_min"} <= set(row)


def test_summary_statistics_against_numpy(rng):
    a, b = rng.uniform(10, 40, 3), rng.uniform(50, 90, 4)
    sa, sb = mean_std(a), mean_std(b)
    assert sa["mean"] == pytest.approx(np.mean(a)) and sa["std"] == pytest.approx(np.std(a, ddof=1))
    r = ratio_with_se(sb, sa)
    se_a, se_b = np.std(a, ddof=1) / np.sqrt(3), np.std(b, ddof=1) / np.sqrt(4)
    expect = np.mean(b) / np.mean(a)
    assert r["ratio"] == pytest.approx(expect)
    assert r["se"] == pytest.approx(expect * np.hypot(se_a / np.mean(a), se_b / np.mean(b)))
    assert mean_std([None, float("nan")])["n"] == 0


def test_bootstrap_interval_against_numpy(rng):
    v = rng.uniform(0, 100, 5)
    lo, hi = bootstrap_ci(v, draws=4000, seed=3)
    idx = np.random.default_rng(3).integers(0, 5, (4000, 5))
    means = v[idx].mean(1)
    assert (lo, hi) == pytest.approx((np.quantile(means, 0.025), np.quantile(means, 0.975)))
    assert v.min() <= lo < np.mean(v) < hi <= v.max()
    # two seeds: the resampled means are a, (a + b) / 2 and b, so the interval is [a, b]
    assert bootstrap_ci([10.0, 20.0]) == [10.0, 20.0]
    assert mean_std([3.0])["ci95"] == [3.0, 3.0]


def test_threshold_labels_and_template_blocks():
    assert [tau_label(t) for t in TAU_KEYS] == ["0", "1e-6", "1e-3", "1e-2"]
    text = "<!--\nabout\n-->\na $x\n<!-- if b -->\nkept $y\n<!-- end b -->\nend\n"
    assert collapse_render.fill(text, {"x": 1, "y": 2}, {"b": True}) == "a 1\nkept 2\nend\n"
    assert collapse_render.fill(text, {"x": 1}, {"b": False}) == "a 1\nend\n"
    with pytest.raises(KeyError):
        collapse_render.fill(text, {"x": 1}, {"b": True})  # a field the block needs


# --------------------------------------------------------------------------- canned records
# The smoke grid (2 datasets x 2 methods, the controls, the warm-up, the dense baselines), 2
# seeds, 3 epochs, 6 units, made deterministically by arithmetic: the results and report
# below are exact functions of these records. By construction the L1 and fixed-k cells miss
# their L0 target and the untrained cell is worse than the mean image (flagged).
ARMS = ("topk", "l1", "dense", "untrained", "relu_no_penalty", "topk_fixed", WARMUP)
RECON_FLOOR = 1100.0
UNITS, EPOCHS, SEEDS, EVAL, KS = 6, 3, (0, 1), 4000, (6, 4, 2)
COUNT = (0, 0, 0, 2, 3, 5, 8, 12, 20)  # firings on the 4000 samples; 2 and 3 are "rare"


def canned_counts(di: int, mi: int, seed: int, epoch: int) -> np.ndarray:
    """int ``[T, UNITS]``: firings per threshold, non-increasing in the threshold."""
    u = np.arange(UNITS)
    c0 = np.asarray(COUNT)[(4 * u + 5 * seed + 7 * epoch + 11 * di + 13 * mi) % 9]
    drop = (u + epoch + seed) % 3
    return np.stack([np.maximum(c0 - t * drop, 0) for t in range(len(TAU_KEYS))])


def canned_record(dataset: str, method: str, seed: int, epoch: int) -> dict:
    di, mi = ("dsprites", "shapes3d").index(dataset), ARMS.index(method)
    rec = {"epoch": epoch, "seed": seed, "k": KS[epoch], "method": method, "dataset": dataset,
           "eval": {"l0": KS[epoch] - 0.25 * seed - 0.5 * (mi % 2), "recon": 1000.0 + 10 * di
                    + seed + 2 * epoch + 200 * (method == "untrained"), "kl": 1.0 + 0.5 * seed},
           "mig_mean": 0.01 * (1 + seed + 2 * epoch + di),
           "mig_mean_shuffled": 0.005 * (1 + seed), "eval_size": EVAL}
    if method == "dense":
        return rec
    counts = canned_counts(di, mi, seed, epoch)
    alive = int((counts[0] > 0).sum())
    rec.update({
        "mig_code": 0.02 * (1 + 2 * seed + epoch + mi),
        "firing_counts": {t: c.tolist() for t, c in zip(TAU_KEYS, counts)},
        "dead_fraction": {t: float(np.mean(c == 0)) for t, c in zip(TAU_KEYS, counts)},
        "firing": {t: {"rare_fraction": float(np.mean(c < 1e-3 * EVAL))}
                   for t, c in zip(TAU_KEYS, counts)},
        "alignment": {"alive_units": alive, "specific_units": alive // 2},
    })
    if method == "l1":
        rec["l1_coef"] = 0.01 * (1 + seed) * (1 + epoch)
    return rec


@pytest.fixture(scope="module")
def canned():
    """The results.json dict :func:`build_results` makes of the canned grid's records."""
    cfg = collapse.preset_config("smoke", train={
        "num_units": UNITS, "eval_size": EVAL, "schedule": {"start": KS[0], "end": KS[-1]}})
    records = {f"{d}-{m}": [canned_record(d, m, s, e) for s in SEEDS for e in range(EPOCHS)]
               for d, m in cfg.cells()}
    sources = {d: {"source": "procedural", "location": None} for d in cfg.datasets}
    results = build_results(cfg, records, sources, wall_time_s=12.3,
                            config=collapse.config_dict(cfg),
                            recon_floors={d: RECON_FLOOR for d in cfg.datasets},
                            command="python -m experiments collapse --preset smoke --out canned")
    return results


def _dead(di, mi, seed, epoch):
    return canned_counts(di, mi, seed, epoch) == 0  # [T, U]


def test_results_from_canned_records_match_numpy(canned):
    results = canned
    cells = results["summary"]["cells"]
    assert list(cells) == [
        "dsprites-warmup", "shapes3d-warmup", "dsprites-topk", "dsprites-l1", "shapes3d-topk",
        "shapes3d-l1", *(f"{d}-{c}" for d in ("dsprites", "shapes3d") for c in CONTROLS),
        "dsprites-dense", "shapes3d-dense"]
    assert results["eval_size_final"] == EVAL
    floors = results["summary"]["floors"]
    for d in ("dsprites", "shapes3d"):
        assert floors[d]["recon_mean_image"] == RECON_FLOOR
        assert floors[d]["mig_shuffled"] == pytest.approx(np.mean([0.005, 0.010]))
        assert floors[d]["mig_untrained"] == pytest.approx(
            np.mean([0.01 * (1 + s + 4 + ("dsprites", "shapes3d").index(d)) for s in SEEDS]))
        ctl = results["summary"]["controls"][d]
        assert list(ctl) == list(CONTROLS)
        for arm in CONTROLS:
            assert ctl[arm]["dead_final"] == cells[f"{d}-{arm}"]["dead_final"]
    flagged = [n for n, c in cells.items() if c["flags"]]
    assert flagged == ["dsprites-l1", "shapes3d-l1", "dsprites-untrained", "dsprites-topk_fixed",
                       "shapes3d-untrained", "shapes3d-topk_fixed"]
    for name, c in cells.items():
        di, mi = ("dsprites", "shapes3d").index(c["dataset"]), ARMS.index(c["method"])
        # the flags, restated: recon not below the floor; L0 off k by > 10% where k is a
        # target; SAE FVU not below 1 and MIG not above the shuffled floor (all but the
        # untrained network)
        l0, recon, mig_end = (c["l0_final"]["mean"], c["recon_final"]["mean"],
                              c["mig_mean_end"]["mean"])
        fvu = (c.get("sae_fvu_final") or {}).get("mean")
        want = ((["recon_not_below_mean_image"] if recon >= RECON_FLOOR else [])
                + (["l0_misses_k"] if c["method"] in ("topk", "l1", "topk_fixed")
                   and abs(l0 - KS[-1]) > 0.1 * KS[-1] else [])
                + (["sae_fvu_not_below_1"] if c["method"] != "untrained"
                   and fvu is not None and fvu >= 1 else [])
                + (["mig_not_above_shuffled"] if c["method"] != "untrained"
                   and mig_end <= floors[c["dataset"]]["mig_shuffled"] else []))
        assert c["flags"] == want, name
        assert set(c["flags"]) <= set(FLAGS)
        assert c["flags"] == cell_flags(c, floors[c["dataset"]])
        assert (c["seeds"], c["epochs"], c["k_final"]) == ([0, 1], EPOCHS, KS[-1])
        first = [0.01 * (1 + s + di) for s in SEEDS]
        last = [0.01 * (1 + s + 2 * (EPOCHS - 1) + di) for s in SEEDS]
        for key, values in (("mig_mean_start", first), ("mig_mean_end", last),
                            ("l0_final", [KS[-1] - 0.25 * s - 0.5 * (mi % 2) for s in SEEDS])):
            assert c[key]["values"] == pytest.approx(values), (name, key)
            assert c[key]["mean"] == pytest.approx(np.mean(values))
            assert c[key]["std"] == pytest.approx(np.std(values, ddof=1))
        if c["method"] == "dense":
            assert "dead_final" not in c
            continue
        for ti, t in enumerate(TAU_KEYS):
            dead = [100 * _dead(di, mi, s, EPOCHS - 1)[ti].mean() for s in SEEDS]
            assert c["dead_final"][t]["values"] == pytest.approx(dead)
            assert c["dead_final"][t]["std"] == pytest.approx(np.std(dead, ddof=1))
            rare = [100 * np.mean(canned_counts(di, mi, s, EPOCHS - 1)[ti] < 4) for s in SEEDS]
            assert c["rare_final"][t]["mean"] == pytest.approx(np.mean(rare))
        # revived during the schedule: dead at some epoch, firing at a later one
        for si, s in enumerate(SEEDS):
            dead = np.stack([_dead(di, mi, s, e) for e in range(EPOCHS)])  # [E, T, U]
            before = np.logical_or.accumulate(dead, axis=0)[:-1]
            expect = (before & ~dead[1:]).any(axis=0).sum(axis=1)
            got = [c["revived_during_schedule"][t][si] for t in TAU_KEYS]
            assert got == expect.tolist(), (name, s)
        coef = c["l1_coef_final"]
        assert (coef is None) == (c["method"] != "l1")
        if coef:
            assert coef["values"] == pytest.approx([0.01 * (1 + s) * EPOCHS for s in SEEDS])
    ratios = results["summary"]["shapes3d_over_dsprites"]
    assert list(ratios) == ["topk"]  # the L1 cells are not evidence: no ratio
    for m, r in ratios.items():
        for t in TAU_KEYS:
            a, b = cells[f"dsprites-{m}"]["dead_final"][t], cells[f"shapes3d-{m}"]["dead_final"][t]
            va, vb = np.asarray(a["values"]), np.asarray(b["values"])
            expect = vb.mean() / va.mean()
            rel = np.hypot(va.std(ddof=1) / np.sqrt(2) / va.mean(),
                           vb.std(ddof=1) / np.sqrt(2) / vb.mean())
            assert r[t]["ratio"] == pytest.approx(expect) and r[t]["se"] == pytest.approx(
                expect * rel)
    # death epochs: the epoch each unit's final dead streak began, -1 if alive at the end
    for run in results["runs"]:
        if run["method"] == "dense":
            assert "death_epoch" not in run
            continue
        di, mi = ("dsprites", "shapes3d").index(run["dataset"]), ARMS.index(run["method"])
        dead = np.stack([_dead(di, mi, run["seed"], e) for e in range(EPOCHS)])
        streak = np.flip(np.logical_and.accumulate(np.flip(dead, 0), axis=0), 0)  # dead from e on
        expect = np.where(streak[-1], np.argmax(streak, axis=0), -1)
        assert [run["death_epoch"][t] for t in TAU_KEYS] == expect.tolist()
    assert results["paper"]["dead_at_k50_percent"]["shapes3d-l1"] == {"mean": 90.6, "std": 0.5}


def test_report_from_canned_records(canned, tmp_path):
    results = canned
    figs = write_plots(results, tmp_path)
    for f, _ in figs:
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG", f
    report = collapse_render.report_markdown(results, figs)
    # The text as the report had it before its template (arXiv 2603.18056 cited for the paper's
    # figures); regenerate this file on purpose only when the report's wording changes.
    assert report == (HERE / "collapse_canned_report.md").read_text()
    cells = results["summary"]["cells"]
    dt, dl = cells["dsprites-topk"]["dead_final"], cells["dsprites-l1"]["dead_final"]
    row = (f"| dsprites | Top-k | 34.4 ± 0.9 | {dt['0']['mean']:.1f} ± {dt['0']['std']:.1f} | "
           f"{dt['0.01']['mean']:.1f} ± {dt['0.01']['std']:.1f} |")
    assert row in report
    rv = cells["dsprites-l1"]["revived_during_schedule"]["0"]
    assert ("| dsprites | L1 | " + " | ".join(f"{dl[t]['mean']:.1f} ± {dl[t]['std']:.1f}"
                                              for t in TAU_KEYS)) in report
    assert f" | {rv} |\n" in report
    r = results["summary"]["shapes3d_over_dsprites"]["topk"]["0"]
    assert f"| Top-k | 1.8x | {r['ratio']:.2f} ± {r['se']:.2f} |" in report
    # flagged cells say so in their row and stay out of the comparison with the paper
    assert "| L1 (not evidence) |" in report and "**not evidence**: L0 misses k" in report
    paper_rows = report.split("## The paper beside this run")[1].split("##")[0]
    assert "| dsprites | Top-k | 34.4" in paper_rows and "| L1 |" not in paper_rows
    assert "replication of arXiv 2603.18056 at small scale" in report.splitlines()[0]
    assert "REFERENCE.md" not in report and "DESIGN.md" not in report
    # without Shapes3D there is no ratio section, without sparse cells no unit section
    one = {**results, "summary": {**results["summary"], "shapes3d_over_dsprites": {}}}
    assert "## Complexity scaling" not in collapse_render.report_markdown(one, figs)
    dense = {n: c for n, c in results["summary"]["cells"].items() if c["method"] == "dense"}
    text = collapse_render.report_markdown(
        {**results, "summary": {**results["summary"], "cells": dense,
                                "shapes3d_over_dsprites": {}}}, figs)
    assert "## What the surviving units" not in text and "| dsprites | dense VAE |" in text


def test_revival_continues_the_recorded_sparse_runs_at_the_final_k(canned):
    results = canned
    cfg = revival.revival_config(results["config"], 5)
    assert cfg.cells() == [(d, m) for d in ("dsprites", "shapes3d") for m in ("topk", "l1")]
    for d, m in cfg.cells():  # each revival run is its collapse run's config, continued
        want = dict(results["config"]["cells"][f"{d}-{m}"], epochs=5)
        want["schedule"] = {**want["schedule"], "start": KS[-1], "end": KS[-1], "length": 1}
        assert to_dict(cfg.train_config(d, m)) == want
    assert revival.revival_config(results["config"], None).train["epochs"] == 2  # the preset's


# --------------------------------------------------------------------------- end to end
# One dataset, both methods (the only test that trains the L1 arm end to end), one seed, no
# baseline (the engine's tests train the dense VAE; the canned grid covers its rows): 2 epochs
# of 2 steps, 32 units, batch 8, 64 evaluation samples (the sizes of the engine tests' tiny run).
TINY_ARGV = ["--preset", "smoke", "--datasets", "dsprites", "--methods", "topk", "l1",
             "--no-baseline", "--seeds", "1", "--epochs", "2", "--warmup-epochs", "1",
             "--steps-per-epoch", "2", "--source", "procedural", "--no-tensorboard",
             *[a for kv in ("num_units=32", "schedule.start=32", "schedule.end=8",
                            "schedule.length=2", "batch_size=8", "eval_size=64",
                            "eval_batch=32", "final_eval_size=96", "log_every=2")
               for a in ("--set", kv)]]
TINY_MAIN = ["dsprites-topk", "dsprites-l1"]
TINY_CELLS = ["dsprites-warmup", *TINY_MAIN, "dsprites-untrained", "dsprites-relu_no_penalty",
              "dsprites-topk_fixed"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("collapse") / "study"
    assert collapse.main(["--out", str(out), *TINY_ARGV]) == 0
    return out


@pytest.mark.slow
def test_tiny_study_end_to_end(tiny_study):
    out = tiny_study
    res = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    pngs = ["dead_fraction_dsprites.png", "mig.png", "k_schedule.png", "alignment.png",
            "firing_density.png", "traversals.png"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(pngs)
    for png in pngs:
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"]({png})" in report
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(TINY_CELLS)
    assert all((out / "runs" / c / "DONE").exists() for c in TINY_CELLS)
    cells = res["summary"]["cells"]
    assert list(cells) == TINY_CELLS and len(res["runs"]) == len(TINY_CELLS)
    assert res["data"]["dsprites"]["source"] == "procedural"
    assert res["eval_size_final"] == 96 and res["summary"]["floors"]["dsprites"][
        "recon_mean_image"] > 0
    assert list(res["summary"]["controls"]["dsprites"]) == list(CONTROLS)
    for name, c in cells.items():
        epochs = {"dsprites-warmup": 1, "dsprites-untrained": 1}.get(name, 2)
        k = 32 if name in ("dsprites-warmup", "dsprites-relu_no_penalty") else 8
        assert (c["epochs"], c["k_final"], c["seeds"]) == (epochs, k, [0]), name
        # four steps learn nothing: every cell is flagged, none is evidence
        assert "recon_not_below_mean_image" in c["flags"], name
        assert c["eval_size_final"] == (64 if name == "dsprites-warmup" else 96)
        for key in ("mig_mean_start", "mig_mean_end"):
            assert all(0.0 <= v <= 1.0 for v in c[key]["values"]), (name, key)
        dead = [c["dead_final"][t]["mean"] for t in TAU_KEYS]
        assert all(0.0 <= d <= 100.0 for d in dead)
        assert dead == sorted(dead), "a higher threshold can only find more dead units"
        if c["method"] in ("topk", "topk_fixed", "untrained"):  # exact Top-k: at most k fire
            assert c["l0_final"]["mean"] <= 8.0 + 1e-6
        assert (c["l1_coef_final"] is not None) == (c["method"] == "l1")
    assert "not evidence" in report and "No cell of this run is evidence" in report
    # the sparse arms and the trained controls start from the warm-up's checkpoint
    warm = res["runs"][0]["epochs"][-1]["step"]
    for run in res["runs"]:
        if run["method"] in ("topk", "l1", "relu_no_penalty", "topk_fixed"):
            assert run["epochs"][0]["step"] == warm + 2, run["cell"]
    # per-epoch records hold what the study measures every epoch
    for run in res["runs"]:
        rec = run["epochs"][-1]
        keys = {"k", "eval", "mig_mean", "eval_size", "mig_code", "dead_fraction", "firing",
                "alignment", "firing_counts", *(["l1_coef"] if run["method"] == "l1" else [])}
        assert keys <= set(rec), (run["cell"], keys - set(rec))
        assert set(rec["firing"]) >= set(TAU_KEYS) and len(rec["firing_counts"]["0"]) == 32
    # the recorded configs are the ones the study trained
    cfg = collapse.config_from_args(collapse.build_parser().parse_args(
        ["--out", str(out), *TINY_ARGV]))
    assert res["config"] == json.loads(json.dumps(collapse.config_dict(cfg)))
    for name in TINY_CELLS:
        on_disk = json.loads((out / "runs" / name / "config.json").read_text())
        assert on_disk == res["config"]["cells"][name]
    # the report is a function of results.json: re-rendered, it is the same text
    figs = re.findall(r"^!\[(.*)\]\((.*)\)$", report, re.M)
    assert collapse_render.report_markdown(res, [(f, c) for c, f in figs]) == report
    dt = cells["dsprites-topk"]["dead_final"]["0"]
    assert (f"| dsprites | Top-k (not evidence) | {dt['mean']:.1f} ± {dt['std']:.1f} |"
            in report)


@pytest.mark.slow
def test_resume_of_a_finished_study_retrains_nothing(tiny_study, capsys):
    out = tiny_study
    before = json.loads((out / "results.json").read_text())
    mtimes = {c: (out / "runs" / c / "metrics.jsonl").stat().st_mtime_ns for c in TINY_CELLS}
    assert collapse.main(["--out", str(out), *TINY_ARGV, "--resume"]) == 0
    assert "dsprites-l1: finished earlier, 2 records" in capsys.readouterr().out
    assert {c: (out / "runs" / c / "metrics.jsonl").stat().st_mtime_ns
            for c in TINY_CELLS} == mtimes
    after = json.loads((out / "results.json").read_text())
    assert after["summary"] == before["summary"] and after["runs"] == before["runs"]


@pytest.mark.slow
def test_revival_continues_the_tiny_study(tiny_study, tmp_path):
    out, out2 = tiny_study, tmp_path / "revival"
    res = json.loads((out / "results.json").read_text())
    assert revival.main(["--from", str(out), "--out", str(out2), "--epochs", "1",
                         "--no-tensorboard"]) == 0
    rv = json.loads((out2 / "results.json").read_text())
    assert list(rv["cells"]) == TINY_MAIN
    assert (rv["epochs"], rv["k"]) == (1, 8)
    cells = res["summary"]["cells"]
    for name, c in rv["cells"].items():
        start = np.asarray(c["dead_at_start"]["0"]["values"])
        np.testing.assert_array_equal(
            start, [round(32 * s / 100) for s in cells[name]["dead_final"]["0"]["values"]])
        assert all(0 <= v <= s for v, s in zip(c["ever_revived"]["0"]["values"], start))
        for t in TAU_KEYS:  # only units dead at the start can come back
            assert c["ever_revived"][t]["mean"] <= c["dead_at_start"][t]["mean"]
        recs = [json.loads(x) for x in
                (out2 / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert [(r["epoch"], r["k"]) for r in recs] == [(0, 8)]
    assert (out2 / "revival.png").read_bytes()[:4] == b"\x89PNG"
    report = (out2 / "report.md").read_text()
    assert report.startswith("# Revival: more epochs at k = 50") and "](revival.png)" in report
    assert revival.report(rv["cells"], rv) == report


GROUP = "dsprites-topk+l1+relu_no_penalty+topk_fixed"


@pytest.mark.slow
def test_grouped_cells_train_what_the_separate_cells_do(tiny_study, tmp_path):
    """``--group on``: Top-k, L1, the ReLU without a penalty (``topk@32``: k = N) and Top-k
    at the fixed k = 8 (``topk@8``) in one program from the shared warm-up, their records
    split back into the four cells, which match the separate cells; a revival of the grid
    finds the group's runs. Training only: the report is the same code as ungrouped. The
    members are vmapped, as on an accelerator (CPU's default unrolls them: four copies of
    the step to compile; the engine's tests check both seed maps)."""
    out = tmp_path / "grouped"
    cfg = collapse.config_from_args(collapse.build_parser().parse_args(
        ["--out", str(out), *TINY_ARGV, "--group", "on", "--set", "seed_map=vmap"]))
    assert cfg.unit_config("dsprites", tuple(GROUP[9:].split("+"))).group == (
        "l1", "topk@32", "topk@8")
    for cell in ("dsprites-warmup", "dsprites-untrained"):  # the same runs: not trained again
        shutil.copytree(tiny_study / "runs" / cell, out / "runs" / cell)
    records, _, status = collapse.run_cells(cfg, out, resume=True, tensorboard=False)
    assert status == "done"
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        GROUP, "dsprites-untrained", "dsprites-warmup"]
    recs = [json.loads(x) for x in
            (out / "runs" / GROUP / "metrics.jsonl").read_text().splitlines()]
    members = ("topk", "l1", "topk@32", "topk@8")
    assert [(r["epoch"], r["run"]) for r in recs] == [
        (e, f"{m}_seed_0") for e in (0, 1) for m in members]
    for r in recs:  # the penalty and its controller are the L1 run's alone
        assert (r["l1_coef"] > 0, r["l0_ema"] is not None) == (r["member"] == "l1",) * 2
    for cell in TINY_CELLS[1:3] + TINY_CELLS[4:]:
        sep = [json.loads(x) for x in
               (tiny_study / "runs" / cell / "metrics.jsonl").read_text().splitlines()]
        assert [r["method"] for r in records[cell]] == [sep[0]["method"]] * 2
        for a, b in zip(records[cell], sep):
            assert (a["step"], a["k"], a["firing_counts"]) == (b["step"], b["k"],
                                                               b["firing_counts"]), cell
            for term in ("recon", "kl", "l0", "sae"):
                assert a["eval"][term] == pytest.approx(b["eval"][term], rel=1e-3), term
    recorded = json.loads(json.dumps(collapse.config_dict(cfg)))
    assert (recorded["group"], recorded["group_size"]) == ("on", 0)
    again = collapse.revival_config(recorded, 1)
    assert again.units() == [("dsprites-topk+l1", "dsprites", ("topk", "l1"))]
    source = collapse.study_config(recorded)
    assert source.unit_of("dsprites", "l1") == (GROUP, tuple(GROUP[9:].split("+")))
    assert collapse.cell_records(source, out, "dsprites", "l1") == records["dsprites-l1"]
    older = {k: v for k, v in recorded.items() if k not in ("group", "group_size")}
    assert collapse.revival_config(older, 1).units()[0][0] == "dsprites-topk"
    two = {**recorded}  # a grouped study from before group sizes: Top-k and L1 only
    del two["group_size"]
    assert collapse.study_config(two).units()[1][0] == "dsprites-topk+l1"


def test_group_size_packs_whole_arms_in_cell_order():
    def units(**kw):
        cfg = collapse.preset_config("smoke", datasets=("dsprites",), num_seeds=3,
                                     warmup_epochs=1, group="on", **kw)
        return [u[0][9:] for u in cfg.units()]

    assert units() == ["warmup", "topk+l1+relu_no_penalty+topk_fixed", "untrained", "dense"]
    assert units(group_size=9) == ["warmup", "topk+l1+relu_no_penalty", "untrained",
                                   "topk_fixed", "dense"]
    assert units(group_size=6) == ["warmup", "topk+l1", "untrained",
                                   "relu_no_penalty+topk_fixed", "dense"]
    assert units(group_size=5) == ["warmup", "topk", "l1", "untrained", "relu_no_penalty",
                                   "topk_fixed", "dense"]  # one arm each: no group
    cold = collapse.preset_config("smoke", datasets=("dsprites",), group="on")  # no warm-up
    assert cold.member_of("dsprites", "relu_no_penalty") == "topk@500"
    assert cold.member_of("dsprites", "untrained") is None
    from experiments.bench.train import study_group  # the bench times the paper's group
    paper = collapse.preset_config("paper", datasets=("dsprites",), group="on")
    arms = next(u[2] for u in paper.units() if len(u[2]) > 1)
    assert paper.unit_config("dsprites", arms).group == study_group()
    with pytest.raises(ConfigError, match="group_size must be an integer >= 0"):
        collapse.preset_config("smoke", group_size=-1)


@pytest.mark.parametrize("method,fvu,flagged", [("topk", 1.0, True), ("topk", 0.99, False),
                                                ("whiten", 20.1, True), ("untrained", 3.0, False),
                                                ("dense", None, False)])
def test_a_sparse_layer_that_does_not_beat_its_inputs_mean_is_not_evidence(method, fvu,
                                                                            flagged):
    floors = {"recon_mean_image": 571.0, "mig_shuffled": 0.002}
    cell = {"method": method, "k_final": 50, "targets_k": False,
            "recon_final": {"mean": 134.7}, "l0_final": {"mean": 50.0},
            "mig_mean_end": {"mean": 0.04},
            "sae_fvu_final": None if fvu is None else {"mean": fvu}}
    flags = cell_flags(cell, floors)
    assert ("sae_fvu_not_below_1" in flags) == flagged
    assert is_evidence({"flags": flags}) == (not flagged)


def test_fill_device_packs_the_arms_that_fit_and_a_resume_reads_them_back(tmp_path,
                                                                           monkeypatch):
    from sparsejax.train import memory

    measured = []
    monkeypatch.setattr(memory, "step_bytes", lambda t, ds: measured.append(t) or 100)
    cfg = collapse.preset_config("smoke", datasets=("dsprites",), num_seeds=3,
                                 warmup_epochs=1, group="on")
    # 0.7 of 300 bytes holds two arms of 100: Top-k + L1, then the two controls
    two = collapse.fill_device(cfg, tmp_path, free_bytes=300)
    assert two.group_size == 6 and [u[0][9:] for u in two.units()] == [
        "warmup", "topk+l1", "untrained", "relu_no_penalty+topk_fixed", "dense"]
    assert [(t.method, t.group, t.num_seeds) for t in measured] == [("topk", (), 3)]
    saved = json.loads((tmp_path / collapse.FILL_FILE).read_text())
    assert (saved["group_size"], saved["arm_bytes"], saved["free_bytes"]) == (6, 100, 300)
    # a resume (another device, more memory) packs the same runs, measuring nothing
    assert collapse.fill_device(cfg, tmp_path, free_bytes=10**9).group_size == 6
    assert len(measured) == 1
    assert collapse.fill_device(cfg, free_bytes=10**9).group_size == 12  # at most all arms
    assert collapse.fill_device(cfg, free_bytes=10).group_size == 3  # at least one arm
    monkeypatch.setattr(memory, "device_free_bytes", lambda: None)  # as XLA:CPU reports
    assert collapse.fill_device(cfg, tmp_path / "x") == cfg
    for kept in (dataclasses.replace(cfg, group="off"), dataclasses.replace(cfg, group_size=9)):
        assert collapse.fill_device(kept, tmp_path / "x", free_bytes=300) == kept
    assert not (tmp_path / "x").exists()
