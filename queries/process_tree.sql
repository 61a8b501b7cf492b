-- Every traced process of the run, as a tree (children under the process that started them).
--
-- A process is one process span (one span file for processes traced by the agent; a fork and an
-- exec'd interpreter open their own). Its parent is the process holding the span that started it.
--
-- Parameters:
--   run_id                the run
-- Columns:
--   process               the command, indented by depth in the tree
--   pid                   process id
--   parent_pid            the parent's process id (as the OS saw it)
--   start_ms              when it started, from the start of the run
--   duration_ms           its wall time
--   startup_ms            interpreter start-up
--   imports_ms            top-level imports
--   run_ms                the rest: its own work and its children
--   children              processes it started (traced)
--   spans                 spans recorded in it
--   exit_code             how it ended (negative: killed by that signal)
--   overhead_ms           time the tracer itself spent in it
--   incomplete            its process span never ended (killed without a chance to write it)
--   cpu_ms                CPU time its threads used, sampled from /proc by `run` (a killed process's
--                         too); null where it was not sampled (cpu_samples)
WITH RECURSIVE
process AS (
    SELECT span_id, parent_span_id, source_file, pid, start_ns, end_ns, duration_ns, incomplete,
           coalesce(attributes->>'process.command', name) AS command,
           TRY_CAST(attributes->>'process.parent_pid' AS INTEGER) AS parent_pid,
           TRY_CAST(attributes->>'process.exit.code' AS INTEGER) AS exit_code,
           TRY_CAST(attributes->>'selfopt_trace.overhead_ns' AS BIGINT) AS overhead_ns
    FROM spans
    WHERE run_id = $run_id AND name = 'process' AND category = 'process'
),
per_process AS (  -- spans, start-up and top-level imports by (file, pid)
    SELECT s.source_file, s.pid, count(*) AS spans,
           coalesce(sum(s.duration_ns) FILTER (WHERE s.category = 'startup'), 0) AS startup_ns,
           coalesce(sum(s.duration_ns) FILTER (WHERE s.category = 'import' AND p.span_id IS NULL), 0) AS imports_ns
    FROM spans AS s
    LEFT JOIN (SELECT span_id FROM spans WHERE run_id = $run_id AND category = 'import') AS p
           ON s.category = 'import' AND p.span_id = s.parent_span_id
    WHERE s.run_id = $run_id
    GROUP BY ALL
),
parent_process AS (  -- the process that holds each process span's parent span
    SELECT c.span_id, pp.span_id AS parent_process
    FROM process AS c
    JOIN spans AS holder ON holder.run_id = $run_id AND holder.span_id = c.parent_span_id
    JOIN process AS pp ON pp.source_file = holder.source_file AND pp.pid IS NOT DISTINCT FROM holder.pid
),
tree AS (
    SELECT p.span_id, 0 AS depth, [p.start_ns] AS path
    FROM process AS p
    WHERE p.span_id NOT IN (SELECT span_id FROM parent_process)
    UNION ALL
    SELECT c.span_id, t.depth + 1, list_append(t.path, p.start_ns)
    FROM tree AS t
    JOIN parent_process AS c ON c.parent_process = t.span_id
    JOIN process AS p ON p.span_id = c.span_id
)
SELECT repeat('  ', t.depth) || p.command AS process, p.pid, p.parent_pid,
       round((p.start_ns - (SELECT min(start_ns) FROM process)) / 1e6, 3) AS start_ms,
       round(p.duration_ns / 1e6, 3) AS duration_ms,
       round(coalesce(x.startup_ns, 0) / 1e6, 3) AS startup_ms,
       round(coalesce(x.imports_ns, 0) / 1e6, 3) AS imports_ms,
       round((p.duration_ns - coalesce(x.startup_ns, 0) - coalesce(x.imports_ns, 0)) / 1e6, 3) AS run_ms,
       (SELECT count(*) FROM parent_process AS c WHERE c.parent_process = p.span_id) AS children,
       coalesce(x.spans, 0) AS spans, p.exit_code,
       round(p.overhead_ns / 1e6, 3) AS overhead_ms, p.incomplete,
       round(cpu.cpu_ns / 1e6, 3) AS cpu_ms
FROM tree AS t
JOIN process AS p ON p.span_id = t.span_id
LEFT JOIN per_process AS x ON x.source_file = p.source_file AND x.pid IS NOT DISTINCT FROM p.pid
LEFT JOIN process_span_cpu($run_id) AS cpu ON cpu.span_id = p.span_id
ORDER BY t.path
