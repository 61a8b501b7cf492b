"""The CPU sampler's readings of a thread, corrected at the exact points its own spans read.

The sampler (watchers/cpu_sampler.py) reads a thread from outside, and the kernel brings a running
thread's count up to date only at the scheduler's tick (4 ms here) or when it stops: a reading
taken while the thread runs lags by up to a tick, and the lag shows in the next reading. The
breakdown spreads a reading's CPU evenly over it, so after a stretch of work (imports) that ends in
a wait no hook sees (a pipe), the lagged CPU of the work reads as running in the wait: a few ms of
"own work" that was an untraced wait (tests/accuracy, server_first: +3 to +4.5 ms).

The agent reads the thread's own CPU clock (exact, its current run included) at a few span edges
(tracer.cpu_edges: the outermost recorded imports and the spawning calls). Here those readings join
the thread's sampled ones, and each sampled reading is held within what they allow: no less than
the edge before it, no more than that edge plus the time since, and the same against the edge after
it. Time queued for a CPU is not in the thread's clock: at an edge it is interpolated between the
sampled readings around it. Works on the loader's staged `_cpu` table (loader.py), before its
readings become `cpu_samples` intervals.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict

from selfopt_trace.store.engine import duckdb

from selfopt_trace.watchers import cpu_sampler

_EDGES_SQL = """
SELECT pid, TRY_CAST(attributes->>'selfopt_trace.cpu.tid' AS INTEGER) AS tid,
       start_ns, TRY_CAST(attributes->>'selfopt_trace.cpu.start_ns' AS BIGINT),
       start_ns + coalesce(TRY_CAST(attributes->>'selfopt_trace.spawn_ns' AS BIGINT), duration_ns),
       TRY_CAST(attributes->>'selfopt_trace.cpu.end_ns' AS BIGINT)
FROM (FROM spans WHERE run_id = $run_id AND category = 'import'  -- equality filters: an IN list
      UNION ALL                                                  -- would read every attribute
      FROM spans WHERE run_id = $run_id AND category = 'subprocess')
WHERE attributes LIKE '%"selfopt_trace.cpu.tid"%' AND pid IS NOT NULL
"""

_READINGS_SQL = f"""
SELECT c.pid, c.tid, c.process_start_ns, c.time_ns, c.cpu_ns, c.runqueue_ns
FROM _cpu AS c SEMI JOIN (SELECT unnest($pids) AS pid, unnest($tids) AS tid) AS t ON t.pid = c.pid AND t.tid = c.tid
WHERE c.rec = '{cpu_sampler.CPU}'
ORDER BY c.pid, c.tid, c.process_start_ns, c.time_ns, c.cpu_ns
"""

Reading = tuple[int, int, int]  # time_ns, cpu_ns, runqueue_ns (cumulative)


def apply(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """Correct the staged readings of every thread that has CPU edges; the number of edges used."""
    edges: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for pid, tid, t0, c0, t1, c1 in con.execute(_EDGES_SQL, {"run_id": run_id}).fetchall():
        if tid is None or c0 is None or c1 is None or t1 is None or t1 < t0 or c1 < c0:
            continue
        edges[pid, tid] += [(t0, c0), (t1, c1)]
    if not edges:
        return 0
    keys = list(edges)
    threads: dict[tuple[int, int, int], list[Reading]] = defaultdict(list)
    for pid, tid, start, time_ns, cpu_ns, runqueue_ns in con.execute(
            _READINGS_SQL, {"pids": [k[0] for k in keys], "tids": [k[1] for k in keys]}).fetchall():
        threads[pid, tid, start].append((time_ns, cpu_ns, runqueue_ns))
    rows, used = [], 0
    for (pid, tid, start), readings in threads.items():
        corrected, n = correct(readings, edges[pid, tid])
        if n:
            used += n
            rows += [(pid, tid, start, t, cpu, queued) for t, cpu, queued in corrected]
    if rows:
        con.execute("CREATE TEMP TABLE _cpu_edges (pid INTEGER, tid INTEGER, process_start_ns BIGINT, time_ns BIGINT, "
                    "cpu_ns BIGINT, runqueue_ns BIGINT)")
        con.executemany("INSERT INTO _cpu_edges VALUES (?, ?, ?, ?, ?, ?)", rows)
        con.execute(f"""DELETE FROM _cpu AS c WHERE c.rec = '{cpu_sampler.CPU}' AND EXISTS (
                            SELECT 1 FROM _cpu_edges AS e WHERE e.pid = c.pid AND e.tid = c.tid
                                                             AND e.process_start_ns = c.process_start_ns)""")
        con.execute(f"""INSERT INTO _cpu (rec, time_ns, pid, tid, process_start_ns, cpu_ns, runqueue_ns)
                        SELECT '{cpu_sampler.CPU}', time_ns, pid, tid, process_start_ns, cpu_ns, runqueue_ns
                        FROM _cpu_edges""")
        con.execute("DROP TABLE _cpu_edges")
    return used


def correct(readings: list[Reading], edges: list[tuple[int, int]]) -> tuple[list[Reading], int]:
    """`readings` (sorted by time) with the `edges` (time_ns, exact cumulative CPU) that fall within
    them added, and each sampled reading held within what the edges allow; the number of edges used."""
    if len(readings) < 2:
        return readings, 0
    first, last = readings[0][0], readings[-1][0]
    edges = sorted({e for e in edges if first < e[0] < last})
    kept: list[tuple[int, int]] = []
    for edge in edges:  # an edge below one before it (a clock read out of order) is not used
        if not kept or edge[1] >= kept[-1][1]:
            kept.append(edge)
    edges = kept
    if not edges:
        return readings, 0
    times = [t for t, _ in edges]
    held = []
    for t, cpu, queued in readings:
        i = bisect_right(times, t)  # edges before or at t: [..i), after: [i..)
        low, high = 0, None
        if i > 0:
            te, ce = edges[i - 1]
            low, high = ce, ce + (t - te)
        if i < len(edges):
            te, ce = edges[i]
            low, high = max(low, ce - (te - t)), ce if high is None else min(high, ce)
        if high is not None and low <= high:
            cpu = min(max(cpu, low), high)
        held.append((t, cpu, queued))
    sampled = [t for t, _, _ in held]
    for te, ce in edges:
        j = bisect_left(sampled, te)  # the sampled readings around the edge: j - 1 and j
        (t0, _, q0), (t1, _, q1) = held[j - 1], held[j]
        queued = q0 + (q1 - q0) * (te - t0) // (t1 - t0) if t1 > t0 else q0
        held.append((te, ce, queued))
    held.sort()
    return held, len(edges)
