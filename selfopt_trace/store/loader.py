"""Load a run directory (`run.json` + `spans/*.spans` + `cpu/samples.tsv`) into the store.

Speed is the point (a run can hold millions of spans), so records never pass through Python: DuckDB's
CSV reader parses the tab-separated lines in parallel and SQL checks every line, joins each span's S
and E records, closes incomplete spans (a killed child's process span at its reap, where its spawner
saw it; CMD's where `run` did), recovers what it can of a killed process's start-up and attaches the
file header's resource. Python only lists the
files, counts their lines (a line the reader dropped or SQL rejected is a damaged line, and the
warning names its file) and reads run.json.

A span file holding M records (an OTel SDK span's raw fields in a marshal block, written by the
traced process without making their text: docs/span-format.md) is read through a copy of it with
each block replaced by the X records it stands for, made in Python here (bootstrap's spanblock.py).

The files are read in batches of about `BATCH_BYTES` into one temporary table of records, then go
into `spans` in ONE insert: DuckDB rewrites at the next checkpoint what a transaction appended to a
table in more than one statement (1M spans: 7.3 CPU seconds to load and close instead of 5.1).
Memory is capped for the load (`LOAD_SETTINGS`): the records of a run too big for the cap spill to
DuckDB's temporary directory, and reading them in batches keeps each statement small enough to
spill smoothly.

The CPU samples written by `run` (selfopt_trace/watchers/cpu_sampler.py) go the same way: one
read_csv, and consecutive readings of each thread become one `cpu_samples` row per interval.

A load is one transaction: the run's old rows are deleted, then the new ones inserted, so loading
twice gives the same rows once and a failed load changes nothing. No statement may fail on bad
input (DuckDB aborts a transaction on any error): every field is read as text and cast with TRY_CAST.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
from contextlib import contextmanager
from dataclasses import dataclass, field, replace as replaced
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from selfopt_trace.bootstrap.selfopt_trace_agent import config as agent_config, spanblock, spanfile
from selfopt_trace.errors import RunExistsError, RunNotFoundError
from selfopt_trace.store import cpu_edges
from selfopt_trace.store.engine import duckdb
from selfopt_trace.store.profile import load_profile
from selfopt_trace.watchers import cpu_sampler

BATCH_BYTES = 64 << 20
DEFAULT_MAX_LINE = 2 << 20  # DuckDB's CSV reader's own limit; a batch with a longer line raises it
RUN_JSON_MAX_BYTES = 1 << 20  # a run.json larger than this is not one
NAMED_LINES = 5  # damaged lines named in a warning, per file
LOAD_SETTINGS = {
    # Row order means nothing in these tables; not keeping it makes the big INSERT faster.
    "preserve_insertion_order": False,
    # The staged records stay until the load commits; past this, DuckDB spills instead of growing.
    "memory_limit": "1GB",
}
# A run of at most this many bytes of span files (~10,000 spans) loads into a small store planned
# without DuckDB's optimizer (store/database.py, SMALL_STORE_SPANS: the load of a 2-process run
# 40.5 -> 35.3 ms, the same rows).
SMALL_RUN_BYTES = 2_000_000

# The file's 12 fields, all read as text, plus one more: a 13th field means a damaged line.
_COLUMNS = "{%s}" % ", ".join(f"'{name}': 'VARCHAR'" for name in (*spanfile.FIELDS, "extra"))
_TERMINATOR = spanfile.FIELDS[-1]

_CREATE_RECORDS_SQL = """
CREATE TEMP TABLE _records (
    file_no INTEGER, rec VARCHAR, span_id VARCHAR, parent_span_id VARCHAR, trace_id VARCHAR, name VARCHAR,
    kind VARCHAR, category VARCHAR, start_ns BIGINT, end_ns BIGINT, status VARCHAR, attributes JSON
)"""

# The good records of a batch of files, numbered from $first_no in the run's sorted file list.
# strict_mode=false: a stray "\r" must not fail the whole read; null_padding: short lines are kept
# (and rejected below); ignore_errors: invalid UTF-8 lines are dropped (and counted as damaged);
# max_line_size: the longest line of the batch (a long argv, a big attribute) is read, not dropped.
_STAGE_SQL = f"""
INSERT INTO _records
SELECT file_no, rec, span_id, parent_span_id, trace_id, name, kind, category,
       start_num AS start_ns, end_num AS end_ns, status, coalesce(attrs, '{{}}') AS attributes
FROM (
    SELECT $first_no + list_position($files, filename) - 1 AS file_no, *,
           TRY_CAST(start_ns AS BIGINT) AS start_num,
           TRY_CAST(end_ns AS BIGINT) AS end_num,
           TRY_CAST(attributes AS JSON) AS attrs
    FROM read_csv($files, columns = {_COLUMNS}, delim = '\t', quote = '', escape = '', new_line = '\\n',
                  header = false, auto_detect = false, strict_mode = false, null_padding = true,
                  ignore_errors = true, filename = true, max_line_size = $max_line_size)
)
WHERE {_TERMINATOR} = '{spanfile.TERMINATOR}' AND extra IS NULL
  AND (start_ns IS NULL OR start_num IS NOT NULL)
  AND (end_ns IS NULL OR end_num IS NOT NULL)
  AND (attributes IS NULL OR attrs IS NOT NULL)
  AND CASE rec
        WHEN '{spanfile.START}' THEN span_id IS NOT NULL AND start_num IS NOT NULL
        WHEN '{spanfile.END}' THEN span_id IS NOT NULL AND end_num IS NOT NULL
        WHEN '{spanfile.COMPLETE}' THEN span_id IS NOT NULL AND start_num IS NOT NULL AND end_num IS NOT NULL
        WHEN '{spanfile.HEADER}' THEN attrs IS NOT NULL
        WHEN '{spanfile.TICK}' THEN end_num IS NOT NULL
        WHEN '{spanfile.DIAGNOSTIC}' THEN true
        ELSE false
      END
"""

# One row per file with at least one good record: its header (the earliest H) and the last time
# known in it, which closes its incomplete spans; the header's time (when the agent was entered)
# and the first tick (its first flush), which bound a start-up its process did not write
# (_LOST_STARTUP_SQL): one whose agent was entered after it started (not a fork, whose agent is
# there from its start), and that has no start-up record.
_FILES_SQL = f"""
CREATE TEMP TABLE _files AS
SELECT file_no, records, last_ns, header_ns, first_tick_ns,
       header_ns > process_start_ns AND NOT has_startup AS startup_unwritten,
       parse_filename(list_extract($files, file_no)) AS source_file,
       header->>'format' AS format,
       header->>'version' AS version,
       coalesce(TRY_CAST(header->>'pid' AS INTEGER),
                TRY_CAST(header->'resource'->>'process.pid' AS INTEGER)) AS pid,
       header->'resource'->>'service.name' AS service_name,
       coalesce(header->'resource', '{{}}') AS resource_attributes
