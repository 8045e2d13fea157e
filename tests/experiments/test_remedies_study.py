"""The remedies study: bad input refused before work, and one tiny study end to end."""

import json

import pytest

from experiments import remedies
from sparsejax.metrics import TAU_KEYS


@pytest.mark.parametrize("argv,message", [
    (["--remedies", "ghost_grads"], "remedies ['ghost_grads']: expected a non-empty subset"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--datasets", "mnist"], "datasets ['mnist']"),
    (["--seeds", "0"], "num_seeds must be >= 1"),
])
def test_bad_input_exits_2_before_work(tmp_path, capsys, argv, message):
    argv = ["--out", str(tmp_path / "s"), *(["--preset", "smoke"] if "--preset" not in argv
                                           else []), *argv]
    assert remedies.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s" / "runs").exists()


def test_arms_differ_from_plain_topk_only_in_their_remedy():
    cfg = remedies.preset_config("small").grid
    base = cfg.train_config("dsprites", "topk").replace(remedy={}, sparse_init="default")
    long = cfg.train_config("dsprites", "schedule_long")
    assert long.schedule.length == 2 * base.schedule.length
    # the held part at the final k is as long as plain Top-k's
    assert long.epochs - long.schedule.length == base.epochs - base.schedule.length
    assert cfg.train_config("dsprites", "batchtopk").method == "batchtopk"
    assert cfg.train_config("dsprites", "auxk").remedy.k_aux > 0
    assert cfg.train_config("dsprites", "whiten").sparse_input == "whiten"
    for arm in ("tied_init", "schedule_cosine", "topk_norelu"):
        t = cfg.train_config("dsprites", arm)
        assert t.seeds == base.seeds and t.learning_rate == base.learning_rate
        assert cfg.warm_started(arm)
    follow = remedies.preset_config("small").follow_up.train_config("dsprites", "tied_init")
    assert follow.sparse_init == "default" and follow.schedule.start == follow.schedule.end


# the smoke preset cut to the collapse study's tiny run (the same programs: 32 units, k 32 -> 8
# over 2 epochs of 2 steps, batch 8, 64 evaluation samples, 96 at the end)
TINY = dict(num_units=32, schedule=dict(start=32, end=8, length=2), epochs=2, steps_per_epoch=2,
            batch_size=8, eval_size=64, eval_batch=32, final_eval_size=96, log_every=2,
            conv_impl="auto")


def test_tiny_study_end_to_end(tmp_path):
    cfg = remedies.preset_config("smoke", remedies=("tied_init", "posthoc_sae"), train=TINY)
    out = tmp_path / "study"
    assert remedies.execute(cfg, out, resume=False, command="test", tensorboard=False) == 0
    res = json.loads((out / "results.json").read_text())
    entries = res["summary"]["remedies"]
    assert [e["remedy"] for e in entries] == ["topk", "l1", "tied_init", "posthoc_sae"]
    post = entries[-1]  # the SAE on the frozen dense VAE: the sparse layer's width and final k
    assert (out / "runs" / "dsprites-posthoc_sae" / "records.json").exists()
    assert post["l0_final"]["mean"] <= 8 + 1e-6
    for e in entries:
        assert e["dataset"] == "dsprites"
        assert list(e["dead_final"]) == list(TAU_KEYS)
        assert e["recon_final"]["mean"] > 0 and "mean" in e["mig_mean_end"]
    # the smoke run learns nothing: every trained cell is flagged, none read as evidence
    assert not any(e["evidence"] for e in entries)
    assert "No verdict" in res["summary"]["verdict"]["dsprites"]["text"]
    blind = res["summary"]["mig_blind_spot"]["dsprites"]["rows"]
    assert blind["code + 100 constant units"]["units"] == blind["code"]["units"] + 100
    assert blind["code + 100 constant units"]["mig"] == pytest.approx(blind["code"]["mig"],
                                                                       abs=1e-6)
    report = (out / "report.md").read_text()
    assert "## Verdict" in report and "MIG's blind spot" in report
    for png in ("dead_vs_k.png", "pareto.png", "firing_density_1.png"):
        assert (out / png).stat().st_size > 0
    # a resumed study finds every cell done and writes the same summary
    assert remedies.execute(cfg, out, resume=True, command="test", tensorboard=False) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["summary"]["remedies"] == entries


def _cell(dead, recon=130.0, mig=0.03, flags=()):
    return {"dead_final": {"0": {"mean": dead}}, "recon_final": {"mean": recon},
            "mig_mean_end": {"mean": mig}, "flags": list(flags)}


def _entry(remedy, dead, recon=130.0, mig=0.03, evidence=True):
    return {"remedy": remedy, "dead_final": {"0": {"mean": dead}},
            "recon_final": {"mean": recon}, "mig_mean_end": {"mean": mig},
            "evidence": evidence}


@pytest.mark.parametrize("case", ["inside", "posthoc_only", "none", "no_topk"])
def test_verdict_separates_remedies_in_the_hybrid_from_the_confound(case):
    from experiments.remedies_analysis import verdict

    cells = {"d-topk": _cell(55.0, flags=["l0_misses_k"] if case == "no_topk" else ()),
             "d-untrained": _cell(5.0), "d-relu_no_penalty": _cell(42.0)}
    entries = [_entry("topk", 55.0), _entry("whiten", 40.0, evidence=False),  # not evidence
               _entry("auxk", 42.0, recon=140.0),  # at the level, 7.7% worse recon
               _entry("tied_init", 41.9 if case == "inside" else 48.0, recon=132.0,
                      mig=0.02),  # within 2% and 0.05
               _entry("posthoc_sae", 12.0 if case != "none" else 50.0, recon=115.0)]
    v = verdict(entries, cells, "d", "0")
    if case == "no_topk":
        assert v["text"].startswith("No verdict on d") and v["passing"] == []
        return
    assert v["level"] == 42.0
    assert v["checked"]["whiten"] == {"evidence": False, "dead_at_level": True,
                                      "equal_recon": True, "equal_mig": True}
    assert not v["checked"]["auxk"]["equal_recon"]
    want = {"inside": ["tied_init", "posthoc_sae"], "posthoc_only": ["posthoc_sae"],
            "none": []}[case]
    assert v["passing"] == want
    assert v["passing_in_hybrid"] == [r for r in want if r != "posthoc_sae"]
    if case == "none":
        assert "no remedy keeps the dead-unit rate" in v["text"]
        assert "whiten, auxk reach(es) the level" in v["text"]
    else:
        assert "is not fundamental in this setting" in v["text"]
        assert ("no remedy inside the hybrid passes" in v["text"]) == (case == "posthoc_only")
