"""The sweep's grid: expansion in order with readable ids, and malformed grids refused."""

import pytest

from launch.common import LaunchError
from launch.grid import expand, parse_grid


def test_grid_expands_in_order_with_readable_ids():
    points = expand(parse_grid(["dataset=dsprites,shapes3d", "method=topk,l1", "seed=0,1,2"]))
    assert len(points) == 12
    assert points[0].id == "dataset=dsprites,method=topk,seed=0"
    assert points[1].id == "dataset=dsprites,method=topk,seed=1"
    assert points[-1].id == "dataset=shapes3d,method=l1,seed=2"
    assert len({p.id for p in points}) == 12


@pytest.mark.parametrize("spec, message", [
    ("seed", "expected KEY=V1,V2"),
    ("--seed=1,2", "expected KEY=V1,V2"),
    ("seed=1,,2", "empty value"),
    ("seed=1,1", "repeats a value"),
    ("x;rm=1", "expected KEY=V1,V2"),
])
def test_bad_grid_is_refused(spec, message):
    with pytest.raises(LaunchError, match=message):
        parse_grid([spec])


def test_repeated_key_and_empty_grid_are_refused():
    with pytest.raises(LaunchError, match="given twice"):
        parse_grid(["seed=0", "seed=1"])
    with pytest.raises(LaunchError, match="no --grid"):
        parse_grid([])