FROM (
    SELECT file_no, count(*) AS records,
           max(greatest(start_ns, end_ns)) AS last_ns,
           arg_min(attributes, start_ns) FILTER (WHERE rec = '{spanfile.HEADER}') AS header,
           min(start_ns) FILTER (WHERE rec = '{spanfile.HEADER}') AS header_ns,
           min(end_ns) FILTER (WHERE rec = '{spanfile.TICK}') AS first_tick_ns,
           min(start_ns) FILTER (WHERE rec = '{spanfile.START}' AND name = 'process' AND category = 'process')
               AS process_start_ns,
           bool_or(category = 'startup') AS has_startup
    FROM _records
    GROUP BY file_no
)
"""

# S joined to its E (E attributes merged over S attributes, E parent re-parents), then X as they are.
# A span can have two E records (a process span ended for an exec that failed, then at exit; an
# end racing the flusher): the last one counts. A SERVER span can have an X and an S with no E: its
# handler thread wrote it whole while the process's end wrote it as still open (the agent's
# _open_servers); the X, the request as it ended, counts.
_SPANS_SQL = f"""
INSERT INTO spans
WITH f AS (SELECT * FROM _files WHERE list_contains($accepted, file_no)),
     s AS (SELECT * FROM _records WHERE rec = '{spanfile.START}'),
     e AS (SELECT * FROM _records WHERE rec = '{spanfile.END}'
           QUALIFY row_number() OVER (PARTITION BY file_no, span_id ORDER BY end_ns DESC) = 1)
SELECT $run_id, s.trace_id, s.span_id, coalesce(e.parent_span_id, s.parent_span_id),
       s.name, s.kind, s.category,
       s.start_ns, coalesce(e.end_ns, f.last_ns), coalesce(e.end_ns, f.last_ns) - s.start_ns,
       coalesce(e.status, 'UNSET'), e.span_id IS NULL,
       f.service_name, f.pid,
       CASE WHEN e.attributes IS NULL OR e.attributes = '{{}}' THEN s.attributes
            ELSE json_merge_patch(s.attributes, e.attributes) END,
       f.resource_attributes, f.source_file
FROM s JOIN f ON s.file_no = f.file_no
LEFT JOIN e ON e.file_no = s.file_no AND e.span_id = s.span_id
WHERE NOT (s.kind = 'SERVER' AND e.span_id IS NULL
           AND EXISTS (SELECT 1 FROM _records x WHERE x.rec = '{spanfile.COMPLETE}' AND x.kind = 'SERVER'
                                                  AND x.file_no = s.file_no AND x.span_id = s.span_id))
UNION ALL
SELECT $run_id, x.trace_id, x.span_id, x.parent_span_id, x.name, x.kind, x.category,
       x.start_ns, x.end_ns, x.end_ns - x.start_ns, coalesce(x.status, 'UNSET'), false,
       f.service_name, f.pid, x.attributes, f.resource_attributes, f.source_file
FROM _records x JOIN f ON x.file_no = f.file_no
WHERE x.rec = '{spanfile.COMPLETE}'
"""

# _SPANS_SQL's last part where a file has a start-up unwritten (_FILES_SQL): interpreter.startup is
# written whole at its end (the agent's process.py, _end_startup), so a process killed before the
# flush after it (SIGKILL, SIGSEGV, SIGABRT within its first second) left none. It was starting up
# from its start until at least its agent's first flush (its first tick, just before the agent was
# ready): that much is an incomplete interpreter.startup (its id made from its process span's), not
# the killed process's own work. Only then: ~3 ms of every load otherwise.
_LOST_STARTUP_SQL = """
UNION ALL
SELECT $run_id, s.trace_id, substr(md5(s.span_id || ':startup'), 1, 16), s.span_id, 'interpreter.startup',
       'INTERNAL', 'startup', s.start_ns, f.first_tick_ns, f.first_tick_ns - s.start_ns, 'UNSET', true,
       f.service_name, f.pid,
       json_object('python.startup.before_bootstrap_ns', f.header_ns - s.start_ns,
                   'selfopt_trace.startup.agent_ns', f.first_tick_ns - f.header_ns),
       f.resource_attributes, f.source_file
FROM s JOIN f ON s.file_no = f.file_no
ANTI JOIN e ON e.file_no = s.file_no AND e.span_id = s.span_id
WHERE f.startup_unwritten AND s.name = 'process' AND s.category = 'process' AND f.first_tick_ns >= f.header_ns
"""

_DIAGNOSTICS_SQL = f"""
INSERT INTO diagnostics
SELECT $run_id, f.source_file, f.pid, d.start_ns, d.name, d.attributes->>'message'
FROM _records d JOIN _files f ON d.file_no = f.file_no
WHERE d.rec = '{spanfile.DIAGNOSTIC}' AND list_contains($accepted, f.file_no)
"""

# A child process that died without writing its exit code: its parent's subprocess span saw it.
_CHILD_EXIT_SQL = """
UPDATE spans AS child
SET attributes = json_merge_patch(child.attributes,
                                  json_object('process.exit.code', parent.attributes->'process.exit.code'))
FROM spans AS parent
WHERE child.run_id = $run_id AND parent.run_id = $run_id
  AND child.name = 'process' AND child.category = 'process'
  AND (child.attributes->'process.exit.code') IS NULL
  AND parent.span_id = child.parent_span_id
  AND TRY_CAST(parent.attributes->>'process.pid' AS INTEGER) = child.pid
  AND (parent.attributes->'process.exit.code') IS NOT NULL
"""

# A process whose exit no traced parent saw (reaped by a shell, an orphan reaped by init): the status
# it exited with, as the C twin wrote it on its interpreter.finalize span (importtime.c, glibc).
_OWN_EXIT_SQL = """
UPDATE spans AS p
SET attributes = json_merge_patch(p.attributes, json_object('process.exit.code', f.attributes->'process.exit.code'))
FROM spans AS f
WHERE p.run_id = $run_id AND f.run_id = $run_id AND f.category = 'finalize'
  AND p.span_id = f.parent_span_id AND p.name = 'process' AND p.category = 'process'
  AND (p.attributes->'process.exit.code') IS NULL
  AND (f.attributes->'process.exit.code') IS NOT NULL
