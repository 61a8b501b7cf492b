"""A child process: imports a slow module, works and sleeps a known time, records its truth.

    python child.py TRUTH_DIR

Its `last` is taken in the exit handler registered last (it runs first; the tracer's runs after).
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
import atexit  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import slowimport  # noqa: E402,F401
import truth  # noqa: E402

imported = truth.clocks()
record = truth.Recorder(sys.argv[1], first)
record.add("imports", imports, imported)
atexit.register(record.write)

work = record.begin()
truth.spin(float(os.environ["ACCURACY_CHILD_SPIN_MS"]), record)
record.end(work, "spin")
record.sleep(float(os.environ["ACCURACY_CHILD_SLEEP_MS"]) / 1000)
