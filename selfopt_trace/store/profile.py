"""Load `profile/samples.tsv` (run --profile) into `samples`, each sample attributed to its span, and
its stacks: `frames` (each once, numbered), `stack_numbers` (a stack's frame numbers and lines: the
`stacks` view puts functions and files in place) and `stack_frames`, the stacks taken apart for hot_frames.

Called by the loader inside the run's load transaction, after the spans and the CPU samples. As for
span files, the lines never pass through Python: DuckDB's CSV reader reads them, SQL checks them.
Then, in SQL:

- the stacks: a frame's function and file are read once (its F record); a stack's frames are
  numbers into them, put in place by list_select (no JSON, no join of every frame of every stack);
- a slice that ended when py-spy stopped (flag `l`) ends where its thread is known to have ended
  (its last CPU reading, its thread span, its process span), not when py-spy noticed;
- a slice is idle when py-spy's heuristic says so (flag `i`) or when the CPU sampler saw its thread
  neither running nor waiting for a CPU for most of it; idle slices are dropped unless run --idle;
- attribution: each span's thread is the `thread.id` of its nearest thread span (a Thread's run, a
  pool's task), else its process's main thread; on each thread, the innermost open span at any
  instant is the one whose start, or whose child's end, came last before it (a timeline prepared
  on the spans, then one as-of join of the samples); a slice counts in its span only between the
  span's start and end: the part before its start goes to the span that encloses it;
- the `profile.alignment` diagnostic: the samples that ran in a function with spans of its own
  (`--target`) must fall inside those spans, and every sample inside its process's life.

A py-spy file the watcher had no time to convert (`run` was killed) is converted here first; a
samples file of version 1 (frames as JSON in each stack) is rewritten as version 2 first.
"""

from __future__ import annotations

from pathlib import Path

from selfopt_trace.store.engine import duckdb
from selfopt_trace.watchers import profile_samples as fmt

# Numbers are typed in the reader (a line whose number does not parse is dropped: a damaged line);
# a 12th field means a damaged line too.
_TYPES = {"time_ns": "BIGINT", "pid": "INTEGER", "tid": "INTEGER", "duration_ns": "BIGINT", "weight": "DOUBLE",
          "stack_id": "BIGINT"}
_COLUMNS = "{%s}" % ", ".join(f"'{name}': '{_TYPES.get(name, 'VARCHAR')}'" for name in (*fmt.FIELDS, "extra"))

# A stack's frame numbers and lines are read as lists here, where the reader's threads share the
# work; a list that does not parse (a damaged line) gives NULL, or a NULL in it.
_STAGE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _profile AS
SELECT rec, time_ns, pid, tid, duration_ns, weight, stack_id, coalesce(flags, '') AS flags,
       CASE WHEN rec <> '{fmt.STACK}' THEN name END AS name, CASE WHEN rec <> '{fmt.STACK}' THEN message END AS message,
       CASE WHEN rec = '{fmt.STACK}' THEN TRY_CAST(string_split(name, '{fmt.LIST_SEPARATOR}') AS INTEGER[]) END AS numbers,
       CASE WHEN rec = '{fmt.STACK}' THEN TRY_CAST(string_split(message, '{fmt.LIST_SEPARATOR}') AS INTEGER[]) END AS lines
FROM read_csv($files, columns = {_COLUMNS}, delim = '\t', quote = '', escape = '', new_line = '\\n',
              header = false, skip = 1, auto_detect = false, strict_mode = false, null_padding = true,
              ignore_errors = true)
WHERE terminator = '{fmt.TERMINATOR}' AND extra IS NULL
  AND CASE rec
        WHEN '{fmt.SAMPLE}' THEN time_ns IS NOT NULL AND pid IS NOT NULL AND duration_ns >= 0 AND weight >= 0
                                 AND stack_id IS NOT NULL
        WHEN '{fmt.STACK}' THEN stack_id IS NOT NULL
        WHEN '{fmt.FRAME}' THEN stack_id IS NOT NULL
        WHEN '{fmt.PROFILER}' THEN time_ns IS NOT NULL AND name IS NOT NULL
        WHEN '{fmt.ATTACHED}' THEN time_ns IS NOT NULL AND name IS NOT NULL
        WHEN '{fmt.CONVERTED}' THEN name IS NOT NULL
        WHEN '{fmt.DIAGNOSTIC}' THEN name IS NOT NULL
        ELSE false
      END
"""

# The frames by number (an F record's number is in its stack_id field; an empty function or file
# reads as NULL): lists indexed by number, that list_select puts in place in each stack. Numbers are
# 1, 2, ... in the file; the lists stop at $last_number (the file's line count: a damaged number
# cannot make them longer), and a number without its F record is NULL there.
_LOOKUP_SQL = f"""
CREATE OR REPLACE TEMP TABLE _lookup AS
WITH frame AS (
    SELECT stack_id AS number, coalesce(name, '') AS function, coalesce(message, '') AS file FROM _profile
    WHERE rowid IN (SELECT min(rowid) FROM _profile WHERE rec = '{fmt.FRAME}' AND stack_id BETWEEN 1 AND $last_number
                    GROUP BY stack_id)
)
SELECT list(f.function ORDER BY n.number) AS functions, list(f.file ORDER BY n.number) AS files,
       list(hash(f.function, f.file) ORDER BY n.number) AS ids
