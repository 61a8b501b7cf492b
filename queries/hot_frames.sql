-- The Python frames that burned the time inside spans (run --profile): top frames by self and total samples.
--
-- Each py-spy sample belongs to the innermost span open on its process and thread when it was
-- taken. With span or category given, the samples inside the chosen spans are those of the spans
-- themselves and of everything under them (their threads' and child processes' spans included),
-- and each row says what share of the chosen spans' wall time (the outermost ones, where they
-- nest) the frame explains. Without them, one group per span name: the samples whose innermost
-- span has that name, against the wall time of those spans.
--
-- A frame is a function in a file. self: samples in which it was the running frame; total:
-- samples in which it was on the stack (once per sample, recursion or not). Idle samples (a
-- thread waiting: kept only by run --idle) count only with idle = true.
--
-- Parameters:
--   run_id                the run
--   span: text = null     only inside spans of this name
--   category: text = null  only inside spans of this category (process, import, subprocess, http, phase, ...)
--   limit = 20            frames per group, the most self samples first
--   idle = false          count idle samples too
-- Columns:
--   span                  the span name (or category) the samples are inside
--   function              the frame's function (its qualified name on Python >= 3.11)
--   file                  its file
--   line                  the line that ran most often in it, as the running frame
--   self_samples          samples with this frame running
--   total_samples         samples with this frame on the stack
--   self_ms               the time those samples stand for
--   total_ms              the same, for total
--   self_pct              self_ms as a share of the spans' wall time
--   total_pct             total_ms as a share of the spans' wall time
--   spans                 spans in the group (the outermost, where chosen spans nest)
--   wall_ms               their wall time, summed
WITH
subtree AS (
    SELECT * FROM span_subtree($run_id, $span, $category) WHERE $span IS NOT NULL OR $category IS NOT NULL
),
inside AS (  -- (group, sample) pairs
    SELECT coalesce($span, $category)::VARCHAR AS grp, p.stack_id, p.weight, p.duration_ns
    FROM samples AS p
    WHERE p.run_id = $run_id AND ($idle OR NOT p.idle) AND p.span_id IN (SELECT span_id FROM subtree)
    UNION ALL
    SELECT s.name, p.stack_id, p.weight, p.duration_ns
    FROM samples AS p JOIN spans AS s ON s.run_id = $run_id AND s.span_id = p.span_id
    WHERE p.run_id = $run_id AND ($idle OR NOT p.idle) AND $span IS NULL AND $category IS NULL
),
walls AS (
    SELECT coalesce($span, $category)::VARCHAR AS grp, count(*) AS spans, sum(duration_ns) AS wall_ns
    FROM subtree WHERE outermost
    UNION ALL
    SELECT name, count(*), sum(duration_ns)
    FROM spans
    WHERE run_id = $run_id AND $span IS NULL AND $category IS NULL
      AND span_id IN (SELECT span_id FROM samples WHERE run_id = $run_id AND ($idle OR NOT idle))
    GROUP BY name
),
per_stack AS (
    SELECT grp, stack_id, sum(weight) AS weight, sum(duration_ns) AS ns FROM inside GROUP BY ALL
),
stack_frames AS (  -- each frame of each stack once (recursion or not), named by a hash for speed
    SELECT DISTINCT stack_id, hash(f.function, f.file) AS fid
    FROM (SELECT stack_id, unnest(frames) AS f FROM stacks
          WHERE run_id = $run_id AND stack_id IN (SELECT stack_id FROM per_stack))
),
running AS (  -- the running frame of each stack
    SELECT stack_id, frames[-1].function AS function, frames[-1].file AS file, frames[-1].line AS line,
           hash(frames[-1].function, frames[-1].file) AS fid
    FROM stacks WHERE run_id = $run_id AND stack_id IN (SELECT stack_id FROM per_stack)
),
names AS (
    SELECT DISTINCT hash(f.function, f.file) AS fid, f.function, f.file
    FROM (SELECT unnest(frames) AS f FROM stacks WHERE run_id = $run_id AND stack_id IN (SELECT stack_id FROM per_stack))
),
totals AS (
    SELECT p.grp, f.fid, sum(p.weight) AS total_w, sum(p.ns) AS total_ns
    FROM per_stack AS p JOIN stack_frames AS f USING (stack_id)
    GROUP BY ALL
),
selfs AS (
    SELECT p.grp, r.fid, arg_max(r.line, p.weight) AS line, sum(p.weight) AS self_w, sum(p.ns) AS self_ns
    FROM per_stack AS p JOIN running AS r USING (stack_id)
    GROUP BY ALL
),
top AS (
    SELECT t.grp, t.fid, s.line, coalesce(s.self_w, 0) AS self_w, t.total_w, coalesce(s.self_ns, 0) AS self_ns, t.total_ns
    FROM totals AS t LEFT JOIN selfs AS s USING (grp, fid)
    QUALIFY row_number() OVER (PARTITION BY t.grp ORDER BY self_w DESC, t.total_w DESC, t.fid) <= $limit
),
ranked AS (
    SELECT t.*, n.function, n.file FROM top AS t JOIN names AS n USING (fid)
)
SELECT r.grp AS span, r.function, r.file, r.line,
       round(r.self_w)::BIGINT AS self_samples, round(r.total_w)::BIGINT AS total_samples,
       round(r.self_ns / 1e6, 1) AS self_ms, round(r.total_ns / 1e6, 1) AS total_ms,
       round(100 * r.self_ns / nullif(w.wall_ns, 0), 1) AS self_pct,
       round(100 * r.total_ns / nullif(w.wall_ns, 0), 1) AS total_pct,
       w.spans, round(w.wall_ns / 1e6, 1) AS wall_ms
FROM ranked AS r LEFT JOIN walls AS w USING (grp)
ORDER BY w.wall_ns DESC NULLS LAST, r.grp, r.self_w DESC, r.total_w DESC, r.function
