"""The end-of-run summary: computed from the store with SQL (rendered by summary_render.py, or as JSON).

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
from .bootstrap.selfopt_trace_agent.process import GC_SPAN_NS, split_command
from .queries import PlannedQuery, missing_data, run_query

if TYPE_CHECKING:
    from pathlib import Path

    from .store import Store

OWN_WORK = "own work"
OUTSIDE = "outside traced processes"  # the breakdown's category for no traced process alive (launch, a shell CMD)
UNTRACED_WAITS = "untraced waits"  # the breakdown's category for time off the CPU outside any recorded call
SLEEPS = "sleeps"  # the breakdown's category for the program's own recorded sleeps (time, asyncio)
HTTP_OVERHEAD = "http client overhead"  # the breakdown's category for HTTP calls' time beyond their servers'
WAITS_NOTE_SHARE = 0.2  # of the wall time: from there, the summary says how to see where the run waited
TEARDOWN = "interpreter teardown"  # the breakdown's category for processes finalizing after their last record
GARBAGE_COLLECTION = "garbage collection"  # the breakdown's category for the collector's timed passes (`gc` spans)
TEARDOWN_NOTE_SHARE = 0.1  # of the wall time: from there, the summary says what it is and where to look
NOTE_MIN_NS = 50_000_000  # and at least this much: a 50 ms script's 7 ms of teardown is not worth a note
# A traced process that ended this soon after CMD's exit ended with it: a helper reading its parent's end
# (multiprocessing's resource tracker, 0.1 ms after the demo's CMD) did not go on
WENT_ON_AFTER_NS = 10_000_000
SLOWEST = 10
# The breakdown's categories in its order (queries/breakdown.sql, `names`). A run without spans has
# nothing to break down: each is 0, and the summary does not run the query, whose planning alone is
# ~400 M instructions (docs/benchmarks.md, "Command line"). tests/cli/test_summary.py checks the
# query gives the same for such a run.
BREAKDOWN_CATEGORIES = ("interpreter start-up", "imports", "parsing", "serialization", HTTP_OVERHEAD,
                        "http server time", "subprocess spawn overhead", TEARDOWN, GARBAGE_COLLECTION,
                        "child processes' own work",
                        "container start-up", OWN_WORK, SLEEPS, "untraced child processes", "untraced http servers",
                        UNTRACED_WAITS, OUTSIDE)

# A process is identified by its span file, pid and host: an agent file holds one process (a fork or
# an exec'd interpreter opens its own); a collector file holds many, told apart by pid and host.
_SAME_PROCESS = """s.source_file IS NOT DISTINCT FROM p.source_file AND s.pid IS NOT DISTINCT FROM p.pid
       AND (s.resource_attributes->>'host.name') IS NOT DISTINCT FROM (p.resource_attributes->>'host.name')"""

# One row per traced process: its span, start-up (its interpreter.startup child), top-level import
# time (imports not inside another import, in the same process), exit, and teardown: from its span's
# end (the agent's last record) until its spawner saw it exit (the end of the subprocess span that
# started it), or, for CMD's own process, until `run` did (store/macros.sql, cmd_exit); of that, its
# interpreter's finalization where the C twin timed it (its interpreter.finalize child).
PROCESSES_SQL = f"""
WITH startup AS (
    SELECT parent_span_id AS span_id, sum(duration_ns) AS ns FROM spans
    WHERE run_id = $run_id AND category = 'startup' GROUP BY parent_span_id
), finalized AS (
    SELECT parent_span_id AS span_id, sum(duration_ns) AS ns FROM spans
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
            THEN coalesce(spawn.end_ns, cmd.exited_ns) - p.end_ns END AS teardown_ns,
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
    rows = (planned.result() if planned is not None else run_query(store, "breakdown", {"run_id": run_id})).records()
    return {row["category"]: round(row["wall_ms"] * 1e6) for row in rows if row["category"] != "total"}


def plan_breakdown(store: Store, run_id: str, run_dir: Path) -> PlannedQuery | None:
    """The breakdown of a run about to be loaded from `run_dir`, bound and planned beside its load
    (queries.py, PlannedQuery), as summarize plans it if the store is still as small then. None for
    a run without span files, whose summary runs no breakdown. Close it after summarize."""
    from .store.loader import span_files  # DuckDB's: not for the summary of a run not loaded

    if not span_files(run_dir):
        return None
    return PlannedQuery(store, "breakdown", {"run_id": run_id}, unoptimized=store.is_small())


def summarize(store: Store, run_id: str, next_commands: Sequence[str] = (),
              planned_breakdown: PlannedQuery | None = None) -> RunSummary:
    """The summary of one loaded run. `planned_breakdown`: plan_breakdown's, taken if planned as
    the summary's other queries are (the load did not take the store past SMALL_STORE_SPANS)."""
    unoptimized = store.is_small()
    if planned_breakdown is not None and planned_breakdown.unoptimized != unoptimized:
        planned_breakdown = None
    with store.planned_unoptimized(unoptimized):
        return _summarize(store, run_id, next_commands, unoptimized, planned_breakdown)


def _summarize(store: Store, run_id: str, next_commands: Sequence[str], unoptimized: bool,
               planned_breakdown: PlannedQuery | None) -> RunSummary:
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
    notes = [] if processes else ["no Python process was traced: CMD started none, or only untraced ones (python -I, "
                                  "-E or -S; a PYTHONPATH without the bootstrap set by a shell or script: see the "
                                  "notes on the processes seen)"]
    notes += _went_on_note(processes, window[1], _run_dir)
    notes += _untraced_waits_note(store, run_id, by_category.get(UNTRACED_WAITS, 0), window[1] - window[0])
    notes += _sleeps_note(store, run_id, by_category.get(SLEEPS, 0), window[1] - window[0])
    notes += _http_overhead_note(store, run_id, by_category.get(HTTP_OVERHEAD, 0), window[1] - window[0])
    notes += _gil_note(store, run_id, by_category.get(UNTRACED_WAITS, 0), window[1] - window[0])
    notes += _teardown_note(run_id, processes, by_category.get(TEARDOWN, 0), window[1] - window[0])
    notes += _gc_note(store, run_id, processes, by_category.get(GARBAGE_COLLECTION, 0), window[1] - window[0])
    notes += _unprepared_note(store, run_id)
    notes += [*(watchers_notes or ()), *_loader_notes(warnings or ())]
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


def _went_on_note(processes: list[ProcessRow], cmd_end_ns: int, run_dir: str | None) -> list[str]:
    """Traced processes CMD left running (`sh -c 'python x &'`): recorded after CMD's exit, or with no
    end when the run was loaded and no exit seen by anyone. The breakdown stops at CMD's exit."""
    went_on = sorted(p.pid for p in processes if p.pid is not None and (
        (p.incomplete and p.exit_code is None) or (cmd_end_ns > 0 and p.end_ns > cmd_end_ns + WENT_ON_AFTER_NS)))
    if not went_on:
        return []
    pids = ", ".join(map(str, went_on[:5])) + (", ..." if len(went_on) > 5 else "")
    again = f"`selfopt-trace load {run_dir}` once they end" if run_dir else "loading the run again once they end"
    return [f"{len(went_on)} traced process{'es' if len(went_on) > 1 else ''} had not ended when CMD exited "
            f"(pid {pids}; or killed unseen): the breakdown covers CMD's wall time; {again} takes in what they "
            "record later"]


def _untraced_waits_note(store: Store, run_id: str, waited_ns: int, wall_ns: int) -> list[str]:
    """How to see where the run waited, when untraced waits are a large share of its wall time: the
    breakdown knows the followed thread was off the CPU, not on what; py-spy's idle stacks say where."""
    if wall_ns <= 0 or waited_ns < max(WAITS_NOTE_SHARE * wall_ns, NOTE_MIN_NS):
        return []
    share = f"untraced waits are {100 * waited_ns / wall_ns:.0f} % of the wall time: the run waited off the CPU " \
            "outside any recorded call (a lock, an event, a queue, a socket, the GIL)"
    if not missing_data(store, "waits", run_id):
        return [f"{share}; the lines that waited: `selfopt-trace query waits --run {run_id}`"]
    return [f"{share}; to see the lines that waited, run it again with `selfopt-trace run --profile --idle`, "
            "then `selfopt-trace query waits`"]


def _gil_note(store: Store, run_id: str, waited_untraced_ns: int, wall_ns: int) -> list[str]:
    """How long threads waited for the GIL (watchers/gil.py), when that is a large share of the wall
    time: the breakdown counts it in untraced waits, which computing threads of one process show
    about (n-1)/n of their phase as."""
    floor = max(WAITS_NOTE_SHARE * wall_ns, NOTE_MIN_NS)
    if wall_ns <= 0 or waited_untraced_ns < floor:  # the waits are untraced waits: no query below that
        return []
    _, rows = store.sql("SELECT sum(gil_ns) FROM cpu_samples WHERE run_id = $run_id", {"run_id": run_id})
    waited_ns = rows[0][0] or 0
    if waited_ns < floor:
        return []
    return [f"threads waited {waited_ns / 1e6:.0f} ms for the GIL (summed over threads; in untraced waits): "
            "threads of one process that compute at once take turns on it, so a thread pool runs CPU-bound "
            "work one thread at a time; processes (or a free-threaded Python) run it in parallel"]


# The line whose recorded sleeps are the longest on the critical path (hooks/time_.py records where
# each slept; not for an asyncio.sleep that is a task itself): the time they cost the run. Summing
# every sleep of a line named one whose sleeps ran side by side (four pool threads' 100 ms each) or
# in another category (a handler's, in http server time: no activity, never on the path) over the
# main thread's one long sleep. Where no sleep is on the path (a writer's sleeps pacing the reader
# the path goes through: `python a.py | python b.py`), the line whose sleeps of the category (the
# activities) add up to the most.
_SLEEPIEST_LINE_ON_PATH_SQL = """
SELECT s.attributes->>'code.filepath', s.attributes->>'code.lineno', count(*), sum(p.path_end - p.path_start)
FROM critical_path_rows($run_id) AS p
JOIN spans AS s ON s.run_id = $run_id AND hash(s.span_id) = p.id
WHERE s.category = 'sleep' AND s.attributes->>'code.filepath' IS NOT NULL
GROUP BY ALL
ORDER BY 4 DESC, 1, 2
LIMIT 1
"""
_SLEEPIEST_LINE_SQL = """
SELECT attributes->>'code.filepath', attributes->>'code.lineno', count(*), sum(end_ns - start_ns)
FROM spans
WHERE run_id = $run_id AND category = 'sleep' AND attributes->>'code.filepath' IS NOT NULL
  AND hash(span_id) IN (SELECT id FROM run_activity($run_id))
GROUP BY ALL
ORDER BY 4 DESC, 1, 2
LIMIT 1
"""


def _sleeps_note(store: Store, run_id: str, slept_ns: int, wall_ns: int) -> list[str]:
    """Where the program slept, when its own sleeps are a large share of the wall time."""
    if wall_ns <= 0 or slept_ns < max(WAITS_NOTE_SHARE * wall_ns, NOTE_MIN_NS):
        return []
    note = f"sleeps are {100 * slept_ns / wall_ns:.0f} % of the wall time: the program's own time.sleep or " \
           "asyncio.sleep calls (a poll, a back-off, a grace period)"
    _, rows = store.sql(_SLEEPIEST_LINE_ON_PATH_SQL, {"run_id": run_id})
    if rows:
        path, line, count, ns = rows[0]
        note += f"; the longest on the critical path at {path}:{line} ({count} sleep{'s' if count != 1 else ''}, " \
                f"{ns / 1e6:.0f} ms)"
    else:
        _, rows = store.sql(_SLEEPIEST_LINE_SQL, {"run_id": run_id})
        if rows:
            path, line, count, ns = rows[0]
            note += f"; none on the critical path, the most at {path}:{line} ({count} sleep{'s' if count != 1 else ''}, " \
                    f"{ns / 1e6:.0f} ms in all)"
    return [note + f"; the path: `selfopt-trace query critical_path --run {run_id}`"]


# A request's median overhead on a loopback connection (the network: tens of microseconds) in this
# range is a stall: Nagle's algorithm holds a small write back until the peer acknowledges the one
# before, and the peer delays that ACK (40 ms on Linux). A message in two writes meets it:
# http.server's HTTP/1.1 handler sends the headers and the body apart (8 keep-alive calls: 0.43 s, 44 ms
# a call, 0.4 ms of it the handler's; with disable_nagle_algorithm: 0.07 s).
DELAYED_ACK_STALL_NS = (30_000_000, 60_000_000)


def _http_overhead_note(store: Store, run_id: str, overhead_ns: int, wall_ns: int) -> list[str]:
    """Which endpoint's calls took the longest beyond their servers' time, when that overhead is a large
    share of the wall time; on a loopback connection, a stall of about a delayed ACK's time a call."""
    if wall_ns <= 0 or overhead_ns < max(WAITS_NOTE_SHARE * wall_ns, NOTE_MIN_NS):
        return []
    note = f"http client overhead is {100 * overhead_ns / wall_ns:.0f} % of the wall time: HTTP calls' time beyond " \
           "their servers' handling (connection set-up, the network, proxies, queueing, sending and reading)"
    endpoints = [row for row in run_query(store, "roundtrip", {"run_id": run_id, "limit": 1_000_000}).records()
                 if row["with_server"]]
    if endpoints:
        worst = max(endpoints, key=lambda row: (row["overhead_ms"], row["calls"]))
        calls, server, median_ms = worst["with_server"], worst["server"], worst["overhead_p50_ms"]
        note += f"; the most on {worst['method']} {server} {worst['route']}: {calls} call{'s' if calls != 1 else ''}, " \
                f"{median_ms:.1f} ms a call (median) over the server's {worst['server_ms'] / calls:.1f} ms"
        if _loopback(server.rpartition(":")[0]) and \
                DELAYED_ACK_STALL_NS[0] <= median_ms * 1e6 <= DELAYED_ACK_STALL_NS[1]:
            note += "; on a loopback connection that is no network but a stall: Nagle's algorithm holding a " \
                    "write back until the peer's delayed ACK (40 ms on Linux), as when a message goes in two " \
                    "writes (http.server's HTTP/1.1 replies: headers, then body); one write, or TCP_NODELAY on " \
                    "the writer's socket (http.server: `disable_nagle_algorithm = True` on the handler), ends it"
    return [note + f"; per endpoint: `selfopt-trace query roundtrip --run {run_id}`"]


def _loopback(host: str) -> bool:
    """Whether an HTTP call's server.address is this machine's loopback interface."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _teardown_note(run_id: str, processes: list[ProcessRow], teardown_ns: int, wall_ns: int) -> list[str]:
    """What a large interpreter teardown is: time after the processes' last line, which no span of
    the program shows; of the longest one, what its interpreter's finalization took (the C twin's
    interpreter.finalize), the rest being the process's exit and its reaping."""
    if wall_ns <= 0 or teardown_ns < max(TEARDOWN_NOTE_SHARE * wall_ns, NOTE_MIN_NS):
        return []
    timed = [p for p in processes if p.teardown_ns and p.finalize_ns is not None]
    longest = max(timed, key=lambda p: p.teardown_ns or 0) if timed else None
    measured = "" if longest is None else (
        f"; the longest, {one_line(longest.command)} (pid {longest.pid})'s {format_ns(longest.teardown_ns)}, was "
        f"{format_ns(min(longest.finalize_ns or 0, longest.teardown_ns or 0))} of its interpreter's finalization "
        "and the rest its exit and reaping")
    # A large program's finalization is mostly the collector's full passes over the objects still alive
    # (perf on codeflash's processes: 86 % of its main's 0.6 s, most of a pytest child's): gc.freeze()
    # moves them out of its reach (docs/codeflash.md, "Interpreter teardown: the collector's passes at exit").
    return [f"interpreter teardown is {100 * teardown_ns / wall_ns:.0f} % of the wall time: processes finalizing "
            "after their last line while the run waited for them to exit (the garbage collector walking every "
            "object still alive, module teardown, freeing the heap); gc.freeze() as a process's last act spares "
            f"it the walks, os._exit() after flushing what it must spares it all{measured}. Each child's: "
            f"`selfopt-trace query subprocess --run {run_id}` (teardown_ms)"]


