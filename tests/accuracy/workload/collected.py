"""Case (h): the garbage collector's passes, timed (SELFOPT_TRACE_GC=1): a full collection over a large
heap in the main thread, then one in a thread the main thread waits on. Automatic collections are
off: the truth knows only these two.

    python collected.py TRUTH_DIR
"""

import time

# truth.clocks() and clocks_before() before truth.py (its import is measured) is imported: see spin_sleep.py.
QUEUED = "/proc/thread-self/schedstat"
at, queued = time.time_ns(), int(open(QUEUED, "rb").read().split()[1])
waited = time.time_ns() - at
first = (at, time.thread_time_ns(), queued - (waited if waited > 100_000 else 0))
cpu, queued = time.thread_time_ns(), int(open(QUEUED, "rb").read().split()[1])
imports = (time.time_ns(), cpu, queued)
import gc  # noqa: E402

gc.disable()
import os  # noqa: E402
import threading  # noqa: E402

import truth  # noqa: E402

record = truth.main_process(first, imports, truth.clocks())
heap = [[i] for i in range(int(os.environ["ACCURACY_HEAP_OBJECTS"]))]


def collect() -> None:
    """A full pass over the heap: the tracer's `gc` span starts inside the call (its callback), so the
    block's start is read as a call's."""
    begun = record.begin_call()
    gc.collect()
    record.end(begun, "gc")


def collector() -> None:
    begun = record.begin()
    collect()
    truth.spin(10, record)
    record.end(begun, "thread", name="collector")


collect()
truth.spin(10, record)
thread = threading.Thread(target=collector)
thread.start()
record.wait(thread.join, threads=["collector"])
