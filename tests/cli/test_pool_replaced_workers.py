"""A wait on a multiprocessing pool names the workers the pool replaced during it (maxtasksperchild).

`Pool(2, maxtasksperchild=1).map(task, [0.2] * 4, chunksize=1)`: each worker exits after one task
and the pool's thread starts another in its place. The map's wait (AsyncResult.get) must name all
four workers that ran a task, not only the two alive at its end: else the first two workers' 200 ms
read as the spawns' overhead, not the children's work (child work 206 of 400 ms, spawn overhead 211).
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.cli.conftest import Cli

TASK = r"""
import concurrent.futures, multiprocessing, sys, time

def task(seconds):
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        pass
    return seconds
"""

PROGRAM = TASK + r"""
if __name__ == "__main__":
    pool = multiprocessing.get_context(sys.argv[1]).Pool(2, maxtasksperchild=1)
    assert pool.map(task, [0.2] * 4, chunksize=1) == [0.2] * 4
    # close, not terminate (`with`): a terminate racing the pool's thread as it forks a replacement
    # worker can lose its SIGTERM to that worker (CPython clears a signal arriving before the child's
    # after-fork handling), which then waits for ever on the task queue's lock
    pool.close()
    pool.join()
    print("done", flush=True)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_pool_wait_names_the_workers_replaced_during_it(cli: Cli, method: str):
    program = cli.cwd / "program.py"
    program.write_text(PROGRAM)
    done = cli("run", "-q", "--", sys.executable, str(program), method)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"done\n"
    (wait,) = cli.query("""
        SELECT span_id, start_ns, end_ns, attributes->'selfopt_trace.wait.on' FROM spans
        WHERE name = 'AsyncResult.get' AND category = 'wait'""")
    _, wait_start, wait_end, on = wait
    on = json.loads(on)
    workers = cli.query("""
        SELECT span_id, start_ns, end_ns FROM spans
        WHERE name = 'multiprocessing' AND category = 'subprocess' ORDER BY start_ns""")
    # the workers that ran a task: most of their life inside the wait
    busy = [span_id for span_id, start, end in workers if min(end, wait_end) - max(start, wait_start) >= 100_000_000]
    assert len(busy) == 4, workers
    assert set(busy) <= set(on), (busy, on)
    assert set(on) <= {span_id for span_id, _, _ in workers}, (on, workers)
    assert len(on) == len(set(on))
    # the breakdown: the four tasks' 800 ms of CPU, two at a time, are the children's work
    query = cli("query", "breakdown", "-f", "json")
    assert query.returncode == 0, query.stderr.decode()
    wall = {row["category"]: row["wall_ms"] for row in json.loads(query.stdout)}
    assert wall["child processes' own work"] >= 350, wall
    assert wall["subprocess spawn overhead"] < 100, wall


CLOSE_JOIN = TASK + r"""
from multiprocessing.pool import ThreadPool
if __name__ == "__main__":
    if sys.argv[1] == "thread":
        pool, task = ThreadPool(2), time.sleep
    else:
        pool = multiprocessing.get_context(sys.argv[1]).Pool(2, maxtasksperchild=1)
    results = [pool.apply_async(task, (0.2,)) for _ in range(4)]
    pool.close()
    pool.join()
    print(sum(result.ready() for result in results), flush=True)
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "thread"])
def test_a_pool_s_join_after_close_waits_on_its_workers(cli: Cli, method: str):
    """`apply_async` four times, then `close(); join()`: the join waited on the pool's thread, which
    waited for the tasks where no hook sees it (`connection.wait`), so the workers' 400 ms read as
    untraced waits (300 of 364 ms). Pool.join is a wait on the pool's workers, the replaced ones too."""
    program = cli.cwd / "program.py"
    program.write_text(CLOSE_JOIN)
    done = cli("run", "-q", "--", sys.executable, str(program), method)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"4\n"
    (wait,) = cli.query("SELECT attributes->'selfopt_trace.wait.on' FROM spans WHERE name = 'Pool.join' AND category = 'wait'")
    # its workers (those that replaced a worker that exited too), not the pool's own threads
    kind = "thread" if method == "thread" else "multiprocessing"
    workers = {span_id for (span_id,) in cli.query(f"SELECT span_id FROM spans WHERE name = '{kind}' AND "
                                                   "coalesce(attributes->>'thread.name', '') NOT LIKE '%(_handle_%'")}
    assert set(json.loads(wait[0])) == workers and len(workers) >= (2 if method == "thread" else 4), (wait, workers)
    query = cli("query", "breakdown", "-f", "json")
    assert query.returncode == 0, query.stderr.decode()
    wall = {row["category"]: row["wall_ms"] for row in json.loads(query.stdout)}
    assert wall["sleeps" if method == "thread" else "child processes' own work"] >= 350, wall
    assert wall["untraced waits"] < 50, wall


EXECUTOR = TASK + r"""
if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    for _ in range(2):
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context, max_tasks_per_child=1) as executor:
            assert list(executor.map(task, [0.1] * 4)) == [0.1] * 4
    print("done", flush=True)
"""


def test_a_process_pool_future_s_wait_names_the_worker_that_ran_its_task(cli: Cli):
    """ProcessPoolExecutor(max_tasks_per_child=1): a Future.result named the executor's workers at its
    end, by then the replacement of the worker that ran the task, started as the wait ended: the
    task's 100 ms read as that spawn's overhead (413-515 ms of it in 4 runs of 12). The workers at the
    wait's start are named too."""
    program = cli.cwd / "program.py"
    program.write_text(EXECUTOR)
    done = cli("run", "-q", "--", sys.executable, str(program))
    assert done.returncode == 0 and done.stdout == b"done\n", done.stderr.decode()
    waits = cli.query("""
        SELECT w.start_ns, w.end_ns, list(s.start_ns) FROM spans AS w
        JOIN spans AS s ON list_contains(CAST(w.attributes->'selfopt_trace.wait.on' AS VARCHAR[]), s.span_id)
        WHERE w.name = 'Future.result' GROUP BY w.span_id, w.start_ns, w.end_ns""")
    assert waits and all(min(starts) < start for start, _, starts in waits), waits  # a worker alive at its start
    query = cli("query", "breakdown", "-f", "json")
    wall = {row["category"]: row["wall_ms"] for row in json.loads(query.stdout)}
    assert wall["child processes' own work"] >= 300 and wall["subprocess spawn overhead"] < 100, wall
