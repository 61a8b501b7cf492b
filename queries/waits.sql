-- Where the run's critical path waited on nothing traced (run --profile --idle): the lines.
--
-- The breakdown's `untraced waits` says how long a followed thread was off the CPU outside every
-- recorded call, not where. py-spy's idle samples say where each thread was then (run --profile
-- --idle keeps them). This takes the idle samples of the spans on the critical path
-- (critical_path.sql), within each span's own part of the path (not its children's: a wait on a
-- child process or a thread the path follows into is not a wait on nothing), and sums them by the
-- line that waited. Only spans whose own time the breakdown splits into work and untraced waits
-- count (a process, thread, task or phase, and a wait on nothing traced): a thread off the CPU in an
-- import, an HTTP call or a wait on a child is in that category, not an untraced wait, and a recorded
-- `time.sleep` is the breakdown's `sleeps`.
--
-- Parameters:
--   run_id                the run
--   limit = 20 [>= 0]     lines shown, the longest waits first
-- Columns:
--   span                  the span on the path whose thread waited
--   pid                   its process
--   function              the Python function that waited (the running frame of its idle samples)
--   file                  its file
--   line                  the line it waited on
--   called_from           the three functions above it, innermost first (of its longest wait's stack)
--   waited_ms             the path's time in that wait: idle slices clipped to the span's own part of the path
--   waited_pct            waited_ms as a percentage of the path's length (the run's wall time)
--   samples               idle samples that time stands for
WITH
path_rows AS MATERIALIZED (  -- selfopt_trace/store/macros.sql
    SELECT * FROM critical_path_rows($run_id)
),
-- The spans on the path whose own time the breakdown splits into work and untraced waits (its
-- activity_code, selfopt_trace/store/macros.sql: own work, children's own work, a wait's own time
-- when it names no process and no container).
eligible AS (
    SELECT hash(s.span_id) AS id FROM spans AS s
    WHERE s.run_id = $run_id AND hash(s.span_id) IN (SELECT id FROM path_rows)
      AND (s.category NOT IN ('startup', 'import', 'parse', 'serialization', 'http', 'subprocess', 'container', 'wait',
                              'gc')
           OR (s.category = 'wait' AND s.attributes->>'process.pid' IS NULL
               AND NOT EXISTS (SELECT 1 FROM spans AS t
                               WHERE t.run_id = $run_id AND t.category IN ('subprocess', 'container')
                                 AND list_contains(TRY_CAST(s.attributes->'selfopt_trace.wait.on' AS VARCHAR[]),
                                                   t.span_id))))
),
idle AS (  -- idle slices, each with the activity span it belongs to (not a recorded sleep's)
    SELECT hash(s.span_id) AS id,
           p.time_ns AS a, p.time_ns + p.duration_ns AS b, p.duration_ns, p.weight, p.stack_id, p.pid
    FROM samples AS p JOIN spans AS s ON s.run_id = p.run_id AND s.span_id = p.span_id
    WHERE p.run_id = $run_id AND p.idle AND p.duration_ns > 0 AND s.category <> 'sleep'
),
clipped AS (  -- to each occurrence of the span on the path
    SELECT row_number() OVER () AS n, i.id, i.pid, i.stack_id, i.weight, i.duration_ns, r.path_start,
           greatest(i.a, r.path_start) AS ca, least(i.b, r.path_end) AS cb
    FROM idle AS i JOIN path_rows AS r ON r.id = i.id
    WHERE least(i.b, r.path_end) > greatest(i.a, r.path_start) AND r.id IN (SELECT id FROM eligible)
),
waited AS (  -- less the parts of the path its children have (disjoint: the path is a chain)
    SELECT c.n, any_value(c.id) AS id, any_value(c.pid) AS pid, any_value(c.stack_id) AS stack_id,
           any_value(c.weight) AS weight, any_value(c.duration_ns) AS duration_ns,
           any_value(c.cb - c.ca) - coalesce(sum(least(c.cb, k.path_end) - greatest(c.ca, k.path_start))
                                               FILTER (WHERE k.id IS NOT NULL), 0) AS ns  -- least() skips NULLs
    FROM clipped AS c
    LEFT JOIN path_rows AS k ON k.parent = c.id AND k.parent_start = c.path_start
                            AND k.path_end > c.ca AND k.path_start < c.cb
    GROUP BY c.n
),
by_line AS (
    SELECT w.id, w.pid, f.frame_id, f.line, sum(w.ns) AS ns, sum(w.weight * w.ns / w.duration_ns) AS samples,
           arg_max(w.stack_id, (w.ns, w.stack_id)) AS stack_id  -- of stacks as long, one whatever the plan
    FROM waited AS w JOIN stack_frames AS f ON f.run_id = $run_id AND f.stack_id = w.stack_id AND f.running
    WHERE w.ns > 0
    GROUP BY ALL
),
names AS (
    SELECT hash(span_id) AS id, any_value(name) AS name FROM spans
    WHERE run_id = $run_id AND hash(span_id) IN (SELECT id FROM by_line)
    GROUP BY 1
)
SELECT n.name AS span, b.pid, fr.function, fr.file, b.line,
       array_to_string(list_transform(list_reverse(k.frames[-4:-2]), lambda f: f.function), ' < ') AS called_from,
       round(b.ns / 1e6, 3) AS waited_ms,
       round(100 * b.ns / nullif((SELECT path_end - path_start FROM path_rows WHERE id = 0), 0), 1) AS waited_pct,
       round(b.samples)::BIGINT AS samples
FROM by_line AS b
JOIN frames AS fr ON fr.run_id = $run_id AND fr.frame_id = b.frame_id
JOIN names AS n ON n.id = b.id
JOIN stacks AS k ON k.run_id = $run_id AND k.stack_id = b.stack_id
ORDER BY b.ns DESC, n.name, fr.function, fr.file, b.line, b.pid
LIMIT $limit
