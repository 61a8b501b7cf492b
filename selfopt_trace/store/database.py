"""`Store`: the trace database (DuckDB) behind the CLI, the queries and the reports."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from selfopt_trace.errors import (QueryError, RunNotFoundError, StoreDamagedError, StoreError, StoreLockedError,
                                  StoreOpenError)
from selfopt_trace.paths import db_path_from, unwritable
from selfopt_trace.store.engine import duckdb
from selfopt_trace.store.loader import LoadResult, check_run_id, delete_run_rows, load_run, run_id_of, transaction
from selfopt_trace.store.profile import WHOLE_STACKS, convert_whole_stacks

if TYPE_CHECKING:
    from datetime import datetime  # DuckDB's TIMESTAMP values are its objects: only `runs()` reads one

_NO_STATEMENT = "no SQL statement to run: the text is empty, or only `;` and comments"

# Up to this many spans in the whole store, the summary's queries, the shipped ones (queries.run_query), and
# the load of a small run (store/loader.py, SMALL_RUN_BYTES), are planned without DuckDB's optimizer: on a
# small store planning is most of their cost (the breakdown of a 2-span run: 64 -> 44 ms, the same
# results), while on a large one filter pushdown is what keeps each scan to the run's own spans (that
# run's breakdown beside 100,000 other spans: 69 -> 77 ms without it). docs/benchmarks.md, "Command
# line (issue 12)"; tests/cli/test_summary.py checks the figures against the optimized queries',
# tests/queries/test_named_queries.py and tests/profile/test_profile.py the shipped queries' rows.
SMALL_STORE_SPANS = 10_000

# DuckDB: 'Could not set lock on file "...": Conflicting lock is held in /usr/bin/python3 (PID 123)'
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
# DuckDB's words for a file cut short or overwritten: a read past its end, a block whose checksum fails.
_DAMAGED = re.compile(r"Could not read enough bytes|Corrupt database file")


@dataclass(frozen=True)
class RunInfo:
    """One row of the `runs` table."""

    run_id: str
    group_id: str | None
    command: str | None
    cwd: str | None
    start_ns: int | None
    end_ns: int | None
    exit_code: int | None
    service_name: str | None
    loaded_at: datetime
    span_count: int
    process_count: int
    run_dir: str | None


class Store:
    """The trace database: created (with its schema) on first open, one writing process at a time.

    Use as a context manager, or call `close()`. Without a path, the commands' default database:
    $SELFOPT_TRACE_DB, else `<home>/traces.duckdb`.
    """

    def __init__(self, path: Path | str | None = None, *, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else db_path_from(os.environ)
        self._con = _connect(self.path, read_only)
        try:
            self._prepare(read_only)
        except duckdb.Error as exc:  # a file whose first pages read well, not the rest (cut short)
            self._con.close()
            raise _open_error(self.path, exc) from exc
        except StoreError:
            self._con.close()
            raise

    def _prepare(self, read_only: bool) -> None:
        """The schema and macros of this version, for writing; for reading, as far as it can be read."""
        if not read_only:
            _bring_schema_up_to_date(self._con, self.path)
            return
        if not _has_current_schema(self._con):
            # Written by an older version: bring its schema up to date once, then read as asked.
            _check_trace_store(self._con, self.path)
            self._con.close()
            with Store(self.path):
                pass
            self._con = _connect(self.path, read_only)
        if not _records_this_version(self._con):
            # The stored macros are another version's (or none): this version's as TEMP macros,
            # which come first in name lookup, so the queries always get this version's.
            self._con.execute(_macros_sql(persistent=False))

    def load_run(self, run_dir: Path | str, replace: bool = False, notes: Sequence[str] | None = None) -> LoadResult:
        """Load (or reload: never duplicating) a run directory; raises RunNotFoundError if it does not
        exist, RunExistsError if the store holds a run of its id from elsewhere (unless `replace`).
        `notes`: what followed the run said (`run`'s watchers), kept for its summary (else run.json's)."""
        try:
            return load_run(self._con, Path(run_dir), replace, small_store=self.is_small(), notes=notes)
        except duckdb.Error as exc:  # bad input is skipped with a warning: this is the disk or DuckDB failing
            raise _damage(self.path, exc) or StoreError(self.path, f"loading {run_dir} into {self.path} failed: {exc}") \
                from exc

    def check_load(self, run_dir: Path | str, replace: bool = False) -> None:
        """RunExistsError now if `load_run(run_dir, replace)` would refuse the run."""
        check_run_id(self._con, run_id_of(Path(run_dir)), Path(run_dir), replace)

    def has_run(self, run_id: str) -> str | None:
        """Where the stored run of this id was loaded from ("" when not from a directory), or None."""
        rows = self.sql("SELECT coalesce(run_dir, '') FROM runs WHERE run_id = ?", [run_id])[1]
        return rows[0][0] if rows else None

    def runs(self) -> list[RunInfo]:
        """Every loaded run, the most recent first."""
        columns = [column.name for column in fields(RunInfo)]
        _, rows = self.sql(f"SELECT {', '.join(columns)} FROM runs ORDER BY start_ns DESC NULLS LAST, run_id")
        return [RunInfo(*row) for row in rows]

    def delete_run(self, run_id: str) -> int:
        """Delete a run with its spans and diagnostics; returns how many spans went."""
        with transaction(self._con):
            spans = self._con.execute("SELECT count(*) FROM spans WHERE run_id = ?", [run_id]).fetchone()[0]
            if not delete_run_rows(self._con, run_id):
                raise RunNotFoundError(run_id)
        return spans

    def is_small(self) -> bool:
        """Whether the store holds at most SMALL_STORE_SPANS spans (a count DuckDB answers almost from metadata)."""
        return self._con.execute("SELECT count(*) <= ? FROM spans", [SMALL_STORE_SPANS]).fetchone()[0]

    @contextmanager
    def planned_unoptimized(self, unoptimized: bool) -> Iterator[None]:
        """Statements inside planned without DuckDB's optimizer, if `unoptimized` (SMALL_STORE_SPANS);
        inside another such block (the summary's, around a shipped query's), off until that one ends."""
        if not unoptimized or not self._con.execute("SELECT current_setting('enable_optimizer')").fetchone()[0]:
            yield
            return
        self._con.execute("PRAGMA disable_optimizer")
        try:
            yield
        finally:  # the connection goes on serving other queries (the next run's load, a report)
            self._con.execute("PRAGMA enable_optimizer")

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run one query with bound parameters; returns (column names, rows)."""
        try:
            cursor = self._con.execute(query, params)
            if cursor is None:  # DuckDB returns no cursor for text without a statement
                raise QueryError(_NO_STATEMENT)
            rows = cursor.fetchall() if cursor.description else []
        except duckdb.Error as exc:
            raise _damage(self.path, exc) or QueryError(str(exc)) from exc
        return [column[0] for column in cursor.description or ()], rows

    def statement_count(self, text: str) -> int:
        """How many SQL statements `text` holds (0 for blanks, `;` and comments); a syntax error is a QueryError."""
        try:
            return len(self._con.extract_statements(text))
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from exc

    def query(self, name: str, params: dict[str, Any] | None = None, extra_dirs: Sequence[Path | str] = ()):
        """Run a named query (queries/NAME.sql, or one of `extra_dirs`); returns a `queries.QueryResult`."""
        from selfopt_trace.queries import run_query  # queries build on the store, not the reverse

        return run_query(self, name, params, extra_dirs)

    def cursor(self) -> Store:
        """Another connection to this store's database, with its settings, for queries in another thread
        (a connection runs one statement at a time). Close it when done; the store itself stays open."""
        other = object.__new__(Store)
        other.path, other._con = self.path, _configured(self._con.cursor())
        return other

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _sql_file(name: str) -> str:
    # Beside this module (a wheel installs the package as files): importlib.resources costs ~3 ms to import.
    return Path(__file__).with_name(name).read_text(encoding="utf-8")


