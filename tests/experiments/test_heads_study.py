"""``python -m experiments heads``: a tiny study end to end; resume reproduces the straight
run; bad input exits 2 before any work."""

import json

import pytest

from experiments import heads as study
from experiments.errors import run_cli

TINY = ["--preset", "smoke", "--no-progress",
        "--set", "scales=1x2x8", "--set", "seeds=0,1", "--set", "vocab=8",
        "--set", "seq_len=8", "--set", "min_repeat=2", "--set", "batch_size=8",
        "--set", "steps_per_epoch=4", "--set", "scan_steps=2", "--set", "eval_batch=8"]


def _without_times(res):
    return {k: v for k, v in res.items() if k not in ("wall_s", "command")}


@pytest.mark.slow
def test_tiny_study_writes_results_and_resume_reproduces_it(tmp_path, capsys):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert study.main([*TINY, "--out", str(straight), "--set", "epochs=2"]) == 0
    res = json.loads((straight / "results.json").read_text())
    assert len(res["heads"]) == 2
    for e in res["heads"]:
        assert {"layers", "heads", "width", "task", "seed", "max_induction_score"} <= set(e)
        assert (e["layers"], e["heads"], e["width"], e["task"]) == (1, 2, 8, "repeated_tokens")
        assert e["curves"]["steps"] == [4, 8]
        assert 0 <= e["max_induction_score"] <= 1
    assert {e["seed"] for e in res["heads"]} == {0, 1}
    report = (straight / "report.md").read_text()
    assert report.startswith("# Attention heads across scale") and "one-layer control" in report
    for png in ("heads_patterns.png", "heads_curves.png", "heads_scale.png"):
        assert (straight / png).stat().st_size > 1000
    # one epoch, then resumed to two: the same numbers as the straight run
    assert study.main([*TINY, "--out", str(cut), "--set", "epochs=1"]) == 0
    assert study.main([*TINY, "--out", str(cut), "--set", "epochs=2", "--resume"]) == 0
    resumed = json.loads((cut / "results.json").read_text())
    assert _without_times(resumed)["heads"] == _without_times(res)["heads"]
    assert not list(cut.rglob("*.tmp"))
    # an existing study is not overwritten; a changed config is refused on resume
    assert run_cli(study.main, [*TINY, "--out", str(cut), "--set", "epochs=2"]) == 2
    assert "already holds a study" in capsys.readouterr().err
    assert run_cli(study.main, [*TINY, "--out", str(cut), "--set", "lr=0.01",
                                "--set", "batch_size=4", "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--set", "width=3"], "unknown field 'width'"),
    (["--set", "scales=2x3"], "scale (2, 3) must be three integers"),
    (["--set", "scales=2x3x8"], "width 8 must be divisible by heads 3"),
    (["--set", "tasks=copying"], "tasks ('copying',) must be some of"),
    (["--set", "lr=fast"], "--set lr='fast': expected"),
    (["--resume"], "no study in"),
])
def test_bad_input_exits_2_before_work(tmp_path, capsys, args, message):
    out = tmp_path / "x"
    assert run_cli(study.main, ["--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (out / study.RUNS_DIR).exists()


def _entry(layers, heads, task, seed, ctx_loss, frac):
    return {"layers": layers, "heads": heads, "width": 64, "task": task, "seed": seed,
            "induction_onset_step": None, "specialised_fraction": frac,
            "max_induction_score": 0.1, "ctx_loss": ctx_loss}


def test_a_task_no_model_learnt_is_not_evidence():
    """Chance is log(64) = 4.16 nats: a loss of 4.0 has not learnt (>= 0.9 x chance), 1.0 has."""
    entries = [_entry(2, 2, "repeated_tokens", s, 1.0, 0.5) for s in (0, 1)]
    entries += [_entry(2, 4, "repeated_tokens", s, 1.0 + s, 0.25) for s in (0, 1)]
    entries += [_entry(L, 2 * L, "bigram", s, 4.0, 0.0) for L in (2, 3) for s in (0, 1)]
    rows = study.by_scale(entries, vocab=64)
    assert [(r["task"], r["learnt"]) for r in rows] == [
        ("repeated_tokens", 2), ("repeated_tokens", 2), ("bigram", 0), ("bigram", 0)]
    text = study.answer({"config": {"tasks": ["repeated_tokens", "bigram"], "vocab": 64,
                                    "steps_per_epoch": 100}, "by_scale": rows})
    assert "On `bigram` no multi-layer model learnt the task" in text
    assert "not evidence" in text and "On `repeated_tokens` the fraction" in text
