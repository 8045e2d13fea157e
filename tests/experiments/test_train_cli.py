"""``python -m experiments train``: outputs, resume, and bad arguments refused cleanly."""

import json

import pytest

from experiments import train as train_cli
from experiments.__main__ import main as experiments_main

# the smoke preset cut to seconds (tests/train/conftest.py's tiny config, as flags)
TINY = ["--preset", "smoke", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "8",
        "--set", "num_units=32", "--set", "schedule.start=32", "--set", "schedule.end=8",
        "--set", "schedule.length=2", "--set", "eval_size=64", "--set", "eval_batch=32",
        "--set", "log_every=2"]


def test_train_writes_metrics_checkpoints_plot_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    rc = train_cli.main(["--dataset", "dsprites", "--method", "l1", "--out", str(out), *TINY])
    assert rc == 0
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [0, 1] and recs[0]["method"] == "l1"
    assert recs[1]["l1_coef"] > 0 and recs[1]["l0_ema"] > 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["3", "6"]
    png = out / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "done" and len(results["history"]) == 2
    assert "| epoch |" in (out / "report.md").read_text()
    assert "done: 2 epoch records" in capsys.readouterr().out

    # a second run into the same directory is refused; --resume of a finished run is a no-op
    assert train_cli.main(["--out", str(out), "--method", "l1", *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert train_cli.main(["--out", str(out), "--method", "l1", "--resume", *TINY]) == 0


@pytest.mark.parametrize("args,message", [
    (["--method", "topq"], "unknown method 'topq'"),
    (["--set", "schedule.end=600"], "schedule.end = 600 is out of range"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--set", "units=3"], "unknown config field 'units'"),
])
def test_bad_arguments_are_refused_before_any_work(args, message, tmp_path, capsys):
    assert train_cli.main(["--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_bad_config_from_the_command_line_is_one_clear_line(tmp_path, capsys):
    # through the top-level entry point, as `python -m experiments train ...` runs it
    assert experiments_main(["train", "--dataset", "mnist", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: unknown dataset 'mnist'")
    assert "Traceback" not in err and not (tmp_path / "x").exists()
