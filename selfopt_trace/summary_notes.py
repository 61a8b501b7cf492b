"""The summary's notes: what a run's figures call for, each said only where it is worth a line (a
category that is a large share of the wall time, processes CMD left running, an agent each process
compiled), with where to look next: the line, the endpoint, the query."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

from .bootstrap.selfopt_trace_agent.process import GC_SPAN_NS
from .queries import missing_data, run_query
from .summary import (CHILDREN_OWN_WORK, CONTAINERS, GARBAGE_COLLECTION, HTTP_OVERHEAD, HTTP_SERVERS, IMPORTS,
                      OUTSIDE, OWN_WORK, PARSING,
                      SERIALIZATION, SLEEPS, STARTUP, TEARDOWN, UNTRACED_CHILDREN, UNTRACED_SERVERS, UNTRACED_WAITS,
                      ProcessRow, format_ns, one_line)

if TYPE_CHECKING:
    from .store import Store

NOTE_SHARE = 0.2  # of the wall time: from there, a category gets a note (what it calls for, where to look)
TEARDOWN_NOTE_SHARE = 0.1  # of the wall time: from there, interpreter teardown's (it surprises the most)
NOTE_MIN_NS = 50_000_000  # and at least this much: a 50 ms script's 7 ms of teardown is not worth a note
# A traced process that ended this soon after CMD's exit ended with it: a helper reading its parent's end
# (multiprocessing's resource tracker, 0.1 ms after the demo's CMD) did not go on
WENT_ON_AFTER_NS = 10_000_000


# A command a note suggests (the first word after `selfopt-trace` one that reads or writes the store)
_STORE_COMMAND = re.compile(r"`(selfopt-trace (?:query|flame|load|push|run|summary|report|tree|show|sql)\b[^`]*)`")


def with_db(notes: list[str], db_option: str) -> list[str]:
    """The notes with ` --db PATH` (run_report.db_option) at the end of each store command they suggest,
    so that the commands work as written on a store other than the default one."""
    if not db_option:
        return notes
    return [_STORE_COMMAND.sub(lambda match: f"`{match[1]}{db_option}`", note) for note in notes]


def _large(ns: int, wall_ns: int, share: float = NOTE_SHARE) -> bool:
    """Whether `ns` is enough of the wall time for a note."""
    return wall_ns > 0 and ns >= max(share * wall_ns, NOTE_MIN_NS)


def _pct(ns: int, wall_ns: int) -> str:
    return f"{100 * ns / wall_ns:.0f} %"


def _counted(count: int, noun: str, plural: str = "") -> str:
    """`3 calls`, `1 call`; `2 processes` with the plural given."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _median(values: list) -> float | None:
    """The median (of an even count, the mean of the middle two); None of none."""
    if not values:
        return None
    ordered, middle = sorted(values), len(values) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def run_notes(store: Store, run_id: str, processes: list[ProcessRow], by_category: dict[str, int],
              window: tuple[int, int], run_dir: str | None) -> list[str]:
    """The notes on one run's figures (the watchers' and the loader's come after): what the run is
    missing first, then the categories' notes, the largest category first."""
    wall_ns = window[1] - window[0]
    untraced = [] if processes else [
        "no Python process was traced: CMD started none, or only untraced ones (python -I, -E or -S; a PYTHONPATH "
        "without the bootstrap set by a shell or script: see the notes on the processes seen)"]
    ns = by_category.get
    by_share = [  # (the category's wall time, its notes)
        (ns(STARTUP, 0), _startup_note(processes, ns(STARTUP, 0), wall_ns)),
        (ns(IMPORTS, 0), _imports_note(store, run_id, ns(IMPORTS, 0), wall_ns)),
        (ns(PARSING, 0), _calls_note(store, run_id, PARSING, "parse", ns(PARSING, 0), wall_ns)),
        (ns(SERIALIZATION, 0),
         _calls_note(store, run_id, SERIALIZATION, "serialization", ns(SERIALIZATION, 0), wall_ns)),
        (ns(OWN_WORK, 0) + ns(CHILDREN_OWN_WORK, 0),
         _own_work_note(store, run_id, ns(OWN_WORK, 0), ns(CHILDREN_OWN_WORK, 0), wall_ns)),
        (ns(UNTRACED_WAITS, 0), _untraced_waits_note(store, run_id, ns(UNTRACED_WAITS, 0), wall_ns)
         + _gil_note(store, run_id, ns(UNTRACED_WAITS, 0), wall_ns)),
        (ns(SLEEPS, 0), _sleeps_note(store, run_id, ns(SLEEPS, 0), wall_ns)),
        (ns(HTTP_OVERHEAD, 0), _http_overhead_note(store, run_id, ns(HTTP_OVERHEAD, 0), wall_ns)),
        (ns(CONTAINERS, 0), _containers_note(store, run_id, ns(CONTAINERS, 0), wall_ns)),
        (ns(HTTP_SERVERS, 0), _http_servers_note(store, run_id, ns(HTTP_SERVERS, 0), wall_ns)),
        (ns(OUTSIDE, 0), _outside_note(ns(OUTSIDE, 0), wall_ns)),
        (ns(UNTRACED_SERVERS, 0), _untraced_servers_note(store, run_id, ns(UNTRACED_SERVERS, 0), wall_ns)),
        (ns(UNTRACED_CHILDREN, 0), _untraced_children_note(store, run_id, ns(UNTRACED_CHILDREN, 0), wall_ns)
         + _docker_stop_note(store, run_id, ns(UNTRACED_CHILDREN, 0), wall_ns)),
        (ns(TEARDOWN, 0), _teardown_note(run_id, processes, ns(TEARDOWN, 0), wall_ns)),
        (ns(GARBAGE_COLLECTION, 0), _gc_note(store, run_id, processes, ns(GARBAGE_COLLECTION, 0), wall_ns)),
    ]
    by_share.sort(key=lambda item: -item[0])  # stable: equal shares keep this order
    return [*untraced, *_went_on_note(processes, window[1], run_dir),
            *(note for _, notes in by_share for note in notes), *_unprepared_note(store, run_id)]


