"""Case (g): a child polled until it exits, sleeping between the polls.

    python polled.py TRUTH_DIR

The main process polls the child (`Popen.poll`) and sleeps 20 ms after every poll that finds it
running, as a progress loop does. The truth spans are what the agent records: each such sleep is a
wait on the child (named `time.sleep`); the poll that reaps it records nothing.
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
import sys  # noqa: E402

import truth  # noqa: E402

imported = truth.clocks()
record = truth.main_process(first, imports, imported)

child = truth.spawn(record, truth.workload("child.py", record),
                    env=dict(os.environ, ACCURACY_CHILD_SPIN_MS=os.environ["ACCURACY_POLLED_SPIN_MS"],
                             ACCURACY_CHILD_SLEEP_MS=os.environ["ACCURACY_POLLED_SLEEP_MS"]))
# every poll a `wait` block with nothing recorded for it (it does not block): the last one reaps
while record.wait(child.poll, pids=[child.pid], recorded=False) is None:
    record.sleep(0.02, polled=[child.pid])
