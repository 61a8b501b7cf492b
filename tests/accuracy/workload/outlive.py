"""Case (e): a child that outlives the span of its parent that started it.

    python outlive.py TRUTH_DIR

A phase (phases.start_child) starts a child and returns; the main process then works on the CPU
while the child runs (it sleeps long enough to outlive that work), and only then waits for it.
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
import os  # noqa: E402
import subprocess  # noqa: E402,F401
import sys  # noqa: E402

import phases  # noqa: E402
import truth  # noqa: E402

imported = truth.clocks()
record = truth.main_process(first, imports, imported)

child = phases.start_child(record, truth.workload("child.py", record),
                           env=dict(os.environ, ACCURACY_CHILD_SLEEP_MS=os.environ["ACCURACY_OUTLIVE_SLEEP_MS"]))
work = record.begin()
truth.spin(float(os.environ["ACCURACY_WORK_MS"]), record)
record.end(work, "spin")
record.wait(child.wait, pids=[child.pid])