def _went_on_note(processes: list[ProcessRow], cmd_end_ns: int, run_dir: str | None) -> list[str]:
    """Traced processes CMD left running (`sh -c 'python x &'`): recorded after CMD's exit, or with no
    end when the run was loaded and no exit seen by anyone. The breakdown stops at CMD's exit."""
    went_on = sorted(p.pid for p in processes if p.pid is not None and (
        (p.incomplete and p.exit_code is None) or (cmd_end_ns > 0 and p.end_ns > cmd_end_ns + WENT_ON_AFTER_NS)))
    if not went_on:
        return []
    pids = ", ".join(map(str, went_on[:5])) + (", ..." if len(went_on) > 5 else "")
    again = f"`selfopt-trace load {run_dir}` once they end" if run_dir else "loading the run again once they end"
    return [f"{_counted(len(went_on), 'traced process', 'traced processes')} had not ended when CMD exited "
            f"(pid {pids}; or killed unseen): the breakdown covers CMD's wall time; {again} takes in what they "
            "record later"]


def _startup_note(processes: list[ProcessRow], started_ns: int, wall_ns: int) -> list[str]:
    """What interpreter start-up is, when it is a large share of the wall time: many short Pythons."""
    if not _large(started_ns, wall_ns):
        return []
    startups = [p.startup_ns for p in processes if p.startup_ns > 0]
    each = (f"{_counted(len(startups), 'Python process', 'Python processes')}, "
            f"{format_ns(round(_median(startups)))} each (median)") if startups else ""
    return [f"interpreter start-up is {_pct(started_ns, wall_ns)} of the wall time: {each}; every Python pays it "
            "before its first line (the interpreter, site, .pth files; the tracer's start-up too, in its overhead); "
            "fewer, longer-lived processes (a pool, a server, the work done in-process) pay it once; where it goes: "
            "`python -X importtime -c pass`"]


# The outermost imports (under no other import: the program's own `import x`, a plugin loaded by
# name) that took the longest over every process, each with what it imported: what deferring or
# dropping one saves (codeflash's run: anyio's pytest plugin, 167 ms in each of 7 pytest processes).
_COSTLIEST_IMPORTS_SQL = """
SELECT substr(i.name, length('import ') + 1), count(DISTINCT (i.source_file, i.pid)), sum(i.end_ns - i.start_ns)
FROM spans AS i
LEFT JOIN spans AS p ON p.run_id = $run_id AND p.span_id = i.parent_span_id
WHERE i.run_id = $run_id AND i.category = 'import' AND p.category IS DISTINCT FROM 'import'
GROUP BY ALL
ORDER BY 3 DESC, 1
LIMIT 3
"""