"""

# A child that exited where no hook saw it (reaped in C: by gevent's event loop, a ctypes waitpid): its
# spawning span ended at its parent's exit (hooks/spawn.py, EXITED_UNSEEN). It ends instead at the
# child's last record, its process spans' end (an exec'd image keeps the pid), when that is earlier.
_UNSEEN_EXIT_SQL = """
UPDATE spans AS spawn
SET end_ns = child.end_ns, duration_ns = child.end_ns - spawn.start_ns
FROM (SELECT s.span_id, max(c.end_ns) AS end_ns
      FROM spans AS s JOIN spans AS c ON c.run_id = s.run_id AND c.name = 'process' AND c.category = 'process'
                                         AND c.pid = TRY_CAST(s.attributes->>'process.pid' AS INTEGER)
                                         AND c.start_ns >= s.start_ns
      WHERE s.run_id = $run_id AND s.category = 'subprocess'
        AND TRY_CAST(s.attributes->>'selfopt_trace.child.exited_unseen' AS BOOLEAN)
      GROUP BY s.span_id) AS child
WHERE spawn.run_id = $run_id AND spawn.span_id = child.span_id AND child.end_ns < spawn.end_ns
"""

# Each traced process of the run that a span of it started: its file, its start, the spawning span
# (subprocess, multiprocessing, fork, exec) and that span's file (the readiness poll's and the queued
# request's servers, and their parents).
_SPAWNED_PROCESSES = """(
    SELECT process.source_file, process.start_ns, spawn.span_id AS spawn_id, spawn.source_file AS spawner_file
    FROM spans AS process
    JOIN spans AS spawn ON spawn.run_id = $run_id AND spawn.span_id = process.parent_span_id
                       AND spawn.category = 'subprocess'
    WHERE process.run_id = $run_id AND process.name = 'process' AND process.category = 'process'
)"""

# A readiness poll: a sleep right after a connection that failed (a `connect` span that failed under
# an HTTP client span) waits on the process that first answered that address after it (a SERVER span
# under a client span of the same process), as a poll loop's sleep waits on the child it polls
# (hooks/time_.py): the sleep becomes a wait on that process's spawning span, or on its parent's
# where the sleep began before that process started (a prefork server's master, booting). The program's loop
# (`while True: try: get(url); break  except ConnectionError: time.sleep(0.05)`: a sleep under the
# client span's parent, at most 5 ms after its end) or the client's own retries (urllib3's `Retry`
# back-off: a sleep under the client span, at most 5 ms after the failed connect). As sleeps, the
# server's start-up was the client's `sleeps` and nobody's work.
_READINESS_POLL_SQL = f"""
UPDATE spans AS s
SET category = 'wait', attributes = json_merge_patch(s.attributes, json_object('selfopt_trace.wait.on', [r.spawn_id]))
FROM (
    WITH refused AS (
        SELECT c.span_id AS client, c.parent_span_id AS client_parent, c.end_ns AS client_end, k.end_ns,
               c.source_file, c.attributes->>'server.address' AS host, c.attributes->>'server.port' AS port
        FROM spans AS k JOIN spans AS c ON c.run_id = $run_id AND c.span_id = k.parent_span_id
        WHERE k.run_id = $run_id AND k.name = 'connect' AND k.category = 'http' AND k.status = 'ERROR'
          AND c.kind = 'CLIENT' AND c.category = 'http'
    ), sleeps AS (
        SELECT span_id, parent_span_id, source_file, start_ns, end_ns FROM spans
        WHERE run_id = $run_id AND category = 'sleep' AND source_file IN (SELECT source_file FROM refused)
    ), polls AS (
        SELECT s.span_id, s.source_file, s.start_ns, s.end_ns, f.host, f.port
        FROM sleeps AS s JOIN refused AS f ON f.client_parent = s.parent_span_id AND f.source_file = s.source_file
        WHERE s.start_ns BETWEEN f.client_end AND f.client_end + 5000000
        UNION
        SELECT s.span_id, s.source_file, s.start_ns, s.end_ns, f.host, f.port
        FROM sleeps AS s JOIN refused AS f ON f.client = s.parent_span_id AND f.source_file = s.source_file
        WHERE s.start_ns BETWEEN f.end_ns AND f.end_ns + 5000000
    ), answers AS (  -- a polled address answered a client of the polling process: when, and in which file
        SELECT c.source_file, c.attributes->>'server.address' AS host, c.attributes->>'server.port' AS port,
               v.start_ns, v.source_file AS server_file
        FROM spans AS v JOIN spans AS c ON c.run_id = $run_id AND c.span_id = v.parent_span_id
        WHERE v.run_id = $run_id AND v.kind = 'SERVER' AND c.kind = 'CLIENT' AND c.category = 'http'
          AND v.source_file <> c.source_file AND c.source_file IN (SELECT source_file FROM refused)
    ), first_answers AS (  -- each poll's answer: the first after it
        SELECT p.span_id, p.source_file, p.start_ns, p.end_ns, arg_min(a.server_file, a.start_ns) AS server_file
        FROM polls AS p
        JOIN answers AS a ON a.source_file = p.source_file AND a.host = p.host AND a.port = p.port
                         AND a.start_ns >= p.end_ns
        GROUP BY ALL
    ), spawned AS {_SPAWNED_PROCESSES}, started AS (  -- the answering process's spawning span (depth 0), and its parent process's (1)
        SELECT f.server_file, s.spawn_id, s.source_file AS child_file, s.start_ns AS child_start, 0 AS depth,
               s.spawner_file
        FROM (SELECT DISTINCT server_file FROM first_answers) AS f
        JOIN spawned AS s ON s.source_file = f.server_file
    )
    -- the deepest of the two alive as the sleep began: a prefork server's master while it started, the
    -- worker that answered once it was forked; never the polling process itself
    SELECT p.span_id AS sleep_id, arg_min(s.spawn_id, s.depth) AS spawn_id
    FROM first_answers AS p
    JOIN (FROM started
          UNION ALL
          SELECT s.server_file, up.spawn_id, up.source_file, up.start_ns, 1, up.spawner_file
          FROM started AS s JOIN spawned AS up ON up.source_file = s.spawner_file) AS s
      ON s.server_file = p.server_file AND s.child_start <= p.start_ns AND s.child_file <> p.source_file
    GROUP BY p.span_id
) AS r
WHERE s.run_id = $run_id AND s.span_id = r.sleep_id
"""

# A request queued while its server started: the first request a traced server process answered
# (its first SERVER span), 5 ms or more after the client's last step of its own (its connect), while
# that process was still starting (an import or its start-up in the gap). A prefork server binds
# before its workers load the application: gunicorn's first request waited for its worker's 200 ms
# of imports, which was the client's `http client overhead`. The loader adds a `queued` wait under
# the client span over that gap (a span it derived, `selfopt_trace.derived`), on the server process's
# spawning span: the breakdown follows the server process there.
_QUEUED_FIRST_REQUEST_SQL = f"""
INSERT INTO spans
WITH first_served AS (
    SELECT parent_span_id, start_ns, source_file FROM spans
    WHERE run_id = $run_id AND kind = 'SERVER'
    QUALIFY row_number() OVER (PARTITION BY source_file ORDER BY start_ns) = 1
), queued AS (
    SELECT c.trace_id, c.span_id AS client, c.service_name, c.pid, c.resource_attributes, c.source_file,
           v.start_ns AS served_ns, v.source_file AS server_file,
           greatest(c.start_ns, coalesce((SELECT max(k.end_ns) FROM spans AS k
                                          WHERE k.run_id = $run_id AND k.parent_span_id = c.span_id
                                            AND k.source_file = c.source_file AND k.end_ns <= v.start_ns),
                                         c.start_ns)) AS from_ns
    FROM first_served AS v
    JOIN spans AS c ON c.run_id = $run_id AND c.span_id = v.parent_span_id AND c.kind = 'CLIENT'
                   AND c.category = 'http' AND c.source_file <> v.source_file
)
SELECT $run_id, q.trace_id, format('{{:016x}}', hash(q.client || ':queued')), q.client, 'queued', 'INTERNAL', 'wait',
       q.from_ns, q.served_ns, q.served_ns - q.from_ns, 'UNSET', false, q.service_name, q.pid,
       json_object('selfopt_trace.wait.on', [spawned.spawn_id], 'selfopt_trace.derived', true),
       q.resource_attributes, q.source_file