_TEMP_MACRO = re.compile(r"\bCREATE\s+OR\s+REPLACE\s+TEMP(?:ORARY)?\s+MACRO\b", re.IGNORECASE)

# The newest tables and columns of schema.sql: a file a new version created or upgraded has them all.
_NEWEST_TABLES = ("cpu_samples", "exports", "samples", "stack_frames", "stack_numbers")
_NEWEST_COLUMNS = (("runs", "pid"), ("runs", "run_parent_span_id"), ("runs", "damaged_lines"), ("cpu_samples", "gil_ns"))


def _damage(path: Path, exc: duckdb.Error) -> StoreDamagedError | None:
    """The error DuckDB gives for a damaged file, as one that says so and what to do; else None."""
    message = str(exc).removeprefix("IO Error: ")
    return StoreDamagedError(path, message) if _DAMAGED.search(message) else None


def _open_error(path: Path, exc: duckdb.Error) -> StoreOpenError:
    return _damage(path, exc) or StoreOpenError(path, str(exc).removeprefix("IO Error: "))


def _has_table(con: duckdb.DuckDBPyConnection, name: str, column: str = "1") -> bool:
    # Binding the name, not listing duckdb_tables(): that loads the whole catalog (~9 ms the first time).
    try:
        con.execute(f"SELECT {column} FROM {name} LIMIT 0")
    except (duckdb.CatalogException, duckdb.BinderException):
        return False
    return True


