"""Which tasks a sweep runs: done points skipped, shards that partition the tasks, and the
points per process that keep every device busy."""

import pytest

from launch.common import LaunchError
from launch.grid import expand, parse_grid
from launch.plan import auto_per_process, parse_shard, plan


def test_plan_skips_done_points_and_shards_partition_the_tasks():
    points = expand(parse_grid(["a=x,y,z", "seed=0,1"]))
    done = {"a=x,seed=0": "a=x,seed=0"}
    todo, finished = plan(points, done, None, 1)
    assert finished == 1 and [t.id for t in todo] == [p.id for p in points[1:]]
    shares = [plan(points, {}, None, 1, (i, 3))[0] for i in range(3)]
    ids = [t.id for share in shares for t in share]
    assert sorted(ids) == sorted(p.id for p in points) and len(ids) == len(set(ids))
    # a grouped task with one point done runs only the other one
    todo, finished = plan(points, done, "seed", 2)
    assert finished == 1 and todo[0].id == "a=x,seed=1" and len(todo) == 3


def test_a_done_seed_splits_its_consecutive_task():
    points = expand(parse_grid(["seed=0,1,2,5,6"]))
    # seed 1 finished in an earlier run: its task is split around it
    todo, finished = plan(points, {"seed=1": "seed=1"}, "seed", 3, contiguous=True)
    assert finished == 1 and [t.id for t in todo] == ["seed=0", "seed=2", "seed=5+6"]


def test_points_per_process_take_the_fewest_waves_then_the_smallest_tasks():
    points = expand(parse_grid(["dataset=d,s", "method=t,l", "seed=0,1,2"]))  # 4 cells x 3
    assert auto_per_process(points, "seed", 3, devices=4) == 3    # 4 tasks: 1 wave
    assert auto_per_process(points, "seed", 3, devices=6) == 3    # 2 per process: 8 tasks
    assert auto_per_process(points, "seed", 3, devices=8) == 2    # 8 tasks: 1 wave
    assert auto_per_process(points, "seed", 3, devices=12) == 1
    assert auto_per_process(points, "seed", 3, devices=2, shard=(0, 2)) == 3
    assert auto_per_process(points, "seed", 3, devices=4, shard=(1, 2)) == 2
    assert auto_per_process(points, None, 3, devices=1) == 1      # nothing to group


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(LaunchError, match="bad --shard"):
            parse_shard(bad)
