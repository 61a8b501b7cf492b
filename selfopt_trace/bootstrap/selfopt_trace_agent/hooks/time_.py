"""time.sleep: where a thread was off the CPU, exactly (a `sleep` span for every sleep that blocked).

The CPU sampler reads each thread's CPU time every 10-50 ms, so it knows how much of a reading the
thread ran, not when: the breakdown spreads a reading's CPU evenly over it, and a sleep next to
CPU work reads partly as running (a few ms at every change). A recorded sleep says where the
thread did not run: the breakdown puts a reading's CPU in the rest of it (docs/queries.md). Sleep
spans are that evidence only, never a category of their own: a sleep in own work is an untraced
wait, a sleep inside a serialization span stays serialization.

process.py puts a stand-in at time.sleep at start-up (no import); its first call builds the
wrapper here and puts it at time.sleep. Cost: the wait hooks' (waits.py): two clock reads, and
one formatted X record for a sleep that blocked config.WAIT_THRESHOLD_NS or more.
"""

from __future__ import annotations

from _thread import get_ident
from time import time_ns

from .. import process, tracer
from . import waits

NAME = "time.sleep"
CATEGORY = "sleep"
_HEAD = "\t%s\t%s\t%s\t" % (NAME, tracer.INTERNAL, CATEGORY)


def wrap(original):
    """The traced time.sleep: the original, timed; a sleep span when it blocked."""
    threshold = waits.THRESHOLD_NS
    fast = waits._fast
    busy = waits.busy
    current = tracer.current
    formatted = tracer.formatted
    add = formatted.append

    def sleep(seconds):
        t0 = time_ns()
        try:
            original(seconds)
        except BaseException as exc:  # KeyboardInterrupt, a signal handler's exception, a bad argument
            t1 = time_ns()
            if t1 - t0 >= threshold and not (busy and get_ident() in busy):
                _record(t0, t1)
            tracer.strip_own_frames(exc)
            raise
        t1 = time_ns()
        if t1 - t0 >= threshold:
            if busy and get_ident() in busy:  # inside an outer wait (Popen.wait(timeout) polls with sleeps)
                return
            try:
                parent = current()
                # outside every span, only the main thread's sleeps are known to be its unit's: a thread
                # without a span of its own (started through _thread) is not the main thread
                if parent is None and get_ident() == process._main_thread:
                    parent = tracer._root
                if tracer._enabled and (parent is not None or tracer._root is None):  # _record, inlined
                    if parent is None:
                        parent_id, trace_id = tracer._remote_parent_id, tracer._trace_id
                    else:
                        if parent.deferred:
                            tracer._mark_kept(parent)
                        parent_id, trace_id = parent.span_id, parent.trace_id
                    add(f"X\t{next(tracer._id_text)}\t{parent_id}\t{trace_id}{_HEAD}{t0}\t{t1}\tUNSET\t{{}}\t.\n")
                    if len(formatted) > waits.FLUSH_RECORDS:
                        tracer.flush(blocking=False)
                    if waits._settling:
                        waits._settle(t1)
            except Exception as error:
                tracer.exception_diagnostic("wait_failed:" + NAME, error)
        elif fast[1]:
            fast[0] += 1
        else:
            waits._calibrate(time_ns() - t1)

    return waits.identity(sleep, original)


def _record(t0: int, t1: int) -> None:
    """The sleep span, for a sleep that raised. Never raises."""
    try:
        if tracer._enabled and (tracer.current() is not None or get_ident() == process._main_thread):
            tracer.record_line(NAME, CATEGORY, t0, t1, "{}")
            tracer.add_overhead(time_ns() - t1)
    except Exception as error:
        tracer.exception_diagnostic("wait_failed:" + NAME, error)