_UNPREPARED_SQL = """
SELECT regexp_extract(message, '`(selfopt-trace prepare [^`]*)`', 1) AS command, count(*)
FROM diagnostics WHERE run_id = $run_id AND code = 'agent_unprepared' GROUP BY 1 ORDER BY 2 DESC, 1
"""


def _unprepared_note(store: Store, run_id: str) -> list[str]:
    """Processes whose Python had no agent prepared for it (a container image's): each compiled it."""
    _, rows = store.sql(_UNPREPARED_SQL, {"run_id": run_id})
    if not rows:
        return []
    count = sum(row[1] for row in rows)
    commands = "; ".join(f"`{command}`" for command, _ in rows if command)
    return [f"{count} process{'es' if count != 1 else ''} found no agent prepared for {'their' if count != 1 else 'its'} "
            f"Python and compiled it at start-up (~20 ms each, in their start-up): {commands} prepares it once"]


GC_NOTE_SHARE = 0.05  # of the wall time, or of the traced processes' summed time: from there, the summary says what the collector took


def _gc_note(store: Store, run_id: str, processes: list[ProcessRow], collected_ns: int, wall_ns: int) -> list[str]:
    """What the garbage collector's passes took: of the wall time, the breakdown's GARBAGE_COLLECTION
    (`collected_ns`: the passes long enough to be `gc` spans, in what the run waited on), and all of
    them in every process (python.gc.duration_ns: a helper nobody waited on collects too); and the
    span they interrupted the most (the `gc` query's first row)."""
    gc_ns, lived_ns = sum(p.gc_ns for p in processes), sum(p.duration_ns for p in processes)
    if lived_ns <= 0 or wall_ns <= 0 or gc_ns < NOTE_MIN_NS or (
            collected_ns < GC_NOTE_SHARE * wall_ns and gc_ns < GC_NOTE_SHARE * lived_ns):
        return []
    most = max(processes, key=lambda p: p.gc_ns)
    top = run_query(store, "gc", {"run_id": run_id, "limit": 1}).records()
    where = (f"`{one_line(top[0]['interrupted'])}` in pid {top[0]['pid']}, {format_ns(round(top[0]['gc_ms'] * 1e6))}; "
             if top else "")
    return [f"garbage collection is {100 * collected_ns / wall_ns:.0f} % of the wall time (`{GARBAGE_COLLECTION}`: the "
            f"passes of {GC_SPAN_NS / 1e6:g} ms or more, taken from what they interrupted); all its passes took "
            f"{format_ns(gc_ns)}, {100 * gc_ns / lived_ns:.0f} % of the traced processes' time (the most: "
            f"{one_line(most.command)} (pid {most.pid}), {format_ns(most.gc_ns)}): passes over the objects alive, which "
            "gc.freeze() once a process has imported what it needs keeps out of every later pass, the teardown's too "
            "(docs/codeflash.md, \"Interpreter teardown: the collector's passes at exit\"). What they interrupted "
            f"the most: {where}all of it: `selfopt-trace query gc --run {run_id}`"]


LOADER_NOTES = 5  # the loader's warnings a summary names; the rest are in the table diagnostics


def _loader_notes(warnings: Sequence[str]) -> list[str]:
    """The notes that name the loader's warnings (files skipped, damaged lines), the first few."""
    more = len(warnings) - LOADER_NOTES
    return [*warnings[:LOADER_NOTES], *([f"... and {more} more loader warnings (table diagnostics)"] if more > 0 else [])]


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
