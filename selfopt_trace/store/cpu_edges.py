"""The CPU sampler's readings of a thread, corrected at the exact points its own spans read.

The sampler (watchers/cpu_sampler.py) reads a thread from outside, and the kernel brings a running
thread's count up to date only at the scheduler's tick (4 ms here) or when it stops: a reading
taken while the thread runs lags by up to a tick, and the lag shows in the next reading. The
breakdown spreads a reading's CPU evenly over it, so after a stretch of work (imports) that ends in
a wait no hook sees (a pipe), the lagged CPU of the work reads as running in the wait: a few ms of
"own work" that was an untraced wait (tests/accuracy, server_first: +3 to +4.5 ms).

The agent reads the thread's own CPU clock (exact, its current run included) at a few span edges
(tracer.cpu_edges: the outermost recorded imports and the spawning calls, and the reap of a child
by the thread that spawned it). Here those readings join
the thread's sampled ones, and each sampled reading is held within what they allow: no less than
the edge before it, no more than that edge plus the time since, and the same against the edge after
it. Time queued for a CPU is not in the thread's clock: at an edge, the queued time between the
sampled readings around it is shared between the two sides in proportion to the time each did not
run (queued or off the CPU: nothing else). Shared in proportion to their lengths, a side that ran
throughout got queued time it had no room for, which the cap of an interval at its length dropped
and the breakdown then gave to the thread's tail (its final CPU reading less the samples): a child
queued for a CPU as its imports began (parallel: 1.5 ms) read as running in the sleep it ended with,
children's own work high and untraced waits low in nearly every run. An edge outside the thread's
sampled readings is not used.

Some edges read the thread's queued time too, and that time is exact, not shared: a spawning call's
end and its reap (selfopt_trace.cpu.end_runqueue_ns, reap_runqueue_ns), the main thread's clocks
where it ends its process's span, before the interpreter's teardown (selfopt_trace.thread.*), and a
`time.sleep` that returned more than 0.5 ms late (selfopt_trace.cpu.wake_*, hooks/time_.py: an edge
at the wall clock the agent read after them). The kernel counts a queue stretch only when
the thread gets a CPU again, so a sampled reading taken while the thread waited for one (after a
sleep, a pipe) shows no progress, and the breakdown gave that stretch to untraced waits (tests/accuracy,
polled, beside two CPU hogs). Each sampled reading's queued time is held by such edges as its CPU
is: no less than the edge before it; between it and the edge after, the thread queued no more than
the time it was not on the CPU, so no less than that edge's queued time less that time; and the
same the other way for the upper bounds. Edges without a queued time of their own (their share is
an estimate) hold nothing.

READINGS is the `readings` CTE of the loader's `cpu_samples` statement (loader.py), over its
staged `_cpu` table and the run's spans, loaded before.
"""

from __future__ import annotations

from selfopt_trace.watchers import cpu_sampler

