-- Table macros of the profile samples (run --profile), stored with the schema like macros.sql.
--
-- span_subtree(run_id, name, category): the spans chosen by name and/or category (a NULL is any)
-- and every span under them, their threads' and child processes' included: the spans whose
-- samples are "inside" the chosen ones. Columns:
--   span_id               a span of the subtrees
--   outermost             a chosen span not under another chosen one (whose wall times add up)
--   duration_ns           its duration
CREATE OR REPLACE TEMP MACRO span_subtree(for_run, span_name, span_category) AS TABLE
WITH RECURSIVE
chosen AS (
    SELECT span_id, duration_ns FROM spans
    WHERE run_id = for_run AND (span_name IS NULL OR name = span_name)
      AND (span_category IS NULL OR category = span_category)
),
tree(span_id, depth) AS (
    SELECT span_id, 0 FROM chosen
    UNION ALL
    SELECT s.span_id, t.depth + 1
    FROM tree AS t JOIN spans AS s ON s.run_id = for_run AND s.parent_span_id = t.span_id
    WHERE t.depth < 10000  -- a parent loop (bad input) ends
),
members AS (SELECT span_id, max(depth) > 0 AS nested FROM tree GROUP BY span_id)
SELECT m.span_id, c.span_id IS NOT NULL AND NOT m.nested AS outermost, s.duration_ns
FROM members AS m
JOIN spans AS s ON s.run_id = for_run AND s.span_id = m.span_id
LEFT JOIN chosen AS c ON c.span_id = m.span_id;
