-- Where the wall time of the run went, by category: every instant of the run counted exactly once.
--
-- The run's wall time is the extent of its top-level spans (normally the main process). A span's
-- self time is its interval minus the UNION of its children's intervals (clipped to it), children
-- in other processes included (subprocess -> child process, HTTP client -> server, also when the
-- server was traced as another run). When several self intervals are open at one instant (threads,
-- asyncio, parallel children), that instant is split equally between them, so overlapping work is
-- never counted twice and `wall_ms` sums to the run's wall time. `busy_ms` counts every self
-- interval in full: parallel work counts once per branch. Calls too short to be spans, summed onto
-- their enclosing span (selfopt_trace.small.*), move that much of its self time to serialization
-- or parsing. A child process counts as waited on from its start until its parent sees it exit,
-- even when the parent worked meanwhile (a background child): spans cannot tell waiting from working.
--
-- Categories: interpreter start-up; imports; parsing; serialization; http client overhead (a client
-- span minus its server span: network, proxies, connection set-up, client-side encoding); http
-- server time; subprocess spawn overhead (Popen call -> child process start, child exit -> parent
-- sees it, and the spawning call itself for untraced children); waiting on children (what child
-- processes did outside the categories above, and untraced children); container start-up (a
-- `docker run`, CLI or SDK, before the container's first process starts and after it exits: engine,
-- image, mounts); own work (the main process outside every category above); untraced (no traced
-- span open, e.g. a shell before Python started).
--
-- Parameters:
--   run_id                the run
-- Columns:
--   category              one of the categories above, always all of them in this order, then 'total'
--   wall_ms               share of the run's wall time (the categories sum to the total)
--   wall_pct              wall_ms as a percentage of the run's wall time
--   busy_ms               self time summed over every process and thread (parallel work counts in full)
--   spans                 spans whose self time is in this category
WITH
run_spans AS NOT MATERIALIZED (
    SELECT span_id, parent_span_id, trace_id, name, kind, category, start_ns, end_ns,
           hash(source_file, pid) AS process_key  -- a collector file holds many processes
    FROM spans
    WHERE run_id = $run_id
),
-- The run's trace: that of the process started when the run started (CMD: run.json's start), else
-- (spans without process spans, e.g. from another SDK) of the earliest span. Other traces in the
-- run directory (a server started on its own) are not the run's.
main_trace AS (
    SELECT coalesce(
        (SELECT p.trace_id
         FROM run_spans AS p
         LEFT JOIN runs AS r ON r.run_id = $run_id
         WHERE p.name = 'process' AND p.category = 'process'
         ORDER BY abs(p.start_ns - r.start_ns) NULLS LAST, p.start_ns
         LIMIT 1),
        (SELECT trace_id FROM run_spans ORDER BY start_ns LIMIT 1)) AS trace_id
),
-- Server spans of other runs answering a client of this run (a server traced as its own run).
foreign_servers AS (
    SELECT s.span_id, s.parent_span_id, s.trace_id, s.name, s.kind, s.category, s.start_ns, s.end_ns,
           hash(s.run_id, s.source_file, s.pid) AS process_key
    FROM spans AS s
    JOIN run_spans AS c ON s.parent_span_id = c.span_id AND s.trace_id = c.trace_id
    WHERE s.kind = 'SERVER' AND s.run_id <> $run_id AND c.kind = 'CLIENT'
),
-- Ids as hashes from here on: joins and sorts on integers are several times faster than on text.
trace_spans AS NOT MATERIALIZED (
    SELECT hash(span_id) AS id, CASE WHEN parent_span_id IS NOT NULL THEN hash(parent_span_id) END AS parent,
           name, kind, category, start_ns, end_ns, process_key
    FROM (SELECT * FROM run_spans UNION ALL SELECT * FROM foreign_servers)
    WHERE trace_id = (SELECT trace_id FROM main_trace)
),
-- After an exec, the new image's process span is a child of the (zero-length) exec span; it goes
-- on where the replaced process was, so it hangs under that process's parent.
exec_parent AS (
    SELECT x.id AS exec_id, p.parent AS new_parent
    FROM trace_spans AS x
    JOIN trace_spans AS p ON p.process_key = x.process_key AND p.name = 'process' AND p.category = 'process'
    WHERE x.name = 'exec' AND x.category = 'subprocess'
),
nodes AS MATERIALIZED (
    SELECT id, parent, false AS is_process, kind, category, start_ns, end_ns, process_key
    FROM trace_spans
    WHERE name <> 'process' OR category <> 'process'
    UNION ALL
    SELECT n.id, CASE WHEN e.exec_id IS NOT NULL THEN e.new_parent ELSE n.parent END, true,
           n.kind, n.category, n.start_ns, n.end_ns, n.process_key
    FROM trace_spans AS n
    LEFT JOIN exec_parent AS e ON e.exec_id = n.parent
    WHERE n.name = 'process' AND n.category = 'process'
),
processes AS (  -- process spans, and whether their parent is traced (else: the run's top level)
    SELECT p.id, p.parent, p.process_key, q.id IS NOT NULL AS has_parent
    FROM (SELECT * FROM nodes WHERE is_process) AS p
    LEFT JOIN (SELECT DISTINCT n.id FROM nodes AS n JOIN nodes AS c ON c.is_process AND n.id = c.parent) AS q
           ON q.id = p.parent
),
subprocess_codes AS (  -- a `docker run` (its span holds container.inject), a traced child, or neither
    SELECT id, CASE WHEN id IN (SELECT parent FROM nodes WHERE category = 'container') THEN 9
                    WHEN id IN (SELECT parent FROM processes WHERE has_parent) THEN 7
                    ELSE 0 END AS code
    FROM nodes
    WHERE category = 'subprocess'
),
main_processes AS (
    SELECT DISTINCT process_key FROM processes WHERE NOT has_parent
),
-- What a span's self time is, as a number (the output's order); 0: a subprocess span with no
-- traced child, split below between spawn overhead (7) and waiting on children (8).
coded AS (
    SELECT n.id, n.parent, n.start_ns, n.end_ns,
        CASE
            WHEN n.category = 'startup' THEN 1
            WHEN n.category = 'import' THEN 2
            WHEN n.category = 'parse' THEN 3
            WHEN n.category = 'serialization' THEN 4
            WHEN n.category = 'http' AND n.kind = 'SERVER' THEN 6
            WHEN n.category = 'http' THEN 5
            WHEN n.category = 'subprocess' THEN s.code
            WHEN n.category = 'container' THEN 9
            WHEN m.process_key IS NOT NULL OR NOT EXISTS (SELECT 1 FROM main_processes) THEN 10  -- no process spans: all own
            ELSE 8
        END AS code
    FROM nodes AS n
    LEFT JOIN subprocess_codes AS s ON s.id = n.id
    LEFT JOIN main_processes AS m ON m.process_key = n.process_key
),
linked_raw AS MATERIALIZED (
    SELECT c.id, c.code, c.start_ns, c.end_ns, p.id AS parent, coalesce(p.code, 11) AS parent_code,
           p.start_ns AS parent_start, p.end_ns AS parent_end
    FROM coded AS c
    LEFT JOIN coded AS p ON p.id = c.parent
),
run_extent AS (  -- the run's wall time: its top-level spans (normally the main process)
    SELECT min(start_ns) AS start_ns, max(end_ns) AS end_ns FROM linked_raw WHERE parent IS NULL
),
-- Each span within the run (rs, re), and clipped to its parent (cs, ce). A span's self time is its
-- own interval minus its children's, clipped to it; a child that outlives its parent (a thread
-- still working after the span that started it ended) counts in full, beside what runs then.
linked AS MATERIALIZED (
    SELECT l.id, l.code, l.parent, l.parent_code,
           greatest(l.start_ns, r.start_ns) AS rs, least(l.end_ns, r.end_ns) AS re,
           greatest(l.start_ns, coalesce(l.parent_start, l.start_ns), r.start_ns) AS cs,
           least(l.end_ns, coalesce(l.parent_end, l.end_ns), r.end_ns) AS ce
    FROM linked_raw AS l, run_extent AS r
),
-- Owners (top-level spans belong to the run, owner 0) whose children overlap (in start order,
-- two neighbours do whenever any two do) or outlive them: the few that need the children's union.
special AS (
    SELECT DISTINCT owner FROM (
        SELECT coalesce(parent, 0::UBIGINT) AS owner
        FROM (SELECT parent, cs, lag(ce) OVER (PARTITION BY parent ORDER BY cs) AS previous_end
              FROM linked
              WHERE ce > cs)
        WHERE cs < previous_end
        UNION ALL
        SELECT parent FROM linked WHERE re > rs AND (rs < cs OR re > ce))
),
siblings AS (  -- the children of special owners
    SELECT coalesce(parent, 0::UBIGINT) AS owner, parent_code AS owner_code, id, rs, re, cs, ce
    FROM linked
    WHERE re > rs AND coalesce(parent, 0::UBIGINT) IN (SELECT owner FROM special)
),
-- The union of a special owner's children (clipped to it), as islands: its self time is the rest.
islands AS (
    SELECT owner, any_value(owner_code) AS owner_code, min(cs) AS cs, max(ce) AS ce
    FROM (SELECT *, count(*) FILTER (WHERE before_end IS NULL OR cs >= before_end)
                        OVER (PARTITION BY owner ORDER BY cs, ce, id ROWS UNBOUNDED PRECEDING) AS island
          FROM (SELECT owner, owner_code, id, cs, ce,
                       max(ce) OVER (PARTITION BY owner ORDER BY cs, ce, id
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_end
                FROM siblings
                WHERE ce > cs))
    GROUP BY owner, island
),
-- k(t), the number of self intervals open at t (the leaves of the tree of open spans), is 1 plus,
-- for each owner, its open children minus one if any is open within it: a tree has 1 + sum(children
-- - 1) leaves, and a child open outside its parent is one more. Only special owners change it, so
-- it has few breakpoints even in a huge run.
concurrency AS (
    SELECT t, sum(d) AS d
    FROM (SELECT rs AS t, 1 AS d FROM siblings
          UNION ALL SELECT re, -1 FROM siblings
          UNION ALL SELECT cs, -1 FROM islands
          UNION ALL SELECT ce, 1 FROM islands
          UNION ALL SELECT start_ns, 0 FROM run_extent)
    GROUP BY t
),
-- F(t) = integral of 1/k from the run's start: an interval's share of the wall time is F(end) -
-- F(start). At breakpoint t (k constant until the next one): F(x) = f + (x - t) / k for x >= t.
breakpoints AS MATERIALIZED (
    SELECT t, k, sum(segment) OVER w - segment AS f
    FROM (SELECT t, 1 + sum(d) OVER w AS k, coalesce((lead(t) OVER w - t) / (1 + sum(d) OVER w), 0) AS segment
          FROM concurrency
          WINDOW w AS (ORDER BY t ROWS UNBOUNDED PRECEDING))
    WINDOW w AS (ORDER BY t ROWS UNBOUNDED PRECEDING)
),
-- Lookup of F without sorting a million points: 65536 equal buckets over the run, each with the
-- breakpoint in effect at its start. Buckets holding a breakpoint are "dirty": their points take
-- the exact (ASOF) path.
bucket_size AS (
    SELECT start_ns, (end_ns - start_ns) // 65536 + 1 AS width FROM run_extent
),
bucketed AS (
    SELECT l.*, (l.rs - z.start_ns) // z.width AS start_bucket, (l.re - z.start_ns) // z.width AS end_bucket
    FROM linked AS l, bucket_size AS z
    WHERE l.re > l.rs
),
buckets AS MATERIALIZED (
    SELECT b.bucket, p.t, p.k, p.f,
           b.bucket IN (SELECT (t - z.start_ns) // z.width FROM breakpoints, bucket_size AS z) AS dirty
    FROM (SELECT range AS bucket, z.start_ns + range * z.width AS bucket_start
          FROM bucket_size AS z, range(65536)) AS b
    ASOF JOIN breakpoints AS p ON b.bucket_start >= p.t
),
with_f AS MATERIALIZED (  -- a span that starts and ends in one bucket (most do) needs one lookup
    SELECT l.id, l.code, l.parent, l.parent_code, l.rs, l.re,
           CASE WHEN NOT b.dirty THEN b.f + (l.rs - b.t) / b.k END AS f_start,
           CASE WHEN NOT b.dirty THEN b.f + (l.re - b.t) / b.k END AS f_end
    FROM bucketed AS l
    JOIN buckets AS b ON b.bucket = l.start_bucket
    WHERE l.end_bucket = l.start_bucket
    UNION ALL
    SELECT l.id, l.code, l.parent, l.parent_code, l.rs, l.re,
           CASE WHEN NOT b1.dirty THEN b1.f + (l.rs - b1.t) / b1.k END,
           CASE WHEN NOT b2.dirty THEN b2.f + (l.re - b2.t) / b2.k END
    FROM bucketed AS l
    JOIN buckets AS b1 ON b1.bucket = l.start_bucket
    JOIN buckets AS b2 ON b2.bucket = l.end_bucket
    WHERE l.end_bucket <> l.start_bucket
),
exact AS (
    SELECT id, max(f) FILTER (WHERE side = 0) AS f_start, max(f) FILTER (WHERE side = 1) AS f_end
    FROM (SELECT x.id, x.side, p.f + (x.t - p.t) / p.k AS f
          FROM (SELECT id, 0 AS side, rs AS t FROM with_f WHERE f_start IS NULL
                UNION ALL
                SELECT id, 1, re FROM with_f WHERE f_end IS NULL) AS x
          ASOF JOIN breakpoints AS p ON x.t >= p.t)
    GROUP BY id
),
shares AS (  -- each span's interval: df its share of the wall time, dt its length
    SELECT w.id, w.code, w.parent, w.parent_code, w.re - w.rs AS dt,
           coalesce(w.f_start, e.f_start) AS f_start, coalesce(w.f_end, e.f_end) - coalesce(w.f_start, e.f_start) AS df
    FROM with_f AS w
    LEFT JOIN exact AS e ON e.id = w.id
),
untraced_children AS (  -- a subprocess span without a traced child: the spawning call, then waiting
    SELECT s.id, s.rs, s.re,
           least(greatest(a.start_ns + coalesce(TRY_CAST(a.attributes->>'selfopt_trace.spawn_ns' AS BIGINT), 0), s.rs),
                 s.re) AS spawned
    FROM linked AS s
    JOIN spans AS a ON a.run_id = $run_id AND a.category = 'subprocess' AND hash(a.span_id) = s.id
    WHERE s.code = 0 AND s.re > s.rs
),
f_at AS (  -- F at the few other points needed: islands and the spawn point of untraced children
    SELECT x.t, p.f + (x.t - p.t) / p.k AS f
    FROM (SELECT cs AS t FROM islands UNION SELECT ce FROM islands
          UNION SELECT spawned FROM untraced_children) AS x
    ASOF JOIN breakpoints AS p ON x.t >= p.t
),
-- Self time as sums: each span adds its interval to its own category and takes it from its
-- parent's (a special parent loses its children's union instead).
terms AS MATERIALIZED (
    SELECT code, id AS owner, df, dt FROM shares WHERE code <> 0
    UNION ALL
    SELECT CASE WHEN parent_code = 0 THEN 8 ELSE parent_code END, coalesce(parent, 0::UBIGINT), -df, -dt
    FROM shares
    WHERE coalesce(parent, 0::UBIGINT) NOT IN (SELECT owner FROM special)
    UNION ALL
    SELECT CASE WHEN i.owner_code = 0 THEN 8 ELSE i.owner_code END, i.owner, f1.f - f2.f, i.cs - i.ce
    FROM islands AS i JOIN f_at AS f1 ON f1.t = i.cs JOIN f_at AS f2 ON f2.t = i.ce
    UNION ALL
    SELECT 11, 0::UBIGINT, (SELECT max(f) FROM breakpoints) +
               (end_ns - (SELECT max(t) FROM breakpoints)) / (SELECT arg_max(k, t) FROM breakpoints),
           end_ns - start_ns
    FROM run_extent
    UNION ALL
    SELECT 7, u.id, m.f - s.f_start, u.spawned - u.rs
    FROM untraced_children AS u JOIN f_at AS m ON m.t = u.spawned JOIN shares AS s ON s.id = u.id
    UNION ALL
    SELECT 8, u.id, s.f_start + s.df - m.f, u.re - u.spawned
    FROM untraced_children AS u JOIN f_at AS m ON m.t = u.spawned JOIN shares AS s ON s.id = u.id
),
-- Calls too small to be spans, summed onto a span: that much of its self time is serialization
-- or parsing (in proportion over its self intervals).
small_sums AS (
    SELECT id, sum(ns) FILTER (WHERE library IN ('json', 'pickle', 'dill', 'pydantic', 'marshal', 'msgpack',
                                                 'orjson', 'yaml')) AS serialization_ns,
           sum(ns) FILTER (WHERE library NOT IN ('json', 'pickle', 'dill', 'pydantic', 'marshal', 'msgpack',
                                                     'orjson', 'yaml')) AS parsing_ns
    FROM (SELECT hash(span_id) AS id, split_part(key[length('selfopt_trace.small.') + 1:], '.', 1) AS library,
                 TRY_CAST(attributes->>key AS BIGINT) AS ns
          FROM (SELECT span_id, attributes, unnest(json_keys(attributes)) AS key
                FROM spans
                WHERE run_id = $run_id AND category <> 'import'  -- import spans hand their sums up
                  AND attributes LIKE '%"selfopt_trace.small.%')
          WHERE key LIKE 'selfopt_trace.small.%.duration_ns')
    GROUP BY id
),
-- An owner with small sums: its self time (what its terms add up to), of which serialization and
-- parsing take their share, up to all of it.
small_moves AS (
    SELECT o.code, o.wall_ns, o.busy_ns, least(1.0, coalesce(s.serialization_ns, 0) / o.busy_ns) AS serialization,
           least(coalesce(s.parsing_ns, 0) / o.busy_ns, 1.0 - least(1.0, coalesce(s.serialization_ns, 0) / o.busy_ns))
               AS parsing
    FROM (SELECT t.owner, any_value(t.code) AS code, sum(t.df) AS wall_ns, sum(t.dt) AS busy_ns
          FROM small_sums AS s
          JOIN terms AS t ON t.owner = s.id
          GROUP BY t.owner
          HAVING sum(t.dt) > 0) AS o
    JOIN small_sums AS s ON s.id = o.owner
),
totals AS (
    SELECT code, sum(wall_ns) AS wall_ns, sum(busy_ns) AS busy_ns
    FROM (SELECT code, sum(df) AS wall_ns, sum(dt) AS busy_ns FROM terms GROUP BY code
          UNION ALL
          SELECT code, -sum(wall_ns * (serialization + parsing)), -sum(busy_ns * (serialization + parsing))
          FROM small_moves GROUP BY code
          UNION ALL
          SELECT 4, sum(wall_ns * serialization), sum(busy_ns * serialization) FROM small_moves
          UNION ALL
          SELECT 3, sum(wall_ns * parsing), sum(busy_ns * parsing) FROM small_moves)
    GROUP BY code
),
counts AS (
    SELECT CASE WHEN code = 0 THEN 8 ELSE code END AS code, count(*) AS spans FROM coded GROUP BY ALL
),
names(code, category) AS (VALUES
    (1, 'interpreter start-up'), (2, 'imports'), (3, 'parsing'), (4, 'serialization'),
    (5, 'http client overhead'), (6, 'http server time'), (7, 'subprocess spawn overhead'),
    (8, 'waiting on children'), (9, 'container start-up'), (10, 'own work'), (11, 'untraced')
),
result AS (
    SELECT n.code, n.category, coalesce(t.wall_ns, 0) AS wall_ns, coalesce(t.busy_ns, 0) AS busy_ns,
           coalesce(c.spans, 0) AS spans
    FROM names AS n
    LEFT JOIN totals AS t USING (code)
    LEFT JOIN counts AS c USING (code)
),
wall_time AS (SELECT end_ns - start_ns AS ns FROM run_extent)
SELECT category,
       round(wall_ns / 1e6, 3) AS wall_ms,
       round(100 * wall_ns / nullif((SELECT ns FROM wall_time), 0), 1) AS wall_pct,
       round(busy_ns / 1e6, 3) AS busy_ms,
       spans
FROM (SELECT * FROM result
      UNION ALL
      SELECT 12, 'total', (SELECT ns FROM wall_time), sum(busy_ns), sum(spans) FROM result)
ORDER BY code
