-- Where the wall time of the run went, by category: every instant followed to what the run waited on.
--
-- The wall time is what the run's top-level process (its main thread) lived through. At each
-- instant it goes to what that thread was doing; when it was waiting on something the trace knows
-- (a child process, a thread or a pool task, an HTTP response, a container), it goes on to what
-- THAT was doing, recursively. A thread (a process's main thread, a `thread` or `task` span, or the
-- handler of a SERVER span) shares its time equally between its open leaf spans (asyncio tasks,
-- spans poking out of their parent), and a wait on several things alive at once (two children, a
-- pool) shares it equally between them (a pool's workers: those not waiting for a task, if any).
-- A process or thread that nobody waits on takes nothing:
-- an idle helper or a server started early no longer dilutes anything. Where the CPU sampler saw a
-- followed thread off the CPU while it was in none of the named categories, that time is an
-- untraced wait (sleep, a lock, select, disk). Runs recorded before waits were (no `wait` or
-- `thread` span at all) treat each subprocess span as a wait on its child.
--
-- Categories: interpreter start-up; imports; parsing; serialization; http client overhead (a
-- client span minus its server span: network, proxies, connection set-up, client-side encoding);
-- http server time; subprocess spawn overhead (the spawning call, and waiting on a child that has
-- not started yet); interpreter teardown (waiting on traced children after their process spans
-- ended, the agent's last record: their interpreters' finalization and exit, and the reaping; and
-- CMD's own, from its process span's end until `run` saw it exit); garbage collection (the
-- collector's passes of 0.1 ms or more, timed with SELFOPT_TRACE_GC=1: `gc` spans, each taking its
-- time from the span it interrupted; without the setting, or a pass shorter, that span's); child
-- processes' own work (what waited-on children did outside the categories above, on the CPU);
-- container start-up (a `docker run`, CLI or SDK, before the container's first process starts and
-- after it exits; the SDK's HTTP calls to the engine about a container of the run, a detached one's
-- wait() and remove() too, are the container's: while one waits on its process, the time is the
-- process's); own work (the
-- main process outside every category above, on the CPU); sleeps (a recorded `time.sleep` in own
-- work or a child's: the program chose to wait; one inside another category stays that category's;
-- an asyncio.sleep's time on the CPU, other tasks', is own work);
-- untraced child processes (waiting on a
-- child the trace does not see into: git, a compiler, an untraced Python, a shell running a traced
-- Python among other programs, outside the Python's life and teardown); untraced http servers
-- (an HTTP call whose server the trace does not see into: a remote API, its work and the network
-- together); untraced waits (off the CPU in own work, or a wait on a thread or task that is not
-- running); outside traced processes (no traced process alive: a shell before its Python child
-- started, or after it ended).
--
-- Parameters:
--   run_id                the run
-- Columns:
--   category              one of the categories above, always all of them in this order, then 'total'
--   wall_ms               share of the run's wall time (the categories sum to the total)
--   wall_pct              wall_ms as a percentage of the run's wall time
--   busy_ms               self time summed over every process and thread, waited on or not (parallel
--                         and idle work count in full)
--   spans                 spans whose self time is in this category
WITH RECURSIVE
-- Every span as an activity of its unit (selfopt_trace/store/macros.sql).
coded AS MATERIALIZED (
    SELECT id, parent, unit, is_root, is_top, pid, rs, re, waiter, waits_on, tid, code,
           parent_rs, parent_re, parent_code, is_wait
    FROM run_activity($run_id)
),
-- The run's wall time: from CMD's start to its exit as `run` saw it (the runs row: run.json's times,
-- else the span files' first and last), so that the categories add up to it: where no top-level
-- span is alive (a shell before its Python child, after a root that is not CMD) it is outside
-- traced processes. Not past that end: what a process CMD left running did after it (`sh -c
-- 'python x &'`) is not the command's time (the summary says which processes went on). After CMD's
-- own process span, and every other top-level span, until its exit: CMD's teardown
-- (selfopt_trace/store/macros.sql, cmd_exit: none where an exec replaced it, whose program's time
-- is outside traced processes). A run without a runs row: its top-level spans' extent.
run_extent AS (
    SELECT start_ns, end_ns, cmd_id, replaced,
           CASE WHEN cmd_exited IS NULL OR replaced THEN 0
                ELSE greatest(0, least(cmd_exited, end_ns) - greatest(spans_end, start_ns)) END AS teardown_ns
    FROM (SELECT coalesce(r.start_ns, c.start_ns) AS start_ns,
                 greatest(coalesce(r.start_ns, c.start_ns), coalesce(r.end_ns, c.spans_end)) AS end_ns, c.spans_end,
                 x.id AS cmd_id, x.exited_ns AS cmd_exited, coalesce(x.replaced, false) AS replaced
          FROM (SELECT min(rs) AS start_ns, max(re) AS spans_end FROM coded WHERE is_top) AS c
          LEFT JOIN (SELECT nullif(start_ns, 0) AS start_ns, nullif(end_ns, 0) AS end_ns
                     FROM runs WHERE run_id = $run_id) AS r ON true
          LEFT JOIN cmd_exit($run_id) AS x ON true)
),
-- Each span within the run (rs, re), and clipped to its same-unit parent (cs, ce).
linked AS MATERIALIZED (
    SELECT c.id, c.unit, c.is_top, c.parent, c.code, c.waiter, c.parent_code,
           greatest(c.rs, r.start_ns) AS rs, least(c.re, r.end_ns) AS re,
           greatest(c.rs, coalesce(c.parent_rs, c.rs), r.start_ns) AS cs,
           least(c.re, coalesce(c.parent_re, c.re), r.end_ns) AS ce
    FROM coded AS c, run_extent AS r
),
-- Same-unit owners whose children overlap (in start order, two neighbours do whenever any two do)
-- or poke out of them: the few that need their children's union.
special AS (
    SELECT DISTINCT owner FROM (
        SELECT parent AS owner
        FROM (SELECT parent, cs, lag(ce) OVER (PARTITION BY parent ORDER BY cs) AS previous_end
              FROM linked
              WHERE ce > cs AND parent IS NOT NULL)
        WHERE cs < previous_end
        UNION ALL
        SELECT parent FROM linked WHERE parent IS NOT NULL AND re > rs AND (rs < cs OR re > ce))
),
siblings AS (  -- the children of special owners
    SELECT unit, parent AS owner, parent_code AS owner_code, id, rs, re, cs, ce
    FROM linked
    WHERE re > rs AND parent IN (SELECT owner FROM special)
),
-- The union of a special owner's children (clipped to it), as islands: its self time is the rest.
islands AS (
    SELECT owner, any_value(unit) AS unit, any_value(owner_code) AS owner_code, min(cs) AS cs, max(ce) AS ce
    FROM (SELECT *, count(*) FILTER (WHERE before_end IS NULL OR cs >= before_end)
                        OVER (PARTITION BY owner ORDER BY cs, ce, id ROWS UNBOUNDED PRECEDING) AS island
          FROM (SELECT unit, owner, owner_code, id, cs, ce,
                       max(ce) OVER (PARTITION BY owner ORDER BY cs, ce, id
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_end
                FROM siblings
                WHERE ce > cs))
    GROUP BY owner, island
),
-- k(t) of a unit, the number of its open leaves, is 1 plus, for each owner, its open children minus
-- one if any is open within it (a tree has 1 + sum(children - 1) leaves, and a child open outside
-- its parent is one more). Only special owners change it.
k_deltas AS (
    SELECT unit, t, sum(d) AS d
    FROM (SELECT unit, rs AS t, 1 AS d FROM siblings
          UNION ALL SELECT unit, re, -1 FROM siblings
          UNION ALL SELECT unit, cs, -1 FROM islands
          UNION ALL SELECT unit, ce, 1 FROM islands)
    GROUP BY unit, t
),
k_steps AS (
    SELECT unit, t, 1 + sum(d) OVER (PARTITION BY unit ORDER BY t) AS k FROM k_deltas
),
-- The run's weight (1 at every instant) goes to the top-level units alive, shared equally, but not
-- to a top-level process that answers another's calls while one that answers nobody is alive
-- (served_tops: a server a script started beside its client). (The few top-level spans pass
-- through a one-row list, as unit_events below.)
top AS (
    SELECT unnest(l, recursive := true)
    FROM (SELECT list(x) AS l FROM (SELECT id, rs, re FROM linked WHERE is_top AND re > rs) AS x)
),
top_segments AS (
    SELECT a, b FROM (SELECT t AS a, lead(t) OVER (ORDER BY t) AS b
                      FROM (SELECT rs AS t FROM top UNION SELECT re FROM top))
    WHERE b IS NOT NULL
),
-- (Materialized: the IN below, decorrelated, planned the macro's recursive query three times.)
served AS MATERIALIZED (SELECT id FROM served_tops($run_id)),
top_pieces AS (
    SELECT unit, a, b, 1.0 / count(*) OVER (PARTITION BY a) AS w
    FROM (SELECT t.id AS unit, s.a, s.b, t.id IN (SELECT id FROM served) AS served
          FROM top_segments AS s JOIN top AS t ON t.rs <= s.a AND t.re >= s.b
          QUALIFY NOT served OR bool_and(served) OVER (PARTITION BY s.a))
),
-- Each process's exit, where the C twin saw it: its interpreter.finalize span's end (by its process span's id).
exits AS (
    SELECT hash(parent_span_id) AS id, end_ns FROM spans WHERE run_id = $run_id AND category = 'finalize'
),
-- A top-level process no traced process waited for (CMD a shell running it, an orphan) lives on after
-- its last record until its exit: with no top-level unit alive, that is its interpreter's teardown,
-- not time outside traced processes.
top_tails AS (
    SELECT greatest(t.re, r.start_ns) AS a, least(x.end_ns, r.end_ns - r.teardown_ns) AS b
    FROM top AS t JOIN exits AS x ON x.id = t.id, run_extent AS r
),
-- CMD is `docker run ...` (`run -- docker run ...`'s shim: CMD's process, replaced by an exec whose
-- container.inject child says it runs a container): after the exec, with no top-level unit alive,
-- the run waits on the engine starting and stopping the container: container start-up, not time
-- outside traced processes.
docker_cmd AS (
    SELECT greatest(e.start_ns, r.start_ns) AS a, r.end_ns AS b
    FROM run_extent AS r
    JOIN spans AS e ON e.run_id = $run_id AND e.name = 'exec' AND hash(e.parent_span_id) = r.cmd_id
    SEMI JOIN spans AS i ON i.run_id = $run_id AND i.name = 'container.inject' AND i.parent_span_id = e.span_id
    WHERE r.replaced
),
uncovered AS (  -- where no top-level unit is alive: in a top-level process's tail, else after a docker CMD's exec
    SELECT coalesce(sum(b - a) FILTER (WHERE tops = 0 AND tails > 0), 0) AS tails_ns,
           coalesce(sum(b - a) FILTER (WHERE tops = 0 AND tails = 0 AND dockers > 0), 0) AS docker_ns
    FROM (SELECT t AS a, lead(t) OVER w AS b, sum(d_top) OVER w AS tops, sum(d_tail) OVER w AS tails,
                 sum(d_docker) OVER w AS dockers
          FROM (SELECT t, sum(d_top) AS d_top, sum(d_tail) AS d_tail, sum(d_docker) AS d_docker
                FROM (SELECT rs AS t, 1 AS d_top, 0 AS d_tail, 0 AS d_docker FROM top
                      UNION ALL SELECT re, -1, 0, 0 FROM top
                      UNION ALL SELECT a, 0, 1, 0 FROM top_tails WHERE b > a
                      UNION ALL SELECT b, 0, -1, 0 FROM top_tails WHERE b > a
                      UNION ALL SELECT a, 0, 0, 1 FROM docker_cmd WHERE b > a
                      UNION ALL SELECT b, 0, 0, -1 FROM docker_cmd WHERE b > a)
                GROUP BY t)
          WINDOW w AS (ORDER BY t))
),
-- Waits and what they wait on, cut into pieces where the set of things alive and k are constant.
edges AS (
    SELECT id AS waiter, unnest(waits_on) AS target FROM coded WHERE waits_on IS NOT NULL
),
waiters AS (
    SELECT id, unit, code, rs, re FROM linked WHERE waiter AND re > rs AND id IN (SELECT waiter FROM edges)
),
-- A `Popen.communicate` reads its child's pipes to their end: once its children have all ended, a
-- traced process they started that holds those pipes (an inherited stdout) is what it waits on
-- (the grandchild's 400 ms of work were its parent's teardown, with the os._exit() advice).
late_edges AS (
    SELECT x.waiter, g.id AS target, x.ended
    FROM (SELECT e.waiter, max(t.re) AS ended
          FROM edges AS e JOIN linked AS t ON t.id = e.target
          WHERE e.waiter IN (SELECT hash(span_id) FROM spans
                             WHERE run_id = $run_id AND category = 'wait' AND name = 'Popen.communicate')
          GROUP BY e.waiter) AS x
    JOIN edges AS e ON e.waiter = x.waiter
    JOIN coded AS child ON child.id = e.target
    JOIN (SELECT hash(c.span_id) AS id, s.pid, s.start_ns
          FROM spans AS c
          JOIN spans AS s ON s.run_id = $run_id AND s.span_id = c.parent_span_id AND s.category = 'subprocess'
          WHERE c.run_id = $run_id AND c.category = 'process' AND c.name = 'process') AS g
      ON g.pid = child.pid AND g.start_ns BETWEEN child.rs AND x.ended
),
edge_spans AS (
    SELECT e.waiter, e.target, greatest(t.rs, w.rs) AS ts, least(t.re, w.re) AS te
    FROM edges AS e JOIN linked AS t ON t.id = e.target JOIN waiters AS w ON w.id = e.waiter
    WHERE least(t.re, w.re) > greatest(t.rs, w.rs)
    UNION ALL
    SELECT e.waiter, e.target, greatest(t.rs, w.rs, e.ended), least(t.re, w.re)
    FROM late_edges AS e JOIN linked AS t ON t.id = e.target JOIN waiters AS w ON w.id = e.waiter
    WHERE least(t.re, w.re) > greatest(t.rs, w.rs, e.ended)
),
-- A process pool's worker reading its next task (hooks/waits.py: SimpleQueue.get, Queue.get) is not
-- what a wait on the pool waits on: while another worker waited on is not in such a read, the
-- wait's share goes to those others (an idle worker took half of a task's time as untraced waits).
idle_spans AS (
    SELECT e.waiter, e.target, greatest(e.ts, c.rs) AS ts, least(e.te, c.re) AS te
    FROM edge_spans AS e
    JOIN coded AS c ON c.unit = e.target AND c.is_wait
    WHERE c.id IN (SELECT hash(span_id) FROM spans WHERE run_id = $run_id AND category = 'wait'
                                                    AND name IN ('SimpleQueue.get', 'Queue.get'))
      AND least(e.te, c.re) > greatest(e.ts, c.rs)
),
-- A waiter's same-unit children, clipped to it: while one is open, the waiter is no leaf and passes
-- nothing on (the child's time is the child's: an SDK container call's HTTP calls to the engine, which
-- wait on the container themselves); passing it on as well counted that time twice, and the
-- waiter's self time went negative to make up for it.
waiter_children AS (
    SELECT l.parent AS waiter, l.cs, l.ce FROM linked AS l JOIN waiters AS w ON w.id = l.parent WHERE l.ce > l.cs
),
-- A spawning span whose own child is no traced process (a shell running a traced Python among other
-- programs: `sh -c "python a.py; make"`): a wait on it with no traced process alive waits on that
-- untraced program, not on a spawn or a teardown (the shell's 330 ms of an untraced program after
-- its Python were teardown, and before it spawn overhead). Each traced process under it keeps its
-- teardown: from its last record until its exit (`exits`) or until the CPU sampler last saw it alive,
-- whichever is later (`tail`).
wrapped_targets AS (
    SELECT e.waiter, t.id, any_value(t.re) AS re,
           greatest(any_value(t.re), coalesce(max(m.end_ns), any_value(t.re)),
                    coalesce(any_value(x.end_ns), any_value(t.re))) AS tail
    FROM edges AS e
    JOIN linked AS t ON t.id = e.target
    JOIN (SELECT hash(span_id) AS id, pid
          FROM (SELECT p.span_id, p.pid, s.compound,
                       bool_or(p.pid = s.child_pid) OVER (PARTITION BY s.span_id) AS own_child
                FROM (SELECT span_id, TRY_CAST(attributes->>'process.pid' AS INTEGER) AS child_pid,
                             -- os.system's shell (its pid unknown) runs a compound command itself,
                             -- execs a simple one (`sh -c "python a.py"` is then the Python)
                             attributes->>'process.shell' = 'true'
                                 AND regexp_matches(coalesce(attributes->'process.command_args'->>2, ''), '[;&|\n]')
                                 AS compound
                      FROM spans WHERE run_id = $run_id AND category = 'subprocess' AND name <> 'exec') AS s
                JOIN spans AS p ON p.run_id = $run_id AND p.category = 'process' AND p.name = 'process'
                               AND p.parent_span_id = s.span_id
                WHERE s.child_pid IS NOT NULL OR s.compound)
          WHERE NOT own_child OR (compound AND own_child IS NULL)) AS w ON w.id = t.id
    LEFT JOIN exits AS x ON x.id = t.id
    LEFT JOIN cpu_samples AS m ON m.run_id = $run_id AND m.pid = w.pid AND m.tid = w.pid
                              AND m.end_ns > t.re AND m.start_ns < t.re + 1000000000
    GROUP BY e.waiter, t.id
),
cuts AS (
    SELECT id AS waiter, rs AS t FROM waiters
    UNION SELECT id, re FROM waiters
    UNION SELECT waiter, ts FROM edge_spans
    UNION SELECT waiter, te FROM edge_spans
    UNION SELECT waiter, ts FROM idle_spans
    UNION SELECT waiter, te FROM idle_spans
    UNION SELECT waiter, cs FROM waiter_children
    UNION SELECT waiter, ce FROM waiter_children
    UNION SELECT w.waiter, w.tail FROM wrapped_targets AS w JOIN waiters AS x ON x.id = w.waiter
                                                             AND w.tail > x.rs AND w.tail < x.re
    UNION SELECT w.id, k.t FROM waiters AS w JOIN k_deltas AS k ON k.unit = w.unit AND k.t > w.rs AND k.t < w.re
),
-- n_live: the things alive it passes its share to (none where a child of its own is open: covered).
pieces AS MATERIALIZED (
    SELECT waiter, unit, code, p0, p1, k, covered, CASE WHEN covered THEN 0 ELSE n_live END AS n_live, n_idle
    FROM (SELECT p.waiter, w.unit, w.code, p.p0, p.p1, coalesce(k.k, 1) AS k,
                 (SELECT count(*) FROM edge_spans AS e WHERE e.waiter = p.waiter AND e.ts <= p.p0 AND e.te >= p.p1)
                     AS n_live,
                 (SELECT count(*) FROM idle_spans AS i WHERE i.waiter = p.waiter AND i.ts <= p.p0 AND i.te >= p.p1)
                     AS n_idle,
                 EXISTS (SELECT 1 FROM waiter_children AS c WHERE c.waiter = p.waiter AND c.cs <= p.p0 AND c.ce >= p.p1)
                     AS covered
          FROM (SELECT waiter, t AS p0, lead(t) OVER (PARTITION BY waiter ORDER BY t) AS p1 FROM cuts) AS p
          JOIN waiters AS w ON w.id = p.waiter
          ASOF LEFT JOIN k_steps AS k ON k.unit = w.unit AND p.p0 >= k.t
          WHERE p.p1 IS NOT NULL)
),
-- The pieces of a wait on traced child processes after every one of them ended (their process
-- spans: the agent's last record), until the wait returned: the interpreters' teardown and the
-- reaping (the subprocess query's teardown_ms). Not after a child killed before its last record
-- (its span incomplete): one reaped where its spawner saw it lasts until then (store/loader.py), the
-- rest (reaped unseen) end at the last time known, and what follows stays spawn overhead. A child
-- whose interpreter an exec replaced with a program of no agent: what follows is that program's,
-- an untraced child process.
replaced AS (
    SELECT hash(span_id) AS id FROM spans
    WHERE run_id = $run_id AND category = 'process' AND name = 'process'
      AND attributes->>'process.exec.replaced' = 'true'
),
killed AS (
    SELECT hash(span_id) AS id FROM spans
    WHERE run_id = $run_id AND category = 'process' AND name = 'process' AND incomplete
),
teardown_pieces AS (
    SELECT p.unit, p.p0, p.p1, CASE WHEN x.any_replaced THEN 11 ELSE 15 END AS code
    FROM pieces AS p
    JOIN (SELECT e.waiter, max(t.re) AS ended, bool_or(t.id IN (SELECT id FROM killed)) AS any_killed,
                 bool_or(t.id IN (SELECT id FROM replaced)) AS any_replaced
          FROM edges AS e JOIN linked AS t ON t.id = e.target GROUP BY e.waiter) AS x ON x.waiter = p.waiter
    WHERE p.n_live = 0 AND NOT p.covered AND p.code = 7 AND p.p0 >= x.ended AND NOT x.any_killed
      AND p.waiter NOT IN (SELECT waiter FROM wrapped_targets)
    UNION ALL  -- a wait on an untraced program with traced ones under it: theirs only in their teardown
    SELECT p.unit, p.p0, p.p1,
           CASE WHEN EXISTS (SELECT 1 FROM wrapped_targets AS w
                             WHERE w.waiter = p.waiter AND w.re <= p.p0 AND w.tail >= p.p1) THEN 15 ELSE 11 END
    FROM pieces AS p
    WHERE p.n_live = 0 AND NOT p.covered AND p.code = 7 AND p.waiter IN (SELECT waiter FROM wrapped_targets)
),
-- The weight reaching each unit, as (unit, a, b, w) segments: from the top, then through every
-- piece of a wait with something alive, shared between the things alive.
flow(unit, a, b, w, depth) AS (
    SELECT unit, a, b, w, 0 FROM top_pieces
    UNION ALL
    SELECT e.target, greatest(f.a, p.p0), least(f.b, p.p1),
           f.w / p.k / CASE WHEN p.n_idle < p.n_live THEN p.n_live - p.n_idle ELSE p.n_live END, f.depth + 1
    FROM flow AS f
    JOIN pieces AS p ON p.unit = f.unit AND p.p0 < f.b AND p.p1 > f.a AND p.n_live > 0
    JOIN edge_spans AS e ON e.waiter = p.waiter AND e.ts <= p.p0 AND e.te >= p.p1
    LEFT JOIN idle_spans AS i ON i.waiter = e.waiter AND i.target = e.target AND i.ts <= p.p0 AND i.te >= p.p1
    WHERE f.depth < 64 AND (i.waiter IS NULL OR p.n_idle = p.n_live)
),
-- Which thread a unit is, for its CPU samples: a process's main thread has the pid as its tid.
-- Samples count within the unit's life only: a pid or a tid reused later is another process or
-- thread. A thread runnable but waiting for a CPU (runqueue) is not waiting on anything untraced:
-- it counts as running. A thread's first interval starts when it started in clock ticks (up to
-- 10 ms early): it is clipped to the unit's start, less what a `thread` span's start reading says
-- the thread used (or was queued for) before its first line. Its last reading comes before its end
-- (up to one sampling period): where the unit's span recorded the thread's CPU time at its end
-- (selfopt_trace.thread.cpu_ns, and runqueue_ns where the agent could read it: a process's main
-- thread, a `thread`; not a `task`, whose worker thread ran other tasks before), the rest of that
-- time (CPU, and queued for a CPU where known) fills the tail from the last reading
-- within its life to the end (a reading after it also counts what the thread did after its span:
-- an interpreter's shutdown); otherwise the last reading's fraction goes on to the unit's end.
unit_threads AS (
    SELECT c.id AS unit, c.pid, coalesce(c.tid, c.pid) AS tid, c.rs, c.re, f.cpu_ns AS final_cpu_ns,
           f.runqueue_ns AS final_runqueue_ns, f.start_cpu_ns, f.start_used_ns
    FROM coded AS c
    LEFT JOIN (SELECT hash(span_id) AS id, TRY_CAST(attributes->>'selfopt_trace.thread.cpu_ns' AS BIGINT) AS cpu_ns,
                      TRY_CAST(attributes->>'selfopt_trace.thread.runqueue_ns' AS BIGINT) AS runqueue_ns,
                      TRY_CAST(attributes->>'selfopt_trace.thread.start_cpu_ns' AS BIGINT) AS start_cpu_ns,
                      TRY_CAST(attributes->>'selfopt_trace.thread.start_cpu_ns' AS BIGINT)
                          + TRY_CAST(attributes->>'selfopt_trace.thread.start_runqueue_ns' AS BIGINT) AS start_used_ns
               FROM (FROM spans WHERE run_id = $run_id AND category = 'process'  -- equality filters: an
                     UNION ALL                                                   -- IN list would read
                     FROM spans WHERE run_id = $run_id AND category = 'thread')  -- every attribute
               WHERE name IN ('process', 'thread') AND attributes LIKE '%"selfopt_trace.thread.%') AS f ON f.id = c.id
    WHERE c.is_root AND c.id IN (SELECT unit FROM flow) AND c.code IN (8, 10)
),
-- Where a followed thread is known to be off the CPU: its blocking waits (an asyncio wait is an
-- await: the thread runs other tasks meanwhile) and its recorded sleeps (time.sleep that blocked:
-- hooks/time_.py; all of them, also those inside another category, which run_activity leaves
-- out), merged where they overlap. A
-- reading's CPU goes to the rest of the reading, none to these (with no reading at all, they alone
-- are off the CPU).
sleeps AS (
    SELECT start_ns, end_ns,
           -- NULL parents drop out in the join, not as a scan filter (that one read every span's parent id)
           CASE WHEN parent_span_id IS NOT NULL THEN hash(parent_span_id) END AS parent
    FROM spans
    WHERE run_id = $run_id AND category = 'sleep' AND name <> 'asyncio.sleep'  -- other tasks run in it
),
off_cpu_raw AS (
    SELECT c.unit, greatest(c.rs, u.rs) AS ss, least(c.re, u.re) AS se
    FROM coded AS c JOIN unit_threads AS u ON u.unit = c.unit
    WHERE c.is_wait AND least(c.re, u.re) > greatest(c.rs, u.rs)
      AND c.id NOT IN (SELECT hash(span_id) FROM spans
                       WHERE run_id = $run_id AND category = 'wait' AND name LIKE 'asyncio.%')
    UNION ALL
    SELECT u.unit, greatest(s.start_ns, u.rs), least(s.end_ns, u.re)
    FROM sleeps AS s
    -- the sleeps' parents first (a hash table of the sleeps, not of every span: -35 ms at 1 M spans)
    JOIN (SELECT id, unit FROM coded WHERE id IN (SELECT parent FROM sleeps)) AS c ON c.id = s.parent
    JOIN unit_threads AS u ON u.unit = c.unit
    WHERE least(s.end_ns, u.re) > greatest(s.start_ns, u.rs)
),
off_cpu AS (
    SELECT unit, min(ss) AS ss, max(se) AS se
    FROM (SELECT *, count(*) FILTER (WHERE before_end IS NULL OR ss > before_end)
                        OVER (PARTITION BY unit ORDER BY ss, se ROWS UNBOUNDED PRECEDING) AS island
          FROM (SELECT *, max(se) OVER (PARTITION BY unit ORDER BY ss, se
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_end
                FROM off_cpu_raw))
    GROUP BY unit, island
),
cpu_raw AS (
    SELECT u.unit, u.re, greatest(s.start_ns, u.rs) AS start_ns, s.end_ns, s.cpu_ns,
           s.cpu_ns + coalesce(s.runqueue_ns, 0) AS used_ns
    FROM unit_threads AS u
    JOIN cpu_samples AS s ON s.run_id = $run_id AND s.pid = u.pid AND s.tid = u.tid
                         AND s.end_ns > greatest(s.start_ns, u.rs) AND s.start_ns < u.re
                         AND (u.final_cpu_ns IS NULL OR s.end_ns <= u.re)
),
-- A `thread` span starts at the thread's first line, and its start reading counts from the thread's
-- start: a thread that waited long for the GIL in between was read before its span (spin_sleep: 88 ms,
-- 6 ms of CPU and queueing). Those samples are part of what the start reading says, so its first
-- reading in the unit and the tail after its last are counted from them too. (Samples carry no unit:
-- an earlier process that had the same pid and a thread of the same tid would count here too.)
before_unit AS (
    SELECT u.unit, sum(s.cpu_ns) AS cpu_ns, sum(s.cpu_ns + coalesce(s.runqueue_ns, 0)) AS used_ns
    FROM unit_threads AS u
    JOIN cpu_samples AS s ON s.run_id = $run_id AND s.pid = u.pid AND s.tid = u.tid AND s.end_ns <= u.rs
    WHERE u.start_used_ns IS NOT NULL
    GROUP BY u.unit
),
readings AS (  -- where a unit's readings end, and the CPU time they add up to (from the thread's start, where read)
    SELECT c.unit, max(c.end_ns) AS last_end, sum(c.cpu_ns) + coalesce(any_value(b.cpu_ns), 0) AS cpu_ns,
           sum(c.used_ns) + coalesce(any_value(b.used_ns), 0) AS used_ns, coalesce(any_value(b.used_ns), 0) AS before_ns
    FROM cpu_raw AS c LEFT JOIN before_unit AS b ON b.unit = c.unit
    GROUP BY c.unit
),
-- Each reading: the interval it covers (reading_end; the last one's fraction goes on to end_ns) and
-- the CPU time used in it.
cpu_rows AS (
    SELECT c.unit, c.start_ns, c.end_ns AS reading_end,
           CASE WHEN c.end_ns = l.last_end AND u.final_cpu_ns IS NULL THEN greatest(c.end_ns, c.re) ELSE c.end_ns END
               AS end_ns,
           greatest(0, c.used_ns - CASE WHEN c.start_ns = u.rs THEN coalesce(u.start_used_ns, 0) - l.before_ns ELSE 0 END)
               AS used_ns
    FROM cpu_raw AS c
    JOIN readings AS l ON l.unit = c.unit
    JOIN unit_threads AS u ON u.unit = c.unit
    UNION ALL
    SELECT u.unit, coalesce(l.last_end, u.rs), u.re, u.re,
           greatest(0, CASE WHEN u.final_runqueue_ns IS NULL THEN u.final_cpu_ns - coalesce(l.cpu_ns, u.start_cpu_ns, 0)
                            ELSE u.final_cpu_ns + u.final_runqueue_ns - coalesce(l.used_ns, u.start_used_ns, 0) END)
    FROM unit_threads AS u
    LEFT JOIN readings AS l ON l.unit = u.unit
    WHERE u.final_cpu_ns IS NOT NULL AND u.re > coalesce(l.last_end, u.rs)
),
row_off_cpu AS (  -- the off-CPU intervals within each reading's interval
    SELECT r.unit, r.start_ns, greatest(r.start_ns, s.ss) AS a, least(r.end_ns, s.se) AS b,
           greatest(0, least(r.reading_end, s.se) - greatest(r.start_ns, s.ss)) AS slept_ns
    FROM cpu_rows AS r JOIN off_cpu AS s ON s.unit = r.unit AND s.ss < r.end_ns AND s.se > r.start_ns
),
-- Each reading's running fraction outside its off-CPU intervals (r), and inside them (r_in) for the
-- part that does not fit outside: a thread waking from a sleep or a wait is queued for a CPU before
-- the call returns, and queued counts as running.
cpu AS (
    SELECT unit, start_ns, end_ns, r,
           CASE WHEN slept_ns > 0 THEN least(1.0, greatest(0, used_ns - r * awake_ns) / slept_ns) ELSE 0 END AS r_in
    FROM (SELECT unit, start_ns, end_ns, used_ns, slept_ns, awake_ns,
                 least(1.0, coalesce(used_ns / nullif(awake_ns, 0), 0)) AS r
          FROM (SELECT r.unit, r.start_ns, r.end_ns, r.used_ns, coalesce(x.slept_ns, 0) AS slept_ns,
                       r.reading_end - r.start_ns - coalesce(x.slept_ns, 0) AS awake_ns
                FROM cpu_rows AS r
                LEFT JOIN (SELECT unit, start_ns, sum(slept_ns) AS slept_ns FROM row_off_cpu GROUP BY ALL) AS x
                       ON x.unit = r.unit AND x.start_ns = r.start_ns))
),
cpu_events AS (
    SELECT unit, start_ns AS t, r - 1 AS dr FROM cpu
    UNION ALL SELECT unit, end_ns, 1 - r FROM cpu
    UNION ALL SELECT x.unit, x.a, c.r_in - c.r FROM row_off_cpu AS x JOIN cpu AS c ON c.unit = x.unit AND c.start_ns = x.start_ns
    UNION ALL SELECT x.unit, x.b, c.r - c.r_in FROM row_off_cpu AS x JOIN cpu AS c ON c.unit = x.unit AND c.start_ns = x.start_ns
    UNION ALL SELECT unit, ss, -1 FROM off_cpu WHERE unit NOT IN (SELECT unit FROM cpu)
    UNION ALL SELECT unit, se, 1 FROM off_cpu WHERE unit NOT IN (SELECT unit FROM cpu)
),
-- F(t) of a unit: the integral of w/k, the wall time one of its leaves gets; G(t) the same weighted
-- by the fraction of time the thread ran (1 where nothing was sampled).
unit_events AS (
    SELECT unit, t, sum(dw) AS dw, sum(dk)::DOUBLE AS dk, sum(dr) AS dr  -- window sums of doubles, not of int128
    FROM (SELECT unit, a AS t, w AS dw, 0 AS dk, 0.0::DOUBLE AS dr FROM flow
          UNION ALL SELECT unit, b, -w, 0, 0.0 FROM flow
          UNION ALL SELECT unit, t, 0, d, 0.0 FROM k_deltas WHERE unit IN (SELECT unit FROM flow)
          UNION ALL SELECT unit, t, 0, 0, dr FROM cpu_events)
    GROUP BY unit, t
    HAVING sum(dw) <> 0 OR sum(dk) <> 0 OR sum(dr) <> 0  -- a third are not breaks: two equal readings meet
),
-- F at t: the segments (next t - t) * w / k of the breakpoints before t. unit_events is read through
-- a one-row list: DuckDB's estimate of its size (10^8 rows, multiplied up through the joins above,
-- for ~10^5) then drops to 1, and the windows here and the ASOF join that reads them are no longer
-- partitioned for 10^8 rows (the same for `top`): -25 % of breakdown's wall time at 1 M spans.
breakpoints AS MATERIALIZED (
    SELECT unit, t, next_t, w, k, r,
           coalesce(sum((next_t - t) * w / k) OVER before, 0) AS f,
           coalesce(sum((next_t - t) * w * r / k) OVER before, 0) AS g
    FROM (SELECT unit, t, sum(dw) OVER u AS w, 1 + sum(dk) OVER u AS k, 1 + sum(dr) OVER u AS r,
                 lead(t) OVER u AS next_t
          FROM (SELECT unnest(l, recursive := true) FROM (SELECT list(unit_events) AS l FROM unit_events))
          WINDOW u AS (PARTITION BY unit ORDER BY t ROWS UNBOUNDED PRECEDING))
    WINDOW before AS (PARTITION BY unit ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
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
-- Self time as sums of signed intervals: a span adds its interval to its own category and takes it
-- from its parent's (a special parent loses its children's islands instead); a wait loses the
-- pieces it passed on. An interval's value is its length (busy), F(b) - F(a) (wall) and G(b) - G(a)
-- (on the CPU). A span of its parent's category (an import in an import) adds what it takes: it is
-- left out, unless a small-call sum needs its owner's self time. The intervals of owners with small
-- sums (and of their children) keep the owner's id; the others are summed by category alone.
intervals AS (
    SELECT l.unit, l.rs AS a, l.re AS b, 1 AS sign, l.code,
           CASE WHEN l.from_parent THEN l.parent_code END AS parent_code,
           CASE WHEN l.small THEN l.id END AS small_owner,
           CASE WHEN l.from_parent AND l.small_parent THEN l.parent END AS small_parent
    FROM (SELECT *, parent IS NOT NULL AND parent NOT IN (SELECT owner FROM special) AS from_parent,
                 id IN (SELECT id FROM small_sums) AS small, parent IN (SELECT id FROM small_sums) AS small_parent
          FROM linked
          WHERE re > rs) AS l
    WHERE NOT (l.from_parent AND l.code = l.parent_code) OR l.small OR l.small_parent
    UNION ALL
    SELECT unit, cs, ce, -1, owner_code, NULL, CASE WHEN owner IN (SELECT id FROM small_sums) THEN owner END, NULL
    FROM islands
    UNION ALL
    SELECT unit, p0, p1, -1, code, NULL, CASE WHEN waiter IN (SELECT id FROM small_sums) THEN waiter END, NULL
    FROM pieces
    WHERE n_live > 0
    UNION ALL  -- waiting on traced children that have all ended: their teardown, not their spawn
    SELECT t.unit, t.p0, t.p1, s.sign, CASE WHEN s.sign = 1 THEN t.code ELSE 7 END, NULL, NULL, NULL
    FROM teardown_pieces AS t, (VALUES (-1), (1)) AS s(sign)
),
-- Each interval with the segment of F and G its start is in (one ASOF join row per interval, not one
-- per end): most intervals (short spans) end in the same segment and are valued from it alone; the
-- others, and those starting before their unit's first breakpoint, look their end up too.
started AS MATERIALIZED (
    SELECT i.*, s.t AS st, s.next_t, s.f, s.g, s.w, s.k, s.r
    FROM intervals AS i
    ASOF LEFT JOIN breakpoints AS s ON s.unit = i.unit AND i.a >= s.t
),
valued AS (
    SELECT code, parent_code, small_owner, small_parent, sign, b - a AS dt,
           (b - a) * w / k AS df, (b - a) * w * r / k AS dg
    FROM started
    WHERE st IS NOT NULL AND (next_t IS NULL OR b <= next_t)
    UNION ALL
    SELECT i.code, i.parent_code, i.small_owner, i.small_parent, i.sign, i.b - i.a,
           coalesce(e.f + (i.b - e.t) * e.w / e.k, 0) - coalesce(i.f + (i.a - i.st) * i.w / i.k, 0),
           coalesce(e.g + (i.b - e.t) * e.w * e.r / e.k, 0) - coalesce(i.g + (i.a - i.st) * i.w * i.r / i.k, 0)
    FROM (FROM started WHERE st IS NULL OR b > next_t) AS i
    ASOF LEFT JOIN breakpoints AS e ON e.unit = i.unit AND i.b >= e.t
),
terms AS MATERIALIZED (
    SELECT code, parent_code, small_owner, small_parent, sum(sign * dt) AS dt, sum(sign * df) AS df,
           sum(sign * dg) AS dg
    FROM valued
    GROUP BY ALL
),
code_terms AS (
    SELECT code, sum(df) AS df, sum(dg) AS dg, sum(dt) AS dt FROM terms GROUP BY code
    UNION ALL
    SELECT parent_code, -sum(df), -sum(dg), -sum(dt) FROM terms WHERE parent_code IS NOT NULL GROUP BY parent_code
    UNION ALL
    SELECT 13, x.ns, x.ns, x.ns  -- no top-level unit alive, and not a teardown nor a docker CMD's container
    FROM (SELECT (SELECT end_ns - start_ns - teardown_ns FROM run_extent)
                 - (SELECT tails_ns + docker_ns FROM uncovered)
                 - coalesce((SELECT sum(b - a) FROM (SELECT DISTINCT a, b FROM top_pieces)), 0) AS ns) AS x
    UNION ALL
    SELECT 15, x.ns, x.ns, x.ns
    FROM (SELECT (SELECT teardown_ns FROM run_extent) + (SELECT tails_ns FROM uncovered) AS ns) AS x
    UNION ALL
    SELECT 9, docker_ns, docker_ns, docker_ns FROM uncovered
),
-- An owner with small sums: its self time (what its terms add up to), of which serialization and
-- parsing take their share, up to all of it (from the part on the CPU first).
small_moves AS (
    SELECT o.code, o.wall_ns, o.cpu_ns, o.busy_ns,
           least(1.0, coalesce(s.serialization_ns, 0) / o.busy_ns) AS serialization,
           least(coalesce(s.parsing_ns, 0) / o.busy_ns, 1.0 - least(1.0, coalesce(s.serialization_ns, 0) / o.busy_ns))
               AS parsing
    FROM (SELECT owner, any_value(code) AS code, sum(df) AS wall_ns, sum(dg) AS cpu_ns, sum(dt) AS busy_ns
          FROM (SELECT small_owner AS owner, code, df, dg, dt FROM terms WHERE small_owner IS NOT NULL
                UNION ALL
                SELECT small_parent, parent_code, -df, -dg, -dt FROM terms WHERE small_parent IS NOT NULL)
          GROUP BY owner
          HAVING sum(dt) > 0) AS o
    JOIN small_sums AS s ON s.id = o.owner
),
-- Own work and children's own work: the part on the CPU; the rest is an untraced wait.
by_code AS (
    SELECT code, sum(df) AS wall_ns, sum(dg) AS cpu_ns, sum(dt) AS busy_ns FROM code_terms GROUP BY code
    UNION ALL
    SELECT code, -sum(wall_ns * (serialization + parsing)), -sum(least(cpu_ns, wall_ns * (serialization + parsing))),
           -sum(busy_ns * (serialization + parsing))
    FROM small_moves GROUP BY code
    UNION ALL
    SELECT 4, sum(wall_ns * serialization), 0, sum(busy_ns * serialization) FROM small_moves
    UNION ALL
    SELECT 3, sum(wall_ns * parsing), 0, sum(busy_ns * parsing) FROM small_moves
),
-- An asyncio.sleep in own work (17) or a child's (18): the part on the CPU is that own work (other
-- tasks ran), the rest sleeps.
totals AS (
    SELECT code, sum(wall_ns) AS wall_ns, sum(busy_ns) AS busy_ns
    FROM (SELECT CASE WHEN code IN (17, 18) THEN 16 ELSE code END AS code,
                 CASE WHEN code IN (8, 10) THEN cpu_ns WHEN code IN (17, 18) THEN wall_ns - cpu_ns ELSE wall_ns END
                     AS wall_ns,
                 busy_ns
          FROM by_code
          UNION ALL
          SELECT 12, wall_ns - cpu_ns, 0 FROM by_code WHERE code IN (8, 10)
          UNION ALL
          SELECT CASE code WHEN 17 THEN 10 ELSE 8 END, cpu_ns, 0 FROM by_code WHERE code IN (17, 18))
    GROUP BY code
),
counts AS (
    SELECT CASE WHEN code IN (17, 18) THEN 16 ELSE code END AS code, count(*) AS spans FROM coded GROUP BY ALL
),
names(code, position, category) AS (VALUES  -- position: the output's order
    (1, 1, 'interpreter start-up'), (2, 2, 'imports'), (3, 3, 'parsing'), (4, 4, 'serialization'),
    (5, 5, 'http client overhead'), (6, 6, 'http server time'), (7, 7, 'subprocess spawn overhead'),
    (15, 8, 'interpreter teardown'), (19, 9, 'garbage collection'), (8, 10, 'child processes'' own work'),
    (9, 11, 'container start-up'), (10, 12, 'own work'), (16, 13, 'sleeps'), (11, 14, 'untraced child processes'),
    (14, 15, 'untraced http servers'), (12, 16, 'untraced waits'), (13, 17, 'outside traced processes')
),
result AS (
    SELECT n.code, n.position, n.category, coalesce(t.wall_ns, 0) AS wall_ns, coalesce(t.busy_ns, 0) AS busy_ns,
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
      SELECT 99, 99, 'total', (SELECT ns FROM wall_time), sum(busy_ns), sum(spans) FROM result)
ORDER BY position
