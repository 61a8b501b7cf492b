-- Where the garbage collector's passes ran (SELFOPT_TRACE_GC=1): the spans whose work they interrupted.
--
-- A pass of 0.1 ms or more is a `gc` span under the span it interrupted (an import, a target, a
-- request's handler, or the process's own code outside every span: `process`). Summed by process
-- and by the interrupted span's name: which code's allocations set the passes off, and so where a
-- `gc.freeze()` (once a process has built what it keeps: its imports, a warm cache) spares every
-- later pass those objects. All the passes of a process, the shorter ones too, are counted on its
-- process span (python.gc.collections and python.gc.duration_ns; the summary's `gc_ms`). A run
-- traced without the setting has no row.
--
-- Parameters:
--   run_id                the run
--   limit = 20 [>= 0]     rows shown
--   pid: int = null       only this process (null: all of them)
-- Columns:
--   pid                   the process the passes ran in
--   interrupted           the name of the span they interrupted
--   category              its category
--   passes                passes of 0.1 ms or more there
--   full_passes           of them, full collections (generation 2: every object the collector tracks)
--   gc_ms                 their time
--   max_ms                the longest of them
--   collected             the unreachable objects they found
SELECT g.pid, coalesce(p.name, '(not in the run)') AS interrupted, p.category,
       count(*) AS passes,
       count(*) FILTER (WHERE TRY_CAST(g.attributes->>'python.gc.generation' AS INTEGER) = 2) AS full_passes,
       round(sum(g.duration_ns) / 1e6, 3) AS gc_ms,
       round(max(g.duration_ns) / 1e6, 3) AS max_ms,
       sum(TRY_CAST(g.attributes->>'python.gc.collected' AS BIGINT)) AS collected
FROM spans AS g
LEFT JOIN spans AS p ON p.run_id = g.run_id AND p.span_id = g.parent_span_id
WHERE g.run_id = $run_id AND g.category = 'gc' AND ($pid IS NULL OR g.pid = $pid)
GROUP BY g.pid, p.name, p.category
ORDER BY gc_ms DESC, g.pid, interrupted, category
LIMIT $limit
