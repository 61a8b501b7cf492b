"""A child reaped where no hook sees it (an event loop's child watcher in C: gevent's libev) ended
its spawning span at its parent's exit: under gevent a 15 ms child showed as 470 ms of
"subprocess spawn overhead". The agent now says such a child exited unseen (hooks/spawn.py), and the
loader ends its span at the child's own last record."""

from __future__ import annotations

import json

from tests.cli.conftest import python

# The child is reaped by libc's waitpid called from C (ctypes), as an event loop's watcher does;
# a second child is still running when the parent exits.
PROGRAM = """
import ctypes, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.05)"])
status = ctypes.c_int()
ctypes.CDLL(None).waitpid(child.pid, ctypes.byref(status), 0)
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
time.sleep(0.3)
print(child.pid, helper.pid)
"""


def test_a_child_reaped_unseen_ends_at_its_last_record_and_a_running_one_at_the_parent_s_exit(cli) -> None:
    done = cli("run", "-q", "--json", "--run-id", "unseen", "--", *python(PROGRAM))
    assert done.returncode == 0, done.stderr
    child_pid, helper_pid = map(int, done.stdout.decode().splitlines()[0].split())
    spans = {pid: (end, attributes) for pid, end, attributes in cli.query(
        "SELECT TRY_CAST(attributes->>'process.pid' AS INTEGER), end_ns, attributes FROM spans "
        "WHERE name = 'subprocess'")}
    [(child_end,)] = cli.query("SELECT end_ns FROM spans WHERE name = 'process' AND pid = ?", [child_pid])
    [(parent_end,)] = cli.query("SELECT end_ns FROM spans WHERE name = 'process' AND parent_span_id IS NULL")
    end, attributes = spans[child_pid]
    assert json.loads(attributes)["selfopt_trace.child.exited_unseen"] is True
    assert end == child_end < parent_end - 250_000_000  # not the parent's exit, 0.3 s later
    end, attributes = spans[helper_pid]
    assert json.loads(attributes)["selfopt_trace.child.running_at_exit"] is True and end >= parent_end - 10_000_000
    # The run has no recorded wait: it was taken for one recorded before waits were, where a
    # subprocess span is a wait on its child, and the helper's span (to the parent's exit) took
    # half the parent's sleep as "subprocess spawn overhead".
    by_category = json.loads(done.stdout.decode().split("\n", 1)[1])["time_by_category_ms"]
    assert by_category["sleeps"] >= 299 and by_category["subprocess spawn overhead"] < 20, by_category
    assert by_category["interpreter teardown"] < 50  # not the 0.3 s after the first child's exit


def test_a_run_without_waits_is_not_taken_for_one_recorded_before_waits_were(cli) -> None:
    """A helper started and left running, and a sleep: the run records no wait. It was taken for a
    run of an agent that recorded none (there, a subprocess span is a wait on its child), and the
    helper's span took half of the sleep as "subprocess spawn overhead"."""
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)']); time.sleep(0.3)"
    done = cli("run", "-q", "--json", "--", *python(code))
    assert done.returncode == 0, done.stderr
    by_category = json.loads(done.stdout)["time_by_category_ms"]
    assert by_category["sleeps"] >= 299 and by_category["subprocess spawn overhead"] < 20, by_category


def test_a_child_killed_by_a_timeout_is_its_own_time_not_spawning(cli) -> None:
    """`subprocess.run(..., timeout=...)` kills a hung child: its process span had no end, and the
    0.3 s it lived after its last record showed as "subprocess spawn overhead". It now lasts until
    it was reaped, and that time is the child's (off the CPU here: it slept)."""
    code = ("import subprocess, sys\n"
            "try:\n"
            "    subprocess.run([sys.executable, '-c', 'import time; time.sleep(5)'], timeout=0.4)\n"
            "except subprocess.TimeoutExpired:\n"
            "    print('timed out')\n")
    done = cli("run", "-q", "--json", "--", *python(code))
    assert done.returncode == 0, done.stderr
    out, _, text = done.stdout.decode().partition("\n")
    printed = json.loads(text)
    assert out == "timed out" and printed["incomplete_spans"] == 1
    [child] = [p for p in printed["slowest_processes"] if p["exit_code"] == -9]
    assert child["incomplete"] and child["duration_ms"] >= 390  # spawned, then killed 0.4 s later
    by_category = printed["time_by_category_ms"]
    assert by_category["subprocess spawn overhead"] < 30, by_category
    assert by_category["untraced waits"] + by_category["child processes' own work"] >= 300, by_category
