"""Default locations: everything lives under one home directory, `$SELFOPT_TRACE_HOME` or ./.selfopt-trace."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Mapping

HOME_ENV = "SELFOPT_TRACE_HOME"
AGENT_PACKAGE = "selfopt_trace_agent"  # the package in bootstrap/ that runs inside every traced process


def default_home() -> Path:
    """`$SELFOPT_TRACE_HOME` when set (and not empty), else `.selfopt-trace` in the working directory."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    cwd = working_directory()
    if cwd is None:  # deleted: nowhere to keep anything by default
        from .errors import SelfoptTraceError

        raise SelfoptTraceError(f"the working directory no longer exists: set {HOME_ENV} (or --db and --out) "
                                "to say where traces go")
    return cwd / ".selfopt-trace"


def working_directory() -> Path | None:
    """The working directory, None where it was deleted (a program may run in one all the same)."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        return None


def default_db_path() -> Path:
    """The trace database: `<home>/traces.duckdb`."""
    return default_home() / "traces.duckdb"


ENV_DB = "SELFOPT_TRACE_DB"  # the commands' --db


def db_path_from(environ: Mapping[str, str]) -> Path:
    """The database the commands use without --db: $SELFOPT_TRACE_DB, else `<home>/traces.duckdb`."""
    value = environ.get(ENV_DB)
    return Path(value).expanduser() if value else default_db_path()


def default_runs_dir() -> Path:
    """Where `run` writes run directories: `<home>/runs`."""
    return default_home() / "runs"


def unwritable(directory: Path) -> str | None:
    """Why no file can be created in `directory` (created first if missing), or None when one can:
    the words that follow its name ("is a file, not a directory"). A file is created and removed to
    prove it (os.access lies to root); a unique name as tempfile.mkstemp makes one, without
    importing it (~3 ms before CMD)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".selfopt-trace-probe-{os.getpid()}-{os.urandom(6).hex()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        return _why_unwritable(directory, exc)
    return None


def _why_unwritable(directory: Path, exc: OSError) -> str:
    # The OS's words mislead here: mkdir under a file says "File exists", a file created in /proc
    # "No such file or directory". What is in the way says it better.
    existing = next(path for path in (directory, *directory.parents) if os.path.exists(path))
    if not os.path.isdir(existing):
        blocker = "is a file" if existing == directory else f"cannot be created: {existing} is a file"
        return f"{blocker}, not a directory"
    # ENOENT in a directory that exists: a file system that takes no new files (/proc)
    reason = "no file can be created there" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
    return f"is not writable: {reason}" if existing == directory else f"cannot be created in {existing}: {reason}"
