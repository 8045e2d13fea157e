"""The metrics log never reads or rewrites a damaged file as if it were whole; progress
lines carry the status, rate and ETA."""

import io

import pytest

from sparsejax.atomic_io import RunFileError
from sparsejax.train.logs import MetricsLog, Progress, read_records


def test_torn_last_line_is_skipped_and_kept_aside(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2, "mi')
    assert read_records(path) == [{"epoch": 0}, {"epoch": 1}]
    MetricsLog(tmp_path, (), tensorboard=False).truncate(lambda r: r["epoch"] < 1)
    assert path.read_text() == '{"epoch": 0}\n'
    assert (tmp_path / "metrics.jsonl.torn").read_text() == '{"epoch": 2, "mi'
    assert "cut short by a crash" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["garbage", "[1, 2]", '{"epoch": 1'])
def test_a_damaged_line_inside_the_log_is_refused_and_the_file_kept(tmp_path, bad):
    path = tmp_path / "metrics.jsonl"
    text = '{"epoch": 0}\n' + bad + '\n{"epoch": 2}\n'
    path.write_text(text)
    with pytest.raises(RunFileError, match=r"metrics.jsonl line 2 is not a JSON record"):
        read_records(path)
    with pytest.raises(RunFileError):
        MetricsLog(tmp_path, (), tensorboard=False).truncate(lambda r: True)
    assert path.read_text() == text  # nothing rewritten, nothing lost


def test_plain_progress_lines_have_status_rate_and_eta():
    out = io.StringIO()
    bar = Progress(10, 0, 64, unit="img", tty=False, stream=out)
    bar.update(5, "epoch 1/2 loss 3.1")
    line = out.getvalue().strip()
    assert line.startswith("step 5/10 epoch 1/2 loss 3.1 ") and " img/s ETA " in line
    quiet = io.StringIO()
    Progress(10, 0, 64, stream=quiet, enabled=False).update(5, "x")
    assert quiet.getvalue() == ""
