"""Default locations: everything lives under one home directory, `$SELFOPT_TRACE_HOME` or ./.selfopt-trace."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SELFOPT_TRACE_HOME"
AGENT_PACKAGE = "selfopt_trace_agent"  # the package in bootstrap/ that runs inside every traced process


def default_home() -> Path:
    """`$SELFOPT_TRACE_HOME` when set (and not empty), else `.selfopt-trace` in the working directory."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else Path.cwd() / ".selfopt-trace"


def default_db_path() -> Path:
    """The trace database: `<home>/traces.duckdb`."""
    return default_home() / "traces.duckdb"


def default_runs_dir() -> Path:
    """Where `run` writes run directories: `<home>/runs`."""
    return default_home() / "runs"
