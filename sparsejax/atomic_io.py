"""Writing files so that a crash, Ctrl-C or a full disk never leaves one half-written, and
reading them back so that a damaged one is named, not half-used.

Every result, report, cache and marker the library writes goes through
:func:`write_atomic`: the bytes go to a temporary file in the same directory, are
flushed to disk, and replace the target with one rename. JSON files a run reads back
(configs, timings, results) go through :func:`read_json`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

# mkstemp creates files 0600; results should get the mode any new file gets (0644 under the
# usual umask 022). The umask can only be read by setting it: once, at import.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Writes ``data`` (text as UTF-8) to ``path`` atomically; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _fsync_dir(path.parent)  # the rename itself survives a power cut
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_npy_atomic(path: str | os.PathLike, array) -> Path:
    """``np.save`` through :func:`write_atomic`."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return write_atomic(path, buf.getvalue())


class RunFileError(ValueError):
    """A file a run wrote cannot be read back (the message names the file and the fix)."""


def read_json(path: str | os.PathLike, what: str = "file"):
    """The JSON value in ``path``; :class:`RunFileError` naming the file if it is missing,
    unreadable or not JSON (``what`` says what the file is, for the message)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFileError(f"the {what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunFileError(f"the {what} {path} is damaged ({e}); restore it from a copy or "
                           "start the run again in a new directory") from None