FROM (SELECT range AS number FROM range(1, least((SELECT max(number) FROM frame), $last_number) + 1)) AS n
LEFT JOIN frame AS f USING (number)
"""

# Each K record with its frame ids; `good` unless a frame is missing or the lines do not match the
# frames (a damaged line). Each stack is its first good record (_FIRST).
_STACKS_STAGE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _stacks AS
WITH stack AS (  -- list_select refuses a NULL number
    SELECT rowid AS row, stack_id, CASE WHEN list_count(numbers) = len(numbers) THEN numbers END AS numbers, lines
    FROM _profile WHERE rec = '{fmt.STACK}'
)
SELECT k.row, k.stack_id, k.numbers, k.lines, list_select(l.ids, k.numbers) AS frame_ids,
       coalesce(list_count(list_select(l.ids, k.numbers)) = len(k.numbers) AND len(k.lines) = len(k.numbers)
                AND list_count(k.lines) = len(k.lines), false) AS good
FROM stack AS k, _lookup AS l
"""
_FIRST = "row IN (SELECT min(row) FROM _stacks WHERE good GROUP BY stack_id)"

# The run's stacks taken apart (hot_frames joins these integers): each stack's distinct frames (list
# operations on each stack, no grouping of millions of rows), the running one (the last) flagged
# with its line; its frames, each named by a hash of its function and file.
_STACK_FRAMES_SQL = f"""
INSERT INTO stack_frames
SELECT $run_id, stack_id, frame_id, frame_id = running_id, CASE WHEN frame_id = running_id THEN running_line END
FROM (SELECT stack_id, unnest(list_distinct(frame_ids)) AS frame_id, frame_ids[-1] AS running_id,
             lines[-1] AS running_line
      FROM _stacks WHERE {_FIRST})
"""

# Each frame of the run's stacks once, numbered 1, 2, ... (what the `stacks` view lists by number).
_FRAMES_SQL = """
INSERT INTO frames
SELECT $run_id, frame_id, function, file, row_number() OVER (ORDER BY frame_id)
FROM (SELECT frame_id, any_value(function) AS function, any_value(file) AS file
      FROM (SELECT unnest(ids) AS frame_id, unnest(functions) AS function, unnest(files) AS file FROM _lookup)
      WHERE frame_id IN (SELECT frame_id FROM stack_frames WHERE run_id = $run_id)
      GROUP BY frame_id)
"""

# The stacks as the run's frame numbers (the file's numbers put through a list from one to the
# other: two numbers of the file may be one frame) and lines: integers, not structs of strings.
_STACK_NUMBERS_SQL = f"""
INSERT INTO stack_numbers
WITH renumbered AS (
    SELECT list(f.number ORDER BY n.position) AS numbers
    FROM (SELECT unnest(ids) AS frame_id, generate_subscripts(ids, 1) AS position FROM _lookup) AS n
    LEFT JOIN frames AS f ON f.run_id = $run_id AND f.frame_id = n.frame_id
)
SELECT $run_id, k.stack_id, list_select(r.numbers, k.numbers), k.lines
FROM _stacks AS k, renumbered AS r
WHERE {_FIRST}
"""

# A database whose `stacks` was a table of each stack's frames as structs: that table, renamed
# (WHOLE_STACKS) so that `stacks` can be the view, taken apart (when written before frames and
# stack_frames existed), its frames numbered and its stacks put into stack_numbers.
WHOLE_STACKS = "stacks_whole"

_FRAMES_FROM_WHOLE_SQL = f"""
INSERT INTO frames (run_id, frame_id, function, file)
SELECT run_id, hash(f.function, f.file) AS frame_id, any_value(f.function), any_value(f.file)
FROM (SELECT run_id, unnest(frames) AS f FROM {WHOLE_STACKS})
GROUP BY run_id, frame_id
"""

_STACK_FRAMES_FROM_WHOLE_SQL = f"""
INSERT INTO stack_frames
SELECT run_id, stack_id, frame_id, frame_id = running_id, CASE WHEN frame_id = running_id THEN running_line END
FROM (SELECT run_id, stack_id, unnest(list_distinct([hash(f.function, f.file) FOR f IN frames])) AS frame_id,
             hash(frames[-1].function, frames[-1].file) AS running_id, frames[-1].line AS running_line
      FROM {WHOLE_STACKS})
"""

_NUMBER_FRAMES_SQL = """
UPDATE frames SET number = n.number
FROM (SELECT run_id, frame_id, row_number() OVER (PARTITION BY run_id ORDER BY frame_id) AS number FROM frames) AS n
WHERE frames.run_id = n.run_id AND frames.frame_id = n.frame_id
"""