def _imports_note(store: Store, run_id: str, imported_ns: int, wall_ns: int) -> list[str]:
    """Which outermost imports cost the most, when imports are a large share of the wall time."""
    if not _large(imported_ns, wall_ns):
        return []
    _, rows = store.sql(_COSTLIEST_IMPORTS_SQL, {"run_id": run_id})
    costliest = ", ".join(f"{module} {format_ns(ns)}"
                          + (f" in {processes} processes ({format_ns(ns // processes)} each)" if processes > 1 else "")
                          for module, processes, ns in rows)
    most = f"; the costliest outermost ones, with what they imported, over every process: {costliest}" if rows else ""
    return [f"imports are {_pct(imported_ns, wall_ns)} of the wall time{most}; every module: "
            f"`selfopt-trace query imports --run {run_id}` (-p order=self, -p pid=N)"]


def _calls_note(store: Store, run_id: str, category: str, span_category: str, spent_ns: int,
                wall_ns: int) -> list[str]:
    """The call sites of parsing or serialization that cost the most over every process, when that
    category is a large share of the wall time (codeflash's run: pytest's assertion rewriting parsing
    its plugins again in every child, 316 ast.parse calls)."""
    if not _large(spent_ns, wall_ns):
        return []
    rows = run_query(store, "serialization", {"run_id": run_id, "category": span_category, "limit": 2}).records()
    sites = "; ".join(f"{row['library']}.{row['operation']} at {_short_path(row['call_site'])}, "
                      f"{_counted(row['calls'], 'call')}, {format_ns(round(row['total_ms'] * 1e6))}" for row in rows)
    most = f"; the most, over every process: {sites}" if sites else ""
    option = "" if span_category == "serialization" else f" -p category={span_category}"
    return [f"{category} is {_pct(spent_ns, wall_ns)} of the wall time{most}; every call site: "
            f"`selfopt-trace query serialization --run {run_id}{option}`"]


def _short_path(call_site: str) -> str:
    """A call site's file from its package on (what follows site-packages/), or whole."""
    return call_site.rpartition("site-packages/")[2] or call_site


def _own_work_note(store: Store, run_id: str, own_ns: int, children_ns: int, wall_ns: int) -> list[str]:
    """How to see which lines the CPU time outside every recorded call went to, when it is a large share:
    the trace has no span for it; py-spy's samples (`run --profile`) say where."""
    if not _large(own_ns + children_ns, wall_ns):
        return []
    parts = ", ".join(f"{label} {_pct(ns, wall_ns)}"
                      for label, ns in ((OWN_WORK, own_ns), (CHILDREN_OWN_WORK, children_ns)) if ns)
    share = f"code on the CPU outside any recorded call is {_pct(own_ns + children_ns, wall_ns)} of the wall " \
            f"time ({parts})"
    if not missing_data(store, "hot_frames", run_id):
        frames = run_query(store, "hot_frames", {"run_id": run_id, "limit": 1}).records()  # the first of each span
        hottest = max(frames, key=lambda row: (row["self_ms"], row["span"]), default=None)
        line = "" if hottest is None else (
            f"; the hottest line: {hottest['function']} at {_short_path(hottest['file'])}:{hottest['line']}, "
            f"{format_ns(round(hottest['self_ms'] * 1e6))} of samples running it (in `{hottest['span']}` spans)")
        return [f"{share}{line}; every frame: `selfopt-trace query hot_frames --run {run_id}`"]
    return [f"{share}; to see its lines, run it again with `selfopt-trace run --profile`, then "
            "`selfopt-trace query hot_frames`"]


def _untraced_waits_note(store: Store, run_id: str, waited_ns: int, wall_ns: int) -> list[str]:
    """How to see where the run waited, when untraced waits are a large share of its wall time: the
    breakdown knows the followed thread was off the CPU, not on what; py-spy's idle stacks say where."""
    if not _large(waited_ns, wall_ns):
        return []
    share = f"untraced waits are {_pct(waited_ns, wall_ns)} of the wall time: the run waited off the CPU " \
            "outside any recorded call (a lock, an event, a queue, a socket, the GIL)"
    if not missing_data(store, "waits", run_id):
        return [f"{share}; the lines that waited: `selfopt-trace query waits --run {run_id}`"]
    return [f"{share}; to see the lines that waited, run it again with `selfopt-trace run --profile --idle`, "
            "then `selfopt-trace query waits`"]


