-- Table macros shared by the named queries, stored with the schema (store/database.py: a read-only
-- open of a store that holds another version's creates these TEMP, as written here).
--
-- run_activity(run_id): every span of the run's trace (with the server spans of other runs that
-- answered its clients) as an activity of one unit, a thread of execution: a process's main thread
-- (its process span), a `thread` or `task` span, a SERVER span (a request's handler, also one in
-- another thread of its client's process), or a span whose parent is in another process; every
-- other span belongs to its parent's unit. Columns:
--   id, parent            hashed span ids; parent only within the same unit (else NULL)
--   unit                  the id of the unit's root span
--   is_root, is_top       the span roots a unit; it has no traced parent at all (the run's top level)
--   pid, start_ns, end_ns as in `spans`
--   rs, re                the span's interval as activity of its unit: a child process's whole life is
--                         not its spawner's activity, only the spawning call is (selfopt_trace.spawn_ns)
--   waiter                it waits: a `wait` span, an HTTP or container CLIENT span, os.system (a shell
--                         subprocess span), a subprocess span whose thread waited on its child where no
--                         hook sees it (read_waits below: reading its output until EOF), and, in runs
--                         recorded before waits were (no `wait` or `thread` span at all), every
--                         subprocess span
--   waits_on              the units it waits on (roots' ids; a Docker SDK call to the engine: the
--                         container's processes, engine_calls below)
--   tid                   a `thread`/`task` span's thread id
--   code                  what its self time is, as breakdown.sql numbers its categories
-- A recorded sleep (time.sleep that blocked) is an activity where it would be an untraced wait: in
-- own work or a child's (its parent's code 8 or 10), or a client's back-off between attempts in an
-- HTTP client span (urllib3's Retry: it was client overhead); its code is 16 (`sleeps`). Elsewhere
-- (a handler's sleep in an HTTP server span) its time is its parent's category, and it has no row.
-- An asyncio.sleep is one too, but its thread runs other tasks meanwhile: its code is 17 (in own
-- work) or 18 (in a child's), which the breakdown splits by the thread's CPU into that own work and
-- `sleeps`.
--   is_wait               a `wait` span (a blocking call: Popen.wait, Thread.join, Future.result, ...)
--   parent_rs, parent_re, parent_code    the same of its parent, when the parent is in its unit

-- What a span is, as a small number (joins and sorts carry it instead of name, kind and category):
--   1 a process span, 2 start-up, 3 import, 4 parse, 5 serialization, 6 HTTP CLIENT, 7 HTTP SERVER,
--   8 other HTTP, 9 subprocess, 10 exec (a subprocess span), 11 container CLIENT, 12 other container,
--   13 wait, 14 thread or task, 15 sleep, 16 asyncio.sleep, 17 a garbage collector's pass, 0 anything else.
CREATE OR REPLACE TEMP MACRO span_sort(name, kind, category) AS (
    CASE category
        WHEN 'process' THEN CASE WHEN name = 'process' THEN 1 ELSE 0 END
        WHEN 'startup' THEN 2
        WHEN 'import' THEN 3
        WHEN 'parse' THEN 4
        WHEN 'serialization' THEN 5
        WHEN 'http' THEN CASE kind WHEN 'CLIENT' THEN 6 WHEN 'SERVER' THEN 7 ELSE 8 END
        WHEN 'subprocess' THEN CASE WHEN name = 'exec' THEN 10 ELSE 9 END
        WHEN 'container' THEN CASE WHEN kind = 'CLIENT' THEN 11 ELSE 12 END
        WHEN 'wait' THEN 13
        WHEN 'thread' THEN 14
        WHEN 'sleep' THEN CASE WHEN name = 'asyncio.sleep' THEN 16 ELSE 15 END
        WHEN 'gc' THEN 17
        ELSE 0
    END)::UTINYINT;

-- A span waits on what is started under it or what it names (see run_activity's `waiter`; a child
-- read until it exits is added at its end, read_waits).
CREATE OR REPLACE TEMP MACRO activity_waiter(sort, shell, legacy) AS
    sort IN (6, 11, 13) OR (sort IN (9, 10) AND (coalesce(shell, false) OR legacy));

-- The end of a span as activity of its unit: a spawning span is only its spawning call.
CREATE OR REPLACE TEMP MACRO activity_end(sort, waiter, start_ns, end_ns, spawn_ns) AS
    CASE WHEN sort IN (9, 10) AND NOT waiter THEN least(end_ns, start_ns + coalesce(spawn_ns, 0)) ELSE end_ns END;

-- What a span's self time is, numbered as breakdown.sql's categories. `main`: in a top-level process;
-- `answered`: an HTTP client span with a server span under it (else the server is not traced: the
-- time is the server's and the network's, not the client's overhead); `engine`: an HTTP client span
-- that is a Docker SDK call to the engine about a container (run_activity's engine_calls): the
-- container's time.
CREATE OR REPLACE TEMP MACRO activity_code(sort, waiter, wait_code, traced, docker, main, answered, engine) AS
    CASE
        WHEN sort = 13 THEN coalesce(wait_code, 12)
        WHEN sort = 17 THEN 19
        WHEN sort BETWEEN 2 AND 5 THEN sort - 1
        WHEN sort = 7 THEN 6
        WHEN sort = 6 AND engine THEN 9
        WHEN sort = 6 AND NOT answered THEN 14
        WHEN sort IN (6, 8) THEN 5
        WHEN sort IN (11, 12) OR (sort IN (9, 10) AND coalesce(docker, false)) THEN 9
        WHEN sort IN (9, 10) THEN CASE WHEN coalesce(traced, false) OR NOT waiter THEN 7 ELSE 11 END
        WHEN main THEN 10
        ELSE 8
    END;

-- cmd_exit(for_run): CMD's own process span and when `run` saw CMD exit (runs.pid and end_ns, from
-- run.json): the last-ending process span of CMD's pid that hangs under no span of the run but an
-- exec (a container's pid 1 may have the same number), if it ended as recorded. What came after its
-- end (the agent's last record) is its interpreter's teardown: breakdown.sql, critical_path.sql and
-- the summary read it here; unless an exec replaced that interpreter with a program of no agent
-- (`run -- docker run ...`'s shim): that program's time is not (breakdown.sql: outside traced
-- processes, a `docker run`'s container start-up). Columns: id
-- (hashed span id), pid, end_ns, exited_ns, replaced.
CREATE OR REPLACE TEMP MACRO cmd_exit(for_run) AS TABLE
SELECT id, pid, end_ns, exited_ns, replaced
FROM (SELECT hash(s.span_id) AS id, s.pid, s.end_ns, s.incomplete, r.end_ns AS exited_ns,
             coalesce(s.attributes->>'process.exec.replaced' = 'true', false) AS replaced
      FROM runs AS r
      JOIN spans AS s ON s.run_id = r.run_id AND s.pid = r.pid AND s.name = 'process' AND s.category = 'process'
      -- no parent but an exec (an anti join: as NOT EXISTS, DuckDB built a hash table of every span of
      -- the run, 55 ms at 1 M spans, for the one or two process spans of CMD's pid)
      LEFT JOIN spans AS p ON p.run_id = for_run AND p.span_id = s.parent_span_id AND p.name <> 'exec'
      WHERE r.run_id = for_run AND p.span_id IS NULL
      QUALIFY row_number() OVER (ORDER BY s.end_ns DESC) = 1)
WHERE NOT incomplete AND end_ns <= exited_ns;

-- foreign_servers(for_run): the SERVER spans of other runs that answered a client of this run (a
-- server traced as its own run), whole rows of `spans`, each once: not those the run holds itself
-- (a run loaded again under another id holds its own server's spans), and one copy of a span that
-- several other runs hold. run_activity follows them; the report draws them.
CREATE OR REPLACE TEMP MACRO foreign_servers(for_run) AS TABLE
    SELECT s.*
    FROM spans AS s
    JOIN spans AS c ON c.run_id = for_run AND c.span_id = s.parent_span_id AND c.trace_id = s.trace_id
    ANTI JOIN (FROM spans WHERE run_id = for_run AND kind = 'SERVER') AS own ON own.span_id = s.span_id
    WHERE s.kind = 'SERVER' AND s.run_id <> for_run AND c.kind = 'CLIENT'
    QUALIFY row_number() OVER (PARTITION BY s.span_id ORDER BY s.run_id) = 1;

-- served_tops(for_run): the top-level process spans (no traced parent: the children of a shell CMD)
-- whose process tree answers a call from another top-level process's tree, a SERVER span under a
-- span of that tree: a server a script started beside its client (`server & client`). The script
-- waits on the client, and the server's work is reached through the client's calls, so while a
-- top-level process that answers nobody is alive, the run's time is not the server's
-- (breakdown.sql's top-level share, critical_path_rows' top level). Column: id (hashed span id).
CREATE OR REPLACE TEMP MACRO served_tops(for_run) AS TABLE
WITH RECURSIVE
procs AS (  -- process spans, each with its process (file and pid: a collector file holds many)
    SELECT span_id, parent_span_id, hash(source_file, pid) AS process_key
    FROM spans WHERE run_id = for_run AND category = 'process' AND name = 'process'
),
servers AS (
    SELECT parent_span_id, hash(source_file, pid) AS process_key
    FROM spans WHERE run_id = for_run AND kind = 'SERVER' AND parent_span_id IS NOT NULL
),
parents AS (  -- the process of each span that a process span or a SERVER span hangs under
    SELECT span_id, hash(source_file, pid) AS process_key
    FROM spans
    WHERE run_id = for_run
      AND span_id IN (SELECT parent_span_id FROM procs UNION SELECT parent_span_id FROM servers)
),
trees(top, process_key) AS (  -- each top-level process's tree, process by process
    SELECT span_id, process_key FROM procs
    WHERE parent_span_id IS NULL OR parent_span_id NOT IN (SELECT span_id FROM parents)
    UNION
    SELECT t.top, c.process_key
    FROM trees AS t JOIN parents AS x ON x.process_key = t.process_key JOIN procs AS c ON c.parent_span_id = x.span_id
)
SELECT DISTINCT hash(answering.top) AS id
FROM servers AS s
JOIN trees AS answering ON answering.process_key = s.process_key
JOIN parents AS x ON x.span_id = s.parent_span_id
JOIN trees AS calling ON calling.process_key = x.process_key
WHERE calling.top <> answering.top;

CREATE OR REPLACE TEMP MACRO run_activity(for_run) AS TABLE
WITH RECURSIVE
run_spans AS NOT MATERIALIZED (
    SELECT span_id, parent_span_id, trace_id, name, kind, category, start_ns, end_ns, pid,
           hash(source_file, pid) AS process_key  -- a collector file holds many processes
    FROM spans
    WHERE run_id = for_run
      AND category <> 'finalize'  -- the interpreter's end after the process span's: its teardown, as it was
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
answering_servers AS (  -- a server traced as its own run
    SELECT span_id, parent_span_id, trace_id, name, kind, category, start_ns, end_ns, pid,
           hash(run_id, source_file, pid) AS process_key
    FROM foreign_servers(for_run)
),
-- Ids as hashes from here on, and what a span is as a number: joins and sorts on integers are
-- several times faster than on text.
nodes AS MATERIALIZED (
    SELECT hash(span_id) AS id, CASE WHEN parent_span_id IS NOT NULL THEN hash(parent_span_id) END AS parent,
           span_sort(name, kind, category) AS sort, start_ns, end_ns, pid, process_key
    FROM (SELECT * FROM run_spans UNION ALL SELECT * FROM answering_servers)
    WHERE trace_id = (SELECT trace_id FROM main_trace)
),
-- The attributes that matter, of the few spans that carry them.
details AS MATERIALIZED (
    SELECT hash(span_id) AS id, span_id,
           coalesce(TRY_CAST(attributes->>'selfopt_trace.spawn_ns' AS BIGINT), 0) AS spawn_ns,
           coalesce(TRY_CAST(attributes->>'process.shell' AS BOOLEAN), false) AS shell,
           coalesce(TRY_CAST(attributes->>'selfopt_trace.child.no_pipe' AS BOOLEAN), false) AS no_pipe,
           TRY_CAST(attributes->>'thread.id' AS BIGINT) AS tid,
           TRY_CAST(attributes->>'selfopt_trace.thread.cpu_ns' AS BIGINT) AS thread_cpu_ns,
           name = 'thread' AS plain_thread,  -- a threading.Thread's span, not a pool task's
           TRY_CAST(attributes->'selfopt_trace.wait.on' AS VARCHAR[]) AS wait_on,
           attributes->>'process.pid' IS NOT NULL AS has_pid,
           -- queued for a CPU counts as running, where the agent read it (a busy machine's preemption)
           TRY_CAST(attributes->>'selfopt_trace.cpu.reap_ns' AS BIGINT)
               - TRY_CAST(attributes->>'selfopt_trace.cpu.end_ns' AS BIGINT)
               + coalesce(TRY_CAST(attributes->>'selfopt_trace.cpu.reap_runqueue_ns' AS BIGINT)
                          - TRY_CAST(attributes->>'selfopt_trace.cpu.end_runqueue_ns' AS BIGINT), 0) AS cpu_to_reap
    -- Equality filters, each a scan filter: an IN list is not, and read every span's attributes.
    FROM (FROM spans WHERE run_id = for_run AND category = 'wait'
          UNION ALL FROM spans WHERE run_id = for_run AND category = 'subprocess'
          UNION ALL FROM spans WHERE run_id = for_run AND category = 'thread')
),
-- Recorded before waits were: a subprocess span is a wait on its child. Not a run that merely has
-- no wait (a helper started and left running): its agent ends process spans with `process.cpu_ns`,
-- which came after waits did; nor one with a spawning thread's CPU read at the reap, which came
-- after them too (a run whose processes were all killed has no end record).
legacy AS (
    SELECT NOT EXISTS (SELECT 1 FROM nodes WHERE sort IN (13, 14))
           AND NOT EXISTS (SELECT 1 FROM spans WHERE run_id = for_run AND category = 'process'
                                                 AND (attributes->'process.cpu_ns') IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM details WHERE cpu_to_reap IS NOT NULL) AS legacy_run
),
-- After an exec, the new image's process span is a child of the (zero-length) exec span; it goes
-- on where the replaced process was, so it hangs under that process's parent.
exec_parent AS (
    SELECT x.id AS exec_id, p.parent AS new_parent
    FROM nodes AS x
    JOIN nodes AS p ON p.process_key = x.process_key AND p.sort = 1
    WHERE x.sort = 10
),
-- A unit is one thread of execution: a process's main thread (its process span), a `thread` or
-- `task` span, a SERVER span, or any span whose parent is in another process. Every other span
-- belongs to its parent's unit. (A SERVER span answering a client of its own process was one of
-- the client's unit: once the client timed out, it took half of the client's thread.)
parented AS MATERIALIZED (  -- with the parent's fields: within a unit, a span needs its parent's
    SELECT n.id, n.parent, n.sort, n.start_ns, n.end_ns, n.pid, n.process_key, p.id AS found_parent,
           n.sort IN (1, 7, 14) OR p.id IS NULL OR p.process_key <> n.process_key AS is_root,
           p.sort AS parent_sort, p.start_ns AS parent_start, p.end_ns AS parent_end
    FROM (SELECT n.id, n.sort, n.start_ns, n.end_ns, n.pid, n.process_key,
                 CASE WHEN e.exec_id IS NOT NULL THEN e.new_parent ELSE n.parent END AS parent
          FROM nodes AS n
          LEFT JOIN exec_parent AS e ON e.exec_id = n.parent
          WHERE n.sort = 1
          UNION ALL
          SELECT id, sort, start_ns, end_ns, pid, process_key, parent FROM nodes WHERE sort <> 1) AS n
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
    SELECT DISTINCT parent AS id, true AS traced, false AS docker FROM parented WHERE sort = 1 AND parent IS NOT NULL
    UNION ALL
    SELECT DISTINCT parent, false, true FROM nodes WHERE sort IN (11, 12) AND parent IS NOT NULL
),
spawn_kinds AS (
    SELECT id, bool_or(traced) AS traced, bool_or(docker) AS docker FROM traced_spawns GROUP BY id
),
main_processes AS (
    SELECT DISTINCT process_key FROM parented WHERE sort = 1 AND found_parent IS NULL
),
answered AS (  -- HTTP client spans a traced server answered
    SELECT DISTINCT parent AS id FROM nodes WHERE sort = 7 AND parent IS NOT NULL
),
-- The Docker SDK's HTTP calls to the engine (its socket is no traced server): those inside an SDK
-- container call (create, start, logs, wait, remove of containers.run) and those whose URL names a
-- traced container of the run (/containers/{id, 12 characters or more, or name}/...: a detached
-- container's wait() and remove()). Their time is the container's (code 9), not an untraced HTTP
-- server's; those inside a container call wait on the processes it started, as it does, and
-- POST /containers/{id}/wait on the container's first process: while that runs, the time is its own.
container_firsts AS (  -- each container's first traced process (the one `docker run` started)
    SELECT arg_min(n.id, n.start_ns) AS id, r.container_id, any_value(r.container_name) AS container_name
    FROM nodes AS n
    JOIN (SELECT hash(span_id) AS id, resource_attributes->>'container.id' AS container_id,
                 resource_attributes->>'container.name' AS container_name
          FROM spans WHERE run_id = for_run AND category = 'process' AND name = 'process') AS r ON r.id = n.id
    WHERE n.sort = 1 AND r.container_id <> ''
    GROUP BY r.container_id
),
engine_named AS (  -- calls naming a container of the run, with whether they wait for its exit
    SELECT u.id, c.id AS target, u.waits
    FROM (SELECT hash(span_id) AS id, regexp_extract(url, '/containers/([^/?#]+)', 1) AS named,
                 regexp_matches(url, '/containers/[^/?#]+/wait([?#]|$)') AS waits
          FROM (SELECT span_id, attributes->>'url.full' AS url
                FROM spans WHERE run_id = for_run AND category = 'http' AND kind = 'CLIENT')
          WHERE url LIKE '%/containers/%') AS u
    JOIN container_firsts AS c
      ON (length(u.named) >= 12 AND starts_with(c.container_id, u.named)) OR u.named = c.container_name
),
in_container_calls AS (  -- HTTP client spans whose parent is an SDK container call
    SELECT id, parent FROM parented WHERE sort = 6 AND parent_sort = 11 AND NOT is_root
),
engine_calls AS (
    SELECT id FROM in_container_calls UNION SELECT id FROM engine_named
),
-- What a wait waits on: a child process (the spawning span it names -> the traced processes under
-- it), a thread or a task (its span). Other waiters wait on the units started under them: an HTTP
-- client on its server span, a container call or os.system on the processes they started.
wait_names AS (
    SELECT d.id AS waiter, hash(unnest(d.wait_on)) AS named
    FROM details AS d JOIN nodes AS n ON n.id = d.id AND n.sort = 13
),
-- A wait's own time, when nothing it waits on is alive: what the spawning spans it names started,
-- not what a thread or a task it names did (a Thread.join after the end of a thread that ran an SDK
-- container call was container start-up, not an untraced wait).
wait_codes AS (
    SELECT d.id,
        CASE WHEN bool_or(s.sort IN (9, 10) AND k.docker) THEN 9
             WHEN bool_or(s.sort IN (9, 10) AND k.traced) THEN 7
             WHEN bool_or(s.sort IN (9, 10)) OR any_value(d.has_pid) THEN 11
             ELSE 12 END AS code
    FROM details AS d
    JOIN nodes AS w ON w.id = d.id AND w.sort = 13
    LEFT JOIN wait_names AS x ON x.waiter = d.id
    LEFT JOIN nodes AS s ON s.id = x.named
    LEFT JOIN spawn_kinds AS k ON k.id = x.named
    GROUP BY d.id
),
-- The facts of the few spans that have any: attributes, what a wait's own time is, what a
-- spawning span started.
facts AS MATERIALIZED (
    SELECT coalesce(d.id, w.id, k.id) AS id, d.spawn_ns, d.shell, d.tid, w.code AS wait_code, k.traced, k.docker
    FROM details AS d
    FULL JOIN wait_codes AS w ON w.id = d.id
    FULL JOIN spawn_kinds AS k ON k.id = coalesce(d.id, w.id)
),
-- Each span with its unit, whether it is in a top-level process, and the facts of it and of its
-- parent: only waits, spawning spans and threads have facts, so only they and their children
-- are joined with them.
placed AS (
    SELECT p.*, p.found_parent IS NULL AS is_top, p.single_unit AS unit,
           m.process_key IS NOT NULL OR NOT EXISTS (SELECT 1 FROM main_processes) AS main
    FROM (SELECT p.*, r.only_root AS single_unit
          FROM parented AS p
          JOIN root_counts AS r ON r.process_key = p.process_key AND r.roots = 1
          UNION ALL
          SELECT p.*, t.unit
          FROM parented AS p
          JOIN root_counts AS r ON r.process_key = p.process_key AND r.roots > 1
          LEFT JOIN unit_tree AS t ON t.id = p.id) AS p
    LEFT JOIN main_processes AS m ON m.process_key = p.process_key
),
with_facts AS (
    SELECT p.*, f.spawn_ns, f.shell, f.tid, f.wait_code, f.traced, f.docker,
           pf.spawn_ns AS parent_spawn_ns, pf.shell AS parent_shell, pf.wait_code AS parent_wait_code,
           pf.traced AS parent_traced, pf.docker AS parent_docker
    FROM placed AS p
    LEFT JOIN facts AS f ON f.id = p.id
    LEFT JOIN facts AS pf ON pf.id = p.parent
    WHERE p.sort IN (9, 10, 13, 14) OR p.parent_sort IN (9, 10, 13, 14)
    UNION ALL
    SELECT p.*, NULL::BIGINT, NULL::BOOLEAN, NULL::BIGINT, NULL::INTEGER, NULL::BOOLEAN, NULL::BOOLEAN,
           NULL::BIGINT, NULL::BOOLEAN, NULL::INTEGER, NULL::BOOLEAN, NULL::BOOLEAN
    FROM placed AS p
    WHERE p.sort NOT IN (9, 10, 13, 14) AND coalesce(p.parent_sort NOT IN (9, 10, 13, 14), true)
),
-- Each span: its unit, its code (what its self time is, as a number: the output's order), whether
-- it waits, and its interval in its unit (rs, re): a child process's whole life is not its
-- spawner's activity, only the spawning call is (a subprocess span that is itself a wait excepted).
-- The same for its parent, when the parent is in the same unit.
coded AS MATERIALIZED (
    SELECT p.id, p.unit, p.is_root, p.is_top, p.pid, p.sort, p.waiter, p.tid, p.start_ns, p.end_ns,
           p.start_ns AS rs, activity_end(p.sort, p.waiter, p.start_ns, p.end_ns, p.spawn_ns) AS re,
           CASE WHEN p.sort = 15 THEN 16
                WHEN p.sort = 16 THEN CASE WHEN p.main THEN 17 ELSE 18 END
                ELSE activity_code(p.sort, p.waiter, p.wait_code, p.traced, p.docker, p.main,
                                   p.sort = 6 AND p.id IN (SELECT id FROM answered),
                                   p.sort = 6 AND p.id IN (SELECT id FROM engine_calls))
           END AS code,
           CASE WHEN NOT p.is_root THEN p.parent END AS parent,
           CASE WHEN NOT p.is_root THEN p.parent_start END AS parent_rs,
           CASE WHEN NOT p.is_root
                THEN activity_end(p.parent_sort, p.parent_waiter, p.parent_start, p.parent_end, p.parent_spawn_ns)
           END AS parent_re,
           CASE WHEN NOT p.is_root
                THEN activity_code(p.parent_sort, p.parent_waiter, p.parent_wait_code, p.parent_traced,
                                   p.parent_docker, p.main,
                                   p.parent_sort = 6 AND p.parent IN (SELECT id FROM answered),
                                   p.parent_sort = 6 AND p.parent IN (SELECT id FROM engine_calls))
           END AS parent_code
    FROM (SELECT *, activity_waiter(sort, shell, (SELECT legacy_run FROM legacy)) AS waiter,
                 activity_waiter(parent_sort, parent_shell, (SELECT legacy_run FROM legacy)) AS parent_waiter
          FROM with_facts) AS p
    WHERE p.unit IS NOT NULL  -- a span in a parent cycle belongs to no unit
      AND (p.sort NOT IN (15, 16) OR parent_code IN (8, 10) OR (p.sort = 15 AND p.parent_sort = 6))  -- (see above)
),
-- A child waited on where no hook sees it: from the end of the spawning call until the child was
-- reaped or its unit records a wait on it (Popen.wait after EOF, which goes on), if the spawning
-- thread ran for a quarter of the time it recorded nothing else or less (the agent reads its CPU
-- clock at the call's end and at the reap: CPU_REAP, and its time queued for a CPU, which is
-- running too; what it ran after the read counts too, so the test errs on the side of no wait).
-- It was reading the child's output until EOF (`for line in proc.stdout`, pip's build hooks) or
-- waiting on what a thread reading it feeds (pytest-xdist): its spawning span is a wait on the
-- child until then, as os.system's is. Without it, that time was an untraced wait of the parent's
-- while the child's work went unseen. The parent's CPU meanwhile (pip: 0.1 % and 13 % of its two
-- hooks' time, logging each line) is then the child's time: a quarter bounds that error, where
-- the untraced wait it replaces was the rest. Not a child whose stdout and stderr are no pipe to
-- the parent (`selfopt_trace.child.no_pipe`): nothing of it to read, an idle spawner waits on
-- something else (a socket: its 500 ms were the child's work and 200 ms of teardown). Found from
-- `coded` (its units known, materialized), and applied in the output: as a CTE before the units,
-- they were placed twice (+13 % of the breakdown at 1 M spans).
read_candidates AS (  -- few: spawning spans with the CPU read at their reap, and their child's end
    SELECT c.id, c.unit, c.start_ns + d.spawn_ns AS from_ns, c.end_ns, d.cpu_to_reap AS ran_ns, k.end_ns AS child_end
    FROM (FROM details WHERE cpu_to_reap IS NOT NULL AND NOT shell AND NOT no_pipe) AS d
    JOIN coded AS c ON c.id = d.id AND c.sort = 9 AND NOT c.waiter
    LEFT JOIN (SELECT parent, max(end_ns) AS end_ns FROM parented WHERE sort = 1 GROUP BY parent) AS k ON k.parent = c.id
),
read_spans AS (  -- each candidate until it is reaped or its unit records a wait on its child
    SELECT s.id, any_value(s.unit) AS unit, any_value(s.from_ns) AS from_ns, any_value(s.ran_ns) AS ran_ns,
           any_value(s.child_end) AS child_end, least(any_value(s.end_ns), min(w.start_ns)) AS until_ns
    FROM read_candidates AS s
    LEFT JOIN (SELECT x.named, c.unit, c.start_ns FROM wait_names AS x JOIN coded AS c ON c.id = x.waiter) AS w
           ON w.named = s.id AND w.unit = s.unit AND w.start_ns > s.from_ns AND w.start_ns < s.end_ns
    GROUP BY s.id
),
-- A read is what its thread did only while it recorded nothing else: the spans its unit started
-- meanwhile, those whose parent is older than the read (a sleep, a wait on a thread or another
-- child, an HTTP call, a spawn, an import), hang under it, so that while one is open the read is
-- no leaf and passes nothing on. They ended it once (a sleep or a Future.result before the read:
-- the child's whole work was an untraced wait), or stood beside it and took half of each (an idle
-- helper started first took half of every `subprocess.run` after it). Several reads open at once
-- stay beside each other; a span goes under the latest.
read_inside AS (
    SELECT r.id AS read_id, r.from_ns, r.until_ns, s.id, s.rs, s.re
    FROM read_spans AS r
    JOIN coded AS s ON s.unit = r.unit AND s.rs >= r.from_ns AND s.rs < r.until_ns AND s.parent_rs < r.from_ns
                   AND s.parent <> r.id
    WHERE s.id NOT IN (SELECT id FROM read_candidates)
),
-- Past its traced child's end (its last record) a read waits on the child's teardown, until the
-- reap, if its thread idled to then; but it ends at the child's end where the thread ran more
-- (the CPU read at the reap counts what it ran after the read: a parent that reads its child's
-- output, or a server's "ready" line, then works), or where another read of its thread still has
-- a live child (children read together with a selector: the first to exit took half of the
-- other's work as its teardown). The test counts the time the thread recorded nothing else.
read_islands AS (  -- the union of each read's children within it, as islands
    SELECT read_id, min(cs) AS cs, max(ce) AS ce
    FROM (SELECT *, count(*) FILTER (WHERE before_end IS NULL OR cs > before_end)
                        OVER (PARTITION BY read_id ORDER BY cs, ce ROWS UNBOUNDED PRECEDING) AS island
          FROM (SELECT *, max(ce) OVER (PARTITION BY read_id ORDER BY cs, ce
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_end
                FROM (SELECT read_id, rs AS cs, least(re, until_ns) AS ce FROM read_inside WHERE re > rs)))
    GROUP BY read_id, island
),
read_bounds AS (
    SELECT r.id, r.unit, r.from_ns, r.ran_ns,
           CASE WHEN r.ran_ns >= 0  -- (< 0: a thread id reused)
                     AND r.ran_ns * 4 <= r.until_ns - r.from_ns - coalesce(c.ns, 0)
                     AND NOT EXISTS (SELECT 1 FROM read_spans AS o
                                     WHERE o.unit = r.unit AND o.id <> r.id AND o.from_ns < r.child_end
                                       AND least(o.until_ns, coalesce(o.child_end, o.until_ns)) > r.child_end)
                THEN r.until_ns
                ELSE least(r.until_ns, coalesce(r.child_end, r.until_ns)) END AS until_ns
    FROM read_spans AS r
    LEFT JOIN (SELECT read_id, sum(ce - cs) AS ns FROM read_islands GROUP BY read_id) AS c ON c.read_id = r.id
),
-- The time it recorded nothing else in, to its bound: where the CPU read at the reap fails the
-- test, the thread's CPU samples there decide: prorated (a reading astride its end spreads the
-- work after it in, erring on the side of no wait), over at least half of it sampled.
read_gaps AS (
    SELECT id, a, b FROM (
        SELECT b.id, coalesce(lag(least(i.ce, b.until_ns)) OVER (PARTITION BY b.id ORDER BY i.cs), b.from_ns) AS a,
               i.cs AS b
        FROM read_bounds AS b JOIN read_islands AS i ON i.read_id = b.id AND i.cs < b.until_ns
        UNION ALL
        -- (least() passes a NULL over: no island is no end, not the bound)
        SELECT b.id, coalesce(max(least(i.ce, b.until_ns)) FILTER (WHERE i.read_id IS NOT NULL), b.from_ns),
               b.until_ns
        FROM read_bounds AS b LEFT JOIN read_islands AS i ON i.read_id = b.id AND i.cs < b.until_ns
        GROUP BY b.id, b.from_ns, b.until_ns)
    WHERE b > a
),
-- The thread's CPU samples in those stretches. The read ends where they first show the thread
-- working, a reading of 5 ms or more on the CPU three quarters of its time or more: a server's
-- "ready" line read, calls to it, then work of the parent's while the server lives on; what comes
-- after is the parent's.
read_samples AS (
    SELECT DISTINCT g.id, m.start_ns, m.end_ns, m.cpu_ns + coalesce(m.runqueue_ns, 0) AS used_ns
    FROM read_gaps AS g
    JOIN read_bounds AS r ON r.id = g.id
    JOIN coded AS u ON u.id = r.unit
    JOIN cpu_samples AS m ON m.run_id = for_run AND m.pid = u.pid AND m.tid = coalesce(u.tid, u.pid)
                         AND m.end_ns > g.a AND m.start_ns < g.b AND m.end_ns > m.start_ns
),
read_worked AS (
    SELECT r.id, least(r.until_ns, greatest(r.from_ns, coalesce(min(s.start_ns), r.until_ns))) AS until_ns
    FROM read_bounds AS r
    LEFT JOIN read_samples AS s
           ON s.id = r.id AND s.used_ns * 4 >= 3 * (s.end_ns - s.start_ns) AND s.end_ns - s.start_ns >= 5000000
    GROUP BY r.id, r.until_ns, r.from_ns
),
-- It is a read if the CPU read at the reap is a quarter of its stretches or less, or else their
-- samples say so (prorated: a reading astride a stretch's end spreads the work after it in,
-- erring on the side of no wait), over at least half of them sampled.
read_stretches AS (
    SELECT g.id, g.a, least(g.b, w.until_ns) AS b
    FROM read_gaps AS g JOIN read_worked AS w ON w.id = g.id AND g.a < w.until_ns
),
read_waits AS (
    SELECT r.id, w.until_ns
    FROM read_bounds AS r
    JOIN read_worked AS w ON w.id = r.id
    LEFT JOIN (SELECT id, sum(b - a) AS ns FROM read_stretches GROUP BY id) AS g ON g.id = r.id
    LEFT JOIN (SELECT g.id, sum(m.used_ns * (least(m.end_ns, g.b) - greatest(m.start_ns, g.a)) / (m.end_ns - m.start_ns))
                          AS used_ns,
                      sum(least(m.end_ns, g.b) - greatest(m.start_ns, g.a)) AS sampled_ns
               FROM read_stretches AS g
               JOIN read_samples AS m ON m.id = g.id AND m.end_ns > g.a AND m.start_ns < g.b
               GROUP BY g.id) AS m ON m.id = r.id
    WHERE w.until_ns > r.from_ns
      AND ((r.ran_ns >= 0 AND r.ran_ns * 4 <= g.ns)  -- (< 0: a thread id reused)
           OR (m.sampled_ns * 2 >= g.ns AND m.used_ns * 4 <= m.sampled_ns))
),
-- A span open at the read's end ends it at its start (the read got nothing from there on anyway).
read_ends AS (
    SELECT w.id, least(w.until_ns, min(i.rs) FILTER (WHERE i.rs < w.until_ns AND i.re > w.until_ns)) AS until_ns
    FROM read_waits AS w LEFT JOIN read_inside AS i ON i.read_id = w.id
    GROUP BY w.id, w.until_ns
),
read_children AS (  -- with the read's interval and code: its children's parent's
    SELECT i.id, i.read_id, r.rs AS read_rs, e.until_ns,
           activity_code(r.sort, true, NULL, f.traced, f.docker, NULL, false, false) AS read_code
    FROM read_inside AS i
    JOIN read_ends AS e ON e.id = i.read_id AND i.rs < e.until_ns
    JOIN coded AS r ON r.id = i.read_id
    LEFT JOIN facts AS f ON f.id = i.read_id
    JOIN details AS d ON d.id = i.read_id
    -- (of reads started at the same instant, the one of the larger span id: an order the reference
    -- follows, which the hashed id's was not)
    QUALIFY row_number() OVER (PARTITION BY i.id ORDER BY i.from_ns DESC, d.span_id DESC) = 1
),
-- A `threading.Thread` its spawner's thread started while it read a child (from the spawning call's
-- end to the reap), that ran a quarter of its life or less and ended as the child did (within 50 ms
-- of its last record: a read to EOF), reads that child for it: a thread draining the child's pipe,
-- joined or feeding a queue the spawner waits on. It waits on the child, as the read does (the
-- thread's read was an untraced wait, and 300 ms of a 320 ms child's work with it). Of several such
-- reads, the latest's (started at once: all of theirs). A thread that ended anywhere else was waiting
-- on something else: a socket, a lock (a tester's threads that did so took the child's work).
thread_reads AS (
    SELECT t.id, r.id AS read_id
    FROM read_candidates AS r
    JOIN parented AS t ON t.sort = 14 AND t.start_ns >= r.from_ns AND t.start_ns < r.end_ns
                      AND t.end_ns BETWEEN r.child_end AND r.child_end + 50000000
    JOIN coded AS p ON p.id = t.parent AND p.unit = r.unit
    JOIN details AS d ON d.id = t.id AND d.plain_thread AND d.thread_cpu_ns * 4 <= t.end_ns - t.start_ns
    QUALIFY rank() OVER (PARTITION BY t.id ORDER BY r.from_ns DESC) = 1
),
-- What each waiter waits on: for a wait, the processes under the spawning spans it names and the
-- threads or tasks it names; for other waiters (a child read until it exits too), the units started
-- under them; for the SDK's calls to the engine, the container's processes (engine_calls above).
edges AS (
    SELECT x.waiter, p.id AS target FROM wait_names AS x JOIN nodes AS s ON s.id = x.named AND s.sort IN (9, 10)
    JOIN parented AS p ON p.sort = 1 AND p.parent = x.named
    UNION
    SELECT x.waiter, x.named FROM wait_names AS x JOIN parented AS t ON t.id = x.named AND t.is_root
    UNION
    SELECT c.id, t.id FROM coded AS c JOIN parented AS t ON t.parent = c.id AND t.is_root
    WHERE (c.waiter AND c.sort <> 13) OR c.id IN (SELECT id FROM read_ends)
    UNION
    SELECT c.id, t.id FROM in_container_calls AS c JOIN parented AS t ON t.parent = c.parent AND t.is_root
    UNION
    SELECT id, target FROM engine_named WHERE waits
    UNION
    SELECT r.id, t.id FROM thread_reads AS r JOIN parented AS t ON t.parent = r.read_id AND t.is_root
)
-- (A span started inside the spawning call of a child read until it exits keeps the call's interval
-- as its parent's: only the spans started in the read itself have the read's.)
SELECT c.id, coalesce(m.read_id, c.parent) AS parent, c.unit, c.is_root, c.is_top, c.pid, c.start_ns, c.end_ns,
       c.rs, coalesce(r.until_ns, c.re) AS re,
       c.waiter OR r.id IS NOT NULL OR c.id IN (SELECT id FROM thread_reads) AS waiter, e.targets AS waits_on, c.tid,
       CASE WHEN r.id IS NULL THEN c.code
            ELSE activity_code(c.sort, true, NULL, f.traced, f.docker, NULL, false, false) END AS code,
       coalesce(m.read_rs, c.parent_rs) AS parent_rs, coalesce(m.until_ns, c.parent_re) AS parent_re,
       coalesce(m.read_code, c.parent_code) AS parent_code, c.sort = 13 AS is_wait
FROM coded AS c
LEFT JOIN read_ends AS r ON r.id = c.id
LEFT JOIN facts AS f ON f.id = r.id
LEFT JOIN read_children AS m ON m.id = c.id
LEFT JOIN (SELECT waiter, list(target) AS targets FROM edges GROUP BY waiter) AS e ON e.waiter = c.id;

-- critical_path_rows(for_run): the critical path of a run (queries/critical_path.sql says how it is
-- walked), one row per span on it: id (a hashed span id, as run_activity's; 0 for the run itself,
-- the first row), parent and parent_start (its parent's occurrence on the path), depth, path_start
-- and path_end (its part of the path), rs (the span's start as activity), code (what its self time
-- is, as run_activity numbers it). critical_path.sql shows it; waits.sql finds the lines where it
-- waited on nothing traced.
CREATE OR REPLACE TEMP MACRO critical_path_rows(for_run) AS TABLE
WITH RECURSIVE
activity AS MATERIALIZED (  -- every span as an activity of its unit (selfopt_trace/store/macros.sql)
    SELECT id, parent, is_root, is_top, rs, re, parent_rs, parent_re, waits_on, unit,
           is_wait AND waits_on IS NULL AS idle  -- a wait on nothing traced (a flag: idled reads no list)
    FROM run_activity(for_run)
),
-- A wait with a child of its own open passes nothing on (as the breakdown counts it: an SDK
-- container call's calls to the engine, the spans under a child read until it exits): what it waits
-- on is on the path only where none is.
waiting AS MATERIALIZED (  -- the spans that wait on units (few against all spans)
    SELECT id, rs, re FROM activity WHERE waits_on IS NOT NULL
),
covering AS (  -- fewer: the children of waits, within them, merged where they overlap
    SELECT waiter, any_value(wait_rs) AS wait_rs, any_value(wait_re) AS wait_re, min(cs) AS cs, max(ce) AS ce
    FROM (SELECT *, count(*) FILTER (WHERE before_end IS NULL OR cs > before_end)
                        OVER (PARTITION BY waiter ORDER BY cs, ce ROWS UNBOUNDED PRECEDING) AS island
          FROM (SELECT *, max(ce) OVER (PARTITION BY waiter ORDER BY cs, ce
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_end
                FROM (SELECT w.id AS waiter, w.rs AS wait_rs, w.re AS wait_re, greatest(c.rs, w.rs) AS cs,
                             least(c.re, w.re) AS ce
                      FROM activity AS c
                      JOIN waiting AS w ON w.id = c.parent
                      WHERE least(c.re, w.re) > greatest(c.rs, w.rs))))
    GROUP BY waiter, island
),
uncovered AS (  -- where each wait passes its share on: its interval outside its children
    SELECT id, rs AS a, re AS b FROM waiting WHERE id NOT IN (SELECT waiter FROM covering)
    UNION ALL
    SELECT waiter, coalesce(lag(ce) OVER (PARTITION BY waiter ORDER BY cs), wait_rs), cs FROM covering
    UNION ALL
    SELECT waiter, max(ce), any_value(wait_re) FROM covering GROUP BY waiter
),
waited AS (  -- each unit waited on, clipped to each wait on it
    SELECT t.id, w.id AS parent, greatest(t.rs, f.a) AS cs, least(t.re, f.b) AS ce
    FROM (SELECT id, unnest(waits_on) AS target FROM activity WHERE waits_on IS NOT NULL) AS w
    JOIN uncovered AS f ON f.id = w.id
    JOIN activity AS t ON t.id = w.target
),
-- Top-level spans are children of the run (id 0). A top-level process that answers another's calls
-- (served_tops: a server a script started beside its client) is one only where no top-level span
-- that answers nobody is alive (its start-up before its client, its shutdown after), as the
-- breakdown counts it: once per such gap.
tops AS MATERIALIZED (  -- few rows, read five times below
    SELECT id, rs, re, id IN (SELECT id FROM served_tops(for_run)) AS served FROM activity WHERE is_top
),
answering_nobody AS (  -- the lives of the tops that answer nobody, merged where they overlap
    SELECT min(rs) AS rs, max(re) AS re
    FROM (SELECT *, count(*) FILTER (WHERE before_end IS NULL OR rs > before_end)
                        OVER (ORDER BY rs, re ROWS UNBOUNDED PRECEDING) AS island
          FROM (SELECT rs, re, max(re) OVER (ORDER BY rs, re ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                           AS before_end
                FROM tops WHERE NOT served))
    GROUP BY island
),
gaps AS (  -- where none of them is alive
    SELECT coalesce(lag(re) OVER (ORDER BY rs), (SELECT min(rs) FROM tops)) AS a, rs AS b FROM answering_nobody
    UNION ALL
    SELECT coalesce(max(re), (SELECT min(rs) FROM tops)), (SELECT max(re) FROM tops) FROM answering_nobody
),
-- (child, parent) pairs, the child clipped to its parent; a unit waited on is a child of each wait
-- on it.
clipped AS (
    SELECT id, coalesce(parent, 0::UBIGINT) AS parent,
           greatest(rs, coalesce(parent_rs, rs)) AS cs, least(re, coalesce(parent_re, re)) AS ce
    FROM activity
    WHERE NOT is_root
    UNION ALL
    SELECT id, 0::UBIGINT, rs, re FROM tops WHERE NOT served
    UNION ALL
    SELECT t.id, 0::UBIGINT, greatest(t.rs, g.a), least(t.re, g.b)
    FROM tops AS t JOIN gaps AS g ON g.a < t.re AND g.b > t.rs
    WHERE t.served
    UNION ALL
    FROM waited
),
-- Units waited on that are idle at their clipped end, and since when: where their work ended.
idled AS (
    SELECT w.id, w.parent, min(i.rs) AS since
    FROM waited AS w
    JOIN (FROM activity WHERE idle) AS i ON i.unit = w.id AND i.rs < w.ce AND i.re >= w.ce
    GROUP BY w.id, w.parent
),
ordered AS (  -- siblings in start order (the longest first at equal starts)
    SELECT *, lag(ce) OVER w AS previous_end, lead(cs) OVER w AS next_start
    FROM clipped
    WHERE ce > cs
    WINDOW w AS (PARTITION BY parent ORDER BY cs, ce DESC, id)
),
overlapping AS (  -- parents whose children overlap (in start order, neighbours do whenever any do)
    SELECT DISTINCT parent FROM ordered WHERE cs < previous_end
),
-- The children that end later than all those started before them, with the next one's start.
-- Children that never overlap all do; only the (few) overlapping families need the full test. Of
-- children that end together, the one whose work ended last comes first (then span id).
chain AS MATERIALIZED (
    SELECT id, parent, cs, ce, next_start FROM ordered WHERE parent NOT IN (SELECT parent FROM overlapping)
    UNION ALL
    SELECT id, parent, cs, ce, lead(cs) OVER (PARTITION BY parent ORDER BY cs, ce DESC, worked DESC, id)
    FROM (SELECT *, max((ce, worked)) OVER (PARTITION BY parent ORDER BY cs, ce DESC, worked DESC, id
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_end
          FROM (SELECT o.*, coalesce(k.since, o.ce) AS worked
                FROM ordered AS o
                LEFT JOIN idled AS k ON k.id = o.id AND k.parent = o.parent
                WHERE o.parent IN (SELECT parent FROM overlapping)))
    WHERE earlier_end IS NULL OR (ce, worked) > earlier_end
),
-- A unit waited on more than once (a child polled with Popen.wait(timeout)) is on the path once
-- per wait: each occurrence is told apart by its parent's occurrence (parent, parent_start).
path(id, parent, parent_start, depth, path_start, path_end) AS (
    SELECT 0::UBIGINT, NULL::UBIGINT, NULL::BIGINT, 0, min(cs), max(ce) FROM chain WHERE parent = 0
    UNION ALL
    SELECT c.id, p.id, p.path_start, p.depth + 1, greatest(c.cs, p.path_start),
           least(c.ce, coalesce(c.next_start, c.ce), p.path_end)
    FROM path AS p
    JOIN chain AS c ON c.parent = p.id
    WHERE least(c.ce, coalesce(c.next_start, c.ce), p.path_end) > greatest(c.cs, p.path_start)
      AND p.depth < 1000
)
FROM path;
