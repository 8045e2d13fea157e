"""One error path for every command: expected failures are one line and exit 2 (bad input)
or 1 (a failed run); ``--debug`` shows the traceback; nothing saved is touched."""

import json

import pytest

from experiments import errors
from experiments.__main__ import main
from experiments.collapse import main as collapse_main

# the tiny train run of test_train_cli (seconds), as flags
TINY = ["--preset", "smoke", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
        "--set", "num_units=32", "--set", "schedule.start=32", "--set", "schedule.end=8",
        "--set", "schedule.length=1", "--set", "eval_size=64", "--set", "eval_batch=32",
        "--no-tensorboard"]


def _one_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, err
    return err


@pytest.mark.parametrize("study", ["train", "collapse", "sae"])
@pytest.mark.parametrize("make,fragment", [
    (lambda t: "", "is empty"),
    (lambda t: (t / "f").write_text("x") and str(t / "f"), "is a file"),
    (lambda t: (t / "f").write_text("x") and str(t / "f" / "sub"), "which is a file"),
])
def test_unusable_out_is_one_line_and_exit_2(tmp_path, capsys, study, make, fragment):
    argv = [study, "--out", make(tmp_path), "--preset", "smoke"]
    if study == "train":
        argv += TINY[2:]
    assert main(argv) == 2
    _one_line(capsys, fragment)


def test_truncated_data_file_and_missing_data_dir(tmp_path, capsys):
    (tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz").write_bytes(b"PK\x03\x04xx")
    assert main(["train", "--out", str(tmp_path / "r"), "--source", "file", "--data-dir",
                 str(tmp_path), *TINY]) == 2
    _one_line(capsys, "dsprites_ndarray")
    assert main(["show-data", "--dataset", "dsprites", "--source", "file", "--data-dir",
                 str(tmp_path), "--out", str(tmp_path / "png")]) == 2
    _one_line(capsys, "dsprites_ndarray")
    assert main(["show-data", "--dataset", "dsprites", "--data-dir", str(tmp_path / "typo"),
                 "--out", str(tmp_path / "png")]) == 2
    _one_line(capsys, "typo does not exist")


def test_damaged_run_files_are_named(tmp_path, capsys):
    study = tmp_path / "study"
    (study / "runs").mkdir(parents=True)
    (study / "timing.json").write_text('{"wall_time_s": 3')
    assert main(["collapse", "--preset", "smoke", "--out", str(study), "--resume"]) == 2
    _one_line(capsys, "timing.json is damaged")
    (study / "results.json").write_text("{not json")
    assert main(["revival", "--from", str(study), "--out", str(tmp_path / "rv")]) == 2
    _one_line(capsys, "results.json is damaged")
    (study / "results.json").write_text(json.dumps({"summary": {}}))
    assert main(["revival", "--from", str(study), "--out", str(tmp_path / "rv")]) == 2
    _one_line(capsys, "holds no study config")


def test_init_from_a_missing_run_creates_nothing(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--init-from",
                 str(tmp_path / "none"), *TINY]) == 2
    _one_line(capsys, "no run there")
    assert not (tmp_path / "none").exists()


def test_debug_shows_the_traceback(tmp_path):
    def boom(argv):
        assert argv == ["--x"]
        raise errors.ConfigError("bad value")

    assert errors.run_cli(boom, ["--x"]) == 2
    with pytest.raises(errors.ConfigError, match="bad value"):
        errors.run_cli(boom, ["--x", "--debug"])


def test_failed_run_is_exit_1_and_full_disk_names_the_file(capsys):
    def diverged(argv):
        raise errors.TrainingDiverged("the loss became NaN at step 3")

    def disk_full(argv):
        raise OSError(28, "No space left on device", "/runs/x/results.json")

    assert errors.run_cli(diverged, []) == 1
    _one_line(capsys, "NaN at step 3")
    assert errors.run_cli(disk_full, []) == 1
    _one_line(capsys, "/runs/x/results.json: the disk is full")


def test_collapse_lock_is_held_while_the_study_runs(tmp_path, capsys, monkeypatch):
    from experiments import collapse
    from sparsejax.dir_lock import DirLock

    seen = {}

    def run_cells(cfg, out, **kwargs):
        with pytest.raises(Exception, match="in use by"):  # a second process would be refused
            import subprocess
            import sys
            code = ("import sys\nfrom sparsejax.dir_lock import DirLock\n"
                    "with DirLock(sys.argv[1]):\n    pass\n")
            r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                               text=True, timeout=60)
            seen["err"] = r.stderr
            raise RuntimeError(r.stderr.strip().splitlines()[-1])
        return {}, {}, "interrupted"

    monkeypatch.setattr(collapse, "run_cells_or_exit_code", run_cells)
    assert collapse_main(["--preset", "smoke", "--out", str(tmp_path / "s")]) == 130
    assert "DirectoryLockedError" in seen["err"]
    with DirLock(tmp_path / "s"):  # released afterwards
        pass


def test_wall_time_adds_up_over_resumed_segments(tmp_path):
    import time

    from experiments.wall_time import WallTime

    first = WallTime(tmp_path, resume=False)
    time.sleep(0.05)
    a = first.total()
    second = WallTime(tmp_path, resume=True)
    assert second.earlier == a and second.total() >= a
    assert WallTime(tmp_path, resume=False).earlier == 0.0  # a fresh run starts from zero
