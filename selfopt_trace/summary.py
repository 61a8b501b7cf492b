"""The end-of-run summary: computed from the store with SQL (rendered by summary_render.py, or as JSON; its
notes on what the figures call for: summary_notes.py).

`summarize(store, run_id)` returns a `RunSummary`; `summary_render.render(summary, console)` prints it. The time
by category is the `breakdown` query's as it gives it (queries/breakdown.sql: every instant of the
run's wall time counted once, across processes, HTTP calls and containers, and outside them:
launching CMD, a non-Python parent around the traced processes), so the summary and
`selfopt-trace query breakdown` always agree and the categories add up to the wall time.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .background import Background
from .bootstrap.selfopt_trace_agent.process import split_command
from .queries import PlannedQuery, QueryResult, run_query

if TYPE_CHECKING:
    from pathlib import Path

    from .store import Store

OWN_WORK = "own work"
CHILDREN_OWN_WORK = "child processes' own work"  # the breakdown's category for waited-on children's own code
OUTSIDE = "outside traced processes"  # the breakdown's category for no traced process alive (launch, a shell CMD)
UNTRACED_WAITS = "untraced waits"  # the breakdown's category for time off the CPU outside any recorded call
SLEEPS = "sleeps"  # the breakdown's category for the program's own recorded sleeps (time, asyncio)
STARTUP = "interpreter start-up"  # the breakdown's category for Pythons' start-up, before their first line
IMPORTS = "imports"  # the breakdown's category for import statements' time, outside start-up
PARSING = "parsing"  # the breakdown's category for parsing calls (ast, libcst, jedi, compile...)
SERIALIZATION = "serialization"  # the breakdown's category for serialization calls (json, pickle, pydantic...)
HTTP_OVERHEAD = "http client overhead"  # the breakdown's category for HTTP calls' time beyond their servers'
HTTP_SERVERS = "http server time"  # the breakdown's category for traced servers' handling of the run's calls
TEARDOWN = "interpreter teardown"  # the breakdown's category for processes finalizing after their last record
CONTAINERS = "container start-up"  # the breakdown's category for `docker run` before and after its first process
UNTRACED_CHILDREN = "untraced child processes"  # the breakdown's category for waits on programs not traced
UNTRACED_SERVERS = "untraced http servers"  # the breakdown's category for HTTP calls whose server is not traced
GARBAGE_COLLECTION = "garbage collection"  # the breakdown's category for the collector's timed passes (`gc` spans)
SLOWEST = 10
# The breakdown's categories in its order (queries/breakdown.sql, `names`). A run without spans has
# nothing to break down: each is 0, and the summary does not run the query, whose planning alone is
# ~400 M instructions (docs/benchmarks.md, "Command line"). tests/cli/test_summary.py checks the
# query gives the same for such a run.
BREAKDOWN_CATEGORIES = (STARTUP, IMPORTS, PARSING, SERIALIZATION, HTTP_OVERHEAD,
                        HTTP_SERVERS, "subprocess spawn overhead", TEARDOWN, GARBAGE_COLLECTION,
                        CHILDREN_OWN_WORK,
                        CONTAINERS, OWN_WORK, SLEEPS, UNTRACED_CHILDREN, UNTRACED_SERVERS,
                        UNTRACED_WAITS, OUTSIDE)

# A process is identified by its span file, pid and host: an agent file holds one process (a fork or
# an exec'd interpreter opens its own); a collector file holds many, told apart by pid and host.
_SAME_PROCESS = """s.source_file IS NOT DISTINCT FROM p.source_file AND s.pid IS NOT DISTINCT FROM p.pid
       AND (s.resource_attributes->>'host.name') IS NOT DISTINCT FROM (p.resource_attributes->>'host.name')"""

# One row per traced process: its span, start-up (its interpreter.startup child), top-level import
# time (imports not inside another import, in the same process), exit, and teardown: from its span's
# end (the agent's last record) until its spawner saw it exit (the end of the subprocess span that
# started it), or, for CMD's own process, until `run` did (store/macros.sql, cmd_exit), else until its
# exit as the C twin saw it (its interpreter.finalize child's end: a process a shell reaped); of that,
# its interpreter's finalization where the C twin timed it (its interpreter.finalize child).
PROCESSES_SQL = f"""
WITH startup AS (
    SELECT parent_span_id AS span_id, sum(duration_ns) AS ns FROM spans
    WHERE run_id = $run_id AND category = 'startup' GROUP BY parent_span_id
), finalized AS (
    SELECT parent_span_id AS span_id, sum(duration_ns) AS ns, max(end_ns) AS end_ns FROM spans
    WHERE run_id = $run_id AND category = 'finalize' GROUP BY parent_span_id
), top_imports AS (
    SELECT i.source_file, i.pid, i.resource_attributes, i.duration_ns
    FROM spans i LEFT JOIN spans parent ON parent.run_id = $run_id AND parent.span_id = i.parent_span_id
    WHERE i.run_id = $run_id AND i.category = 'import' AND coalesce(parent.category, '') <> 'import'
), imports AS (
    SELECT p.span_id, sum(s.duration_ns) AS ns
    FROM spans p JOIN top_imports s ON {_SAME_PROCESS}
    WHERE p.run_id = $run_id AND p.name = 'process' AND p.category = 'process'
    GROUP BY p.span_id
)
SELECT p.span_id, p.parent_span_id, p.pid, p.source_file, p.resource_attributes->>'host.name', p.start_ns, p.end_ns, p.duration_ns, p.incomplete,
       coalesce(p.attributes->>'process.command', p.name) AS command,
       p.attributes->'process.command_args' AS command_args,
       TRY_CAST(p.attributes->>'process.exit.code' AS INTEGER) AS exit_code,
       coalesce(TRY_CAST(p.attributes->>'selfopt_trace.overhead_ns' AS BIGINT), 0) AS overhead_ns,
       coalesce(startup.ns, 0) AS startup_ns, coalesce(imports.ns, 0) AS import_ns,
       coalesce(list_sum(TRY_CAST(p.attributes->'python.gc.duration_ns' AS BIGINT[])), 0) AS gc_ns,
       CASE WHEN NOT p.incomplete AND coalesce(spawn.end_ns, cmd.exited_ns) >= p.end_ns  -- else not waited for
                 AND coalesce(p.attributes->>'process.exec.replaced', '') <> 'true'  -- another program's time
                 -- the spawn's own child, not a process a shell it started started (`sh -c 'a | b'`: the
                 -- shell reaped a at once, and its spawn ended with b)
                 AND coalesce(TRY_CAST(spawn.attributes->>'process.pid' AS BIGINT) = p.pid, true)
            THEN coalesce(spawn.end_ns, cmd.exited_ns) - p.end_ns
            ELSE finalized.end_ns - p.end_ns END AS teardown_ns,  -- its exit, where no traced parent saw it
       finalized.ns AS finalize_ns
