"""Configs are validated before any work starts: clear errors, not tracebacks."""

import json

import pytest

from sparsejax.sparsity.schedules import KSchedule
from sparsejax.train import config as C
from sparsejax.train.config import ConfigError, TrainConfig
from sparsejax.train.seeds import RunSpec


def test_presets_are_valid_and_shaped_as_documented():
    smoke, small, paper = (C.preset(n) for n in ("smoke", "small", "paper"))
    assert smoke.schedule.length == smoke.epochs == 3 and smoke.schedule.start == 500
    assert paper.steps_per_epoch is None and paper.eval_size == 10_000 and paper.epochs == 50
    assert paper.resolved_steps_per_epoch(737_280) == 11_520
    assert small.schedule.end == 50 and small.epochs > small.schedule.length
    assert C.preset("smoke", method="l1", num_seeds=3).seeds == (0, 1, 2)


@pytest.mark.parametrize("overrides,match", [
    (dict(dataset="mnist"), "unknown dataset 'mnist'"),
    (dict(method="topq"), "unknown method"),
    (dict(schedule={"end": 600}), r"schedule.end = 600 is out of range.*1..500"),
    (dict(num_units=40), r"schedule.start = 500 is out of range.*1..40"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(batch_size=-64), "batch_size must be >= 1"),
    (dict(steps_per_epoch=2.5), "steps_per_epoch must be an integer"),
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(thresholds=(0.0, -1.0)), "thresholds"),
    (dict(topk_impl="fast"), "unknown topk_impl"),
    (dict(compute_dtype="float16"), "unknown compute_dtype"),
    (dict(schedule={"kind": "exp"}), "schedule: unknown k schedule kind"),
    (dict(bogus=1), "unknown config field"),
    (dict(method="l1", group=("topk",)), r"method must be one of \['topk'\]"),
    (dict(group=("dense",)), r"group member 'dense': expected one of \['l1'\]"),
    (dict(group=("l1", "l1")), "expected distinct members"),
    (dict(group=("topk",)), "expected distinct members, none the method 'topk'"),
    (dict(group=("topk@x",)), "expected <method>@<k> with k an integer"),
    (dict(group=("topk@0",)), r"its k must be within \[1, num_units=500\]"),
    (dict(group=("topk@501",)), r"its k must be within \[1, num_units=500\]"),
    (dict(group="l1"), "group must be a list of member names"),
    (dict(group=("l1",), topk_relu=False), "needs topk_relu=true"),
    (dict(group=("l1",), remedy={"resample_every": 10}), "not supported in a group"),
])
def test_bad_values_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        C.preset("smoke", **overrides)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        C.preset("huge")


def test_dict_round_trip_and_replace():
    cfg = C.preset("small", method="l1", schedule=KSchedule("cosine", 400, 40, 20))
    again = C.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and isinstance(again, TrainConfig)
    assert cfg.replace(schedule={"end": 20}).schedule == KSchedule("cosine", 400, 20, 20)


def test_a_group_lists_its_runs_method_major():
    cfg = C.preset("smoke", num_seeds=2, seed=3, group=["l1"])  # a JSON list is accepted
    assert cfg.group == ("l1",) and cfg.num_runs == 4
    assert cfg.runs == (("topk", 3), ("topk", 4), ("l1", 3), ("l1", 4))
    assert cfg.run_names == ("topk_seed_3", "topk_seed_4", "l1_seed_3", "l1_seed_4")
    assert cfg.penalised_runs == (False, False, True, True)
    assert C.from_dict(json.loads(cfg.to_json())) == cfg
    alone = C.preset("smoke", method="l1", num_seeds=2)
    assert alone.run_names == ("seed_0", "seed_1") and alone.penalised_runs == (True, True)
    assert cfg.program_key() != cfg.replace(group=()).program_key()


def test_members_at_a_fixed_k_set_their_runs_k():
    cfg = C.preset("smoke", group=("l1", "topk@500", "topk@50", "l1@80"))
    assert cfg.members == ("topk", "l1", "topk@500", "topk@50", "l1@80")
    assert cfg.run_names[2:4] == ("topk@500_seed_0", "topk@50_seed_0")
    assert cfg.run_specs == (RunSpec(False, None), RunSpec(True, None), RunSpec(False, 500),
                             RunSpec(False, 50), RunSpec(True, 80))
    assert [cfg.run_k(i, 123) for i in range(5)] == [123, 123, 500, 50, 80]
    assert C.parse_member("topk@50") == ("topk", 50) and C.parse_member("l1") == ("l1", None)
    assert C.from_dict(json.loads(cfg.to_json())) == cfg


def test_parse_value_from_command_line_strings():
    assert C.parse_value("num_units", "256") == 256
    assert C.parse_value("steps_per_epoch", "none") is None
    assert C.parse_value("schedule.kind", "cosine") == "cosine"
    assert C.parse_value("controller.gain", "0.5") == 0.5
    assert C.parse_value("thresholds", "0,0.01") == (0.0, 0.01)
    assert C.parse_value("group", "l1") == ("l1",)
    with pytest.raises(ConfigError, match="unknown config field"):
        C.parse_value("units", "3")
    with pytest.raises(ConfigError, match="expected a value of type"):
        C.parse_value("epochs", "ten")


def test_learning_rate_that_overflows_float32_is_refused_and_may_change_on_resume():
    with pytest.raises(ConfigError, match="learning_rate = 1e\\+39 overflows float32"):
        TrainConfig(learning_rate=1e39)
    assert "learning_rate" in C.resumable_fields(TrainConfig)
    assert set(C.resumable_fields(TrainConfig)) >= {"epochs", "log_every", "keep_checkpoints"}
    assert "seed" not in C.resumable_fields(TrainConfig)
    # fields that shape no program are not part of the compiled-program key
    a = TrainConfig()
    b = a.replace(seed=3, epochs=7, schedule={"kind": "cosine"})
    assert a.program_key() == b.program_key() != a.replace(num_latents=4).program_key()
    # the evaluation set shapes the evaluator, not the train step: a warm-up evaluated on
    # fewer samples at its end shares the step program of the arms it starts
    for change in (dict(final_eval_size=96), dict(eval_size=64, eval_batch=32),
                   dict(eval_seed=1), dict(thresholds=(0.0,))):
        c = a.replace(**change)
        assert c.program_key() != a.program_key(), change
        assert c.program_key(evaluator=False) == a.program_key(evaluator=False), change
        assert not set(change) & set(C.resumable_fields(TrainConfig)), change
    assert a.replace(batch_size=8).program_key(evaluator=False) != a.program_key(
        evaluator=False)