def _has_current_schema(con: duckdb.DuckDBPyConnection) -> bool:
    """The newest tables and columns of schema.sql are there (a file a new version created or upgraded)."""
    return all(_has_table(con, name) for name in _NEWEST_TABLES) \
        and all(_has_table(con, table, column) for table, column in _NEWEST_COLUMNS)


def _schema_text() -> str:
    """What a store of this version holds in `store_schema`: schema.sql, then the macros it creates."""
    return _sql_file("schema.sql") + "\n" + _macros_sql(persistent=True)


def _macros_sql(persistent: bool) -> str:
    """The table macros the named queries share (macros.sql, profile_macros.sql). Written TEMP;
    stored in the database with its schema they cost nothing on open, where creating them on every
    connection bound their bodies each time (~85 M instructions, docs/benchmarks.md)."""
    text = _sql_file("macros.sql") + "\n" + _sql_file("profile_macros.sql")
    return _TEMP_MACRO.sub("CREATE OR REPLACE MACRO", text) if persistent else text


def _records_this_version(con: duckdb.DuckDBPyConnection) -> bool:
    """`store_schema` holds this version's schema and macros."""
    return _has_table(con, "store_schema") \
        and con.execute("SELECT schema_sql FROM store_schema").fetchall() == [(_schema_text(),)]


def _check_trace_store(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A database of someone else's (tables, none of them ours) is never written into."""
    if not _has_table(con, "spans") and con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0]:
        raise StoreOpenError(path, "it holds tables but is no trace database (no `spans` table): "
                                   "choose another --db")


def _bring_schema_up_to_date(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Run schema.sql and create the macros unless the database holds their text (`store_schema`)
    and its newest tables: an open that rewrites nothing costs ~25 ms less, and its close
    checkpoints no rewritten catalog. A database that is not a trace database is left alone."""
    if _has_current_schema(con) and _records_this_version(con):
        return
    _check_trace_store(con, path)
    # Written by a version whose `stacks` was a table of structs: set aside, as its name becomes a view's.
    whole = _has_table(con, "stacks") and not _has_table(con, "stack_numbers")
    taken_apart = _has_table(con, "stack_frames")
    with transaction(con):  # all or nothing: a schema run that failed half-way runs again
        if whole:
            con.execute(f"ALTER TABLE stacks RENAME TO {WHOLE_STACKS}")
        con.execute(_sql_file("schema.sql"))
        con.execute(_macros_sql(persistent=True))
        if whole:
            convert_whole_stacks(con, taken_apart)
        con.execute("DELETE FROM store_schema")
        con.execute("INSERT INTO store_schema VALUES (?)", [_schema_text()])


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open the database, turning DuckDB's and the OS's errors into ones that say what to do."""
    if not read_only and not path.exists():
        reason = unwritable(path.parent)
        if reason is not None:
            raise StoreOpenError(path, f"its directory {path.parent} {reason}")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        message = str(exc)
        if "Could not set lock" in message:
            holder = _LOCK_HOLDER.search(message)
            raise StoreLockedError(path, f"PID {holder['pid']} ({holder['program']})" if holder else None) from exc
        raise _open_error(path, exc) from exc
    return _configured(con)


def _configured(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A connection with this store's settings: each is the connection's own (a cursor starts without)."""
    con.execute("SET enable_progress_bar = false")  # DuckDB would draw one on stdout for long loads
    try:
        # As-of joins always as such: from DuckDB 1.3, one whose left side it guesses small becomes a
        # nested loop join and an aggregate (breakdown's wait pieces against their unit's k steps:
        # 10 M rows at 1 M spans, the query 20-25 % slower: docs/benchmarks.md). Before 1.3 there
        # is neither that plan nor this setting.
        con.execute("SET asof_loop_join_threshold = 0")
    except duckdb.CatalogException:
        pass
    return con