FROM spans p
LEFT JOIN startup ON startup.span_id = p.span_id
LEFT JOIN finalized ON finalized.span_id = p.span_id
LEFT JOIN imports ON imports.span_id = p.span_id
LEFT JOIN spans AS spawn ON spawn.run_id = $run_id AND spawn.span_id = p.parent_span_id
                        AND spawn.category = 'subprocess' AND spawn.name <> 'exec'
LEFT JOIN cmd_exit($run_id) AS cmd ON cmd.id = hash(p.span_id)
WHERE p.run_id = $run_id AND p.name = 'process' AND p.category = 'process'
ORDER BY p.start_ns
"""

_TOTALS_SQL = """
SELECT count(*), count(*) FILTER (WHERE incomplete), min(start_ns), max(end_ns),
       (SELECT count(*) FROM diagnostics WHERE run_id = $run_id)
FROM spans WHERE run_id = $run_id
"""

# The run's row, with what it keeps for the summary: the watchers' notes, the damaged lines, the loader's warnings.
_RUN_SQL = """
SELECT group_id, command, start_ns, end_ns, exit_code, run_dir, notes, damaged_lines,
       (SELECT list(message ORDER BY rowid) FROM diagnostics WHERE run_id = $run_id AND code LIKE 'loader.%')
FROM runs WHERE run_id = $run_id
"""


@dataclass
class ProcessRow:
    """One traced process with its start-up / imports / run split (ns)."""

    span_id: str
    parent_span_id: str | None
    pid: int | None
    process_key: tuple  # (span file, pid, host): what tells processes apart (see _SAME_PROCESS)
    start_ns: int
    end_ns: int
    duration_ns: int
    incomplete: bool
    command: str
    command_args: list[str]
    exit_code: int | None
    overhead_ns: int
    startup_ns: int
    import_ns: int
    teardown_ns: int | None  # after its span's end until its exit was seen; None where unknown
    gc_ns: int = 0  # the garbage collector's passes within its span (the agent's C twin timed them)
    finalize_ns: int | None = None  # its interpreter's finalization after its span's end (C twin); None: not timed

    @property
    def run_ns(self) -> int:
        return max(0, self.duration_ns - self.startup_ns - self.import_ns)

    @property
    def label(self) -> str:
        """One line: the process's name and its arguments after what the name stands for (`pytest -q
        tests/`, `python -c from x import main`); the whole command line is `command_line`."""
        if not self.command_args:
            return one_line(self.command)
        name, rest = split_command(self.command_args, python=True)
        return one_line(f"{self.command or name} {display_join(rest)}")

    @property
    def command_line(self) -> str:
        """The command line as a person reads it: `python3 -m pytest -x`, `python -c 'import os'`."""
        if not self.command_args:
            return self.command
        import os

        return display_join([os.path.basename(self.command_args[0]), *self.command_args[1:]])


def one_line(text: str) -> str:
    """Text for one line of a table: every run of whitespace (newlines too) as one space."""
    return " ".join(text.split())


def display_join(args: Sequence[str]) -> str:
    """A command line to read (and paste into a shell): double quotes where they read better than shlex's."""
    parts = []
    for arg in map(str, args):
        quoted = shlex.quote(arg)
        if quoted != arg and not any(c in arg for c in '"$`\\!'):
            quoted = f'"{arg}"'
        parts.append(quoted)
    return " ".join(parts)


