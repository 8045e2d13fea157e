"""Writing files so that a crash, Ctrl-C or a full disk never leaves one half-written.

Every result, report, cache and marker the library writes goes through
:func:`write_atomic`: the bytes go to a temporary file in the same directory, are
flushed to disk, and replace the target with one rename.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Writes ``data`` (text as UTF-8) to ``path`` atomically; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
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
