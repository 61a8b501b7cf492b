"""A ThreadPoolExecutor's shutdown waits on its worker threads, which run the tasks.

A task runs in a `task` span under its submitter (what a wait on its future follows), so the
worker thread's own span holds nothing while it runs one. Four tasks submitted, then the `with`
block's end (`shutdown(wait=True)` joins the workers), or the interpreter's exit (which joins them
too): the join waited on a thread that looked idle, and the tasks' 300 ms read as untraced waits.
The loader adds, under each worker thread, a `_WorkItem.run` wait on each task it ran.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.cli.conftest import Cli

PROGRAMS = {
    "with": """
import time
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(2) as executor:
    for _ in range(4):
        executor.submit(time.sleep, 0.15)
""",
    "exit": """
import time
from concurrent.futures import ThreadPoolExecutor
executor = ThreadPoolExecutor(2)
for _ in range(4):
    executor.submit(time.sleep, 0.15)
""",
}


@pytest.mark.parametrize("how", PROGRAMS)
def test_joining_a_thread_pool_s_workers_waits_on_the_tasks_they_run(cli: Cli, how: str) -> None:
    program = cli.cwd / "program.py"
    program.write_text(PROGRAMS[how])
    done = cli("run", "-q", "--json", "--", sys.executable, str(program))
    assert done.returncode == 0, done.stderr.decode()
    by_category = json.loads(done.stdout)["time_by_category_ms"]
    assert by_category["sleeps"] >= 285 and by_category["untraced waits"] < 30, by_category
    runs = cli.run_dirs()
    derived = """SELECT w.parent_span_id, w.start_ns, w.end_ns, w.attributes->'selfopt_trace.wait.on',
                        w.attributes->>'selfopt_trace.derived'
                 FROM spans AS w WHERE w.name = '_WorkItem.run' ORDER BY w.start_ns"""
    waits = cli.query(derived)
    tasks = cli.query("SELECT span_id, start_ns, end_ns, attributes->>'thread.id' FROM spans WHERE name = 'task' ORDER BY start_ns")
    threads = dict(cli.query("SELECT attributes->>'thread.id', span_id FROM spans WHERE name = 'thread'"))
    # one a task, over it, under the thread that ran it
    assert len(tasks) == 4 and len(threads) == 2, (tasks, threads)
    assert [(parent, start, end, json.loads(on), flag) for parent, start, end, on, flag in waits] == \
        [(threads[tid], start, end, [task], "true") for task, start, end, tid in tasks]
    # loaded again: the same spans, none twice
    again = cli("load", str(runs[0]))
    assert again.returncode == 0, again.stderr.decode()
    assert cli.query(derived) == waits
    (count,) = cli.query("SELECT span_count FROM runs")
    assert count[0] == cli.query("SELECT count(*) FROM spans")[0][0]
