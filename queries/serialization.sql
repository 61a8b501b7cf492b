-- Serialization (or, with category = 'parse', parsing) by call site, library and type: what it cost.
--
-- Calls slow enough to be spans are grouped by library, operation, Python type and the line that
-- made them. Calls too short to be spans were summed onto their enclosing span
-- (selfopt_trace.small.*: count, time, bytes): they appear once per library and operation, with the
-- call site "(small calls, summed)" and no p95, so the totals are exact.
--
-- Parameters:
--   run_id                      the run
--   category = 'serialization' ['serialization', 'parse']  'serialization' (json, pickle, dill,
--                               pydantic) or 'parse' (ast, libcst, jedi, ...)
--   limit = 30 [>= 0]           rows shown
-- Columns:
--   library                     json, pickle, dill, pydantic, ast, libcst, jedi...
--   operation                   dumps, loads, model_dump_json, parse...
--   type                        the Python type serialized or produced, where known
--   call_site                   file:line (function) of the call
--   calls                       how many calls
--   total_ms                    their total time
--   mean_ms                     mean per call
--   p95_ms                      95th percentile per call (spans only)
--   max_ms                      the slowest call (spans only)
--   bytes_in                    bytes going in (text or bytes parsed / loaded)
--   bytes_out                   bytes coming out (text or bytes produced)
WITH
calls AS (
    SELECT attributes->>'selfopt_trace.library' AS library,
           attributes->>'selfopt_trace.operation' AS operation,
           attributes->>'selfopt_trace.python.type' AS type,
           concat(attributes->>'code.filepath', ':', attributes->>'code.lineno',
                  ' (' || (attributes->>'code.function') || ')') AS call_site,
           duration_ns,
           TRY_CAST(attributes->>'selfopt_trace.bytes_in' AS BIGINT) AS bytes_in,
           TRY_CAST(attributes->>'selfopt_trace.bytes_out' AS BIGINT) AS bytes_out
    FROM spans
    WHERE run_id = $run_id AND category = $category
),
-- selfopt_trace.small.<library>.<operation>.count|duration_ns|bytes on any span
small AS (
    SELECT split_part(call, '.', 1) AS library, call[strpos(call, '.') + 1:] AS operation,
           sum(TRY_CAST(attributes->>('selfopt_trace.small.' || call || '.count') AS BIGINT)) AS calls,
           sum(TRY_CAST(attributes->>('selfopt_trace.small.' || call || '.duration_ns') AS BIGINT)) AS total_ns,
           sum(TRY_CAST(attributes->>('selfopt_trace.small.' || call || '.bytes') AS BIGINT)) AS bytes
    FROM (SELECT attributes, key[length('selfopt_trace.small.') + 1:-length('.count') - 1] AS call
          FROM (SELECT attributes, unnest(json_keys(attributes)) AS key
                FROM spans
                WHERE run_id = $run_id AND category <> 'import'  -- import spans hand their sums up
                  AND attributes LIKE '%"selfopt_trace.small.%')
          WHERE key LIKE 'selfopt_trace.small.%.count')
    WHERE (split_part(call, '.', 1) IN ('json', 'pickle', 'dill', 'pydantic', 'marshal', 'msgpack', 'orjson', 'yaml'))
          = ($category = 'serialization')
    GROUP BY call
),
rows AS (
    SELECT library, operation, type, call_site, count(*) AS calls, sum(duration_ns) AS total_ns,
           quantile_cont(duration_ns, 0.95) AS p95_ns, max(duration_ns) AS max_ns,
           sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out
    FROM calls
    GROUP BY ALL
    UNION ALL
    -- a small call's bytes are what went out of a dump and into a load (hooks/timed.py)
    SELECT library, operation, NULL, '(small calls, summed)', calls, total_ns, NULL, NULL,
           CASE WHEN operation LIKE '%load%' OR operation LIKE '%validate%' OR $category = 'parse' THEN bytes END,
           CASE WHEN NOT (operation LIKE '%load%' OR operation LIKE '%validate%' OR $category = 'parse') THEN bytes END
    FROM small
)
SELECT library, operation, type, call_site, calls,
       round(total_ns / 1e6, 3) AS total_ms,
       round(total_ns / calls / 1e6, 4) AS mean_ms,
       round(p95_ns / 1e6, 3) AS p95_ms,
       round(max_ns / 1e6, 3) AS max_ms,
       bytes_in, bytes_out
FROM rows
ORDER BY total_ns DESC, library, operation, call_site
LIMIT $limit
