"""A tiny in-process run of the attribution study (a few methods, two images)."""

import dataclasses
import json

import numpy as np
import pytest

from experiments import attribution as study


def test_tiny_run_writes_table_ranking_and_grid(tmp_path):
    cfg = dataclasses.replace(
        study.PRESETS["smoke"], train_images=64, train_steps=3, batch_size=16, width=2,
        n_eval=8, n_attr=2, shap_samples=8, ig_steps=2, curve_steps=2, road_steps=2,
        draws=2, sens_draws=1, methods=("lrp_zplus", "sobel"))  # the rest: tests/interp
    res = study.run(cfg, "tiny", tmp_path, log=lambda *_: None)
    task = res["tasks"]["dsprites_shape"]
    assert set(task["table"]) == set(cfg.methods)
    from sparsejax.interp.faithfulness import METRICS

    for row in task["table"].values():
        assert set(row) == set(METRICS)
        assert 0 <= row["mass_accuracy"] <= 1 and 0 <= row["rank_accuracy"] <= 1
    assert sorted(n for n, _ in task["ranking"]) == sorted(cfg.methods)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["tasks"]["dsprites_shape"]["ranking"] == [list(p) for p in task["ranking"]]
    report = (tmp_path / "report.md").read_text()
    assert "| lrp_zplus |" in report and "Randomisation check" in report
    assert (tmp_path / task["png"]).stat().st_size > 1000


def test_sobel_and_ranking_by_hand():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, :, 2:] = 1.0  # a vertical edge between columns 1 and 2
    mag = np.asarray(study.sobel(x))[0]
    assert np.all(mag[1:-1, 1:3] == 4.0) and np.all(mag[1:-1, 0] == 0.0)
    table = {"a": {m: 1.0 for m in study.RANKED}, "b": {m: 0.0 for m in study.RANKED}}
    # a wins the higher-is-better metrics, b the three lower-is-better ones
    ranking = dict(study.rank_methods(table))
    n_low = sum(1 for m in study.RANKED if m in ("deletion_auc", "road_auc", "infidelity"))
    assert ranking["a"] == pytest.approx((len(study.RANKED) - n_low + 2 * n_low)
                                         / len(study.RANKED))


def test_config_is_validated():
    with pytest.raises(ValueError, match="tasks"):
        dataclasses.replace(study.PRESETS["smoke"], tasks=("nope",))
    with pytest.raises(ValueError, match="methods"):
        dataclasses.replace(study.PRESETS["smoke"], methods=("nope",))
    with pytest.raises(ValueError, match="patch"):
        dataclasses.replace(study.PRESETS["smoke"], patch=7)


def test_hybrid_from_reads_a_trained_run_or_refuses_before_work(tmp_path):
    attribution = study
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        attribution.hybrid_settings(str(run))
    (run / "config.json").write_text(json.dumps(
        {"dataset": "shapes3d", "method": "topk", "num_units": 64,
         "schedule": {"end": 8}}))
    with pytest.raises(ValueError, match="expected a dSprites Top-k or L1 hybrid"):
        attribution.hybrid_settings(str(run))
    (run / "config.json").write_text(json.dumps(
        {"dataset": "dsprites", "method": "l1", "num_units": 64, "placement": "hidden",
         "schedule": {"end": 8}}))
    assert attribution.hybrid_settings(str(run)) == {
        "hybrid_units": 64, "hybrid_k": 8, "hybrid_from": str(run)}
