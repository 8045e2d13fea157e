"""``python -m experiments sae``: the smoke study end to end, resume, and config errors."""

import json

import pytest

from experiments import sae as study


@pytest.mark.slow
def test_smoke_study_recovers_features_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert study.main(["--preset", "smoke", "--out", str(out), "--epochs", "2",
                       "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["recovery"]["recovered_fraction"] > 0.8, res["recovery"]  # 0.90 at 2 epochs
    assert (out / "report.md").read_text().startswith("# SAE on synthetic activations")
    assert (out / "sae_smoke.png").stat().st_size > 1000
    assert not list(out.glob("*.tmp"))
    steps = res["history"]["steps"]
    # resume: one more epoch continues the step count and the history
    assert study.main(["--preset", "smoke", "--out", str(out), "--epochs", "3", "--resume",
                       "--no-progress"]) == 0
    res2 = json.loads((out / "results.json").read_text())
    assert res2["resumed_from_epoch"] == 2
    assert res2["history"]["steps"][:len(steps)] == steps
    assert res2["history"]["steps"][-1] == 3 * (65536 // 512)
    assert "recovered" in capsys.readouterr().out
    # another config is refused on resume, and a finished run is not overwritten
    assert study.main(["--preset", "smoke", "--out", str(out), "--seed", "1", "--resume",
                       "--no-progress"]) == 2
    assert "cannot resume: the config differs from the saved run in seed" \
        in capsys.readouterr().err
    assert study.main(["--preset", "smoke", "--out", str(out), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("activation", ["batchtopk", "jumprelu"])
def test_remedy_activations_run_and_report_themselves(activation, tmp_path):
    out = tmp_path / activation
    assert study.main(["--preset", "smoke", "--out", str(out), "--epochs", "1",
                       "--activation", activation, "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert res["config"]["activation"] == activation and res["config"]["k_aux"] == 32
    assert f"- SAE: {activation}, N = 512" in report and "no AuxK" in report
    if activation == "batchtopk":  # k per vector on average, exactly, in training
        assert res["final"]["l0"] == 8.0
    else:  # the L0 penalty has pulled L0 down from about N / 2 at step 0
        assert 0 < res["final"]["l0"] < 64, res["final"]


def test_bad_config_and_resume_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="k=600 must be <= n_latents=512"):
        study.StudyConfig(**{**study.PRESETS["smoke"].__dict__, "k": 600})
    assert study.main(["--preset", "smoke", "--out", str(tmp_path), "--impl", "fast"]) == 2
    assert "--impl 'fast'" in capsys.readouterr().err
    assert study.main(["--preset", "smoke", "--out", str(tmp_path), "--activation",
                       "gelu"]) == 2
    assert "activation='gelu' must be one of ('topk', 'relu', 'batchtopk', 'jumprelu')" \
        in capsys.readouterr().err
    assert study.main(["--preset", "smoke", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