FROM queued AS q
JOIN {_SPAWNED_PROCESSES} AS spawned ON spawned.source_file = q.server_file
WHERE q.served_ns - q.from_ns >= 5000000
  AND EXISTS (SELECT 1 FROM spans AS b
              WHERE b.run_id = $run_id AND b.source_file = q.server_file AND b.category IN ('import', 'startup')
                AND b.start_ns < q.served_ns AND b.end_ns > q.from_ns)
"""

# A ThreadPoolExecutor's worker thread runs its tasks in `task` spans under their submitters (each a
# unit of its own, what a wait on its future follows), not under the thread's span, which holds no
# span while a task runs. A wait on the thread itself (the executor's shutdown joining its workers,
# at a `with` block's end or at exit) found that thread idle: four tasks submitted, then the `with`
# block's end, read the tasks' 300 ms as untraced waits; and the thread's self time while it ran a
# task counted in the breakdown's busy time beside the task's own. The loader adds, under a worker
# thread's span, a wait on each task it ran (`_WorkItem.run`, a span it derived:
# `selfopt_trace.derived`), so the breakdown follows the thread into its tasks.
_WORKER_TASKS_SQL = """
INSERT INTO spans
WITH workers AS (
    SELECT span_id, source_file, attributes->>'thread.id' AS tid, start_ns, end_ns
    FROM spans WHERE run_id = $run_id AND category = 'thread' AND name = 'thread'
)
SELECT $run_id, k.trace_id, format('{:016x}', hash(k.span_id || ':run')), w.span_id, '_WorkItem.run', 'INTERNAL',
       'wait', k.start_ns, k.end_ns, k.duration_ns, 'UNSET', false, k.service_name, k.pid,
       json_object('selfopt_trace.wait.on', [k.span_id], 'selfopt_trace.derived', true),
       k.resource_attributes, k.source_file
FROM workers AS w
JOIN spans AS k ON k.run_id = $run_id AND k.category = 'thread' AND k.name = 'task' AND k.source_file = w.source_file
               AND k.attributes->>'thread.id' = w.tid AND k.start_ns >= w.start_ns AND k.start_ns < w.end_ns
"""

# A child killed before its last record (no E: incomplete, closed at its file's last time known) lived
# on until its spawner saw it exit: the end of the spawning span, which has its exit status. Its
# process span ends there, still incomplete: what it did after its last record is not known (its CPU
# samples say whether it ran), but it was alive, not being spawned. (A spawning span that ended at
# its parent's exit, the child running or reaped unseen, has no such end.)
_KILLED_CHILD_SQL = """
UPDATE spans AS child
SET end_ns = spawn.end_ns, duration_ns = spawn.end_ns - child.start_ns
FROM spans AS spawn
WHERE child.run_id = $run_id AND spawn.run_id = $run_id
  AND child.name = 'process' AND child.category = 'process' AND child.incomplete
  AND spawn.span_id = child.parent_span_id AND spawn.end_ns > child.end_ns
  AND TRY_CAST(spawn.attributes->>'process.pid' AS INTEGER) = child.pid
  AND (spawn.attributes->'selfopt_trace.spawn_ns') IS NOT NULL
  AND (spawn.attributes->'process.exit.code') IS NOT NULL
  AND (spawn.attributes->'selfopt_trace.child.exited_unseen') IS NULL
  AND (spawn.attributes->'selfopt_trace.child.running_at_exit') IS NULL
"""

# CMD killed before its last record (no E: incomplete, closed at its file's last time known) lived on
# until `run` reaped it (run.json's end_ns, with its exit status), as a killed child does until its
# spawner's reap (_KILLED_CHILD_SQL): its process span ends there, still incomplete, and none of its
# life is outside traced processes. CMD's process span is store/macros.sql's cmd_exit's: the
# last-ending one of its pid that hangs under no span of the run but an exec.
_KILLED_CMD_SQL = """
UPDATE spans
SET end_ns = $end_ns, duration_ns = $end_ns - start_ns
WHERE run_id = $run_id AND incomplete AND end_ns < $end_ns
  AND span_id = (SELECT s.span_id FROM spans AS s
                 WHERE s.run_id = $run_id AND s.pid = $pid AND s.name = 'process' AND s.category = 'process'
                   AND NOT EXISTS (SELECT 1 FROM spans AS p
                                   WHERE p.run_id = $run_id AND p.span_id = s.parent_span_id AND p.name <> 'exec')
                 ORDER BY s.end_ns DESC LIMIT 1)
"""

# The root process span: its parent is not in the run (the earliest, should there be several).
_ROOT_SPAN_ID = f"""(
    SELECT c.span_id FROM spans c
    WHERE c.run_id = $run_id AND c.name = 'process' AND c.category = 'process'
      AND NOT EXISTS (SELECT 1 FROM spans p WHERE p.run_id = $run_id AND p.span_id = c.parent_span_id)
    ORDER BY c.start_ns LIMIT 1
)"""

# CMD's exit status (run.json) is its root process's, when that process is CMD itself (same pid:
# a shell CMD runs Python children whose own statuses are theirs).
_ROOT_EXIT_SQL = f"""
UPDATE spans
SET attributes = json_merge_patch(attributes, json_object('process.exit.code', $exit_code::INTEGER))
WHERE run_id = $run_id AND span_id = {_ROOT_SPAN_ID} AND (attributes->'process.exit.code') IS NULL
  AND ($pid IS NULL OR pid = $pid)
