"""A forkserver Process's start waits on the server, which forks it.

With the `forkserver` start method (Python 3.14's default on Linux), the first `Process.start`
spawns the server and waits until the server has started its interpreter, imported the modules
it preloads (`set_forkserver_preload`) and forked the child. That wait is the server's work: its
start-up and imports, not the start's spawn overhead (a preload of 150 ms read as 150 ms of spawn
overhead).
"""

from __future__ import annotations

import json
import sys

from tests.cli.conftest import Cli

SLOW_IMPORT = r"""
import time

started = time.process_time()
while time.process_time() - started < 0.15:
    pass
"""

PROGRAM = r"""
import multiprocessing


def square(n):
    return n * n


if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["slow"])  # imported by the server, which forks the workers
    pool = context.Pool(1)
    print(pool.map(square, range(3)), flush=True)
    pool.close()
    pool.join()
"""


def test_the_first_start_s_wait_on_the_server_is_its_start_up_and_imports(cli: Cli):
    (cli.cwd / "slow.py").write_text(SLOW_IMPORT)
    (cli.cwd / "program.py").write_text(PROGRAM)
    done = cli("run", "-q", "--", sys.executable, "program.py")
    assert (done.returncode, done.stdout) == (0, b"[0, 1, 4]\n"), done.stderr.decode()
    (server,) = cli.query("""
        SELECT span_id, start_ns + CAST(attributes->>'selfopt_trace.spawn_ns' AS BIGINT) FROM spans
        WHERE name = 'subprocess' AND attributes->>'process.command' LIKE '%forkserver import main%'""")
    (start,) = cli.query("SELECT span_id, start_ns, end_ns FROM spans WHERE name = 'multiprocessing'")
    (wait,) = cli.query("SELECT parent_span_id, start_ns, end_ns, attributes->'selfopt_trace.wait.on' FROM spans "
                        "WHERE name = 'forkserver' AND category = 'wait'")
    parent, wait_start, wait_end, on = wait
    assert parent == start[0] and json.loads(on) == [server[0]]
    assert wait_start == server[1]  # from the end of the server's spawn, inside the start
    (slow_in_server,) = cli.query("""
        SELECT start_ns, end_ns FROM spans
        WHERE name = 'import slow'""")
    assert wait_start < slow_in_server[0] and slow_in_server[1] < wait_end
    query = cli("query", "breakdown", "-f", "json")
    assert query.returncode == 0, query.stderr.decode()
    wall = {row["category"]: row["wall_ms"] for row in json.loads(query.stdout)}
    assert wall["imports"] >= 150, wall  # the server's import of slow: 150 ms of CPU
    assert wall["subprocess spawn overhead"] < 100, wall
