"""The flagship study: config checks, and the smoke preset end to end (+ resume, revival)."""

import json

import numpy as np
import pytest

from experiments import collapse, revival
from experiments.collapse_report import mean_std, ratio_with_se
from sparsejax.train import ConfigError


@pytest.mark.parametrize("argv,message", [
    (["--datasets", "mnist"], "datasets ['mnist']: expected a non-empty subset"),
    (["--methods", "dense"], "expected a subset of ['topk', 'l1']"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--epochs", "2"], "the k schedule takes 3 epochs but the run has only 2"),
    (["--set", "num_units=40"], "schedule.start = 500 is out of range"),
    (["--seeds", "0"], "num_seeds must be >= 1"),
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
    assert cfg.cells() == [("dsprites", "topk"), ("dsprites", "l1"), ("shapes3d", "topk"),
                           ("shapes3d", "l1"), ("dsprites", "dense"), ("shapes3d", "dense")]
    t = cfg.train_config("shapes3d", "l1")
    assert (t.schedule.start, t.schedule.end, t.schedule.length, t.epochs) == (500, 50, 50, 50)
    assert t.num_seeds == 3 and t.steps_per_epoch is None  # one pass over the dataset
    with pytest.raises(ConfigError):
        collapse.preset_config("smoke", revival_epochs=0)


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


@pytest.mark.slow
def test_smoke_study_resume_and_revival(tmp_path):
    out = tmp_path / "study"
    assert collapse.main(["--preset", "smoke", "--out", str(out), "--source", "procedural",
                          "--no-tensorboard"]) == 0
    res = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for png in ("dead_fraction_dsprites.png", "dead_fraction_shapes3d.png", "mig.png",
                "k_schedule.png", "alignment.png", "firing_density.png", "traversals.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"]({png})" in report
    cells = res["summary"]["cells"]
    assert set(cells) == {"dsprites-topk", "dsprites-l1", "shapes3d-topk", "shapes3d-l1",
                          "dsprites-dense", "shapes3d-dense"}
    assert len(res["runs"]) == 6 * 2 and res["data"]["dsprites"]["source"] == "procedural"
    for name, c in cells.items():
        assert c["epochs"] == 3 and c["k_final"] == 50
        for key in ("mig_mean_start", "mig_mean_end"):
            assert all(0.0 <= v <= 1.0 for v in c[key]["values"]), (name, key)
        if c["method"] == "dense":
            continue
        dead = [c["dead_final"][t]["mean"] for t in ("0", "1e-06", "0.001", "0.01")]
        assert all(0.0 <= d <= 100.0 for d in dead)
        assert dead == sorted(dead), "a higher threshold can only find more dead units"
        if c["method"] == "topk":  # exact Top-k: at most k units fire
            assert c["l0_final"]["mean"] <= 50.0 + 1e-6
    # the report quotes the paper and our numbers from results.json
    assert "| dsprites | Top-k | 34.4 ± 0.9 |" in report
    dt = cells["dsprites-topk"]["dead_final"]["0"]
    assert f"{dt['mean']:.1f} ± {dt['std']:.1f}" in report
    # per-epoch records hold what the study measures every epoch
    rec = res["runs"][0]["epochs"][-1]
    for key in ("k", "eval", "mig_mean", "mig_code", "dead_fraction", "firing", "alignment",
                "firing_counts"):
        assert key in rec, key

    # --resume on a finished study retrains nothing and reproduces the numbers
    mtime = (out / "runs" / "dsprites-topk" / "metrics.jsonl").stat().st_mtime_ns
    assert collapse.main(["--preset", "smoke", "--out", str(out), "--source", "procedural",
                          "--resume", "--no-tensorboard"]) == 0
    assert (out / "runs" / "dsprites-topk" / "metrics.jsonl").stat().st_mtime_ns == mtime
    res2 = json.loads((out / "results.json").read_text())
    assert res2["summary"]["cells"] == res["summary"]["cells"]

    # revival: one more epoch at k = 50 from every sparse run's last checkpoint
    out2 = tmp_path / "revival"
    assert revival.main(["--from", str(out), "--out", str(out2), "--epochs", "1",
                         "--no-tensorboard"]) == 0
    rv = json.loads((out2 / "results.json").read_text())
    assert set(rv["cells"]) == {"dsprites-topk", "dsprites-l1", "shapes3d-topk", "shapes3d-l1"}
    for name, c in rv["cells"].items():
        start = np.asarray(c["dead_at_start"]["0"]["values"])
        np.testing.assert_array_equal(
            start, [round(500 * s / 100) for s in cells[name]["dead_final"]["0"]["values"]])
        assert all(0 <= v <= s for v, s in zip(c["ever_revived"]["0"]["values"], start))
    assert (out2 / "revival.png").exists() and "Revival" in (out2 / "report.md").read_text()