def _gil_note(store: Store, run_id: str, waited_untraced_ns: int, wall_ns: int) -> list[str]:
    """How long threads waited for the GIL (watchers/gil.py), when that is a large share of the wall
    time: the breakdown counts it in untraced waits, which computing threads of one process show
    about (n-1)/n of their phase as."""
    if not _large(waited_untraced_ns, wall_ns):  # the waits are untraced waits: no query below that
        return []
    _, rows = store.sql("SELECT sum(gil_ns) FROM cpu_samples WHERE run_id = $run_id", {"run_id": run_id})
    waited_ns = rows[0][0] or 0
    if not _large(waited_ns, wall_ns):
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
SELECT s.attributes->>'code.filepath', s.attributes->>'code.lineno', count(*), sum(p.path_end - p.path_start), min(s.name)
FROM critical_path_rows($run_id) AS p
JOIN spans AS s ON s.run_id = $run_id AND hash(s.span_id) = p.id
WHERE s.category = 'sleep' AND s.attributes->>'code.filepath' IS NOT NULL
GROUP BY ALL
ORDER BY 4 DESC, 1, 2
LIMIT 1
"""
_SLEEPIEST_LINE_SQL = """
SELECT attributes->>'code.filepath', attributes->>'code.lineno', count(*), sum(end_ns - start_ns), min(name)
FROM spans
WHERE run_id = $run_id AND category = 'sleep' AND attributes->>'code.filepath' IS NOT NULL
  AND hash(span_id) IN (SELECT id FROM run_activity($run_id))
GROUP BY ALL
ORDER BY 4 DESC, 1, 2
LIMIT 1
"""


def _sleeps_note(store: Store, run_id: str, slept_ns: int, wall_ns: int) -> list[str]:
    """Where the program slept, when its own sleeps are a large share of the wall time."""
    if not _large(slept_ns, wall_ns):
        return []
    note = f"sleeps are {_pct(slept_ns, wall_ns)} of the wall time: the program's own time.sleep or " \
           "asyncio.sleep calls (a poll, a back-off, a grace period)"
    _, rows = store.sql(_SLEEPIEST_LINE_ON_PATH_SQL, {"run_id": run_id})
    name = None
    if rows:
        path, line, count, ns, name = rows[0]
        note += f"; the longest on the critical path at {path}:{line} ({_counted(count, 'sleep')}, " \
                f"{ns / 1e6:.0f} ms)"
    else:
        _, rows = store.sql(_SLEEPIEST_LINE_SQL, {"run_id": run_id})
        if rows:
            path, line, count, ns, name = rows[0]
            note += f"; none on the critical path, the most at {path}:{line} ({_counted(count, 'sleep')}, " \
                    f"{ns / 1e6:.0f} ms in all)"
    if name == "BaseServer.serve_forever":  # hooks/socketserver_.py
        note += "; that is a socketserver loop's poll: its shutdown() waits until the loop's select of " \
                "poll_interval (0.5 s unless given) ends; serve_forever(poll_interval=0.05) stops it sooner"
    return [note + f"; the path: `selfopt-trace query critical_path --run {run_id}`"]


# A request's median overhead on a loopback connection (the network: tens of microseconds) in this
# range is a stall: Nagle's algorithm holds a small write back until the peer acknowledges the one
# before, and the peer delays that ACK (40 ms on Linux). A message in two writes meets it:
# http.server's HTTP/1.1 handler sends the headers and the body apart (8 keep-alive calls: 0.43 s, 44 ms
# a call, 0.4 ms of it the handler's; with disable_nagle_algorithm: 0.07 s).
DELAYED_ACK_STALL_NS = (30_000_000, 60_000_000)


def _costliest_endpoint(store: Store, run_id: str, traced_server: bool, by: str) -> dict | None:
    """The `roundtrip` row with the most `by`, of the endpoints whose server span is known (or not)."""
    rows = run_query(store, "roundtrip", {"run_id": run_id, "limit": 1_000_000}).records()
    return max((row for row in rows if bool(row["with_server"]) == traced_server),
               key=lambda row: (row[by], row["calls"]), default=None)


def _endpoint(row: dict, calls: int) -> str:
    """`GET 127.0.0.1:8000 /items: 8 calls`."""
    return f"{row['method']} {row['server']} {row['route']}: {_counted(calls, 'call')}"


def _http_overhead_note(store: Store, run_id: str, overhead_ns: int, wall_ns: int) -> list[str]:
    """Which endpoint's calls took the longest beyond their servers' time, when that overhead is a large
    share of the wall time; on a loopback connection, a stall of about a delayed ACK's time a call."""
    if not _large(overhead_ns, wall_ns):
        return []
    note = f"http client overhead is {_pct(overhead_ns, wall_ns)} of the wall time: HTTP calls' time beyond " \
           "their servers' handling (connection set-up, the network, proxies, queueing, sending and reading)"
    worst = _costliest_endpoint(store, run_id, traced_server=True, by="overhead_ms")
    if worst is not None:
        calls, median_ms = worst["with_server"], worst["overhead_p50_ms"]
        note += f"; the most on {_endpoint(worst, calls)}, {median_ms:.1f} ms a call (median) over the server's " \
                f"{worst['server_ms'] / calls:.1f} ms"
        if _loopback(worst["server"].rpartition(":")[0]) and \
                DELAYED_ACK_STALL_NS[0] <= median_ms * 1e6 <= DELAYED_ACK_STALL_NS[1]:
            note += "; on a loopback connection that is no network but a stall: Nagle's algorithm holding a " \
                    "write back until the peer's delayed ACK (40 ms on Linux), as when a message goes in two " \
                    "writes (http.server's HTTP/1.1 replies: headers, then body); one write, or TCP_NODELAY on " \
                    "the writer's socket (http.server: `disable_nagle_algorithm = True` on the handler), ends it"
    return [note + f"; per endpoint: `selfopt-trace query roundtrip --run {run_id}`"]


