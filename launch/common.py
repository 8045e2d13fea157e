"""What every launch script shares: quoting, a runner that can dry-run, clear errors.

Commands are argv lists end to end. They are never handed to a local shell; where a remote
shell must read a command (``gcloud ... ssh --command``, ``ssh host CMD``) the string is built
with ``shlex.quote`` on every value, so no config value can inject a command.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# The one definition of a safe name: what a user-given value may hold where it becomes a file
# or directory name (a run, a SLURM job, a grid value inside a point's directory name).
NAME_CHARS = "A-Za-z0-9._+-"
ONLY_NAME_CHARS = re.compile(f"[{NAME_CHARS}]+\\Z")
NON_NAME_CHARS = re.compile(f"[^{NAME_CHARS}]+")
_NAME = re.compile(f"[A-Za-z0-9][{NAME_CHARS}]{{0,99}}\\Z")  # never '.', '..' or hidden
NAME_RULE = "letters, digits and ._+-, starting with a letter or digit, at most 100 characters"


class LaunchError(Exception):
    """A problem the user can fix (bad value, missing tool, failed worker): printed, exit 2."""


def check_name(value: str, flag: str) -> str:
    """``value`` if it is a safe file or directory name (no path traversal), else a LaunchError
    naming the flag, the value and what is allowed."""
    if not _NAME.match(value):
        raise LaunchError(f"bad {flag} {value!r}; it becomes a file or directory name: "
                          f"expected {NAME_RULE}")
    return value


def shell_join(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """One command line a POSIX shell reads back as exactly ``env`` + ``argv``."""
    prefix = []
    for key, value in (env or {}).items():
        if not _ENV_NAME.match(key):
            raise LaunchError(f"bad environment variable name {key!r}; "
                              "expected [A-Za-z_][A-Za-z0-9_]*")
        prefix.append(f"{key}={shlex.quote(str(value))}")
    return " ".join([*prefix, shlex.join([str(a) for a in argv])])


def shell_script(*commands: Sequence[str] | str) -> str:
    """Commands joined with ``&&`` for a remote shell; argv lists are quoted, strings kept.

    Strings are only for fixed shell fragments written in this package (never config values).
    """
    parts = [c if isinstance(c, str) else shlex.join([str(a) for a in c]) for c in commands]
    return " && ".join(parts)


def require_executable(name: str, hint: str) -> str:
    """The full path of ``name`` on PATH (or ``name`` itself if it is a path), else a clear
    error."""
    path = name if os.sep in name and os.access(name, os.X_OK) else shutil.which(name)
    if not path:
        raise LaunchError(f"{name!r} was not found on PATH. {hint}")
    return path


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""


class Runner(Protocol):
    dry_run: bool

    def run(self, argv: Sequence[str], *, capture: bool = False, check: bool = True,
            what: str | None = None) -> Completed: ...

    def parallel(self, commands: Mapping[str, Sequence[str]]) -> dict[str, int]: ...

    def stream(self, argv: Sequence[str]) -> tuple[int, list[str]]: ...

    def note(self, message: str) -> None: ...


@dataclass
class SubprocessRunner:
    """Runs argv lists with ``subprocess`` (no shell); with ``dry_run`` prints them instead.

    In a dry run, stdout carries exactly the commands, one per line, and nothing else;
    notes (estimates, warnings) go to stderr.
    """

    dry_run: bool = False
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    err: IO[str] = field(default_factory=lambda: sys.stderr)

    def note(self, message: str) -> None:
        print(f"# {message}" if self.dry_run else message, file=self.err, flush=True)

    def run(self, argv, *, capture=False, check=True, what=None) -> Completed:
        argv = [str(a) for a in argv]
        if self.dry_run:
            print(shlex.join(argv), file=self.out, flush=True)
            return Completed(argv, 0)
        print(f"+ {shlex.join(argv)}", file=self.err, flush=True)
        try:
            proc = subprocess.run(argv, capture_output=capture, text=True)
        except FileNotFoundError:
            raise LaunchError(f"{argv[0]!r} was not found on PATH "
                              f"(needed to run: {shlex.join(argv)})")
        result = Completed(argv, proc.returncode, proc.stdout or "", proc.stderr or "")
        if check and proc.returncode != 0:
            detail = f"\n{result.stderr.strip()}" if result.stderr.strip() else ""
            raise LaunchError(f"{what or argv[0]} failed with exit code {proc.returncode}: "
                              f"{shlex.join(argv)}{detail}")
        return result

    def stream(self, argv) -> tuple[int, list[str]]:
        """Run argv with its output echoed as it comes; its exit code and output lines."""
        argv = [str(a) for a in argv]
        if self.dry_run:
            print(shlex.join(argv), file=self.out, flush=True)
            return 0, []
        print(f"+ {shlex.join(argv)}", file=self.err, flush=True)
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
        except FileNotFoundError:
            raise LaunchError(f"{argv[0]!r} was not found on PATH "
                              f"(needed to run: {shlex.join(argv)})")
        lines = []
        for line in proc.stdout:
            self.out.write(line)
            self.out.flush()
            lines.append(line.rstrip("\n"))
        return proc.wait(), lines

    def parallel(self, commands) -> dict[str, int]:
        """Run the commands at once, each line of output prefixed ``[name]``; their exit codes."""
        if self.dry_run:
            for argv in commands.values():
                print(shlex.join([str(a) for a in argv]), file=self.out, flush=True)
            return {name: 0 for name in commands}
        procs: dict[str, subprocess.Popen] = {}
        threads = []
        lock = threading.Lock()
        for name, argv in commands.items():
            argv = [str(a) for a in argv]
            print(f"+ [{name}] {shlex.join(argv)}", file=self.err, flush=True)
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)
            except FileNotFoundError:
                for p in procs.values():
                    p.terminate()
                raise LaunchError(f"{argv[0]!r} was not found on PATH")
            procs[name] = proc
            t = threading.Thread(target=_pump, args=(proc.stdout, name, self.out, lock),
                                 daemon=True)
            t.start()
            threads.append(t)
        codes = {name: proc.wait() for name, proc in procs.items()}
        for t in threads:
            t.join()
        return codes


def _pump(stream, name: str, out: IO[str], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            out.write(f"[{name}] {line}")
            out.flush()


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call a script's ``main``; a LaunchError becomes one clear line on stderr and exit code 2."""
    try:
        return main(argv)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def split_study_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``[launcher args] -- [study args]``; the study args may be empty."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise LaunchError(f"{what} must be a comma-separated list of integers, got {text!r}")
    if not values:
        raise LaunchError(f"{what} is empty; expected e.g. 0,1,2,3")
    return values