"""

_ROOT_SQL = f"""
SELECT TRY_CAST(attributes->>'process.exit.code' AS INTEGER), service_name
FROM spans WHERE run_id = $run_id AND span_id = {_ROOT_SPAN_ID} LIMIT 1
"""

_TOTALS_SQL = """
SELECT count(*), count(*) FILTER (WHERE incomplete), min(start_ns), max(end_ns),
       count(*) FILTER (WHERE name = 'connect' AND category = 'http' AND status = 'ERROR'),
       count(*) FILTER (WHERE kind = 'SERVER'), count(*) FILTER (WHERE name = 'task' AND category = 'thread')
FROM spans WHERE run_id = $run_id
"""



def _cpu_stage_sql(fields: tuple[str, ...]) -> str:
    """The CPU sample file (docs/span-format.md, "CPU samples") staged: its fields as text, plus one
    more to catch damaged lines; the header line is checked in Python and skipped here. A version
    without `gil_ns` (1) reads as no GIL wait."""
    columns = "{%s}" % ", ".join(f"'{name}': 'VARCHAR'" for name in (*fields, "extra"))
    gil = "TRY_CAST(gil_ns AS BIGINT)" if "gil_ns" in fields else "0"
    return f"""
CREATE TEMP TABLE _cpu AS
SELECT rec, time_num AS time_ns, pid_num AS pid, tid_num AS tid, start_num AS process_start_ns,
       cpu_num AS cpu_ns, runqueue_num AS runqueue_ns, gil_num AS gil_ns, name, message
FROM (
    SELECT *, TRY_CAST(time_ns AS BIGINT) AS time_num, TRY_CAST(pid AS INTEGER) AS pid_num,
           TRY_CAST(tid AS INTEGER) AS tid_num, TRY_CAST(process_start_ns AS BIGINT) AS start_num,
           TRY_CAST(cpu_ns AS BIGINT) AS cpu_num, TRY_CAST(runqueue_ns AS BIGINT) AS runqueue_num,
           {gil} AS gil_num
    FROM read_csv($file, columns = {columns}, delim = '\t', quote = '', escape = '', new_line = '\\n',
                  header = false, skip = 1, auto_detect = false, strict_mode = false, null_padding = true,
                  ignore_errors = true)
)
WHERE terminator = '{cpu_sampler.TERMINATOR}' AND extra IS NULL AND time_num IS NOT NULL
  AND CASE rec
        WHEN '{cpu_sampler.CPU}' THEN pid_num IS NOT NULL AND tid_num IS NOT NULL AND start_num IS NOT NULL
                                      AND cpu_num >= 0 AND runqueue_num >= 0 AND gil_num >= 0
        WHEN '{cpu_sampler.THREAD}' THEN pid_num IS NOT NULL AND tid_num IS NOT NULL AND start_num IS NOT NULL
        WHEN '{cpu_sampler.DIAGNOSTIC}' THEN name IS NOT NULL
        ELSE false
      END
"""


_CPU_STAGE_SQL = {version: _cpu_stage_sql(fields) for version, fields in cpu_sampler.READABLE_VERSIONS.items()}


# Consecutive readings of one thread (a process is a pid and its start time) make an interval; a
# thread's T record is a reading of zero at its start, and the agent's CPU edges are readings too
# (cpu_edges.py). Counters only grow: a step down (a tid reused within the process) counts as zero,
# and no interval holds more CPU than its length, nor more of a wait for the GIL than it was off the CPU.
_CPU_SAMPLES_SQL = f"""
INSERT INTO cpu_samples
WITH {cpu_edges.READINGS},
names AS (
    SELECT pid, tid, process_start_ns, arg_min(name, time_ns) AS name
    FROM _cpu WHERE rec = '{cpu_sampler.THREAD}'
    GROUP BY pid, tid, process_start_ns
),
steps AS (
    SELECT pid, tid, process_start_ns, lag(time_ns) OVER w AS start_ns, time_ns AS end_ns,
           greatest(cpu_ns - lag(cpu_ns) OVER w, 0) AS cpu, greatest(runqueue_ns - lag(runqueue_ns) OVER w, 0) AS runqueue,
           greatest(gil_ns - lag(gil_ns) OVER w, 0) AS gil
    FROM readings
    WINDOW w AS (PARTITION BY pid, process_start_ns, tid ORDER BY time_ns, cpu_ns)
)
SELECT $run_id, s.pid, s.tid, n.name, s.process_start_ns, s.start_ns, s.end_ns, s.cpu_ns, s.runqueue_ns,
       least(s.gil, s.end_ns - s.start_ns - s.cpu_ns - s.runqueue_ns)
FROM (SELECT *, least(cpu, end_ns - start_ns) AS cpu_ns,
             least(runqueue, end_ns - start_ns - least(cpu, end_ns - start_ns)) AS runqueue_ns
      FROM steps) AS s
LEFT JOIN names AS n ON n.pid = s.pid AND n.tid = s.tid AND n.process_start_ns = s.process_start_ns
WHERE s.end_ns > s.start_ns
"""

_CPU_DIAGNOSTICS_SQL = f"""
INSERT INTO diagnostics
SELECT $run_id, $source_file, pid, time_ns, name, message FROM _cpu WHERE rec = '{cpu_sampler.DIAGNOSTIC}'
"""


@dataclass(frozen=True)
class LoadWarning:
    """Something the loader skipped or could not read; `str()` is the message, which names the file."""

    code: str
    message: str
    source_file: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class LoadResult:
    """What `Store.load_run` loaded."""

    run_id: str
    files: int = 0
    spans: int = 0
    incomplete_spans: int = 0
    diagnostics: int = 0
    cpu_samples: int = 0  # cpu_samples rows (intervals)
    samples: int = 0  # samples rows (py-spy slices, run --profile; a slice cut at its span's start: two)
    skipped_files: int = 0
    skipped_lines: int = 0
    warnings: list[LoadWarning] = field(default_factory=list)


@dataclass(frozen=True)
class _RunMeta:
    """run.json's fields (docs/architecture.md), each None when missing or of the wrong type."""

    run_id: str
    group_id: str | None = None
    command: str | None = None
    cwd: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    exit_code: int | None = None
    service: str | None = None
    pid: int | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    notes: tuple[str, ...] = ()


def span_files(run_dir: Path) -> list[Path]:
    """The run directory's span files, in the order they load."""
    return sorted(path for path in (run_dir / "spans").glob("*" + spanfile.SUFFIX) if path.is_file())


