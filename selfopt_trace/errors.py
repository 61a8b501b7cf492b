"""The exceptions of selfopt-trace's application code (CLI, store, reports).

Only the CLI turns them into a one-line message and an exit code; library code raises them, re-raising
lower-level errors (DuckDB, OS) `from` the original so the cause stays visible in tracebacks.

    SelfoptTraceError
     ├── StoreError                  the trace database cannot be used
     │    ├── StoreLockedError       another process holds the database's write lock
     │    └── StoreOpenError         the database cannot be created or opened (permissions, not a database)
     │         └── StoreDamagedError  its file is damaged (cut short, overwritten): DuckDB cannot read it
     ├── RunNotFoundError            no such run in the store, or no such run directory
     ├── RunExistsError              a run of that id is in the store already (from elsewhere)
     └── QueryError                  a SQL query against the store failed

Nothing here is used inside traced processes: the agent never raises into its host program.
"""

from __future__ import annotations

from pathlib import Path


class SelfoptTraceError(Exception):
    """Base class of every error selfopt-trace raises on purpose."""


class StoreError(SelfoptTraceError):
    """The trace database cannot be used."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


class StoreLockedError(StoreError):
    """Another process holds the database's write lock (DuckDB allows one writing process)."""

    def __init__(self, path: Path | str, holder_info: str | None) -> None:
        holder = holder_info or "another process"
        super().__init__(
            path,
            f"trace database {path} is locked by {holder}; "
            "wait for it to finish (or close it) and try again",
        )
        self.holder_info = holder_info


class StoreOpenError(StoreError):
    """The database cannot be created or opened."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(path, f"cannot open trace database {path}: {reason}")
        self.reason = reason


class StoreDamagedError(StoreOpenError):
    """The database file is damaged (cut short, overwritten): DuckDB cannot read what it holds."""

    def __init__(self, path: Path | str, reason: str) -> None:
        StoreError.__init__(self, path, f"trace database {path} is damaged ({reason}): move it aside or delete "
                                        "it; the next `run` or `load` makes a new one")
        self.reason = reason


class RunNotFoundError(SelfoptTraceError):
    """No such run: neither in the store (by id) nor on disk (by run directory)."""

    def __init__(self, run: str) -> None:
        super().__init__(f"run not found: {run}")
        self.run = run


class RunExistsError(SelfoptTraceError):
    """The store holds a run of this id from another run directory: loading would replace it."""

    def __init__(self, run_id: str, stored_from: str | None) -> None:
        where = f" (loaded from {stored_from})" if stored_from else ""
        super().__init__(f"run {run_id} is already in the database{where}; nothing was changed: "
                         "give --replace to replace it, or another --run-id")
        self.run_id = run_id


class QueryError(SelfoptTraceError):
    """A SQL query against the store failed (syntax, unknown column, bad parameter...)."""
