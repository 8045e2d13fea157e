"""k schedules against their closed forms, evaluated by hand."""

import math

import numpy as np
import pytest

from sparsejax.sparsity.schedules import KSchedule


def test_linear_default_is_500_to_50_over_50_epochs_then_held():
    s = KSchedule()
    assert (s(0), s(49), s(50), s(1000)) == (500, 50, 50, 50)
    assert s(1) == round(500 - 450 / 49)  # 490.82 -> 491
    assert s(24) == round(500 - 450 * 24 / 49)
    table = s.table(60)
    assert len(table) == 60 and all(a >= b for a, b in zip(table, table[1:]))


@pytest.mark.parametrize("epoch", [0, 3, 7, 10, 15])
def test_cosine_geometric_step_closed_forms(epoch):
    t = min(epoch / 10, 1.0)
    cos = KSchedule("cosine", 400, 40, 11)
    assert cos(epoch) == round(40 + 360 * (1 + math.cos(math.pi * t)) / 2)
    geo = KSchedule("geometric", 400, 40, 11)
    assert geo(epoch) == round(400 * 0.1**t)
    step = KSchedule("step", 400, 40, 11, stages=4)
    stage = min(epoch * 4 // 11, 3)
    assert step(epoch) == round(400 - 360 * stage / 3)


def test_step_plateaus_have_equal_length():
    s = KSchedule("step", 500, 50, 50, stages=5)
    table = s.table(55)
    assert table[:10] == [500] * 10 and table[40:] == [50] * 15
    assert sorted(set(table), reverse=True) == [500, 388, 275, 162, 50]  # 387.5 rounds to even


def test_rising_schedule_length_one_and_arrays():
    up = KSchedule("linear", 10, 100, 10)
    assert (up(0), up(9), up(20)) == (10, 100, 100)
    assert KSchedule("cosine", 300, 20, 1)(0) == 20
    np.testing.assert_array_equal(KSchedule()(np.array([0, 49, 99])), [500, 50, 50])


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="exponential"), "kind"), (dict(start=0), "start"), (dict(length=0), "length"),
    (dict(end=2.5), "end"), (dict(stages=0), "stages")])
def test_bad_schedules_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KSchedule(**kwargs)
    with pytest.raises(ValueError, match="epoch"):
        KSchedule()(-1)
