"""Atomic writes: the target is either the old file or the new one, never a torn one."""

import os

import numpy as np
import pytest

from sparsejax.atomic_io import save_npy_atomic, write_atomic


def test_write_replaces_and_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "r.json"
    write_atomic(path, "first")
    write_atomic(path, b"second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_atomic(path, "good")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "new")
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_save_npy_roundtrip(tmp_path, rng):
    a = rng.normal(size=(7, 3)).astype(np.float32)
    save_npy_atomic(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)


def test_written_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import stat

    from sparsejax.atomic_io import FILE_MODE

    p = write_atomic(tmp_path / "results.json", "{}")
    assert stat.S_IMODE(p.stat().st_mode) == FILE_MODE and FILE_MODE & 0o044


def test_read_json_names_the_damaged_file(tmp_path):
    from sparsejax.atomic_io import RunFileError, read_json

    (tmp_path / "timing.json").write_text('{"wall_time_s": 1')
    with pytest.raises(RunFileError, match=r"the timing file .*timing.json is damaged"):
        read_json(tmp_path / "timing.json", "timing file")
    with pytest.raises(RunFileError, match="does not exist"):
        read_json(tmp_path / "none.json")
    assert read_json(write_atomic(tmp_path / "ok.json", '{"a": [1, 2]}')) == {"a": [1, 2]}
