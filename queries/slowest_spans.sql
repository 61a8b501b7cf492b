-- The longest spans of the run, whatever they are.
--
-- Parameters:
--   run_id                the run
--   limit = 20 [>= 0]     spans shown
--   category: text = null  only spans of this category (process, startup, import, subprocess,
--                          http, serialization, parse, phase, container, thread, wait, sleep, gc,
--                          other; null: all)
-- Columns:
--   name                  the span's name
--   category              its category
--   kind                  INTERNAL, CLIENT, SERVER...
--   pid                   the process it was recorded in
--   start_ms              when it started, from the start of the run
--   duration_ms           how long it lasted
--   status                UNSET, OK or ERROR
--   incomplete            never ended (its process died): closed at the last time known for its process
--   span_id               its id, to look it up in `spans`
SELECT name, category, kind, pid,
       round((start_ns - (SELECT min(start_ns) FROM spans WHERE run_id = $run_id)) / 1e6, 3) AS start_ms,
       round(duration_ns / 1e6, 3) AS duration_ms,
       status, incomplete, span_id
FROM spans
WHERE run_id = $run_id AND ($category IS NULL OR category = $category)
ORDER BY duration_ns DESC, start_ns, span_id
LIMIT $limit
