"""An idle helper (a language server, a daemon): started first, blocked on its stdin until it closes.

    python helper.py TRUTH_DIR
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
import sys  # noqa: E402

import truth  # noqa: E402

imported = truth.clocks()
record = truth.Recorder(sys.argv[1], first, role="helper")
atexit.register(record.write)
record.add("imports", imports, imported)
blocked = record.begin()
sys.stdin.buffer.read()
record.end(blocked, "blocked")
