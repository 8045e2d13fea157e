"""One error path for every command: expected failures end in one line and an exit code.

``python -m experiments <study> ...`` runs the study's ``main`` through :func:`run_cli`:
bad input (a config out of range, a damaged data or run file, an unusable or busy output
directory) prints ``error: ...`` and exits 2; a run that failed (divergence, a checkpoint
that cannot be written or read, a full disk) exits 1; Ctrl-C outside a training loop exits
130. ``--debug`` anywhere on the command line shows the traceback instead. Library calls
keep raising the typed errors for importers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from sparsejax.atomic_io import RunFileError
from sparsejax.data.records import DataFileError
from sparsejax.dir_lock import DirectoryLockedError, OutputDirError
from sparsejax.train.errors import CheckpointError, ConfigError, RunExistsError, TrainingDiverged

DEBUG_FLAG = "--debug"
BAD_INPUT = (ConfigError, DataFileError, RunFileError, OutputDirError, DirectoryLockedError,
             RunExistsError, FileNotFoundError, NotADirectoryError, ValueError)
RUN_FAILED = (TrainingDiverged, CheckpointError, OSError)


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str]) -> int:
    """``main(argv)`` with the expected failures turned into one line and an exit code."""
    argv = list(argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return int(main(argv) or 0)
    except BAD_INPUT as e:
        if debug:
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    except RUN_FAILED as e:
        if debug:
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        what = {28: "the disk is full"}.get(e.errno or 0, e.strerror or str(e))
        return f"{e.filename}: {what} ({type(e).__name__}); rerun with {DEBUG_FLAG} for details"
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0] if len(text.splitlines()) > 3 else text
