"""Case (d): two threads, one spinning on the CPU and one sleeping, joined by the main thread.

    python spin_sleep.py TRUTH_DIR
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
import threading  # noqa: E402

import truth  # noqa: E402

imported = truth.clocks()
record = truth.Recorder(sys.argv[1], first, role="main")
atexit.register(record.write)
record.add("imports", imports, imported)


def spinner():
    begun = record.begin()
    truth.spin(float(os.environ["ACCURACY_WORK_MS"]), record)
    record.end(begun, "thread", name="spin")


def sleeper():
    begun = record.begin()
    # the sleep's own readings: what the thread did before it (taking the GIL from the spinner) is not
    # spread over the sleep the main waits on, as its thread's two readings alone would; the start
    # reads the CPU clock first, the tracer's sleep span starting after it
    record.sleep(float(os.environ["ACCURACY_SLEEP_MS"]) / 1000, begin=truth.clocks_before)
    record.end(begun, "thread", name="sleep")


spinning, sleeping = threading.Thread(target=spinner), threading.Thread(target=sleeper)
spinning.start()
sleeping.start()
record.wait(spinning.join, threads=["spin"])
record.wait(sleeping.join, threads=["sleep"])