# (The loader never wrote a stack without frames, which the unnest would leave out.)
_STACK_NUMBERS_FROM_WHOLE_SQL = f"""
INSERT INTO stack_numbers
SELECT k.run_id, k.stack_id, list(f.number ORDER BY k.position), list(k.frame.line ORDER BY k.position)
FROM (SELECT run_id, stack_id, unnest(frames) AS frame, generate_subscripts(frames, 1) AS position
      FROM {WHOLE_STACKS}) AS k
JOIN frames AS f ON f.run_id = k.run_id AND f.frame_id = hash(k.frame.function, k.frame.file)
GROUP BY k.run_id, k.stack_id
"""

# Each span of the sampled processes with its thread: a thread or task span's thread.id, passed down
# its children in the same process; a process span, and a span whose parent is in another process
# (or not traced), on the process's main thread (tid = pid).
_SPAN_THREADS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _span_threads AS
WITH RECURSIVE
sampled AS (
    SELECT span_id, parent_span_id, pid, name, category, start_ns, end_ns,
           CASE WHEN category = 'thread' THEN TRY_CAST(attributes->>'thread.id' AS INTEGER) END AS own_tid
    FROM spans
    WHERE run_id = $run_id AND pid IN (SELECT DISTINCT pid FROM _profile WHERE rec = '{fmt.SAMPLE}')
),
walk(span_id, tid, depth) AS (  -- depth: bad input (a parent loop) must not loop the load
    SELECT s.span_id, coalesce(s.own_tid, s.pid), 0
    FROM sampled AS s
    WHERE s.own_tid IS NOT NULL OR (s.name = 'process' AND s.category = 'process')
       OR NOT EXISTS (SELECT 1 FROM sampled AS p WHERE p.span_id = s.parent_span_id AND p.pid = s.pid)
    UNION ALL
    SELECT c.span_id, w.tid, w.depth + 1
    FROM walk AS w
    JOIN sampled AS p ON p.span_id = w.span_id
    JOIN sampled AS c ON c.parent_span_id = p.span_id AND c.pid = p.pid
    WHERE c.own_tid IS NULL AND NOT (c.name = 'process' AND c.category = 'process') AND w.depth < 10000
)
SELECT s.span_id, s.parent_span_id, s.pid, w.tid, s.start_ns, s.end_ns, s.name, s.category,
       s.name = 'process' AND s.category = 'process' AS is_process
FROM (SELECT span_id, any_value(tid) AS tid FROM walk GROUP BY span_id) AS w
JOIN sampled AS s USING (span_id)
"""

# Attribution, prepared on the spans (thousands of rows) so that the samples (millions) take their
# span in one as-of join. On each sampled thread the innermost open span changes at a span's start
# (to it) and at its end (back to its parent, when that is on the same thread); the thread's span at
# an instant is the last change before it, while that span is open; else its process's span (the
# one that started last before it, while open); else none. That answer only changes at a change, a
# process span's start, or just after the end of either: the timeline holds it at each such point.
# tid_key: a sample with no known thread (-1) takes its process span. from_ns: the span's start, where
# its slices are cut (NULL for a process span: py-spy samples a live process, its edges are its own).
_TIMELINE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _timeline AS
WITH
threads AS (SELECT DISTINCT pid, coalesce(tid, -1) AS tid_key FROM _profile WHERE rec = '{fmt.SAMPLE}'),
changes AS (  -- at one instant, a span's start wins over a return to a parent, and the innermost wins
    SELECT * FROM (
        SELECT pid, tid AS tid_key, start_ns AS at_ns, span_id, end_ns AS until_ns,
               CASE WHEN NOT is_process THEN start_ns END AS from_ns, false AS back
        FROM _span_threads
        UNION ALL
        SELECT c.pid, c.tid, c.end_ns, p.span_id, p.end_ns, CASE WHEN NOT p.is_process THEN p.start_ns END, true
        FROM _span_threads AS c JOIN _span_threads AS p ON p.span_id = c.parent_span_id AND p.pid = c.pid AND p.tid = c.tid
        WHERE c.end_ns < p.end_ns
    )
    QUALIFY row_number() OVER (PARTITION BY pid, tid_key, at_ns ORDER BY back, until_ns, span_id) = 1
),
processes AS (
    SELECT pid, start_ns AS at_ns, span_id, end_ns AS until_ns FROM _span_threads WHERE is_process
),
points AS (
    SELECT DISTINCT pid, tid_key, at_ns FROM (
        SELECT pid, tid_key, at_ns FROM changes
        UNION ALL
        SELECT pid, tid_key, until_ns + 1 FROM changes
        UNION ALL
        SELECT pid, t.tid_key, p.at_ns FROM processes AS p JOIN threads AS t USING (pid)
        UNION ALL
        SELECT pid, t.tid_key, p.until_ns + 1 FROM processes AS p JOIN threads AS t USING (pid)
    )
),
on_thread AS (
    SELECT t.pid, t.tid_key, t.at_ns, CASE WHEN g.until_ns >= t.at_ns THEN g.span_id END AS span_id,
           CASE WHEN g.until_ns >= t.at_ns THEN g.until_ns END AS until_ns,
           CASE WHEN g.until_ns >= t.at_ns THEN g.from_ns END AS from_ns
    FROM points AS t
    ASOF LEFT JOIN changes AS g ON g.pid = t.pid AND g.tid_key = t.tid_key AND t.at_ns >= g.at_ns
)
SELECT t.pid, t.tid_key, t.at_ns, coalesce(t.span_id, p.span_id) AS span_id, coalesce(t.until_ns, p.until_ns) AS until_ns,
       t.from_ns
FROM on_thread AS t
LEFT JOIN (  -- a process span holds from its start until it ends or the pid's next one starts: one match
    SELECT *, least(until_ns, lead(at_ns) OVER (PARTITION BY pid ORDER BY at_ns, span_id) - 1) AS held_until
    FROM processes
) AS p ON p.pid = t.pid AND p.at_ns <= t.at_ns AND t.at_ns <= p.held_until
"""

