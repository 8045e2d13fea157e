"""Checkpoints: a damaged newest checkpoint is named and skipped for the next older good one
(flipped bytes, truncation), replaced when the run saves that step again; a full disk is
refused before writing, at the step that failed."""

import shutil
from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.train.checkpoint import CHECKSUM, Checkpointer, state_checksum
from sparsejax.train.errors import CheckpointError


def _state(rng, scale=1.0):
    return {"w": jnp.asarray(scale * rng.standard_normal(2000), jnp.float32),
            "step": jnp.asarray([7], jnp.int32)}


def _abstract(state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def _largest_data_file(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.fixture
def two_checkpoints(tmp_path, rng):
    older, newer = _state(rng), _state(rng, 2.0)
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, older, {"epoch": 1})
        ck.save(2, newer, {"epoch": 2})
    return tmp_path / "ck", older, newer


def test_round_trip_carries_a_checksum(two_checkpoints):
    directory, _, newer = two_checkpoints
    with Checkpointer(directory) as ck:
        state, meta = ck.restore(_abstract(newer))
    np.testing.assert_array_equal(state["w"], newer["w"])
    assert meta["epoch"] == 2 and meta[CHECKSUM] == state_checksum(newer)


def test_checksum_sees_one_changed_value(rng):
    s = _state(rng)
    t = {**s, "w": s["w"].at[1234].add(1e-6)}
    assert state_checksum(s) != state_checksum(t) and state_checksum(s) == state_checksum(s)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_newest_falls_back_to_the_older_one(two_checkpoints, capsys, damage):
    directory, older, newer = two_checkpoints
    data = _largest_data_file(directory / "2")
    raw = bytearray(data.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(b ^ 0xFF for b in
                                                     raw[len(raw) // 2:len(raw) // 2 + 64])
    else:
        raw = raw[:len(raw) // 3]
    data.write_bytes(bytes(raw))
    with Checkpointer(directory) as ck:
        state, meta = ck.restore(_abstract(newer))
        assert meta["epoch"] == 1 and ck.damaged == {2}
        np.testing.assert_array_equal(state["w"], older["w"])
        err = capsys.readouterr().err
        assert "checkpoint 2" in err and "damaged" in err and len(err.splitlines()) == 1
        ck.save(2, newer, {"epoch": 2})  # the resumed run reaches step 2 again: replaced
        state, meta = ck.restore(_abstract(newer))
    assert meta["epoch"] == 2
    np.testing.assert_array_equal(state["w"], newer["w"])


def test_no_good_checkpoint_is_one_error(two_checkpoints):
    directory, _, newer = two_checkpoints
    for step in ("1", "2"):
        data = _largest_data_file(directory / step)
        data.write_bytes(data.read_bytes()[:10])
    with Checkpointer(directory) as ck, pytest.raises(CheckpointError, match="could be restored"):
        ck.restore(_abstract(newer))


def test_a_different_model_is_refused(two_checkpoints):
    directory, _, newer = two_checkpoints
    other = {**_abstract(newer), "w": jax.ShapeDtypeStruct((10,), jnp.float32)}
    with Checkpointer(directory) as ck, pytest.raises(CheckpointError):
        ck.restore(other)


def test_full_disk_is_refused_before_writing(tmp_path, rng, monkeypatch):
    usage = namedtuple("usage", "total used free")
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, _state(rng), {"epoch": 1})
        monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 1 << 10))
        with pytest.raises(CheckpointError, match="step 5 .*MiB free; the older checkpoints are"):
            ck.save(5, _state(rng), {"epoch": 2})
        assert ck.all_steps() == [1]


def test_missing_directory_is_not_created(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        Checkpointer(tmp_path / "nowhere" / "checkpoints", create=False)
    assert not (tmp_path / "nowhere").exists()