def load_run(con: duckdb.DuckDBPyConnection, run_dir: Path, replace: bool = False,
             small_store: bool = False, notes: Sequence[str] | None = None) -> LoadResult:
    """Load one run directory in one transaction. Loading a run directory again replaces its rows;
    a run of the same id from elsewhere is refused (RunExistsError, nothing changed) unless `replace`.
    `small_store`: the store is one whose small runs load without the optimizer (SMALL_RUN_BYTES).
    `notes`: the run's notes, from `run` that has them (else run.json's, as `run` wrote them)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotFoundError(str(run_dir))
    meta, warnings = _read_run_json(run_dir)
    if notes is not None:
        meta = replaced(meta, notes=_notes(notes))
    result = LoadResult(run_id=meta.run_id, warnings=warnings)
    files = span_files(run_dir)
    if not files:
        result.warnings.append(LoadWarning("loader.no_span_files", f"{run_dir / 'spans'}: no span files"))
    scans = [_scan(path) for path in files]
    unoptimized = small_store and sum(scan[2] for scan in scans) <= SMALL_RUN_BYTES
    with _load_settings(con, {"enable_optimizer": False} if unoptimized else {}), transaction(con):
        check_run_id(con, result.run_id, run_dir, replace)
        delete_run_rows(con, result.run_id)
        if files:  # a run of no Python process has none: nothing to stage (~25 M instructions)
            _load_span_files(con, result, files, scans)
        _load_cpu_samples(con, result, run_dir)
        load_profile(con, result, run_dir)
        _refine_and_record_run(con, result, meta, run_dir)
    return result


def _load_span_files(con: duckdb.DuckDBPyConnection, result: LoadResult, files: list[Path],
                     scans: list[tuple[int, int, int, bool]]) -> None:
    """The span files' records, staged in batches, into spans and diagnostics (the files accepted)."""
    with _expansion_dir(any(scan[3] for scan in scans)) as expanded:
        read = [_expanded(path, expanded) if scan[3] else path for path, scan in zip(files, scans)]
        scans = [_scan(path) if path is not original else scan for path, original, scan in zip(read, files, scans)]
        con.execute(_CREATE_RECORDS_SQL)
        for first, batch in _batches(read, scans):
            longest = max(scans[first - 1 + i][1] for i in range(len(batch)))
            con.execute(_STAGE_SQL, {"files": [str(path) for path in batch], "first_no": first,
                                     "max_line_size": max(DEFAULT_MAX_LINE, longest + 1)})
    con.execute(_FILES_SQL, {"files": [str(path) for path in files]})  # names only: a copy has its file's
    accepted, startup_unwritten = _check_files(con, result, files, scans)
    if accepted:
        con.execute(_SPANS_SQL + (_LOST_STARTUP_SQL if startup_unwritten else ""),
                    {"run_id": result.run_id, "accepted": accepted})
        result.diagnostics = con.execute(_DIAGNOSTICS_SQL, {"run_id": result.run_id, "accepted": accepted}
                                         ).fetchone()[0]
    con.execute("DROP TABLE _records; DROP TABLE _files")


def run_id_of(run_dir: Path) -> str:
    """The id a run directory loads as (its run.json's, else the directory's name)."""
    return _read_run_json(Path(run_dir))[0].run_id


def check_run_id(con: duckdb.DuckDBPyConnection, run_id: str, run_dir: Path | None, replace: bool) -> None:
    """Refuse a run id the store holds from another run directory (or from a collector) unless `replace`."""
    stored = con.execute("SELECT run_dir FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if stored is None or replace:
        return
    if run_dir is not None and stored[0] == str(Path(run_dir).resolve()):
        return  # the same run directory, loaded again
    raise RunExistsError(run_id, stored[0])


@contextmanager
def _load_settings(con: duckdb.DuckDBPyConnection, more: dict) -> Iterator[None]:
    """DuckDB settings for the duration of a load (LOAD_SETTINGS and `more`), then the caller's again."""
    settings = {**LOAD_SETTINGS, **more}
    saved = {name: con.execute("SELECT current_setting(?)", [name]).fetchone()[0] for name in settings}
    for name, value in settings.items():
        con.execute(f"SET {name} = ?", [value])
    try:
        yield
    finally:
        for name, value in saved.items():
            con.execute(f"SET {name} = ?", [value])


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT, or ROLLBACK when the block raises."""
    con.execute("BEGIN")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def delete_run_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """Delete a run's rows from every table; returns how many rows went, all tables together."""
    return sum(con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id]).fetchone()[0]
               for table in ("spans", "cpu_samples", "samples", "stack_numbers", "frames", "stack_frames", "diagnostics",
                             "runs"))


def _read_run_json(run_dir: Path) -> tuple[_RunMeta, list[LoadWarning]]:
    """run.json's fields; without (a readable) run.json the run is named after its directory. Only a
    regular file of a sane size is read (a FIFO would block the load, and the database with it)."""
    raw: dict[str, Any] = {}
    warnings: list[LoadWarning] = []
    path = run_dir / "run.json"
    try:
        text = _read_regular_file(path, RUN_JSON_MAX_BYTES)
    except FileNotFoundError:
        text = None
    except (OSError, ValueError) as exc:
        text = None
        warnings.append(LoadWarning("loader.bad_run_json", f"{path}: {_reason(exc)}; ignored", "run.json"))
    if text is not None:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raw = {}
            warnings.append(LoadWarning("loader.bad_run_json", f"{path}: unreadable ({exc}); ignored", "run.json"))
    escaped = [key for key in raw.get("escaped") or () if isinstance(key, str)] if isinstance(raw.get("escaped"), list) else []

    def text_of(key: str) -> str | None:
        value = raw.get(key)
        if isinstance(value, list):  # a command as an argument list
            value = shlex.join(map(str, value))
        if value is None:
            return None
        value = str(value)
        if spanfile.needs_escape(value):  # text that is not UTF-8 (an older run.json): stored escaped
            escaped.append(key)
            value = spanfile.escape(value)
        return value

    def hex_id(key: str, length: int) -> str | None:
        value = raw.get(key)
        return agent_config.hex_id(value, length) if isinstance(value, str) else None

    def integer(key: str) -> int | None:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    meta = _RunMeta(
        run_id=text_of("run_id") or run_dir.name, group_id=text_of("group_id"), command=text_of("command"),
        cwd=text_of("cwd"), start_ns=integer("start_ns"), end_ns=integer("end_ns"),
        exit_code=integer("exit_code"), service=text_of("service"), pid=integer("pid"),
        trace_id=hex_id("trace_id", 32), span_id=hex_id("span_id", 16), parent_span_id=hex_id("parent_span_id", 16),
        notes=_notes(note for note in raw["notes"] if isinstance(note, str)) if isinstance(raw.get("notes"), list) else (),
    )
    if escaped:
        warnings.append(LoadWarning(
            "loader.escaped", f"{path}: {', '.join(dict.fromkeys(escaped))}: bytes that are not UTF-8 are stored "
                              "escaped (\\xHH, a backslash as \\\\)", "run.json"))
    return meta, warnings