_EDGE_NS = 10_000_000  # py-spy's times against the spans': off by up to 9 ms seen under load
# py-spy's times come out early by its start-up, however fast starting it returned: exec to its
# clock's zero 2.2-3.0 ms (`perf trace`, 6.8 ms the first time); a 110 ms slice of a sleep, 1.3 ms
# before its span where starting py-spy took 0.24 ms, went to the span around (CI, with 1 ms here)
_MIN_WINDOW_NS = 5_000_000
_BUCKET_NS = 20_000_000  # about a CPU reading's length: a reading is in one or two buckets

# The samples, in one statement (a temporary table of a million rows between two steps costs
# more than the step):
# - the slices: one that began while its thread was known alive ends where the thread is known to
#   have ended (its last CPU reading, its thread or process span): py-spy ends the last slice of a
#   thread where py-spy stopped, and keys threads by an identifier the next thread started may reuse
#   (a request thread of 7 ms, asleep when sampled, had a slice of 694 ms, until the next thread under
#   its key changed stack); one that began later (the interpreter's finalization, after the agent's
#   last record) says the thread lived on, and keeps its length; idle when
#   py-spy's heuristic says so or when the CPU sampler saw the thread neither on a CPU nor queued
#   for one for most of the slice (the reading around its middle: found by hash in buckets of
#   _BUCKET_NS, as sorting a million slices for an as-of join costs more than the rest);
# - attribution: the span of the timeline's last point before the sample, cut to that span at both
#   ends (the part before its start: a row of its own, for _ENCLOSING_SQL to place).
_SAMPLES_SQL = f"""
INSERT INTO samples
WITH raw AS (
    SELECT time_ns, pid, tid, duration_ns, weight, stack_id, flags, name AS thread_name
    FROM _profile WHERE rec = '{fmt.SAMPLE}'
),
thread_end AS (
    SELECT pid, tid, max(end_ns) AS end_ns FROM (
        SELECT pid, tid, end_ns FROM cpu_samples WHERE run_id = $run_id
        UNION ALL
        SELECT pid, TRY_CAST(attributes->>'thread.id' AS INTEGER), end_ns FROM spans
        WHERE run_id = $run_id AND category = 'thread'
        UNION ALL
        SELECT pid, pid, end_ns FROM spans WHERE run_id = $run_id AND name = 'process' AND category = 'process'
    ) GROUP BY pid, tid
),
ended AS (
    SELECT r.* REPLACE (
               CASE WHEN r.time_ns < e.end_ns AND e.end_ns < r.time_ns + r.duration_ns
                    THEN e.end_ns - r.time_ns ELSE r.duration_ns END AS duration_ns),
           r.duration_ns AS seen_ns
    FROM raw AS r LEFT JOIN thread_end AS e ON e.pid = r.pid AND e.tid = r.tid
),
middles AS (SELECT *, time_ns + duration_ns // 2 AS middle_ns FROM ended),
readings AS (  -- each owns its time until the next one starts (no overlap: a slice matches one)
    SELECT pid, tid, start_ns, least(end_ns, coalesce(lead(start_ns) OVER (PARTITION BY pid, tid ORDER BY start_ns),
                                                      end_ns)) AS end_ns,
           (cpu_ns + runqueue_ns) * 2 < end_ns - start_ns AS idle
    FROM cpu_samples WHERE run_id = $run_id
),
idle_short AS (  -- the idle readings, listed in each bucket they overlap: slices find them by hash
    SELECT pid, tid, start_ns, end_ns,
           unnest(range(start_ns // {_BUCKET_NS}, (end_ns - 1) // {_BUCKET_NS} + 1)) AS bucket
    FROM readings WHERE idle AND end_ns > start_ns AND (end_ns - 1) // {_BUCKET_NS} - start_ns // {_BUCKET_NS} < 64
),
idle_long AS (
    SELECT * FROM readings
    WHERE idle AND end_ns > start_ns AND (end_ns - 1) // {_BUCKET_NS} - start_ns // {_BUCKET_NS} >= 64
),
slices AS (
    SELECT m.pid, m.tid, m.thread_name, m.time_ns, m.duration_ns,
           CASE WHEN m.seen_ns > 0 THEN m.weight * m.duration_ns / m.seen_ns ELSE m.weight END AS weight,
           m.stack_id,
           contains(m.flags, '{fmt.IDLE_FLAG}') OR c.pid IS NOT NULL OR l.pid IS NOT NULL AS idle
    FROM middles AS m
    LEFT JOIN idle_short AS c ON c.pid = m.pid AND c.tid = m.tid AND c.bucket = m.middle_ns // {_BUCKET_NS}
                             AND c.start_ns <= m.middle_ns AND m.middle_ns < c.end_ns
    LEFT JOIN idle_long AS l ON l.pid = m.pid AND l.tid = m.tid AND l.start_ns <= m.middle_ns AND m.middle_ns < l.end_ns
),
process_life AS (SELECT pid, min(start_ns) AS start_ns, max(end_ns) AS end_ns FROM spans
                 WHERE run_id = $run_id AND name = 'process' AND category = 'process' GROUP BY pid),
reach AS (  -- how far from its start a slice is placed at most: the time starting its py-spy took
            -- (its P record), or where its start was placed by when it said it sampled, that
            -- placement's uncertainty (its C record's within_ms: fmt.time_zero); at least
            -- _MIN_WINDOW_NS; a child sampled by its parent's py-spy (`--subprocesses`:
            -- SELFOPT_TRACE_PROFILE_SPAWN=tree) has no P record: the run's longest
    SELECT e.pid, greatest(coalesce(w.window_ns, max(w.window_ns) OVER (), {_EDGE_NS}), {_MIN_WINDOW_NS}) AS ns
    FROM process_life AS e
    LEFT JOIN (SELECT pid, max(window_ns) AS window_ns FROM (
                   SELECT pid, duration_ns AS window_ns FROM _profile WHERE rec = '{fmt.PROFILER}'
                   UNION ALL
                   SELECT pid, CAST(TRY_CAST(TRY_CAST(message AS JSON)->>'within_ms' AS DOUBLE) * 1e6 AS BIGINT)
                   FROM _profile WHERE rec = '{fmt.CONVERTED}')
               GROUP BY pid) AS w USING (pid)
),
kept AS (  -- a slice is placed by its middle, but no further from its start than its `reach`:
           -- py-spy's clock zero comes after the recorded anchor (its start-up), so its times come out
           -- early, by up to 9 ms on a loaded machine (where starting py-spy took 9 ms too): placed by
           -- its start, a 600 ms slice went to the sleep before its span and was cut to that sleep's
           -- end. No further: the slice's stack was seen at its start, and it lasts until the next
           -- sample py-spy got, which may be intervals later (placed by its middle, a 34 ms slice of
           -- json.loads went to the json.dumps after it, 9.5 ms after its start, where py-spy's
           -- window was 0.2 ms). Within its process's span: py-spy samples a live process, so one
           -- that seems to start just before it or after it ended (the alignment's error; the
           -- interpreter's finalization, 0.4 ms after the end seen) is its process's; one further
           -- out, no span's.
    SELECT s.*, CASE WHEN s.time_ns BETWEEN e.start_ns - {_EDGE_NS} AND e.end_ns + {_EDGE_NS}
                     THEN greatest(least(s.time_ns + least(s.duration_ns // 2, r.ns), e.end_ns - 1), e.start_ns)
                     ELSE s.time_ns END AS placed_ns
    FROM slices AS s LEFT JOIN process_life AS e ON e.pid = s.pid LEFT JOIN reach AS r ON r.pid = s.pid
    WHERE $keep_idle OR NOT s.idle
),
attributed AS (
    SELECT s.*, g.span_id, g.until_ns, g.from_ns  -- open at the sample: the timeline has a point just after every end
    FROM kept AS s
    ASOF LEFT JOIN _timeline AS g ON g.pid = s.pid AND g.tid_key = coalesce(s.tid, -1) AND s.placed_ns >= g.at_ns
),
-- A slice goes on until the sample that saw another stack: past the end of its span, the stack
-- had changed (the span's code returned), so it ends with its span. One that started after its
-- span's end (placed in its process's span above) keeps its length. A slice that began before its
-- span counts in it from the span's start only (counted whole, a 7 ms span held 17 ms of samples):
-- the part before is a row of its own, given to the span that encloses it by _ENCLOSING_SQL.
cut AS (
    SELECT *, CASE WHEN time_ns < from_ns THEN from_ns ELSE time_ns END AS start_ns,
           CASE WHEN time_ns < until_ns AND until_ns < time_ns + duration_ns THEN until_ns
                ELSE time_ns + duration_ns END AS end_ns
    FROM attributed
),
pieces AS (
    SELECT *, CASE WHEN early THEN time_ns ELSE start_ns END AS piece_start,
           CASE WHEN early THEN start_ns - time_ns ELSE end_ns - start_ns END AS piece_ns
    FROM (SELECT *, unnest(CASE WHEN time_ns < from_ns THEN [false, true] ELSE [false] END) AS early FROM cut)
)
SELECT $run_id, pid, tid, thread_name, piece_start, piece_ns,
       CASE WHEN piece_ns = duration_ns OR duration_ns <= 0 THEN weight ELSE weight * piece_ns / duration_ns END,
       stack_id, idle, span_id
FROM pieces
"""

