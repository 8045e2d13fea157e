"""The study command of a task: grid values verbatim, grouped seeds as one flag or as a first
seed and a count, and a clear error where a study has no flag for a group."""

from pathlib import Path

import pytest

from launch.common import LaunchError
from launch.grid import Task, expand, group_points, parse_grid
from launch.profiles import task_argv, task_flags
from launch.sweep_config import SweepConfig


def test_odd_values_become_safe_directory_names_and_stay_verbatim_in_argv():
    evil = "x; rm -rf /"
    (point,) = expand(parse_grid([f"note={evil}"]))
    assert "/" not in point.id and " " not in point.id and ";" not in point.id
    assert point.id.startswith("note=x_rm_-rf~")
    cfg = SweepConfig(study="train", grid=[], out=Path("OUT"), python="python")
    argv = task_argv(Task((point,)), cfg, resume=False)
    assert argv[-2:] == ["--out", "OUT/" + point.id]
    assert argv[argv.index("--note") + 1] == evil  # one argv element, never a shell string


def test_grouping_puts_seeds_of_one_cell_in_one_process():
    points = expand(parse_grid(["method=topk,l1", "seed=0,1,2"]))
    tasks = group_points(points, "seed", 2)
    assert [t.id for t in tasks] == ["method=topk,seed=0+1", "method=topk,seed=2",
                                     "method=l1,seed=0+1", "method=l1,seed=2"]
    cfg = SweepConfig(study="collapse", grid=[], out=Path("O"), extra=["--preset", "smoke"],
                      python="py", group_flag="--seeds")
    argv = task_argv(tasks[0], cfg, resume=True)
    assert argv == ["py", "-m", "experiments", "collapse", "--preset", "smoke", "--method",
                    "topk", "--seeds", "0,1", "--out", "O/method=topk,seed=0+1", "--resume"]
    assert [t.id for t in group_points(points, "seed", 1)] == [p.id for p in points]
    assert len(group_points(points, "absent", 3)) == 6


def test_seeds_given_as_first_and_count_stay_consecutive():
    points = expand(parse_grid(["seed=0,1,2,5,6"]))
    tasks = group_points(points, "seed", 3, contiguous=True)
    assert [t.id for t in tasks] == ["seed=0+1+2", "seed=5+6"]
    assert task_flags(tasks[1], count_flag="--seeds") == ["--seed", "5", "--seeds", "2"]
    assert task_flags(Task((points[0],), "seed"), count_flag="--seeds") == ["--seed", "0"]
    with pytest.raises(LaunchError, match="consecutive seed values only"):
        task_flags(Task((points[0], points[2]), "seed"), count_flag="--seeds")


def test_grouping_without_a_flag_is_a_clear_error():
    points = expand(parse_grid(["seed=0,1"]))
    (task,) = group_points(points, "seed", 2)
    with pytest.raises(LaunchError, match="--group-flag"):
        task_argv(task, SweepConfig(study="s", grid=[], out=Path("o")), resume=False)
