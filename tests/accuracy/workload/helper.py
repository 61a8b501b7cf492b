"""An idle helper (a language server, a daemon): started first, blocked on its stdin until it closes.

    python helper.py TRUTH_DIR
"""

import time

QUEUED = "/proc/thread-self/schedstat"  # truth.clocks() before truth.py (its import is measured) is imported
first = (time.time_ns(), time.thread_time_ns(), int(open(QUEUED, "rb").read().split()[1]))
imports = (time.time_ns(), time.thread_time_ns(), int(open(QUEUED, "rb").read().split()[1]))
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
