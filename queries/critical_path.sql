-- The critical path: the chain of spans that determines the run's wall time.
--
-- Walking back from the end of the run, at each level the path goes through the child that ends
-- last, then the one that ends last before that child started, and so on (in start order: each
-- child that ends later than every child started before it). Shortening a span off the path does
-- not shorten the run; shortening one on it does, by up to its self time on the path. Children
-- are clipped to their parent; a child on the path that overlaps the next one on it counts until
-- that one starts. The spans considered are the run's trace, as in `breakdown`, and the path
-- follows the same waits: a span's children are the spans of its own thread, and for a wait (an
-- HTTP call, a container or os.system call) the processes, threads, tasks or server spans it waits
-- on, clipped to the wait. A subprocess span is only its spawning call: a child process is on the
-- path through the waits on it, so a helper or a server that nobody waits on never is. Of units
-- that end together (a reused pool's workers all outlive a wait on a map), the path goes through
-- the one whose work ended last: a unit idle at that end, in a wait on nothing traced (a pool
-- worker's read of its next task), worked until that wait began; then by span id. After CMD's own
-- process span, when `run` saw CMD exit later (breakdown.sql, root_exit): its interpreter's
-- teardown, a row of its own.
--
-- Parameters:
--   run_id                the run
--   min_ms = 1.0          hide spans with less time than this on the path (their time stays in their
--                         parent's on_path_ms, not in its self_ms)
--   limit = 200           rows shown
-- Columns:
--   span                  the span's name, indented by its depth on the path
--   category              its category
--   pid                   the process it was recorded in
--   start_ms              when its part of the path starts, from the start of the run
--   on_path_ms            how long it is on the path (its own time and its children's)
--   self_ms               time on the path in none of its children: what shortening it can save
--   duration_ms           the span's whole duration
WITH RECURSIVE
activity AS MATERIALIZED (  -- every span as an activity of its unit (selfopt_trace/store/macros.sql)
    SELECT id, parent, is_root, is_top, rs, re, parent_rs, parent_re, waits_on, unit,
           is_wait AND waits_on IS NULL AS idle  -- a wait on nothing traced (a flag: idled reads no list)
    FROM run_activity($run_id)
),
waited AS (  -- each unit waited on, clipped to each wait on it
    SELECT t.id, w.id AS parent, greatest(t.rs, w.rs) AS cs, least(t.re, w.re) AS ce
    FROM (SELECT id, rs, re, unnest(waits_on) AS target FROM activity WHERE waits_on IS NOT NULL) AS w
    JOIN activity AS t ON t.id = w.target
),
-- (child, parent) pairs, the child clipped to its parent: top-level spans are children of the run
-- (id 0); a unit waited on is a child of each wait on it.
clipped AS (
    SELECT id, coalesce(parent, 0::UBIGINT) AS parent,
           greatest(rs, coalesce(parent_rs, rs)) AS cs, least(re, coalesce(parent_re, re)) AS ce
    FROM activity
    WHERE NOT is_root OR is_top
    UNION ALL
    FROM waited
),
-- Units waited on that are idle at their clipped end, and since when: where their work ended.
idled AS (
    SELECT w.id, w.parent, min(i.rs) AS since
    FROM waited AS w
    JOIN (FROM activity WHERE idle) AS i ON i.unit = w.id AND i.rs < w.ce AND i.re >= w.ce
    GROUP BY w.id, w.parent
),
ordered AS (  -- siblings in start order (the longest first at equal starts)
    SELECT *, lag(ce) OVER w AS previous_end, lead(cs) OVER w AS next_start
    FROM clipped
    WHERE ce > cs
    WINDOW w AS (PARTITION BY parent ORDER BY cs, ce DESC, id)
),
overlapping AS (  -- parents whose children overlap (in start order, neighbours do whenever any do)
    SELECT DISTINCT parent FROM ordered WHERE cs < previous_end
),
-- The children that end later than all those started before them, with the next one's start.
-- Children that never overlap all do; only the (few) overlapping families need the full test. Of
-- children that end together, the one whose work ended last comes first (then span id).
chain AS MATERIALIZED (
    SELECT id, parent, cs, ce, next_start FROM ordered WHERE parent NOT IN (SELECT parent FROM overlapping)
    UNION ALL
    SELECT id, parent, cs, ce, lead(cs) OVER (PARTITION BY parent ORDER BY cs, ce DESC, worked DESC, id)
    FROM (SELECT *, max((ce, worked)) OVER (PARTITION BY parent ORDER BY cs, ce DESC, worked DESC, id
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_end
          FROM (SELECT o.*, coalesce(k.since, o.ce) AS worked
                FROM ordered AS o
                LEFT JOIN idled AS k ON k.id = o.id AND k.parent = o.parent
                WHERE o.parent IN (SELECT parent FROM overlapping)))
    WHERE earlier_end IS NULL OR (ce, worked) > earlier_end
),
-- A unit waited on more than once (a child polled with Popen.wait(timeout)) is on the path once
-- per wait: each occurrence is told apart by its parent's occurrence (parent, parent_start).
path(id, parent, parent_start, depth, path_start, path_end) AS (
    SELECT 0::UBIGINT, NULL::UBIGINT, NULL::BIGINT, 0, min(cs), max(ce) FROM chain WHERE parent = 0
    UNION ALL
    SELECT c.id, p.id, p.path_start, p.depth + 1, greatest(c.cs, p.path_start),
           least(c.ce, coalesce(c.next_start, c.ce), p.path_end)
    FROM path AS p
    JOIN chain AS c ON c.parent = p.id
    WHERE least(c.ce, coalesce(c.next_start, c.ce), p.path_end) > greatest(c.cs, p.path_start)
      AND p.depth < 1000
),
path_rows AS MATERIALIZED (  -- a recursive CTE is computed again at each use
    SELECT * FROM path
),
children_on_path AS (
    SELECT parent, parent_start, sum(path_end - path_start) AS ns
    FROM path_rows
    WHERE parent IS NOT NULL
    GROUP BY parent, parent_start
),
on_path AS (
    SELECT p.*, p.path_end - p.path_start - coalesce(k.ns, 0) AS self_ns
    FROM path_rows AS p
    LEFT JOIN children_on_path AS k ON k.parent = p.id AND k.parent_start = p.path_start
    WHERE p.id <> 0
),
shown AS (
    SELECT * FROM on_path
    WHERE path_end - path_start >= $min_ms * 1e6
    ORDER BY path_start, depth
    LIMIT $limit
),
shown_starts AS (  -- a span's start: the names below are read only for spans starting then
    SELECT rs AS start_ns FROM activity WHERE id IN (SELECT id FROM shown)
),
teardown AS (  -- CMD's teardown after the path (its process span) ends, as breakdown.sql's root_exit
    SELECT s.pid, (SELECT path_end FROM path_rows WHERE id = 0) AS path_end, r.end_ns AS exited_ns
    FROM runs AS r
    JOIN spans AS s ON s.run_id = r.run_id AND s.pid = r.pid AND s.name = 'process' AND s.category = 'process'
    WHERE r.run_id = $run_id AND NOT s.incomplete AND s.end_ns <= r.end_ns
      AND hash(s.span_id) IN (SELECT id FROM activity WHERE is_top)
      AND r.end_ns - (SELECT path_end FROM path_rows WHERE id = 0) >= greatest($min_ms * 1e6, 1)
)
SELECT span, category, pid, start_ms, on_path_ms, self_ms, duration_ms
FROM (
    SELECT repeat('  ', o.depth - 1) || n.name AS span, n.category, n.pid,
           round((o.path_start - (SELECT path_start FROM path_rows WHERE id = 0)) / 1e6, 3) AS start_ms,
           round((o.path_end - o.path_start) / 1e6, 3) AS on_path_ms,
           round(o.self_ns / 1e6, 3) AS self_ms,
           round((n.end_ns - n.start_ns) / 1e6, 3) AS duration_ms,
           o.path_start AS at_ns, o.depth
    FROM shown AS o
    JOIN (  -- the shown spans' names, from this run or the other runs whose servers answered it
        SELECT DISTINCT ON (id) id, name, category, pid, start_ns, end_ns
        FROM (SELECT hash(span_id) AS id, name, category, pid, start_ns, end_ns, run_id = $run_id AS own
              FROM spans
              WHERE (run_id = $run_id OR kind = 'SERVER') AND start_ns IN (SELECT start_ns FROM shown_starts))
        WHERE id IN (SELECT id FROM shown)
        ORDER BY id, own DESC) AS n ON n.id = o.id
    UNION ALL
    SELECT 'interpreter teardown', 'teardown', pid,
           round((path_end - (SELECT path_start FROM path_rows WHERE id = 0)) / 1e6, 3),
           round((exited_ns - path_end) / 1e6, 3), round((exited_ns - path_end) / 1e6, 3),
           round((exited_ns - path_end) / 1e6, 3), path_end, 1
    FROM teardown)
ORDER BY at_ns, depth
LIMIT $limit
