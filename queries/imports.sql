-- The modules whose import cost the most, over every process of the run.
--
-- A module imported by 40 processes counts 40 times. Cumulative time is the import with everything
-- it imported; self time leaves out the modules it imported (recorded or not: an import below the
-- span threshold still counts in its parent's cumulative time, never in its self time). Give `pid`
-- to see one process alone.
--
-- Parameters:
--   run_id                the run
--   limit = 30 [>= 0]     modules shown
--   pid: int = null       only this process (null: all of them)
--   order = 'cumulative' ['cumulative', 'self']  sort by cumulative or self time
-- Columns:
--   module                the imported module
--   imports               times imported with a span (cumulative time >= the threshold): once per process
--   cumulative_ms         total cumulative import time, over all those imports
--   self_ms               total self time
--   per_process_ms        cumulative time per import (mean): what one process pays
--   max_ms                the slowest single import of it
SELECT substr(name, length('import ') + 1) AS module,
       count(*) AS imports,
       round(sum(duration_ns) / 1e6, 3) AS cumulative_ms,
       round(sum(coalesce(TRY_CAST(attributes->>'python.import.self_ns' AS BIGINT), duration_ns)) / 1e6, 3) AS self_ms,
       round(avg(duration_ns) / 1e6, 3) AS per_process_ms,
       round(max(duration_ns) / 1e6, 3) AS max_ms
FROM spans
WHERE run_id = $run_id AND category = 'import' AND ($pid IS NULL OR pid = $pid)
GROUP BY name
ORDER BY CASE WHEN $order = 'self' THEN self_ms ELSE cumulative_ms END DESC, module
LIMIT $limit
