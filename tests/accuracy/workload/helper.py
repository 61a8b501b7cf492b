"""An idle helper (a language server, a daemon): started first, blocked on its stdin until it closes.

    python helper.py TRUTH_DIR
"""

import time

first, first_cpu = time.time_ns(), time.thread_time_ns()
imports = (time.time_ns(), time.thread_time_ns())
import atexit  # noqa: E402
import sys  # noqa: E402

import truth  # noqa: E402

imported = truth.clocks()
record = truth.Recorder(sys.argv[1], first, first_cpu, role="helper")
atexit.register(record.write)
record.add("imports", imports, imported)
blocked = record.begin()
sys.stdin.buffer.read()
record.end(blocked, "blocked")