def _notes(notes: Iterable[str]) -> tuple[str, ...]:
    """A run's notes as stored: text that is not UTF-8 (a path's bytes) escaped, as the span files escape it."""
    return tuple(spanfile.escape(note) if spanfile.needs_escape(note) else note for note in notes)


def _read_regular_file(path: Path, limit: int) -> str:
    """A small regular file's text; OSError/ValueError saying why not (opened without blocking: a FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{info.st_size} bytes, more than a run.json holds ({limit})")
        with os.fdopen(os.dup(fd), "rb") as stream:
            return stream.read(limit + 1).decode("utf-8")
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


@contextmanager
def _expansion_dir(needed: bool) -> Iterator[Path]:
    """A temporary directory for the expanded copies of span files with M records (_expanded), made
    only when one has them: tempfile's import and the directory were ~4 ms of every load."""
    if not needed:
        yield Path()
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="selfopt-trace-load-") as directory:
        yield Path(directory)


def _expanded(path: Path, directory: Path) -> Path:
    """A copy of span file `path` in `directory`, of the same name (the spans' source_file), with each
    of its M records replaced by the X records it stands for; a damaged one is copied as it is (the
    read counts it, damaged_lines names it)."""
    copy = directory / path.name
    with path.open("rb") as source, copy.open("wb") as out:
        rest = b""  # a line the last chunk cut
        while chunk := source.read(1 << 20):  # whole lines a MiB at a time: no Python a line
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            out.write(spanblock.expand(chunk[:cut]))
            rest = chunk[cut:]
        out.write(rest)  # a torn last line, as it is
    return copy


def _batches(files: list[Path], scans: list[tuple[int, int, int, bool]]) -> Iterator[tuple[int, list[Path]]]:
    """Files in groups of about BATCH_BYTES, each with the number (1-based) of its first file."""
    batch: list[Path] = []
    first = size = 0
    for number, path in enumerate(files, start=1):
        first = first or number
        batch.append(path)
        size += scans[number - 1][2]
        if size >= BATCH_BYTES:
            yield first, batch
            batch, first, size = [], 0, 0
    if batch:
        yield first, batch


def _scan(path: Path) -> tuple[int, int, int, bool]:
    """(lines, a bound on the longest line, bytes, whether a line is an M record) of a file, a torn
    last line (no newline) counted: bytes are counted, never parsed. A line within one 1 MiB chunk is
    shorter than that; only one that crosses chunks is measured."""
    lines = longest = size = tail = 0
    last = b"\n"
    blocks = False
    carry = b"\n"  # the previous chunk's last two bytes: an M line's start may straddle two chunks
    chunk_size = 1 << 20
    with path.open("rb") as stream:
        while chunk := stream.read(chunk_size):
            blocks = blocks or spanblock.has_blocks(carry + chunk)
            carry = chunk[-2:]
            size += len(chunk)
            count = chunk.count(b"\n")
            if count:
                longest = max(longest, tail + chunk.index(b"\n") + 1)
                tail = len(chunk) - chunk.rindex(b"\n") - 1
            else:
                tail += len(chunk)
            lines += count
            last = chunk[-1:]
    return lines + (last != b"\n"), max(longest, tail, min(size, chunk_size)), size, blocks


def _check_files(con: duckdb.DuckDBPyConnection, result: LoadResult, files: list[Path],
                 scans: list[tuple[int, int, int, bool]]) -> tuple[list[int], bool]:
    """Warn about files refused or damaged (naming the lines); returns the numbers of the files to
    load, and whether one of them has a start-up unwritten (_FILES_SQL)."""
    found = {row[0]: row[1:] for row in con.execute(
        "SELECT file_no, records, format, version, startup_unwritten FROM _files").fetchall()}
    accepted: list[int] = []
    startup_unwritten = False
    for file_no, path in enumerate(files, start=1):
        records, format_, version, unwritten = found.get(file_no, (0, None, None, None))
        problem = _refusal(records, format_, version)
        if problem:
            result.skipped_files += 1
            result.warnings.append(LoadWarning("loader.file_skipped", f"{path}: {problem}; file skipped", path.name))
            continue
        lines = scans[file_no - 1][0]
        damaged = lines - records
        if damaged > 0:
            result.skipped_lines += damaged
            result.warnings.append(LoadWarning("loader.damaged_lines", _damaged_message(path, damaged, lines), path.name))
        accepted.append(file_no)
        startup_unwritten = startup_unwritten or bool(unwritten)
    result.files = len(accepted)
    return accepted, startup_unwritten


def _damaged_message(path: Path, damaged: int, lines: int) -> str:
    """`FILE: skipped N damaged line(s): line 7 (why), line 9 (why), ...`, the first NAMED_LINES of them.
    The common case, a process killed mid-write, is named without reading the file again."""
    if damaged == 1 and _last_byte(path) != b"\n":
        named = [f"line {lines} (torn: no end of line)"]
    else:
        named = [f"line {number} ({why})" for number, why in damaged_lines(path, NAMED_LINES)]
    more = f", ... ({damaged - len(named)} more)" if damaged > len(named) else ""
    return f"{path}: skipped {damaged} damaged line(s): " + ", ".join(named) + more


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as stream:
        stream.seek(-1, os.SEEK_END)
        return stream.read(1)


_RECORD_TYPES = {spanfile.HEADER, spanfile.START, spanfile.END, spanfile.COMPLETE, spanfile.TICK, spanfile.DIAGNOSTIC,
                 spanblock.BLOCK}


def damaged_lines(path: Path, limit: int) -> list[tuple[int, str]]:
    """(line number, why) of the first `limit` lines of a span file that _STAGE_SQL rejects, by the
    same rules, read again in Python only for a file found damaged."""
    out: list[tuple[int, str]] = []
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            why = _line_problem(raw)
            if why:
                out.append((number, why))
                if len(out) >= limit:
                    break
    return out