def _containers_note(store: Store, run_id: str, started_ns: int, wall_ns: int) -> list[str]:
    """What a container's start-up and teardown took, a container's median, when they are a large share
    of the wall time (docflash: a container per job); with bind mounts and without, where both ran."""
    if not _large(started_ns, wall_ns):
        return []
    rows = run_query(store, "docker", {"run_id": run_id}).records()
    traced = [row for row in rows if row["row"] == "container" and row["traced"]]

    def ms(value: float | None) -> str:
        return "-" if value is None else format_ns(round(value * 1e6))

    def median(key: str) -> str:
        return ms(_median([row[key] for row in traced if row[key] is not None]))

    each = "" if not traced else (
        f": {_counted(len(traced), 'container')} traced, a median of {median('engine_startup_ms')} from "
        f"`docker` to its first process (the engine, image layers, mounts, namespaces) and "
        f"{median('teardown_ms')} from its exit to `docker`'s (the container's stop, --rm)")
    groups = {row["row"]: row for row in rows if row["row"] in ("with bind mounts", "without bind mounts")}
    mounts = "" if len(groups) < 2 else (  # (each group's row holds its medians)
        f"; to its first process with bind mounts of its own {ms(groups['with bind mounts']['engine_startup_ms'])}, "
        f"without {ms(groups['without bind mounts']['engine_startup_ms'])} (medians)")
    return [f"container start-up is {_pct(started_ns, wall_ns)} of the wall time{each}{mounts}; a long-lived container "
            "that takes the jobs (`docker exec`, a server in it) pays it once; per container: "
            f"`selfopt-trace query docker --run {run_id}`"]


def _http_servers_note(store: Store, run_id: str, served_ns: int, wall_ns: int) -> list[str]:
    """Which endpoint's traced server took the longest on the run's calls, when that is a large share."""
    if not _large(served_ns, wall_ns):
        return []
    worst = _costliest_endpoint(store, run_id, traced_server=True, by="server_ms")
    most = "" if worst is None else (
        f"; the most on {_endpoint(worst, worst['with_server'])}, "
        f"{worst['server_ms'] / worst['with_server']:.1f} ms a call in the server (mean)")
    return [f"http server time is {_pct(served_ns, wall_ns)} of the wall time: traced servers' own work on the run's "
            f"calls (what they spent in another category, a reply's serialization, counts there){most}; per "
            f"endpoint: `selfopt-trace query roundtrip --run {run_id}`"]


