-- The critical path: the chain of spans that determines the run's wall time.
--
-- Walking back from the end of the run, at each level the path goes through the child that ends
-- last, then the one that ends last before that child started, and so on (in start order: each
-- child that ends later than every child started before it). Shortening a span off the path does
-- not shorten the run; shortening one on it does, by up to its self time on the path. Children
-- are clipped to their parent; a child on the path that overlaps the next one on it counts until
-- that one starts. The spans considered are the run's trace, as in `breakdown`.
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
run_spans AS NOT MATERIALIZED (
    SELECT span_id, parent_span_id, trace_id, name, kind, category, start_ns, end_ns, pid
    FROM spans
    WHERE run_id = $run_id
),
main_trace AS (  -- as in breakdown.sql: the trace of the process started when the run started
    SELECT coalesce(
        (SELECT p.trace_id
         FROM run_spans AS p
         LEFT JOIN runs AS r ON r.run_id = $run_id
         WHERE p.name = 'process' AND p.category = 'process'
         ORDER BY abs(p.start_ns - r.start_ns) NULLS LAST, p.start_ns
         LIMIT 1),
        (SELECT trace_id FROM run_spans ORDER BY start_ns LIMIT 1)) AS trace_id
),
nodes AS MATERIALIZED (  -- with the server spans of other runs answering this run's clients
    SELECT hash(span_id) AS id, CASE WHEN parent_span_id IS NOT NULL THEN hash(parent_span_id) END AS parent,
           name, category, pid, start_ns, end_ns
    FROM (SELECT * FROM run_spans
          UNION ALL
          SELECT s.span_id, s.parent_span_id, s.trace_id, s.name, s.kind, s.category, s.start_ns, s.end_ns, s.pid
          FROM spans AS s
          JOIN run_spans AS c ON s.parent_span_id = c.span_id AND s.trace_id = c.trace_id
          WHERE s.kind = 'SERVER' AND s.run_id <> $run_id AND c.kind = 'CLIENT')
    WHERE trace_id = (SELECT trace_id FROM main_trace)
),
clipped AS (  -- top-level spans are children of the run (id 0)
    SELECT c.id, coalesce(p.id, 0::UBIGINT) AS parent,
           greatest(c.start_ns, coalesce(p.start_ns, c.start_ns)) AS cs,
           least(c.end_ns, coalesce(p.end_ns, c.end_ns)) AS ce
    FROM nodes AS c
    LEFT JOIN nodes AS p ON p.id = c.parent
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
-- Children that never overlap all do; only the (few) overlapping families need the full test.
chain AS MATERIALIZED (
    SELECT id, parent, cs, ce, next_start FROM ordered WHERE parent NOT IN (SELECT parent FROM overlapping)
    UNION ALL
    SELECT id, parent, cs, ce, lead(cs) OVER (PARTITION BY parent ORDER BY cs, ce DESC, id)
    FROM (SELECT *, max(ce) OVER (PARTITION BY parent ORDER BY cs, ce DESC, id
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_end
          FROM ordered
          WHERE parent IN (SELECT parent FROM overlapping))
    WHERE earlier_end IS NULL OR ce > earlier_end
),
path(id, depth, path_start, path_end) AS (
    SELECT 0::UBIGINT, 0, min(cs), max(ce) FROM chain WHERE parent = 0
    UNION ALL
    SELECT c.id, p.depth + 1, greatest(c.cs, p.path_start), least(c.ce, coalesce(c.next_start, c.ce), p.path_end)
    FROM path AS p
    JOIN chain AS c ON c.parent = p.id
    WHERE least(c.ce, coalesce(c.next_start, c.ce), p.path_end) > greatest(c.cs, p.path_start)
),
path_rows AS MATERIALIZED (  -- a recursive CTE is computed again at each use
    SELECT * FROM path
),
children_on_path AS (
    SELECT c.parent, sum(k.path_end - k.path_start) AS ns
    FROM path_rows AS k
    JOIN chain AS c ON c.id = k.id
    GROUP BY c.parent
),
on_path AS (
    SELECT p.*, p.path_end - p.path_start - coalesce(k.ns, 0) AS self_ns
    FROM path_rows AS p
    LEFT JOIN children_on_path AS k ON k.parent = p.id
    WHERE p.id <> 0
),
shown AS (
    SELECT * FROM on_path
    WHERE path_end - path_start >= $min_ms * 1e6
    ORDER BY path_start, depth
    LIMIT $limit
)
SELECT repeat('  ', o.depth - 1) || n.name AS span, n.category, n.pid,
       round((o.path_start - (SELECT path_start FROM path_rows WHERE id = 0)) / 1e6, 3) AS start_ms,
       round((o.path_end - o.path_start) / 1e6, 3) AS on_path_ms,
       round(o.self_ns / 1e6, 3) AS self_ms,
       round((n.end_ns - n.start_ns) / 1e6, 3) AS duration_ms
FROM shown AS o
JOIN nodes AS n ON n.id = o.id
ORDER BY o.path_start, o.depth