def _line_problem(raw: bytes) -> str | None:
    if not raw.endswith(b"\n"):
        return "torn: no end of line"
    try:
        text = raw[:-1].decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    fields = text.rstrip("\r").split("\t")
    if len(fields) != len(spanfile.FIELDS) or fields[-1] != spanfile.TERMINATOR:
        return f"{len(fields)} fields, not {len(spanfile.FIELDS)} ending in {spanfile.TERMINATOR!r}"
    rec, span_id, _, _, _, _, _, start, end, _, attributes, _ = fields
    if rec not in _RECORD_TYPES:
        return f"unknown record type {rec[:10]!r}"
    if rec == spanblock.BLOCK:  # its X records, as the load read them
        try:
            lines = spanblock.x_lines(text).encode("utf-8", "replace").splitlines(True)  # as expand writes them
            return next(filter(None, map(_line_problem, lines)), None)
        except ValueError as exc:
            return str(exc)
    for name, value in (("start_ns", start), ("end_ns", end)):
        if value and not value.lstrip("-").isdigit():
            return f"{name} is not a number"
    try:
        json.dumps(json.loads(attributes or "{}"), ensure_ascii=False).encode("utf-8")
    except ValueError:
        return "attributes are not JSON"
    except UnicodeEncodeError:
        return "attributes hold a lone surrogate (text that is not UTF-8, unescaped)"
    needs = {spanfile.START: (span_id, start), spanfile.END: (span_id, end), spanfile.COMPLETE: (span_id, start, end),
             spanfile.TICK: (end,)}.get(rec, ())
    if not all(needs):
        return "a required field is empty"
    return None


def _refusal(records: int, format_: str | None, version: str | None) -> str | None:
    """Why a file cannot be loaded, or None: readers refuse formats and versions they do not know."""
    if not records:
        return "no readable records"
    if format_ is None:
        return "no header record"
    if format_ != spanfile.FORMAT_NAME:
        return f"not a span file (format {format_!r})"
    if version not in map(str, spanfile.READ_VERSIONS):
        return (f"span file version {version} is not supported (this loader reads versions "
                f"{', '.join(map(str, spanfile.READ_VERSIONS))})")
    return None


def _load_cpu_samples(con: duckdb.DuckDBPyConnection, result: LoadResult, run_dir: Path) -> None:
    """cpu/samples.tsv into cpu_samples (and its D records into diagnostics); a run without it has none."""
    path = run_dir / cpu_sampler.SAMPLES_PATH
    if not path.is_file():
        return
    name = cpu_sampler.SAMPLES_PATH.as_posix()
    version = header_version(path, cpu_sampler.HEADER_PREFIX, tuple(cpu_sampler.READABLE_VERSIONS), "CPU sample")
    if isinstance(version, str):
        result.skipped_files += 1
        result.warnings.append(LoadWarning("loader.file_skipped", f"{path}: {version}; file skipped", name))
        return
    con.execute(_CPU_STAGE_SQL[version], {"file": str(path)})
    records = con.execute("SELECT count(*) FROM _cpu").fetchone()[0]
    result.cpu_samples = con.execute(_CPU_SAMPLES_SQL, {"run_id": result.run_id}).fetchone()[0]
    result.diagnostics += con.execute(_CPU_DIAGNOSTICS_SQL, {"run_id": result.run_id, "source_file": name}).fetchone()[0]
    con.execute("DROP TABLE _cpu")
    damaged = _scan(path)[0] - 1 - records
    if damaged > 0:
        result.skipped_lines += damaged
        result.warnings.append(LoadWarning(
            "loader.damaged_lines", f"{path}: skipped {damaged} damaged line(s) (torn or corrupted)", name))


def header_version(path: Path, prefix: str, versions: tuple[int, ...], what: str) -> int | str:
    """Which of `versions` a file whose first line is `<prefix><version><TAB>fields...` is, or why it
    cannot be loaded."""
    with path.open("rb") as stream:
        first = stream.readline(4096)
    if not first.startswith(prefix.encode()) or not first.endswith(b"\n"):
        return f"no {what} header line"
    found = first[len(prefix):].split(b"\t", 1)[0].strip().decode("utf-8", "replace")
    for version in versions:
        if found == str(version):
            return version
    known = " or ".join(map(str, versions))
    return f"{what} file version {found} is not supported (this loader reads version {known})"


def _refine_and_record_run(con: duckdb.DuckDBPyConnection, result: LoadResult, meta: _RunMeta,
                           run_dir: Path) -> None:
    run = {"run_id": result.run_id}
    first_ns = last_ns = root_exit = root_service = None
    if result.files:  # with no file accepted the run has no spans: nothing to refine (~25 M instructions)
        if result.files > 1:  # a child process: each has its own file (one process, ~5 ms of updates saved)
            con.execute(_CHILD_EXIT_SQL, run)
            con.execute(_UNSEEN_EXIT_SQL, run)
            con.execute(_KILLED_CHILD_SQL, run)
        con.execute(_OWN_EXIT_SQL, run)
        if meta.exit_code is not None:
            con.execute(_ROOT_EXIT_SQL, {**run, "exit_code": meta.exit_code, "pid": meta.pid})
        result.spans, result.incomplete_spans, first_ns, last_ns, refused, served, tasks = \
            con.execute(_TOTALS_SQL, run).fetchone()
        if refused and result.files > 1:  # connections refused, maybe by a server of the run not listening yet
            con.execute(_READINESS_POLL_SQL, run)  # (planned only then: ~6 ms on a small run)
        if served and result.files > 1:  # requests a server of the run answered, maybe once it had started
            result.spans += con.execute(_QUEUED_FIRST_REQUEST_SQL, run).fetchone()[0]
        if tasks:  # a thread pool's tasks, run by its worker threads
            result.spans += con.execute(_WORKER_TASKS_SQL, run).fetchone()[0]
        if result.incomplete_spans and None not in (meta.exit_code, meta.pid, meta.end_ns):  # reaped by `run`
            con.execute(_KILLED_CMD_SQL, {**run, "pid": meta.pid, "end_ns": meta.end_ns})
        root_exit, root_service = con.execute(_ROOT_SQL, run).fetchone() or (None, None)
    con.execute(
        "INSERT INTO runs (run_id, group_id, command, cwd, start_ns, end_ns, exit_code, service_name, loaded_at,"
        " span_count, process_count, run_dir, pid, run_trace_id, run_span_id, run_parent_span_id, notes, damaged_lines)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [result.run_id, meta.group_id, meta.command, meta.cwd,
         meta.start_ns if meta.start_ns is not None else first_ns,
         meta.end_ns if meta.end_ns is not None else last_ns,
         meta.exit_code if meta.exit_code is not None else root_exit,
         meta.service or root_service, result.spans, result.files, str(run_dir.resolve()), meta.pid,
         meta.trace_id, meta.span_id, meta.parent_span_id, list(meta.notes), result.skipped_lines],
    )
    if result.warnings:
        con.executemany(
            "INSERT INTO diagnostics (run_id, source_file, time_ns, code, message)"
            " VALUES (?, ?, epoch_ns(now()), ?, ?)",
            [[result.run_id, w.source_file, w.code, w.message] for w in result.warnings],
        )
