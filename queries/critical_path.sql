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
-- on, clipped to the wait, and to where no span of the wait's own thread under it is open (as the
-- breakdown passes a wait's share on: a child read until it exits only where its thread did
-- nothing else). A subprocess span is only its spawning call: a child process is on the
-- path through the waits on it, so a helper or a server that nobody waits on never is. Of units
-- that end together (a reused pool's workers all outlive a wait on a map), the path goes through
-- the one whose work ended last: a unit idle at that end, in a wait on nothing traced (a pool
-- worker's read of its next task), worked until that wait began; then by span id. After CMD's own
-- process span, when `run` saw CMD exit later (store/macros.sql, cmd_exit): its interpreter's
-- teardown, a row of its own; so is a top-level process's life after its last record until its exit
-- (a shell's Python), where the path goes on after it.
--
-- Parameters:
--   run_id                the run
--   min_ms: float = null [>= 0]  hide spans with less time than this on the path (their time stays in their
--                         parent's on_path_ms, not in its self_ms); null: 1 % of the path, so that the
--                         whole run shows (a 15 s run's import chains are thousands of spans of 1-40 ms)
--   limit = 200 [>= 0]    spans shown, in time order; when more are left, a last row (category `cut`)
--                         says how many and from when
-- Columns:
--   span                  the span's name, indented by its depth on the path
--   category              its category
--   pid                   the process it was recorded in
--   start_ms              when its part of the path starts, from the start of the run
--   on_path_ms            how long it is on the path (its own time and its children's)
--   self_ms               time on the path in none of its children: what shortening it can save
--   duration_ms           the span's whole duration
WITH
path_rows AS MATERIALIZED (  -- selfopt_trace/store/macros.sql
    SELECT * FROM critical_path_rows($run_id)
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
threshold AS (  -- min_ms, or 1 % of the path
    SELECT coalesce($min_ms * 1e6, (path_end - path_start) / 100) AS ns FROM path_rows WHERE id = 0
),
eligible AS (
    SELECT *, row_number() OVER (ORDER BY path_start, depth, id) AS n FROM on_path
    WHERE path_end - path_start >= (SELECT ns FROM threshold)
),
shown AS (SELECT * FROM eligible WHERE n <= $limit),
cut AS (  -- the spans past the limit: counted, and said in a row of their own
    SELECT count(*) AS spans, min(path_start) AS path_start FROM eligible WHERE n > $limit HAVING count(*) > 0
),
cmd AS MATERIALIZED (SELECT * FROM cmd_exit($run_id)),
teardown AS (  -- CMD's teardown after the path (its process span) ends (store/macros.sql, cmd_exit)
    SELECT pid, (SELECT path_end FROM path_rows WHERE id = 0) AS path_end, exited_ns
    FROM cmd
    WHERE NOT replaced
      AND exited_ns - (SELECT path_end FROM path_rows WHERE id = 0) >= greatest((SELECT ns FROM threshold), 1)
    UNION ALL
    -- A top-level process on the path that no traced process waited for (a shell's Python): after its
    -- last record, until its exit (its interpreter.finalize span's end, the C twin's), the path's next
    -- top-level span or the run's end, its interpreter's teardown, as the breakdown counts it
    SELECT f.pid, t.path_end, least(f.end_ns, t.next_start) AS exited_ns
    FROM (SELECT id, path_end, coalesce(lead(path_start) OVER (ORDER BY path_start, id),
                                        (SELECT nullif(end_ns, 0) FROM runs WHERE run_id = $run_id),
                                        (SELECT path_end FROM path_rows WHERE id = 0)) AS next_start
          FROM path_rows WHERE depth = 1) AS t
    JOIN spans AS f ON f.run_id = $run_id AND f.category = 'finalize' AND hash(f.parent_span_id) = t.id
    WHERE t.id NOT IN (SELECT id FROM cmd)
      AND least(f.end_ns, t.next_start) - t.path_end >= greatest((SELECT ns FROM threshold), 1)
)
SELECT span, category, pid, start_ms, on_path_ms, self_ms, duration_ms
FROM (
    SELECT repeat('  ', o.depth - 1) || n.name AS span, n.category, n.pid,
           round((o.path_start - (SELECT path_start FROM path_rows WHERE id = 0)) / 1e6, 3) AS start_ms,
           round((o.path_end - o.path_start) / 1e6, 3) AS on_path_ms,
           round(o.self_ns / 1e6, 3) AS self_ms,
           round((n.end_ns - n.start_ns) / 1e6, 3) AS duration_ms,
           o.path_start AS at_ns, o.depth, o.id
    FROM shown AS o
    JOIN (  -- the shown spans' names, from this run or the other runs whose servers answered it
        SELECT DISTINCT ON (id) id, name, category, pid, start_ns, end_ns
        FROM (SELECT hash(span_id) AS id, name, category, pid, start_ns, end_ns, run_id = $run_id AS own
              FROM spans
              WHERE (run_id = $run_id OR kind = 'SERVER') AND hash(span_id) IN (SELECT id FROM shown))
        WHERE id IN (SELECT id FROM shown)
        ORDER BY id, own DESC) AS n ON n.id = o.id
    UNION ALL
    SELECT format('... {:d} more spans on the path from here on, not shown (limit {:d}: -p limit=N shows more)',
                  spans, $limit),
           'cut', NULL, round((path_start - (SELECT path_start FROM path_rows WHERE id = 0)) / 1e6, 3),
           NULL, NULL, NULL, path_start, 1000000, 0
    FROM cut
    UNION ALL
    SELECT 'interpreter teardown', 'teardown', pid,
           round((path_end - (SELECT path_start FROM path_rows WHERE id = 0)) / 1e6, 3),
           round((exited_ns - path_end) / 1e6, 3), round((exited_ns - path_end) / 1e6, 3),
           round((exited_ns - path_end) / 1e6, 3), path_end, 1, 0
    FROM teardown)
ORDER BY at_ns, depth, id  -- two spans at once at one depth (a pool's tasks): in the order `eligible` cut them