def _outside_note(outside_ns: int, wall_ns: int) -> list[str]:
    """What `outside traced processes` is, when it is a large share: no traced process was alive."""
    if not _large(outside_ns, wall_ns):
        return []
    return [f"outside traced processes is {_pct(outside_ns, wall_ns)} of the wall time: no traced process was alive "
            "(a shell or another program CMD ran before its Python started or after it ended, or a Python the "
            "trace does not see: the notes on the processes seen say which were not traced, and why)"]


def _untraced_servers_note(store: Store, run_id: str, waited_ns: int, wall_ns: int) -> list[str]:
    """Which endpoint without a traced server the run waited on the most, when that is a large share."""
    if not _large(waited_ns, wall_ns):
        return []
    worst = _costliest_endpoint(store, run_id, traced_server=False, by="total_ms")
    most = "" if worst is None else \
        f"; the most on {_endpoint(worst, worst['calls'])}, {worst['p50_ms']:.1f} ms a call (median)"
    return [f"untraced http servers are {_pct(waited_ns, wall_ns)} of the wall time: HTTP calls whose server the "
            "trace does not see into (a remote API: its work and the network together; a server traced too, "
            f"`selfopt-trace run` or the OTLP receiver, splits them){most}; per endpoint: "
            f"`selfopt-trace query roundtrip --run {run_id}`"]


# Each command not traced (no traced process under its subprocess span) with its time on the critical
# path: its subprocess span's self time there (a read of its output until it ends) and its waits'
# (selfopt_trace.wait.on). Its spawn-to-exit time says nothing of waiting: a server started early
# lives through the whole run while nobody waits on it.
_UNTRACED_ON_PATH_SQL = """
WITH path_rows AS MATERIALIZED (SELECT * FROM critical_path_rows($run_id)),
on_path AS (
    SELECT p.id, any_value(p.path_end - p.path_start) - coalesce(sum(k.path_end - k.path_start), 0) AS self_ns
    FROM path_rows AS p
    LEFT JOIN path_rows AS k ON k.parent = p.id AND k.parent_start = p.path_start
    WHERE p.id <> 0
    GROUP BY p.id, p.path_start
),
untraced AS (
    SELECT s.span_id, s.attributes->>'process.command' AS command
    FROM spans AS s
    WHERE s.run_id = $run_id AND s.category = 'subprocess' AND s.kind = 'CLIENT' AND s.name <> 'exec'
      AND s.span_id NOT IN (SELECT parent_span_id FROM spans
                            WHERE run_id = $run_id AND category = 'process' AND parent_span_id IS NOT NULL)
),
via AS (  -- the spans whose time on the path is a wait on one
    SELECT hash(span_id) AS id, span_id AS target FROM untraced
    UNION ALL
    SELECT hash(span_id), unnest(from_json(attributes->'selfopt_trace.wait.on', '["VARCHAR"]'))
    FROM spans WHERE run_id = $run_id AND category = 'wait' AND (attributes->'selfopt_trace.wait.on') IS NOT NULL
)
SELECT u.command, count(DISTINCT u.span_id), sum(o.self_ns)
FROM untraced AS u
JOIN via AS v ON v.target = u.span_id
JOIN on_path AS o ON o.id = v.id
WHERE u.command IS NOT NULL
GROUP BY u.command
HAVING sum(o.self_ns) > 0
ORDER BY 3 DESC, 1
LIMIT 1
"""


def _untraced_children_note(store: Store, run_id: str, waited_ns: int, wall_ns: int) -> list[str]:
    """Which command not traced the run waited on the most, when that is a large share of its wall time."""
    if not _large(waited_ns, wall_ns):
        return []
    _, rows = store.sql(_UNTRACED_ON_PATH_SQL, {"run_id": run_id})
    most = "".join(f"; the longest on the critical path: `{one_line(command)}`, {_counted(runs, 'run')}, "
                   f"{format_ns(ns)}" for command, runs, ns in rows)
    return [f"untraced child processes are {_pct(waited_ns, wall_ns)} of the wall time: programs the trace does "
            f"not see into (git, a compiler, a Python started with -I, -E or -S){most}; per command: "
            f"`selfopt-trace query subprocess --run {run_id}`"]