# The part of a slice before its span's start (the rows of the run before their span's start; a
# process span's edges are its own) goes to the span that encloses it: on its thread, its span's
# innermost ancestor already open at its start; else its process span. Never to a span that was not
# open over all of it (a sibling that ran then): each span's samples stay inside it, and no frame of
# a span lands in another's. A few rows, walked up their spans' parents.
_ENCLOSING_SQL = """
UPDATE samples SET span_id = r.span_id
FROM (
    WITH RECURSIVE
    early AS (
        SELECT p.rowid AS row, p.time_ns, t.pid, t.tid, t.parent_span_id, t.start_ns
        FROM samples AS p JOIN _span_threads AS t USING (span_id)
        WHERE p.run_id = $run_id AND p.time_ns < t.start_ns AND NOT t.is_process
    ),
    up(row, time_ns, span_id, parent_span_id, pid, tid, start_ns, is_process, depth) AS (
        SELECT e.row, e.time_ns, a.span_id, a.parent_span_id, a.pid, a.tid, a.start_ns, a.is_process, 1
        FROM early AS e JOIN _span_threads AS a ON a.span_id = e.parent_span_id AND a.pid = e.pid AND a.tid = e.tid
        UNION ALL
        SELECT u.row, u.time_ns, a.span_id, a.parent_span_id, a.pid, a.tid, a.start_ns, a.is_process, u.depth + 1
        FROM up AS u JOIN _span_threads AS a ON a.span_id = u.parent_span_id AND a.pid = u.pid AND a.tid = u.tid
        WHERE u.start_ns > u.time_ns AND NOT u.is_process AND u.depth < 10000  -- a parent loop (bad input) ends
    ),
    found AS (
        SELECT row, arg_max(span_id, depth) FILTER (WHERE start_ns <= time_ns OR is_process) AS span_id
        FROM up GROUP BY row
    ),
    processes AS (SELECT pid, start_ns, span_id FROM _span_threads WHERE is_process)
    SELECT e.row, coalesce(f.span_id, p.span_id) AS span_id
    FROM early AS e
    LEFT JOIN found AS f USING (row)
    ASOF LEFT JOIN processes AS p ON p.pid = e.pid AND e.start_ns >= p.start_ns
) AS r
WHERE samples.run_id = $run_id AND samples.rowid = r.row
"""

