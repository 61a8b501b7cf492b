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
-- Fast on millions of samples: the loader took the stacks apart (stack_frames: each stack's frames
-- as integers, the running one flagged), and only the frames that can make a top (enough self
-- samples) get their total summed.
--
-- Parameters:
--   run_id                the run
--   span: text = null     only inside spans of this name
--   category: text = null  only inside spans of this category (process, import, subprocess, http, phase, ...)
--   limit = 20 [>= 1]     frames per group, the most self samples first
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
groups AS MATERIALIZED (  -- each span of the run in its group, numbered (the query groups and joins integers)
    SELECT span_id, 0 AS grp_no, coalesce($span, $category)::VARCHAR AS grp FROM subtree
    UNION ALL
    SELECT span_id, dense_rank() OVER (ORDER BY name)::INTEGER, name FROM spans
    WHERE run_id = $run_id AND $span IS NULL AND $category IS NULL
),
per_stack AS MATERIALIZED (
    SELECT g.grp_no, p.stack_id, sum(p.weight) AS weight, sum(p.duration_ns::DOUBLE) AS ns
    FROM samples AS p JOIN groups AS g USING (span_id)
    WHERE p.run_id = $run_id AND ($idle OR NOT p.idle)
    GROUP BY ALL
),
walls AS (
    SELECT 0 AS grp_no, count(*) AS spans, sum(duration_ns) AS wall_ns
    FROM subtree WHERE outermost
    UNION ALL
    SELECT g.grp_no, count(*), sum(s.duration_ns)
    FROM spans AS s JOIN groups AS g USING (span_id)
    WHERE s.run_id = $run_id AND $span IS NULL AND $category IS NULL
      AND s.span_id IN (SELECT span_id FROM samples WHERE run_id = $run_id AND ($idle OR NOT idle))
    GROUP BY ALL
),
selfs AS MATERIALIZED (  -- summed once, rounded: sums in another order must rank alike (and of a frame's
    -- lines in stacks of the same weight, the first: whatever the plan)
    SELECT p.grp_no, f.frame_id, arg_max(f.line, (p.weight, -f.line)) AS line, round(sum(p.weight), 6) AS self_w,
           sum(p.ns) AS self_ns
    FROM per_stack AS p JOIN stack_frames AS f ON f.run_id = $run_id AND f.stack_id = p.stack_id AND f.running
    GROUP BY ALL
),
cuts AS (  -- the limit-th most self samples of each group: no frame with fewer can be in its top
    SELECT grp_no, self_w AS cut FROM selfs
    QUALIFY row_number() OVER (PARTITION BY grp_no ORDER BY self_w DESC) = $limit
),
candidates AS MATERIALIZED (  -- in a group where enough frames ran, the frames that can make its top
    SELECT s.grp_no, s.frame_id FROM selfs AS s JOIN cuts AS c USING (grp_no) WHERE c.cut > 0 AND s.self_w >= c.cut
),
candidate_stacks AS MATERIALIZED (  -- each with the stacks it is in ...
    SELECT c.grp_no, c.frame_id, f.stack_id
    FROM candidates AS c JOIN stack_frames AS f ON f.run_id = $run_id AND f.frame_id = c.frame_id
),
candidate_totals AS MATERIALIZED (  -- ... those of its group
    SELECT c.grp_no, c.frame_id, round(sum(p.weight), 6) AS total_w, sum(p.ns) AS total_ns
    FROM candidate_stacks AS c JOIN per_stack AS p USING (grp_no, stack_id)
    GROUP BY ALL
),
uncut AS MATERIALIZED (  -- a group where fewer frames ran: its stacks ...
    SELECT * FROM per_stack WHERE grp_no NOT IN (SELECT grp_no FROM cuts WHERE cut > 0)
),
uncut_totals AS MATERIALIZED (  -- ... and every frame of them
    SELECT p.grp_no, f.frame_id, round(sum(p.weight), 6) AS total_w, sum(p.ns) AS total_ns
    FROM uncut AS p JOIN stack_frames AS f ON f.run_id = $run_id AND f.stack_id = p.stack_id
    GROUP BY ALL
),
totals AS (SELECT * FROM candidate_totals UNION ALL SELECT * FROM uncut_totals),
top AS (
    SELECT t.grp_no, t.frame_id, s.line, coalesce(s.self_w, 0) AS self_w, t.total_w,
           coalesce(s.self_ns, 0) AS self_ns, t.total_ns
    FROM totals AS t LEFT JOIN selfs AS s USING (grp_no, frame_id)
    QUALIFY row_number() OVER (PARTITION BY t.grp_no ORDER BY self_w DESC, t.total_w DESC, t.frame_id) <= $limit
)
SELECT g.grp AS span, n.function, n.file, t.line,
       round(t.self_w)::BIGINT AS self_samples, round(t.total_w)::BIGINT AS total_samples,
       round(t.self_ns / 1e6, 1) AS self_ms, round(t.total_ns / 1e6, 1) AS total_ms,
       round(100 * t.self_ns / nullif(w.wall_ns, 0), 1) AS self_pct,
       round(100 * t.total_ns / nullif(w.wall_ns, 0), 1) AS total_pct,
       w.spans, round(w.wall_ns / 1e6, 1) AS wall_ms
FROM top AS t
JOIN frames AS n ON n.run_id = $run_id AND n.frame_id = t.frame_id
JOIN (SELECT DISTINCT grp_no, grp FROM groups) AS g USING (grp_no)
LEFT JOIN walls AS w USING (grp_no)
ORDER BY w.wall_ns DESC NULLS LAST, g.grp, t.self_w DESC, t.total_w DESC, n.function, n.file, t.line, t.frame_id