# `docker stop` (and `restart`) sends the container's first process SIGTERM, waits its timeout (`-t`,
# `--time`, `--timeout`; 10 s by default), then kills it with SIGKILL.
_STOPS_SQL = """
SELECT TRY_CAST(attributes->'process.command_args' AS VARCHAR[]) AS argv, duration_ns FROM spans
WHERE run_id = $run_id AND category = 'subprocess' AND name = 'subprocess'
  AND attributes->>'process.executable.name' IN ('docker', 'podman')
  AND (list_contains(argv, 'stop') OR list_contains(argv, 'restart'))
"""
_STOP_TIMEOUT_S = 10.0
_STOP_SLACK_NS = 50_000_000  # a stop that took its timeout less this waited it out


def _stop_timeout_s(argv: list[str]) -> float | None:
    """The timeout a `docker stop|restart` command line gives the container, or None for another command."""
    words = iter(argv[1:])
    for word in words:  # the global options before the command (`--context X`, `-H host`)
        if word in ("stop", "restart"):
            break
        if word == "container":  # `docker container stop`
            continue
        if word in ("-H", "--host", "-c", "--context", "--config", "-l", "--log-level"):
            next(words, None)
        elif not word.startswith("-"):
            return None
    else:
        return None
    timeout = _STOP_TIMEOUT_S
    for word in words:
        name, _, value = word.partition("=")
        if name in ("-t", "--time", "--timeout"):
            value = value or next(words, "")
            try:
                timeout = float(value)
            except ValueError:
                return None
    return timeout


def _docker_stop_note(store: Store, run_id: str, waited_ns: int, wall_ns: int) -> list[str]:
    """`docker stop` that waited its whole timeout: the container's first process did not exit on SIGTERM."""
    if not _large(waited_ns, wall_ns):
        return []
    _, rows = store.sql(_STOPS_SQL, {"run_id": run_id})
    waited = [ns for argv, ns in rows
              if (timeout := _stop_timeout_s(argv or [])) and ns >= timeout * 1e9 - _STOP_SLACK_NS]  # (-t 0: a kill)
    if not waited:
        return []
    return [f"`docker stop` waited its whole timeout ({_counted(len(waited), 'stop')}, {format_ns(sum(waited))}) "
            "before it killed the container: its first process did not exit on SIGTERM. A container's first "
            "process (pid 1) ignores SIGTERM unless the program handles it (Python's default); "
            "`docker run --init`, or a SIGTERM handler in the program, lets it stop at once"]


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
    if not _large(teardown_ns, wall_ns, TEARDOWN_NOTE_SHARE):
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
    return [f"interpreter teardown is {_pct(teardown_ns, wall_ns)} of the wall time: processes finalizing "
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
    return [f"{_counted(count, 'process', 'processes')} found no agent prepared for {'their' if count != 1 else 'its'} "
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
    return [f"garbage collection is {_pct(collected_ns, wall_ns)} of the wall time (`{GARBAGE_COLLECTION}`: the "
            f"passes of {GC_SPAN_NS / 1e6:g} ms or more, taken from what they interrupted); all its passes took "
            f"{format_ns(gc_ns)}, {100 * gc_ns / lived_ns:.0f} % of the traced processes' time (the most: "
            f"{one_line(most.command)} (pid {most.pid}), {format_ns(most.gc_ns)}): passes over the objects alive, which "
            "gc.freeze() once a process has imported what it needs keeps out of every later pass, the teardown's too "
            "(docs/codeflash.md, \"Interpreter teardown: the collector's passes at exit\"). What they interrupted "
            f"the most: {where}all of it: `selfopt-trace query gc --run {run_id}`"]


LOADER_NOTES = 5  # the loader's warnings a summary names; the rest are in the table diagnostics


def loader_notes(warnings: Sequence[str]) -> list[str]:
    """The notes that name the loader's warnings (files skipped, damaged lines), the first few."""
    more = len(warnings) - LOADER_NOTES
    return [*warnings[:LOADER_NOTES], *([f"... and {more} more loader warnings (table diagnostics)"] if more > 0 else [])]