_DIAGNOSTICS_SQL = f"""
INSERT INTO diagnostics
SELECT $run_id, $source_file, pid, time_ns, name, message FROM _profile WHERE rec = '{fmt.DIAGNOSTIC}'
"""

# Samples that ran in a function some spans stand for (code.function of a --target span or a pool
# task; not of a call site, which has code.lineno: a parse span names the function that called the
# parser) against those spans on the same thread: inside the nearest one, or how far outside; and
# samples against their process's life.
_ALIGNMENT_SQL = """
WITH fn_spans AS (
    SELECT t.pid, t.tid, t.start_ns, t.end_ns, s.attributes->>'code.function' AS fn
    FROM _span_threads AS t JOIN spans AS s ON s.run_id = $run_id AND s.span_id = t.span_id
    WHERE s.attributes->>'code.function' IS NOT NULL AND s.attributes->>'code.lineno' IS NULL
      AND s.category <> 'thread'
),
stack_fns AS (
    SELECT DISTINCT k.stack_id, f.function AS fn
    FROM frames AS f JOIN stack_frames AS k ON k.run_id = $run_id AND k.frame_id = f.frame_id
    WHERE f.run_id = $run_id AND f.function IN (SELECT fn FROM fn_spans)
),
checked AS (
    SELECT s.pid, s.tid, s.time_ns, f.fn FROM samples AS s JOIN stack_fns AS f USING (stack_id)
    WHERE s.run_id = $run_id
),
before AS (
    SELECT c.*, b.end_ns AS before_end FROM checked AS c
    ASOF LEFT JOIN fn_spans AS b ON b.pid = c.pid AND b.tid = c.tid AND b.fn = c.fn AND c.time_ns >= b.start_ns
),
near AS (
    SELECT c.*, a.start_ns AS after_start FROM before AS c
    ASOF LEFT JOIN fn_spans AS a ON a.pid = c.pid AND a.tid = c.tid AND a.fn = c.fn AND c.time_ns <= a.start_ns
),
outside AS (  -- a sample on a thread where its function has no span (not hooked there) tells nothing
    SELECT fn, CASE WHEN before_end >= time_ns THEN 0
                    ELSE least(coalesce(time_ns - before_end, after_start - time_ns),
                               coalesce(after_start - time_ns, time_ns - before_end)) END AS ns
    FROM near
    WHERE before_end IS NOT NULL OR after_start IS NOT NULL
),
lives AS (
    SELECT pid, min(start_ns) AS start_ns, max(end_ns) AS end_ns FROM spans
    WHERE run_id = $run_id AND name = 'process' AND category = 'process' GROUP BY pid
),
life AS (
    SELECT greatest(l.start_ns - s.time_ns, s.time_ns - l.end_ns, 0) AS ns
    FROM samples AS s JOIN lives AS l USING (pid) WHERE s.run_id = $run_id
)
SELECT (SELECT count(*) FROM outside), (SELECT count(DISTINCT fn) FROM outside),
       (SELECT count(*) FROM outside WHERE ns > 0), (SELECT max(ns) FROM outside),
       (SELECT count(*) FROM life), (SELECT count(*) FROM life WHERE ns > 0), (SELECT max(ns) FROM life)
"""