# Edges: (pid, tid, time, cumulative CPU, queued time where read) at a span's start and at the end of
# its activity (a spawning call ends at selfopt_trace.spawn_ns), at a late sleep's return, and at a
# process span's end.
# Equality filters on the category or name: an IN list would read every span's attributes.
READINGS = f"""
sampled AS (
    SELECT pid, tid, process_start_ns, time_ns, cpu_ns, runqueue_ns, gil_ns FROM _cpu WHERE rec = '{cpu_sampler.CPU}'
),
edge_spans AS (
    SELECT pid, TRY_CAST(attributes->>'selfopt_trace.cpu.tid' AS INTEGER) AS tid, start_ns,
           start_ns + coalesce(TRY_CAST(attributes->>'selfopt_trace.spawn_ns' AS BIGINT), duration_ns) AS end_ns,
           TRY_CAST(attributes->>'selfopt_trace.cpu.start_ns' AS BIGINT) AS start_cpu,
           TRY_CAST(attributes->>'selfopt_trace.cpu.end_ns' AS BIGINT) AS end_cpu,
           TRY_CAST(attributes->>'selfopt_trace.cpu.end_runqueue_ns' AS BIGINT) AS end_queued,
           start_ns + duration_ns AS reap_ns, TRY_CAST(attributes->>'selfopt_trace.cpu.reap_ns' AS BIGINT) AS reap_cpu,
           TRY_CAST(attributes->>'selfopt_trace.cpu.reap_runqueue_ns' AS BIGINT) AS reap_queued
    FROM (FROM spans WHERE run_id = $run_id AND category = 'import'
          UNION ALL
          FROM spans WHERE run_id = $run_id AND category = 'subprocess')
    WHERE attributes LIKE '%"selfopt_trace.cpu.tid"%'
),
-- a process's main thread (its tid is the pid) at the process span's end, where that thread ended it
-- (process.py: at exit, on SIGTERM): both its clocks, read at once. Before the interpreter's teardown,
-- which the sampler still reads.
main_ends AS (
    SELECT pid, pid AS tid, start_ns + duration_ns AS t,
           TRY_CAST(attributes->>'selfopt_trace.thread.cpu_ns' AS BIGINT) AS x,
           TRY_CAST(attributes->>'selfopt_trace.thread.runqueue_ns' AS BIGINT) AS q
    FROM (FROM spans WHERE run_id = $run_id AND category = 'process')
    WHERE attributes LIKE '%"selfopt_trace.thread.runqueue_ns"%'
),
-- a late wake-up from time.sleep (hooks/time_.py): the thread's CPU clock and queued time, read at
-- once by the agent (their time: the wall clock read after them). Equality filter on the name first.
wake_spans AS (
    SELECT pid, TRY_CAST(attributes->>'selfopt_trace.cpu.tid' AS INTEGER) AS tid,
           TRY_CAST(attributes->>'selfopt_trace.cpu.wake_time_ns' AS BIGINT) AS t,
           TRY_CAST(attributes->>'selfopt_trace.cpu.wake_ns' AS BIGINT) AS x,
           TRY_CAST(attributes->>'selfopt_trace.cpu.wake_runqueue_ns' AS BIGINT) AS q
    FROM (FROM spans WHERE run_id = $run_id AND name = 'time.sleep')
    WHERE attributes LIKE '%"selfopt_trace.cpu.wake_ns"%'
),
edges AS (  -- a span whose clock went backwards gives none; q: the queued time, where read there
    SELECT pid, tid, start_ns AS t, start_cpu AS x, NULL::BIGINT AS q FROM edge_spans
    WHERE end_cpu >= start_cpu AND end_ns >= start_ns
    UNION ALL
    SELECT pid, tid, end_ns, end_cpu, end_queued FROM edge_spans WHERE end_cpu >= start_cpu AND end_ns >= start_ns
    UNION ALL  -- a spawning span's thread, where it reaped the child
    SELECT pid, tid, reap_ns, reap_cpu, CASE WHEN reap_queued >= end_queued THEN reap_queued END FROM edge_spans
    WHERE reap_cpu >= end_cpu AND reap_ns >= end_ns
    UNION ALL
    SELECT pid, tid, t, x, q FROM wake_spans WHERE t IS NOT NULL AND x IS NOT NULL
    UNION ALL
    SELECT pid, tid, t, x, q FROM main_ends WHERE x IS NOT NULL
),
-- each edge between two sampled readings of its thread (of one process: a pid may be reused), the
-- queued time between them split in proportion to the time each side did not run (the edge's own,
-- where it read it: `exact`), and so the time waited for the GIL (off the CPU: the idle time of
-- each side)
placed AS (
    SELECT pid, tid, process_start_ns, time_ns, cpu_ns, q IS NOT NULL AS exact,
           coalesce(q, a_queued + CASE WHEN idle_before + idle_after > 0
                                       THEN CAST(queued * (idle_before / (idle_before + idle_after)) AS BIGINT)
                                       ELSE queued * (time_ns - a_time) // greatest(b_time - a_time, 1) END) AS runqueue_ns,
           a_gil + CASE WHEN idle_before + idle_after > 0
                        THEN CAST(gil * (idle_before / (idle_before + idle_after)) AS BIGINT) ELSE 0 END AS gil_ns
    FROM (SELECT e.pid, e.tid, a.process_start_ns, e.t AS time_ns, e.x AS cpu_ns, e.q, a.time_ns AS a_time,
                 b.time_ns AS b_time, a.runqueue_ns AS a_queued, b.runqueue_ns - a.runqueue_ns AS queued,
                 a.gil_ns AS a_gil, b.gil_ns - a.gil_ns AS gil,
                 greatest(0, e.t - a.time_ns - (e.x - a.cpu_ns)) AS idle_before,
                 greatest(0, b.time_ns - e.t - (b.cpu_ns - e.x)) AS idle_after
          FROM edges AS e
          ASOF JOIN sampled AS a ON a.pid = e.pid AND a.tid = e.tid AND a.time_ns < e.t
          ASOF JOIN sampled AS b ON b.pid = e.pid AND b.tid = e.tid AND b.time_ns > e.t
          WHERE a.process_start_ns = b.process_start_ns)
),
-- each sampled reading, held between the edges before (p) and after (n) it: its CPU, and then its
-- queued time by an edge that read its own (a reading taken in a wake-up queue shows none of it yet:
-- the kernel counts a stretch when it ends). Between s and n the thread queued no more than the time
-- it was not on the CPU, so s had queued no less than n's less that; the same from p.
held AS (
    SELECT pid, tid, process_start_ns, time_ns, cpu_ns, gil_ns,
           CASE WHEN q_low <= q_high THEN least(greatest(runqueue_ns, q_low), q_high) ELSE runqueue_ns END AS runqueue_ns
    FROM (SELECT *,
                 greatest(p_queued, n_queued - ((n_time - time_ns) - (n_cpu - cpu_ns))) AS q_low,
                 least(p_queued + ((time_ns - p_time) - (cpu_ns - p_cpu)), n_queued) AS q_high
          FROM (SELECT pid, tid, process_start_ns, time_ns, runqueue_ns, gil_ns,
                       CASE WHEN low <= high THEN least(greatest(cpu_ns, low), high) ELSE cpu_ns END AS cpu_ns,
                       p_time, p_cpu, p_queued, n_time, n_cpu, n_queued
                FROM (SELECT s.*, p.time_ns AS p_time, p.cpu_ns AS p_cpu, n.time_ns AS n_time, n.cpu_ns AS n_cpu,
                             CASE WHEN p.exact THEN p.runqueue_ns END AS p_queued,
                             CASE WHEN n.exact THEN n.runqueue_ns END AS n_queued,
                             -- least/greatest skip a NULL: without an edge on one side, the other's bound alone
                             greatest(p.cpu_ns, n.cpu_ns - (n.time_ns - s.time_ns)) AS low,
                             least(p.cpu_ns + (s.time_ns - p.time_ns), n.cpu_ns) AS high
                      FROM sampled AS s
                      ASOF LEFT JOIN placed AS p ON p.pid = s.pid AND p.tid = s.tid
                                                 AND p.process_start_ns = s.process_start_ns AND p.time_ns <= s.time_ns
                      ASOF LEFT JOIN placed AS n ON n.pid = s.pid AND n.tid = s.tid
                                                 AND n.process_start_ns = s.process_start_ns AND n.time_ns >= s.time_ns)))
),
readings AS (
    SELECT pid, tid, process_start_ns, time_ns, cpu_ns, runqueue_ns, gil_ns FROM held
    UNION ALL
    SELECT pid, tid, process_start_ns, time_ns, cpu_ns, runqueue_ns, gil_ns FROM placed
    UNION ALL
    SELECT pid, tid, process_start_ns, time_ns, 0, 0, 0 FROM _cpu WHERE rec = '{cpu_sampler.THREAD}'
)"""
