"""time.sleep and asyncio.sleep: where the program chose to wait (a `sleep` span for every sleep that
blocked).

The CPU sampler reads each thread's CPU time every 10-50 ms, so it knows how much of a reading the
thread ran, not when: the breakdown spreads a reading's CPU evenly over it, and a sleep next to
CPU work reads partly as running (a few ms at every change). A recorded sleep says where the
thread did not run: the breakdown puts a reading's CPU in the rest of it (docs/queries.md). A
sleep in own work is also the breakdown's `sleeps` (the program chose to wait: a poll, a back-off);
a sleep inside a serialization span stays serialization, and one inside a measured call that is not
a span yet (json.dumps's `default` hook) is not recorded: the call's time.

process.py puts the wrapper at time.sleep at start-up: it times every sleep with nothing imported
before the sleep itself, and calls record() here (imported on the first sleep that blocked) for a
sleep of config.WAIT_THRESHOLD_NS or more, with the line that slept (code.filepath, code.lineno,
code.function). Cost: two clock reads a sleep, and one formatted X record a recorded one (waits.py's
way; about a recorded wait's cost, and the caller's frame found and encoded).

asyncio.sleep (install(), at its first call: lazy.ON_FIRST_CALL) is a sleep span named so: the
task chose to wait, but its thread runs the other tasks meanwhile, so it is not known off the CPU;
the breakdown gives the thread's CPU in it to its own work and the rest to `sleeps`. An
`asyncio.sleep(0)` (a yield to the loop) is not timed.
"""

from __future__ import annotations

import sys
from _thread import get_ident
from time import time_ns

from .. import config, lazy, process, spanfile, tracer
from . import waits

NAME, ASYNC_NAME = "time.sleep", "asyncio.sleep"
CATEGORY = "sleep"
_HEAD = "\t%s\t%s\t%s\t" % (NAME, tracer.INTERNAL, CATEGORY)
_ASYNC_HEAD = "\t%s\t%s\t%s\t" % (ASYNC_NAME, tracer.INTERNAL, CATEGORY)
_POLL_HEAD = waits.head_of(NAME)  # a poll loop's sleep is a wait span of the same name
_TIMED = __name__.rpartition(".")[0] + ".timed"  # loaded with the first measured call's hook
_places: dict = {}  # code object -> its file and function, encoded: a program sleeps from few places
_LATE = tracer.LATE_WAKE_NS


def _where(frame) -> str:
    """The attributes of a sleep in `frame`'s line (encoding them each time cost +18,600
    instructions a recorded sleep, 14,100 -> 32,700)."""
    code = tracer.code_of(frame)
    head = _places.get(code)
    if head is None:
        if len(_places) >= 1024:
            _places.clear()
        head = _places[code] = spanfile.encode({"code.filepath": code.co_filename,
                                                "code.function": code.co_name})[:-1] + ',"code.lineno":'
    return "%s%d}" % (head, frame.f_lineno)


def _wake_edge() -> str:
    """A late wake-up's exact reading (tracer.CPU_WAKE*), as the JSON members a sleep's attributes end
    with: the CPU clock first and the wall clock last, so a preemption the CPU clock's read brings
    (it can end the time slice there) counts as queued before the reading's time, as it was."""
    cpu = tracer.thread_cpu_ns()
    if not cpu:  # no per-thread CPU clock here
        return ""
    queued = process.runqueue_ns()
    now = time_ns()
    return ',"%s":%d,"%s":%d,"%s":%d%s' % (
        tracer.CPU_TID, tracer.get_native_id(), tracer.CPU_WAKE_TIME, now, tracer.CPU_WAKE, cpu,
        "" if queued is None else ',"%s":%d' % (tracer.CPU_WAKE_QUEUED, queued))


def _polled_units(thread: int, t0: int) -> list:
    """The span ids of the children and threads this thread's polls found running since its last
    sleep (`Popen.poll`, `os.waitpid(pid, WNOHANG)`: hooks/os_.py; `Thread.is_alive`: hooks/threads.py),
    where this sleep began right after them (`while proc.poll() is None: time.sleep(0.1)`) and no
    child among them is reaped yet. A poll loop waits on them as Popen.wait(timeout=...) does
    (CPython's is one: polls and sleeps), and the breakdown follows it there, where a sleep ended
    the trail."""
    units = []
    for key, at in waits.polled.pop(thread, {}).items():
        if t0 - at > waits.POLL_GAP_NS:
            continue
        if type(key) is str:  # a thread's span id
            units.append(key)
            continue
        from . import spawn  # loaded with os_.py, which noted the poll

        entry = spawn._children.get(key)
        if entry is not None:
            units.append(entry[0].span_id)
    return units


def _signalled_units() -> list:
    """The span ids of the children this process asked to end (waits.signalled) that are not reaped
    yet; the reaped ones are forgotten."""
    from . import spawn  # loaded: it noted them

    units = []
    for pid in list(waits.signalled):
        entry = spawn.child(pid)
        if entry is None:
            waits.signalled.discard(pid)
        else:
            units.append(entry[0].span_id)
    return units


