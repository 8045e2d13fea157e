"""One process per output directory: an exclusive lock on ``DIR/.lock``.

Two runs writing one directory corrupt each other's logs and checkpoints, so every run,
study and sweep holds this lock while it writes. It is a ``flock`` (POSIX advisory lock),
which the kernel releases when its process dies, however it dies: the lock left by a
``kill -9`` is stale by construction and the next run takes it over. The file holds who
took it (pid, host, start time) so that a refused process can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"


class DirectoryLockedError(RuntimeError):
    """Another live process holds the directory's lock (the message names it)."""


class OutputDirError(ValueError):
    """An output directory cannot be used: empty, a file, under a file, or not writable."""


def try_flock(path: str | os.PathLike) -> int | None:
    """An exclusive, non-blocking ``flock`` on ``path`` (created 0644): its fd, or None if
    another process holds it. Closing the fd (or the process dying) releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def output_path(value: str | os.PathLike) -> Path:
    """``value`` as a path, refusing the empty string (``Path("")`` would be the current
    directory, and a run would scatter its files there)."""
    if str(value).strip() == "":
        raise OutputDirError("the output directory is empty: give a path with --out")
    return Path(value)


def check_output_dir(directory: str | os.PathLike) -> Path:
    """Creates ``directory`` if need be and checks that it is a writable directory.

    Raises :class:`OutputDirError` saying what is wrong, before any work is done.
    """
    path = output_path(directory)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == path else f"is under {parent}, which is a file"
            raise OutputDirError(f"the output directory {path} {where}: choose a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"cannot create the output directory {path}: "
                             f"{e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputDirError(f"the output directory {path} is not writable (read-only mount "
                             "or permissions): choose another one")
    return path


class DirLock:
    """``with DirLock(out_dir):`` holds ``out_dir/.lock`` (the directory is created).

    Raises :class:`DirectoryLockedError` naming the holder if another process holds it, and
    :class:`OutputDirError` if the directory cannot be used (:func:`check_output_dir`).
    Re-entrant within a process: nested locks on one directory share one ``flock``.
    With ``enabled=False`` (the processes of a multi-host run other than the first, which
    holds the lock for them all) only the directory is checked.
    """

    _held: dict[Path, int] = {}  # directory -> nesting depth, within this process

    def __init__(self, directory: str | os.PathLike, *, enabled: bool = True):
        self.given, self.enabled = directory, enabled
        self.directory = Path(directory).absolute()
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> DirLock:
        check_output_dir(self.given)
        if not self.enabled:
            return self
        if self.directory in DirLock._held:
            DirLock._held[self.directory] += 1
            return self
        try:
            fd = try_flock(self.path)
        except OSError as e:
            raise OutputDirError(f"cannot write {self.path}: {e.strerror or e}") from None
        if fd is None:
            holder = _describe(self.path.read_bytes()[:4096])
            raise DirectoryLockedError(
                f"{self.directory} is in use by {holder}; wait for that run to finish, stop "
                "it, or choose another output directory") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        DirLock._held[self.directory] = 1
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        depth = DirLock._held.get(self.directory, 0) - 1
        if depth > 0:
            DirLock._held[self.directory] = depth
            return
        DirLock._held.pop(self.directory, None)
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays (its content is stale)
            self._fd = None


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']} (started {info['started']})"
    except (ValueError, KeyError, TypeError):
        return "another process"
