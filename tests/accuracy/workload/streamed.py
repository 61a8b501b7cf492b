"""Case (f): a child read until it exits, then reaped.

    python streamed.py TRUTH_DIR

The main process reads the child's output through a pipe until EOF, as pip reads its build hooks'
(no hook sees a pipe's read), then waits for it. The truth spans are what the agent records (the
spawning span with the thread's CPU clock at the call's end and at the reap, the final wait): the
breakdown's rule makes the reads a wait on the child.
"""

import time

# truth.clocks() and clocks_before() before truth.py (its import is measured) is imported. `first` ends
# start-up: the wall clock, the queued time as of then (a read that took long waited for a CPU, after
# `first`), the CPU clock last (its read can end the time slice: that wait too comes after `first`).
# `imports` starts the imports: the wall clock last (the import spans start after it).
QUEUED = "/proc/thread-self/schedstat"
at, queued = time.time_ns(), int(open(QUEUED, "rb").read().split()[1])
waited = time.time_ns() - at
first = (at, time.thread_time_ns(), queued - (waited if waited > 100_000 else 0))
cpu, queued = time.thread_time_ns(), int(open(QUEUED, "rb").read().split()[1])
imports = (time.time_ns(), cpu, queued)
import subprocess  # noqa: E402
import sys  # noqa: E402

import truth  # noqa: E402

imported = truth.clocks()
record = truth.main_process(first, imports, imported)

child = truth.spawn(record, truth.workload("child.py", record), stdout=subprocess.PIPE)
reading = record.begin()
child.stdout.read()
record.end(reading, "read")  # no span: the agent sees no read
record.wait(child.wait, pids=[child.pid])