def load_profile(con: duckdb.DuckDBPyConnection, result, run_dir: Path) -> None:
    """profile/samples.tsv (and any py-spy file not converted yet) into samples, the stacks' tables and diagnostics."""
    from selfopt_trace.store.loader import LoadWarning, _scan, header_version

    source = path = run_dir / fmt.SAMPLES_PATH
    if not path.is_file():
        return
    name = fmt.SAMPLES_PATH.as_posix()
    import tempfile  # only for a run with samples: every load imports this module

    run = {"run_id": result.run_id}
    with tempfile.TemporaryDirectory(prefix="selfopt-trace-profile-") as scratch:
        version = header_version(path, fmt.HEADER_PREFIX, (1, fmt.FORMAT_VERSION), "profile samples")
        if isinstance(version, str):
            result.skipped_files += 1
            result.warnings.append(LoadWarning("loader.file_skipped", f"{source}: {version}; file skipped", name))
            return
        if version == 1:  # the same records but K, rewritten as version 2
            path = Path(scratch) / "samples-v2.tsv"
            fmt.upgrade_v1(source, path)
        con.execute(_STAGE_SQL, {"files": [str(path)]})
        lines = _scan(path)[0]
        damaged = lines - 1 - con.execute("SELECT count(*) FROM _profile").fetchone()[0]
        leftovers = _convert_leftovers(con, run_dir, Path(scratch))
        if leftovers:
            con.execute(_STAGE_SQL.replace("CREATE OR REPLACE TEMP TABLE _profile AS", "INSERT INTO _profile"),
                        {"files": leftovers})
            lines += sum(_scan(Path(leftover))[0] for leftover in leftovers)
    con.execute(_LOOKUP_SQL, {"last_number": lines})
    con.execute(_STACKS_STAGE_SQL)
    damaged += con.execute("SELECT count(*) FROM _stacks WHERE NOT good").fetchone()[0]
    if damaged > 0:
        result.skipped_lines += damaged
        result.warnings.append(LoadWarning(
            "loader.damaged_lines", f"{source}: skipped {damaged} damaged line(s) (torn or corrupted)", name))
    for sql in (_STACK_FRAMES_SQL, _FRAMES_SQL, _STACK_NUMBERS_SQL):
        con.execute(sql, run)
    con.execute(_SPAN_THREADS_SQL, run)
    con.execute(_TIMELINE_SQL)
    keep_idle = bool(con.execute(f"SELECT bool_or(TRY_CAST(TRY_CAST(message AS JSON)->>'idle' AS BOOLEAN)) "
                                 f"FROM _profile WHERE rec = '{fmt.PROFILER}'").fetchone()[0])
    result.samples = con.execute(_SAMPLES_SQL, {**run, "keep_idle": keep_idle}).fetchone()[0]
    con.execute(_ENCLOSING_SQL, run)
    result.diagnostics += con.execute(_DIAGNOSTICS_SQL, {**run, "source_file": name}).fetchone()[0]
    if result.samples:
        _alignment(con, result, name)
    con.execute("DROP TABLE _profile; DROP TABLE _lookup; DROP TABLE _stacks; DROP TABLE _span_threads; "
                "DROP TABLE _timeline")


def convert_whole_stacks(con: duckdb.DuckDBPyConnection, taken_apart: bool) -> None:
    """WHOLE_STACKS (an older database's `stacks` table, renamed) into frames, stack_frames (unless
    `taken_apart` already) and stack_numbers; then dropped."""
    if not taken_apart:
        con.execute(_FRAMES_FROM_WHOLE_SQL)
        con.execute(_STACK_FRAMES_FROM_WHOLE_SQL)
    con.execute(_NUMBER_FRAMES_SQL)
    con.execute(_STACK_NUMBERS_FROM_WHOLE_SQL)
    con.execute(f"DROP TABLE {WHOLE_STACKS}")


