-- Child processes by command: how many, and where each one's time went, the costliest first.
--
-- One row per command (its name, docs/agent.md "Process names": `pytest`, `app.py`, `python -c
-- from x import main`, `git status`), then a TOTAL row. A child's time, as its parent sees it (the
-- subprocess span: from the Popen / fork / multiprocessing start call until the parent sees it exit)
-- splits into:
-- spawn (the call -> the child process starts; for an untraced child, the time inside the spawning
-- call), the child's interpreter start-up, its imports (top-level import spans), its run (the rest
-- of its life, its own children included) and teardown (the child exits -> its parent sees it).
--
-- Parameters:
--   run_id                the run
--   limit = 50 [>= 0]     commands shown (the TOTAL row counts every child)
-- Columns:
--   command               what was started
--   count                 children started with it
--   traced                of which traced (a Python process of the tree)
--   failed                of which exited with a non-zero code (or a signal)
--   total_ms              sum of the parent-side spans (spawn to exit seen)
--   spawn_ms              sum of spawn latencies
--   startup_ms            sum of the children's interpreter start-up
--   imports_ms            sum of the children's import time
--   run_ms                sum of the rest of the children's lives
--   teardown_ms           sum of child exit -> parent sees it
--   p50_ms                median of total per child
--   max_ms                the slowest child
--   cpu_ms                CPU time the children used: as the kernel counted it when a traced parent
--                         reaped the child (process.reaped.cpu_ns: the child's and its own reaped
--                         children's, untraced children included); else, for a traced child, its
--                         threads' CPU sampled from /proc by `run` (killed children too) completed by
--                         what it recorded at its exit; null where neither is known
WITH
client AS (  -- every start of a process; exec replaces a process, it does not start another
    SELECT span_id, source_file, pid, start_ns, end_ns, duration_ns, attributes,
           TRY_CAST(attributes->>'process.exit.code' AS INTEGER) AS exit_code,
           TRY_CAST(attributes->>'selfopt_trace.spawn_ns' AS BIGINT) AS spawn_ns,
           TRY_CAST(attributes->>'process.reaped.cpu_ns' AS BIGINT) AS reaped_cpu_ns
    FROM spans
    WHERE run_id = $run_id AND category = 'subprocess' AND kind = 'CLIENT' AND name <> 'exec'
),
child AS (  -- the traced process started by each (through a shell: possibly several)
    SELECT parent_span_id AS client_id, span_id, source_file, pid, start_ns, end_ns, duration_ns,
           attributes->>'process.command' AS command
    FROM spans
    WHERE run_id = $run_id AND name = 'process' AND category = 'process'
      AND parent_span_id IN (SELECT span_id FROM client)
),
startup AS (
    SELECT source_file, pid, sum(duration_ns) AS ns
    FROM spans
    WHERE run_id = $run_id AND category = 'startup'
    GROUP BY ALL
),
imports AS (  -- top-level imports: an import inside another is part of it
    SELECT i.source_file, i.pid, sum(i.duration_ns) AS ns
    FROM spans AS i
    WHERE i.run_id = $run_id AND i.category = 'import'
      AND i.parent_span_id NOT IN (SELECT span_id FROM spans WHERE run_id = $run_id AND category = 'import')
    GROUP BY ALL
),
per_child AS (
    SELECT c.span_id, c.duration_ns AS total_ns, c.exit_code,
           coalesce(any_value(k.command), c.attributes->>'process.command',
                    concat_ws(' ', c.attributes->>'process.executable.name',
                              CASE WHEN NOT starts_with(c.attributes->'process.command_args'->>1, '-')
                                   THEN c.attributes->'process.command_args'->>1 END)) AS command,
           count(k.client_id) > 0 AS traced,
           CASE WHEN count(k.client_id) > 0 THEN min(k.start_ns) - c.start_ns
                ELSE least(coalesce(c.spawn_ns, 0), c.duration_ns) END AS spawn_ns,
           coalesce(sum(s.ns), 0) AS startup_ns,
           coalesce(sum(i.ns), 0) AS imports_ns,
           coalesce(sum(k.duration_ns - coalesce(s.ns, 0) - coalesce(i.ns, 0)),
                    c.duration_ns - least(coalesce(c.spawn_ns, 0), c.duration_ns)) AS run_ns,
           CASE WHEN count(k.client_id) > 0 THEN greatest(c.end_ns - max(k.end_ns), 0) ELSE 0 END AS teardown_ns,
           coalesce(any_value(c.reaped_cpu_ns), sum(u.cpu_ns)) AS cpu_ns
    FROM client AS c
    LEFT JOIN child AS k ON k.client_id = c.span_id
    LEFT JOIN process_span_cpu($run_id) AS u ON u.span_id = k.span_id
    LEFT JOIN startup AS s ON s.source_file = k.source_file AND s.pid = k.pid
    LEFT JOIN imports AS i ON i.source_file = k.source_file AND i.pid = k.pid
    GROUP BY c.span_id, c.duration_ns, c.exit_code, c.start_ns, c.end_ns, c.spawn_ns, c.attributes
),
by_command AS (
    SELECT coalesce(command, 'TOTAL') AS command, grouping(command) AS is_total,
           count(*) AS count, count(*) FILTER (WHERE traced) AS traced,
           count(*) FILTER (WHERE exit_code <> 0) AS failed,
           sum(total_ns) AS total_ns, sum(spawn_ns) AS spawn_ns, sum(startup_ns) AS startup_ns,
           sum(imports_ns) AS imports_ns, sum(run_ns) AS run_ns, sum(teardown_ns) AS teardown_ns,
           median(total_ns) AS p50_ns, max(total_ns) AS max_ns, sum(cpu_ns) AS cpu_ns
    FROM per_child
    GROUP BY ROLLUP (command)
)
SELECT command, count, traced, failed,
       round(total_ns / 1e6, 3) AS total_ms, round(spawn_ns / 1e6, 3) AS spawn_ms,
       round(startup_ns / 1e6, 3) AS startup_ms, round(imports_ns / 1e6, 3) AS imports_ms,
       round(run_ns / 1e6, 3) AS run_ms, round(teardown_ns / 1e6, 3) AS teardown_ms,
       round(p50_ns / 1e6, 3) AS p50_ms, round(max_ns / 1e6, 3) AS max_ms, round(cpu_ns / 1e6, 3) AS cpu_ms
FROM by_command
QUALIFY is_total = 1 OR row_number() OVER (PARTITION BY is_total ORDER BY total_ns DESC, command) <= $limit
ORDER BY is_total, total_ns DESC, command
