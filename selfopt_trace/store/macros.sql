-- Table macros shared by the named queries (created on every connection, also read-only ones).
--
-- run_activity(run_id): every span of the run's trace (with the server spans of other runs that
-- answered its clients) as an activity of one unit, a thread of execution: a process's main thread
-- (its process span), a `thread` or `task` span, or a span whose parent is in another process (a
-- SERVER span's handler); every other span belongs to its parent's unit. Columns:
--   id, parent            hashed span ids; parent only within the same unit (else NULL)
--   unit                  the id of the unit's root span
--   is_root, is_top       the span roots a unit; it has no traced parent at all (the run's top level)
--   name, category, pid, start_ns, end_ns   as in `spans`
--   rs, re                the span's interval as activity of its unit: a child process's whole life is
--                         not its spawner's activity, only the spawning call is (selfopt_trace.spawn_ns)
--   waiter                it waits: a `wait` span, an HTTP or container CLIENT span, os.system (a shell
--                         subprocess span), and, in runs recorded before waits were (no `wait` or
--                         `thread` span at all), every subprocess span
--   waits_on              the units it waits on (roots' ids)
--   tid                   a `thread`/`task` span's thread id
--   code                  what its self time is, as breakdown.sql numbers its categories
CREATE OR REPLACE TEMP MACRO run_activity(for_run) AS TABLE
WITH RECURSIVE
run_spans AS NOT MATERIALIZED (
    SELECT span_id, parent_span_id, trace_id, name, kind, category, start_ns, end_ns, pid,
           hash(source_file, pid) AS process_key  -- a collector file holds many processes
    FROM spans
    WHERE run_id = for_run
),
-- The run's trace: that of the process started when the run started (CMD: run.json's start), else
-- (spans without process spans, e.g. from another SDK) of the earliest span. Other traces in the
-- run directory (a server started on its own) are not the run's.
main_trace AS (
    SELECT coalesce(
        (SELECT p.trace_id
         FROM run_spans AS p
         LEFT JOIN runs AS r ON r.run_id = for_run
         WHERE p.name = 'process' AND p.category = 'process'
         ORDER BY abs(p.start_ns - r.start_ns) NULLS LAST, p.start_ns
         LIMIT 1),
        (SELECT trace_id FROM run_spans ORDER BY start_ns LIMIT 1)) AS trace_id
),
-- Server spans of other runs answering a client of this run (a server traced as its own run).
foreign_servers AS (
    SELECT s.span_id, s.parent_span_id, s.trace_id, s.name, s.kind, s.category, s.start_ns, s.end_ns, s.pid,
           hash(s.run_id, s.source_file, s.pid) AS process_key
    FROM spans AS s
    JOIN run_spans AS c ON s.parent_span_id = c.span_id AND s.trace_id = c.trace_id
    WHERE s.kind = 'SERVER' AND s.run_id <> for_run AND c.kind = 'CLIENT'
),
-- Ids as hashes from here on: joins and sorts on integers are several times faster than on text.
trace_spans AS NOT MATERIALIZED (
    SELECT hash(span_id) AS id, CASE WHEN parent_span_id IS NOT NULL THEN hash(parent_span_id) END AS parent,
           name, kind, category, start_ns, end_ns, pid, process_key
    FROM (SELECT * FROM run_spans UNION ALL SELECT * FROM foreign_servers)
    WHERE trace_id = (SELECT trace_id FROM main_trace)
),
-- The attributes that matter, of the few spans that carry them.
details AS MATERIALIZED (
    SELECT hash(span_id) AS id,
           coalesce(TRY_CAST(attributes->>'selfopt_trace.spawn_ns' AS BIGINT), 0) AS spawn_ns,
           coalesce(TRY_CAST(attributes->>'process.shell' AS BOOLEAN), false) AS shell,
           TRY_CAST(attributes->>'thread.id' AS BIGINT) AS tid,
           TRY_CAST(attributes->'selfopt_trace.wait.on' AS VARCHAR[]) AS wait_on,
           attributes->>'process.pid' IS NOT NULL AS has_pid
    FROM spans
    WHERE run_id = for_run AND category IN ('wait', 'subprocess', 'thread')
),
legacy AS (  -- recorded before waits were: a subprocess span is a wait on its child
    SELECT NOT EXISTS (SELECT 1 FROM trace_spans WHERE category IN ('wait', 'thread')) AS legacy_run
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
    SELECT n.id, CASE WHEN n.name = 'process' AND n.category = 'process' AND e.exec_id IS NOT NULL
                      THEN e.new_parent ELSE n.parent END AS parent,
           n.name = 'process' AND n.category = 'process' AS is_process,
           n.name, n.kind, n.category, n.start_ns, n.end_ns, n.pid, n.process_key
    FROM trace_spans AS n
    LEFT JOIN exec_parent AS e ON e.exec_id = n.parent
),
-- A unit is one thread of execution: a process's main thread (its process span), a `thread` or
-- `task` span, or any span whose parent is in another process (a SERVER span's handler). Every
-- other span belongs to its parent's unit.
parented AS MATERIALIZED (
    SELECT n.*, p.id AS found_parent,
           n.is_process OR n.category = 'thread' OR p.id IS NULL OR p.process_key <> n.process_key AS is_root
    FROM nodes AS n
    LEFT JOIN nodes AS p ON p.id = n.parent
),
root_counts AS (
    SELECT process_key, count(*) AS roots, min(id) AS only_root FROM parented WHERE is_root GROUP BY process_key
),
-- Processes with one unit (most): no recursion. The others follow their spans' parents down.
multi_unit AS MATERIALIZED (
    SELECT p.id, p.parent, p.is_root FROM parented AS p
    JOIN root_counts AS c ON c.process_key = p.process_key AND c.roots > 1
),
unit_tree(id, unit) AS (
    SELECT id, id FROM multi_unit WHERE is_root
    UNION ALL
    SELECT m.id, t.unit FROM unit_tree AS t JOIN multi_unit AS m ON m.parent = t.id AND NOT m.is_root
),
traced_spawns AS (  -- spawning spans with a traced process under them, and those that started a container
    SELECT DISTINCT parent AS id, true AS traced, false AS docker FROM nodes WHERE is_process AND parent IS NOT NULL
    UNION ALL
    SELECT DISTINCT parent, false, true FROM nodes WHERE category = 'container' AND parent IS NOT NULL
),
spawn_kinds AS (
    SELECT id, bool_or(traced) AS traced, bool_or(docker) AS docker FROM traced_spawns GROUP BY id
),
main_processes AS (
    SELECT DISTINCT process_key FROM parented WHERE is_process AND found_parent IS NULL
),
-- What a wait waits on: a child process (the spawning span it names -> the traced processes under
-- it), a thread or a task (its span). Other waiters wait on the units started under them: an HTTP
-- client on its server span, a container call or os.system on the processes they started.
wait_names AS (
    SELECT d.id AS waiter, hash(unnest(d.wait_on)) AS named
    FROM details AS d JOIN nodes AS n ON n.id = d.id AND n.category = 'wait'
),
wait_codes AS (  -- a wait's own time, when nothing it waits on is alive
    SELECT d.id,
        CASE WHEN bool_or(k.docker) THEN 9
             WHEN bool_or(k.traced) THEN 7
             WHEN bool_or(s.category = 'subprocess') OR any_value(d.has_pid) THEN 11
             ELSE 12 END AS code
    FROM details AS d
    JOIN nodes AS w ON w.id = d.id AND w.category = 'wait'
    LEFT JOIN wait_names AS x ON x.waiter = d.id
    LEFT JOIN nodes AS s ON s.id = x.named
    LEFT JOIN spawn_kinds AS k ON k.id = x.named
    GROUP BY d.id
),
-- Each span: its unit, its code (what its self time is, as a number: the output's order), whether
-- it waits, and its interval in its unit (rs, re): a child process's whole life is not its
-- spawner's activity, only the spawning call is (a subprocess span that is itself a wait excepted).
coded AS MATERIALIZED (
    SELECT p.id, p.unit, p.is_root, CASE WHEN NOT p.is_root THEN p.parent END AS parent,
           p.found_parent IS NULL AS is_top, p.name, p.pid, p.category, p.waiter, p.tid, p.start_ns, p.end_ns,
           p.start_ns AS rs,
           CASE WHEN p.category = 'subprocess' AND NOT p.waiter
                THEN least(p.end_ns, p.start_ns + coalesce(p.spawn_ns, 0)) ELSE p.end_ns END AS re,
        CASE
            WHEN p.category = 'wait' THEN coalesce(w.code, 12)
            WHEN p.category = 'startup' THEN 1
            WHEN p.category = 'import' THEN 2
            WHEN p.category = 'parse' THEN 3
            WHEN p.category = 'serialization' THEN 4
            WHEN p.category = 'http' AND p.kind = 'SERVER' THEN 6
            WHEN p.category = 'http' THEN 5
            WHEN p.category = 'container' OR (p.category = 'subprocess' AND k.docker) THEN 9
            WHEN p.category = 'subprocess' THEN CASE WHEN k.traced OR NOT p.waiter THEN 7 ELSE 11 END
            WHEN m.process_key IS NOT NULL OR NOT EXISTS (SELECT 1 FROM main_processes) THEN 10
            ELSE 8
        END AS code
    FROM (SELECT p.*, d.spawn_ns, d.tid, d.shell, coalesce(r.only_root, t.unit) AS unit,
                 p.category = 'wait' OR (p.kind = 'CLIENT' AND p.category IN ('http', 'container'))
                 OR (p.category = 'subprocess' AND (coalesce(d.shell, false) OR (SELECT legacy_run FROM legacy))) AS waiter
          FROM parented AS p
          LEFT JOIN details AS d ON d.id = p.id
          LEFT JOIN root_counts AS r ON r.process_key = p.process_key AND r.roots = 1
          LEFT JOIN unit_tree AS t ON t.id = p.id) AS p
    LEFT JOIN wait_codes AS w ON w.id = p.id
    LEFT JOIN spawn_kinds AS k ON k.id = p.id
    LEFT JOIN main_processes AS m ON m.process_key = p.process_key
    WHERE p.unit IS NOT NULL  -- a span in a parent cycle belongs to no unit
),
-- What each waiter waits on: for a wait, the processes under the spawning spans it names and the
-- threads or tasks it names; for other waiters, the units started under them.
edges AS (
    SELECT x.waiter, p.id AS target FROM wait_names AS x JOIN nodes AS s ON s.id = x.named AND s.category = 'subprocess'
    JOIN nodes AS p ON p.is_process AND p.parent = x.named
    UNION
    SELECT x.waiter, x.named FROM wait_names AS x JOIN parented AS t ON t.id = x.named AND t.is_root
    UNION
    SELECT c.id, t.id FROM coded AS c JOIN parented AS t ON t.parent = c.id AND t.is_root
    WHERE c.waiter AND c.category <> 'wait'
)
SELECT c.id, c.parent, c.unit, c.is_root, c.is_top, c.name, c.category, c.pid, c.start_ns, c.end_ns, c.rs, c.re,
       c.waiter, e.targets AS waits_on, c.tid, c.code
FROM coded AS c
LEFT JOIN (SELECT waiter, list(target) AS targets FROM edges GROUP BY waiter) AS e ON e.waiter = c.id;