@dataclass
class RunSummary:
    run_id: str
    group_id: str | None
    command: str | None
    exit_code: int | None
    wall_ns: int
    processes: int
    spans: int
    incomplete_spans: int
    diagnostics: int
    overhead_ns: int
    by_category: dict[str, int]
    slowest: list[ProcessRow]
    damaged_lines: int = 0  # lines of the run's files the loader skipped (the notes name them)
    notes: list[str] = field(default_factory=list)
    next_commands: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "group_id": self.group_id,
            "command": self.command,
            "exit_code": self.exit_code,
            "traced": True,
            "wall_ms": _ms(self.wall_ns),
            "processes": self.processes,
            "spans": self.spans,
            "incomplete_spans": self.incomplete_spans,
            "diagnostics": self.diagnostics,
            "damaged_lines": self.damaged_lines,
            "tracer_overhead_ms": _ms(self.overhead_ns),
            "time_by_category_ms": {label: _ms(ns) for label, ns in self.by_category.items()},
            "slowest_processes": [
                {"pid": p.pid, "name": p.command, "command": p.command_line, "command_args": p.command_args,
                 "duration_ms": _ms(p.duration_ns),
                 "startup_ms": _ms(p.startup_ns), "imports_ms": _ms(p.import_ns), "run_ms": _ms(p.run_ns),
                 "teardown_ms": None if p.teardown_ns is None else _ms(p.teardown_ns),
                 "finalize_ms": _ms(p.finalize_ns), "gc_ms": _ms(p.gc_ns),
                 "exit_code": p.exit_code, "incomplete": p.incomplete}
                for p in self.slowest
            ],
            "notes": self.notes,
            "next_commands": self.next_commands,
        }