def install(target: str, module) -> None:
    """asyncio.tasks.sleep (lazy.py puts it at asyncio.sleep too): the awaited interval of a sleep of
    more than 0 seconds, recorded when it lasted config.WAIT_THRESHOLD_NS or more."""
    original = lazy.original(module.__dict__["sleep"])
    if tracer.is_own_wrapper(original):
        return
    threshold = config.WAIT_THRESHOLD_NS

    async def sleep(delay, result=None):
        try:
            timed = delay > 0
        except Exception as exc:  # the original says what is wrong with it
            tracer.raise_if_programs(exc)  # (a program's `delay` whose > runs Python code)
            timed = False
        t0 = time_ns()
        try:
            return await original(delay, result)
        except BaseException as exc:  # cancelled, a bad argument: as untraced
            tracer.strip_own_frames(exc)
            raise
        finally:
            if timed:
                t1 = time_ns()
                if t1 - t0 >= threshold:
                    record(t0, t1, delay, head=_ASYNC_HEAD, depth=2)

    module.sleep = waits.identity(sleep, original)


def record(t0: int, t1: int, seconds, asleep: int | None = None, head: str = _HEAD, depth: int = 3) -> None:
    """The sleep span of a sleep of `seconds` that blocked [t0, t1] (process.py's wrapper times it,
    from the call: a flusher thread it starts first, tracer.before_block, is in it, and the sleep
    itself begins at `asleep`, after that start), written as a
    wait's record (waits.write_under: a flush only when the buffer is full, where tracer.record_line
    would flush in the program's thread when one is due, +4,000 instructions a sleep under
    callgrind). Never raises.

    The span ends when the time asked for is up, if the call returned later: from then on the
    thread was runnable, queued for a CPU (running, for the breakdown) or taking the GIL back, not
    known off the CPU. Ended at the call's return, a busy machine's wake-up (a 1 ms sleep that took
    9.3 ms, queued, beside two exiting pool workers) counted as off the CPU, and the reading's CPU
    that held that queued time was spread over the waits around it (tests/accuracy, pool)."""
    cpu0 = tracer.thread_cpu_ns() if waits._settling else 0  # where this record's cost begins (waits._settle)
    try:
        # A sleep refused for its argument (-1, "1": ValueError, TypeError) slept nothing, however long
        # a loaded machine took to say so (recorded, -1 made a span ending before its start)
        if isinstance(seconds, (str, bytes, bytearray)) or not float(seconds) > 0:
            return
        # float(): what the sleep took (an __index__ too). The time asked for runs from where the sleep
        # itself began: counted from the call, a flusher thread's start before it (9-12 ms queued
        # beside two CPU hogs) ended the span that much before the thread woke, asleep still (an
        # untraced wait for whoever waited on it); past it the call's tail is the thread's, as a
        # late wake-up is (5.5 ms beside two CPU hogs)
        end = (t0 if asleep is None else asleep) + int(float(seconds) * 1_000_000_000)
        wake = ""
        if t1 > end:
            # woke late (queued for a CPU, most likely): the thread's clocks now, an exact CPU edge for
            # the loader (store/cpu_edges.py); a prompt wake-up pays this one comparison
            if t1 - end > _LATE and head is _HEAD:
                wake = _wake_edge()
            t1 = end
        thread = get_ident()
        if waits.busy and thread in waits.busy:  # inside an outer wait (Popen.wait(timeout) polls with sleeps)
            return
        timed = sys.modules.get(_TIMED)
        if timed is not None and thread in timed._busy:
            # inside a measured call (json.dumps's `default` hook): the call's time. The call is a
            # span only once it ends slow, so the sleep would hang under the call's parent, as own work
            return
        parent = tracer.current()
        # outside every span, only the main thread's sleeps are known to be its unit's: a thread
        # without a span of its own (started through _thread) is not the main thread
        if parent is None and thread == tracer._main_thread:
            parent = tracer._root
        if not tracer._enabled or (parent is None and tracer._root is not None):
            return
        # where the program slept (it shows on the critical path): the frame above process.py's
        # recorder (and its wrapper, when not the twin's), or above asyncio.sleep's wrapper (`depth`;
        # sys._getframe makes no frame objects for the frames it skips)
        caller = tracer.program_frame(tracer.frame_at(depth))
        if head is _ASYNC_HEAD and caller is not None and caller.f_globals.get("__name__", "").startswith("asyncio."):
            caller = None  # a sleep that is a task itself (gather, create_task): no line of the program's awaited it
        attributes = "{}" if caller is None else _where(caller)
        if wake:
            attributes = "{" + wake[1:] + "}" if attributes == "{}" else attributes[:-1] + wake + "}"
        polled = _polled_units(thread, t0) if head is _HEAD and thread in waits.polled else None
        if waits.signalled and head is _HEAD:  # children asked to end, not reaped yet: it waits for their exit
            polled = list(dict.fromkeys((polled or []) + _signalled_units()))
        if polled:  # a poll loop's sleep: a wait on the children and threads it polls
            waits.write_under(parent, _POLL_HEAD, t0, t1, '{"%s":[%s]%s' % (
                waits.ON, ",".join('"%s"' % span_id for span_id in polled),
                "}" if attributes == "{}" else "," + attributes[1:]), cpu0)
        else:
            waits.write_under(parent, head, t0, t1, attributes, cpu0)
    except Exception as error:
        tracer.exception_diagnostic("wait_failed:" + head.split("\t")[1], error)
