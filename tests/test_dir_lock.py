"""One process per output directory: a second is refused naming the holder; a lock left by a
killed process is taken over; unusable directories are refused before any work."""

import os
import signal
import subprocess
import sys

import pytest

from sparsejax.dir_lock import DirectoryLockedError, DirLock, OutputDirError, check_output_dir

HOLD = ("import sys, time\nfrom sparsejax.dir_lock import DirLock\n"
        "with DirLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")


def _holder(directory):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_process_is_refused_then_a_killed_holder_is_taken_over(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(DirectoryLockedError, match=rf"in use by pid {holder.pid} on "):
            with DirLock(tmp_path / "run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with DirLock(tmp_path / "run") as lock:  # the kernel released the dead process's lock
        assert f'"pid": {os.getpid()}' in lock.path.read_text()


def test_nested_locks_in_one_process_share_it(tmp_path):
    with DirLock(tmp_path), DirLock(tmp_path):
        pass
    with DirLock(tmp_path):
        pass


@pytest.mark.parametrize("make,message", [
    (lambda t: "", "is empty"),
    (lambda t: (t / "f").write_text("x") and t / "f", "is a file"),
    (lambda t: (t / "f").write_text("x") and t / "f" / "sub", "which is a file"),
])
def test_unusable_output_dirs_are_refused(tmp_path, make, message):
    with pytest.raises(OutputDirError, match=message):
        check_output_dir(make(tmp_path))


def test_read_only_dir_is_refused(tmp_path, monkeypatch):
    # as root a chmod does not stop writes, so the check's own probe is stood in for
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputDirError, match="is not writable"):
        check_output_dir(tmp_path)