def _convert_leftovers(con: duckdb.DuckDBPyConnection, run_dir: Path, scratch: Path) -> list[str]:
    """py-spy files named by a P record and never converted (no C record): converted into `scratch`."""
    rows = con.execute(f"""
        SELECT p.name, any_value(p.time_ns), any_value(p.weight), any_value(p.pid), min(a.time_ns)
        FROM _profile AS p LEFT JOIN _profile AS a ON a.rec = '{fmt.ATTACHED}' AND a.name = p.name
        WHERE p.rec = '{fmt.PROFILER}' AND p.name NOT IN (SELECT name FROM _profile WHERE rec = '{fmt.CONVERTED}')
        GROUP BY p.name""").fetchall()
    if not rows:
        return []
    known = fmt.Interned({row[0] for row in con.execute(f"SELECT stack_id FROM _profile WHERE rec = '{fmt.STACK}'")
                          .fetchall()})
    for number, function, file in con.execute(
            f"SELECT stack_id, coalesce(name, ''), coalesce(message, '') FROM _profile WHERE rec = '{fmt.FRAME}'"
            f" ORDER BY rowid").fetchall():
        known.frames.setdefault((function, file), number)
        known.next_frame = max(known.next_frame, number + 1)
    files = []
    for number, (name, anchor_ns, rate, pid, attached_ns) in enumerate(rows):
        source = run_dir / fmt.PROFILE_DIR / Path(name).name
        lines = None
        if source.is_file() and source.stat().st_size:
            try:
                lines, _ = fmt.convert_file(source, anchor_ns, rate or 100, known, pid, attached_ns)
            except (OSError, ValueError) as exc:
                lines = [fmt.line(fmt.DIAGNOSTIC, anchor_ns, pid, name=fmt.FAILED,
                                  message=f"{source}: py-spy's file could not be read ({exc})")]
        if lines is None:
            lines = [fmt.line(fmt.DIAGNOSTIC, anchor_ns, pid, name=fmt.LOST,
                              message=f"no samples from pid {pid}: py-spy wrote nothing (killed with `run`?)")]
        target = scratch / f"{number}.tsv"
        target.write_text(fmt.header() + "".join(lines), encoding="utf-8", errors="surrogateescape")
        files.append(str(target))
    return files


def _alignment(con: duckdb.DuckDBPyConnection, result, source_file: str) -> None:
    """The profile.alignment diagnostic: how well the samples' times agree with the spans'."""
    checked, functions, outside, worst, lived, out_of_life, worst_life = con.execute(
        _ALIGNMENT_SQL, {"run_id": result.run_id}).fetchone()
    anchors = con.execute(f"SELECT max(duration_ns), any_value(weight) FROM _profile WHERE rec = '{fmt.PROFILER}'"
                          ).fetchone()
    # the starts fmt.time_zero moved to when py-spy said it samples: by how much, known how well
    moved, moved_ms, within_ms = con.execute(f"""
        SELECT count(*), max(abs(moved)), max(within) FROM (
            SELECT TRY_CAST(TRY_CAST(message AS JSON)->>'moved_ms' AS DOUBLE) AS moved,
                   TRY_CAST(TRY_CAST(message AS JSON)->>'within_ms' AS DOUBLE) AS within
            FROM _profile WHERE rec = '{fmt.CONVERTED}')
        WHERE moved <> 0""").fetchone()
    # as the placement allows: the time starting py-spy took, its own start-up at least (_MIN_WINDOW_NS)
    window_ms = max((anchors[0] or 0) / 1e6, within_ms or 0, _MIN_WINDOW_NS / 1e6)
    interval_ms = 1000 / anchors[1] if anchors[1] else None
    parts = [f"sample times put on the trace's clock from each py-spy's start (known within {window_ms:.1f} ms)"]
    if moved:
        parts.append(f"{moved} py-spy start(s) placed by when py-spy said it sampled, moved by up to {moved_ms:.1f} ms")
    if checked:
        parts.append(f"{checked} samples ran in {functions} function(s) with spans of their own: "
                     + ("all inside them" if not outside else
                        f"{outside} outside, by at most {worst / 1e6:.1f} ms"))
    else:
        parts.append("no sample ran in a function with spans of its own (--target gives such spans)")
    parts.append(f"{lived} samples against their process's life: "
                 + ("all inside it" if not out_of_life else f"{out_of_life} outside, by at most {worst_life / 1e6:.1f} ms"))
    if interval_ms:
        parts.append(f"sampling interval {interval_ms:.1f} ms")
    message = "; ".join(parts)
    con.execute("INSERT INTO diagnostics VALUES ($run_id, $source_file, NULL, epoch_ns(now()), $code, $message)",
                {"run_id": result.run_id, "source_file": source_file, "code": "profile.alignment",
                 "message": message})
    result.diagnostics += 1