def _ms(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def process_rows(store: Store, run_id: str) -> list[ProcessRow]:
    """Every traced process of the run, in start order."""
    import json

    _, rows = store.sql(PROCESSES_SQL, {"run_id": run_id})
    out = []
    for row in rows:
        (span_id, parent, pid, source_file, host, start, end, duration, incomplete, command, args, exit_code,
         overhead, startup, imports, gc, teardown, finalize) = row
        out.append(ProcessRow(span_id, parent, pid, (source_file, pid, host), start or 0, end or 0, duration or 0, bool(incomplete),
                              command or "process", json.loads(args) if args else [], exit_code,
                              int(overhead), int(startup), int(imports), None if teardown is None else int(teardown),
                              int(gc), None if finalize is None else int(finalize)))
    return out


def time_by_category(store: Store, run_id: str, wall_ns: int, spans: int | None = None,
                     planned: PlannedQuery | None = None) -> dict[str, int]:
    """The breakdown's wall time per category (ns), as the query gives it. `spans`: the run's span
    count when known (0: nothing to break down, the query is not run: the whole `wall_ns` is
    outside traced processes, as the query would say). `planned`: the breakdown planned ahead."""
    if spans == 0:
        return {**dict.fromkeys(BREAKDOWN_CATEGORIES, 0), OUTSIDE: wall_ns}
    return categories_of(planned.result() if planned is not None else run_query(store, "breakdown", {"run_id": run_id}))


def categories_of(breakdown: QueryResult) -> dict[str, int]:
    """The wall time per category (ns) of a breakdown's rows."""
    return {row["category"]: round(row["wall_ms"] * 1e6) for row in breakdown.records() if row["category"] != "total"}


def plan_breakdown(store: Store, run_id: str, run_dir: Path) -> PlannedQuery | None:
    """The breakdown of a run about to be loaded from `run_dir`, bound and planned beside its load
    (queries.py, PlannedQuery), as summarize plans it if the store is still as small then. None for
    a run without span files, whose summary runs no breakdown. Close it after summarize."""
    from .store.loader import span_files  # DuckDB's: not for the summary of a run not loaded

    if not span_files(run_dir):
        return None
    return PlannedQuery(store, "breakdown", {"run_id": run_id}, unoptimized=store.is_small())


def summarize(store: Store, run_id: str, next_commands: Sequence[str] = (),
              planned_breakdown: PlannedQuery | None = None, db_option: str = "") -> RunSummary:
    """The summary of one loaded run. `planned_breakdown`: plan_breakdown's, taken if planned as
    the summary's other queries are (the load did not take the store past SMALL_STORE_SPANS).
    `db_option`: ` --db PATH` for the commands the notes suggest, as for `next_commands`."""
    unoptimized = store.is_small()
    if planned_breakdown is not None and planned_breakdown.unoptimized != unoptimized:
        planned_breakdown = None
    with store.planned_unoptimized(unoptimized):
        return _summarize(store, run_id, next_commands, unoptimized, planned_breakdown, db_option)


def _summarize(store: Store, run_id: str, next_commands: Sequence[str], unoptimized: bool,
               planned_breakdown: PlannedQuery | None, db_option: str) -> RunSummary:
    from .summary_notes import loader_notes, run_notes, with_db  # (they read this module's rows and helpers)

    _, run_rows = store.sql(_RUN_SQL, {"run_id": run_id})
    group_id, command, start_ns, end_ns, exit_code, _run_dir, watchers_notes, damaged_lines, warnings = \
        run_rows[0] if run_rows else (None,) * 9
    _, totals = store.sql(_TOTALS_SQL, {"run_id": run_id})
    spans, incomplete, first_ns, last_ns, diagnostics = totals[0]
    window = (start_ns or first_ns or 0, end_ns or last_ns or 0)
    # The processes' query beside the breakdown (each releases the GIL): ~6 ms off a small run's summary.
    processes_beside = Background(_process_rows_beside, store, run_id, unoptimized) if spans else None
    by_category = time_by_category(store, run_id, max(0, window[1] - window[0]), spans, planned_breakdown)
    processes = processes_beside.result() if processes_beside is not None else []
    slowest = sorted(processes, key=lambda p: p.duration_ns, reverse=True)[:SLOWEST]
    notes = with_db([*run_notes(store, run_id, processes, by_category, window, _run_dir), *(watchers_notes or ()),
                     *loader_notes(warnings or ())], db_option)
    return RunSummary(
        run_id=run_id, group_id=group_id, command=command, exit_code=exit_code,
        wall_ns=max(0, window[1] - window[0]), processes=len(processes), spans=spans or 0,
        incomplete_spans=incomplete or 0, diagnostics=diagnostics or 0,
        overhead_ns=sum(p.overhead_ns for p in processes), by_category=by_category, slowest=slowest,
        notes=notes, next_commands=list(next_commands), damaged_lines=damaged_lines or 0,
    )


def _process_rows_beside(store: Store, run_id: str, unoptimized: bool) -> list[ProcessRow]:
    """process_rows on a connection of its own (Store.cursor), planned as the summary's other queries."""
    with store.cursor() as cursor:
        if unoptimized:
            cursor.sql("PRAGMA disable_optimizer")
        return process_rows(cursor, run_id)


def next_commands(run_id: str, db_option: str, available: Iterable[str]) -> list[str]:
    """What to try next on this run, limited to the commands this installation has."""
    available = set(available)
    run = shlex.quote(run_id)
    # Run ids hold no shell-special characters (runner.check_run_id), so double quotes are safe.
    sql = (f"SELECT name, round(duration_ns / 1e6, 1) AS ms FROM spans WHERE run_id = '{run_id}' "
           "ORDER BY duration_ns DESC LIMIT 10")
    candidates = [
        ("tree", f"selfopt-trace tree {run}{db_option}"),
        ("show", f"selfopt-trace show {run}{db_option}"),  # the whole text the tables cut to one line
        ("sql", f'selfopt-trace sql "{sql}"{db_option}'),
        ("query", f"selfopt-trace query breakdown --run {run}{db_option}"),
        ("report", f"selfopt-trace report {run}{db_option} -o report.html"),
    ]
    return [line for command, line in candidates if command in available]


# ---------------------------------------------------------------------------------------------
# Groups (--repeat) and untraced runs


@dataclass
class GroupSummary:
    group_id: str
    runs: list[RunSummary]

    def median_wall_ns(self) -> int:
        import statistics  # --repeat only: ~3 ms of every run's summary otherwise

        return int(statistics.median(run.wall_ns for run in self.runs))

    def median_by_category(self) -> dict[str, int]:
        import statistics

        labels = dict.fromkeys(label for run in self.runs for label in run.by_category)
        return {label: int(statistics.median(run.by_category.get(label, 0) for run in self.runs)) for label in labels}

    def to_json(self) -> dict[str, Any]:
        walls = [run.wall_ns for run in self.runs]
        return {
            "group_id": self.group_id,
            "runs": [run.to_json() for run in self.runs],
            "wall_ms": {"median": _ms(self.median_wall_ns()), "min": _ms(min(walls)), "max": _ms(max(walls))},
            "time_by_category_ms_median": {label: _ms(ns) for label, ns in self.median_by_category().items()},
        }


@dataclass
class UntracedSummary:
    """A run where tracing was turned off (OTEL_SDK_DISABLED / SELFOPT_TRACE_DISABLED), or not loaded."""

    run_id: str
    command: list[str]
    exit_code: int | None
    wall_ns: int
    reason: str
    run_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("wall_ns")
        data["wall_ms"] = _ms(self.wall_ns)
        data["traced"] = self.run_dir is not None
        return data


# ---------------------------------------------------------------------------------------------
# Figures as text (the summary's rendering, summary_render.py, and `show`/`tree`)


def format_ns(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns >= 10_000_000_000:
        return f"{ns / 1e9:.1f} s"
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.2f} s"
    if ns >= 100_000_000:
        return f"{ns / 1e6:.0f} ms"
    return f"{ns / 1e6:.1f} ms"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return str(code)
