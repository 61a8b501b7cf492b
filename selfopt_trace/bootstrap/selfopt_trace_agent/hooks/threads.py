"""Threads and thread-pool work: each runs inside a span that says which thread it is, under the span that handed it over.

A `threading.Thread` runs inside a `thread` span (category `thread`) from its first line to the
end of its run, with `thread.id` (the native id) and `thread.name`; its parent is the span that
was current in `Thread.start()` (so Timer and friends stay under the span that started them),
else the process span. A `ThreadPoolExecutor` work item runs inside a `task` span (category
`thread`) with `thread.id` and `code.function`, under the span current at `submit()` (so `map`
and asyncio's `run_in_executor` too), else the process span. Both span ids are allocated in the
starting thread (on the Thread, on the Future) so that a wait on them (`Thread.join`,
`Future.result`, hooks/waits.py) can name them before they ran.

A blocking `threading.Condition` wait (inside `Event.wait`, `Queue.get`, `Queue.join`,
`Semaphore.acquire`) is a wait on the unit of the thread whose notify woke it, until that notify
(hooks/waits.py records it). Condition.wait is wrapped with the rest here, at the first
`Thread.start`: until a thread starts, no other thread of ours can notify.

Only our span travels, not the submitter's whole context: the user's own context variables
(decimal's context among them) stay exactly as they would be untraced, and so do tracebacks (the
work item's exception is caught inside the original `_WorkItem.run`, below our wrapper).
"""

from __future__ import annotations

import os
from _thread import get_ident, get_native_id
from collections import deque
from time import time_ns

try:
    from time import thread_time_ns
except ImportError:  # a platform without a per-thread CPU clock
    thread_time_ns = None

from .. import lazy, process, tracer
from . import waits

_PARENT = "_selfopt_trace_parent"
_SPAN = waits.SPAN
# On the end of a thread or task span, read in its thread as it ends: the thread's CPU time since
# it started (time.thread_time_ns()), the exact last reading the CPU sampler's 20 Hz misses; a
# thread's also its time queued for a CPU (process.thread_clocks), and both at its start too (the
# sampler's first reading counts from the thread's start, queued before its first line included).
CPU_NS = process.THREAD_CLOCKS + "cpu_ns"
START_CLOCKS = process.THREAD_CLOCKS + "start_"


# A thread that ends sooner than this after its start() gets its CPU time only. The first read of a
# thread's /proc file costs the kernel ~30-40 us (for a longer-lived one, the CPU sampler's readings
# made it), nearly all of what a short thread's span adds to it, and such a thread can have been
# queued for a CPU no longer than that (docs/benchmarks.md, "Threads").
QUEUE_READ_AFTER_NS = 10_000_000


def _cpu(span) -> dict | None:
    """The end attributes of `span`, a thread span ending in the thread it covers (never raises)."""
    if thread_time_ns is not None and time_ns() - span.start_ns < QUEUE_READ_AFTER_NS:
        return {CPU_NS: thread_time_ns()}
    return process.thread_clocks() or None

# The thread and task spans open in this process, by span id. A forked child starts with none: the
# spans of the thread that forked belong to the parent's file, and the child must not end them.
# What is still open when the process ends (daemon threads) ends with it.
_live: dict = {}


def _end_live() -> None:
    """At the process's end: the spans of threads still running (daemons) end with it. Their CPU
    time cannot be read from here, except the ending thread's own."""
    me = get_native_id()
    for span in list(_live.values()):
        tracer.end_span(span, attributes=_cpu(span) if (span.attributes or {}).get("thread.id") == me else None)
    _live.clear()


def _after_fork_in_child() -> None:
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
process.on_end(_end_live)


def install(target: str, module) -> None:
    if target == "threading":
        _wrap(module.Thread, "start", _start)
        _wrap(module.Thread, "_bootstrap_inner", _bootstrap_inner)
        _wrap(module.Thread, "join", lambda original: waits.method(original, "Thread.join", _join_targets,
                                                                   ready=_finished, own=True))
        _wrap(module.Thread, "is_alive", _is_alive)
        if callable(getattr(module, "_shutdown", None)) and not tracer.is_own_wrapper(module._shutdown):
            module._shutdown = tracer.own_wrapper(_shutdown(module._shutdown, module), module._shutdown)
        _wrap(module.Condition, "wait", _condition_wait)
    else:
        executor = module.ThreadPoolExecutor
        if "_adjust_thread_count" in executor.__dict__:
            _wrap(executor, "_adjust_thread_count", _adjust_thread_count)
        _wrap(module._WorkItem, "__init__", _work_item_init)
        _wrap(module._WorkItem, "run", _work_item_run)


def _wrap(owner, name: str, make) -> None:
    original = lazy.original(owner.__dict__[name])  # what stands in until the first Thread.start wraps it
    if not tracer.is_own_wrapper(original):
        setattr(owner, name, tracer.unbound(tracer.own_wrapper(make(original), original), original))


def _handed_over() -> tracer.Span | None:
    """The span new work belongs to: the current one, skipping import frames that may never be written."""
    span = tracer.current()
    while span is not None and span.deferred:
        span = span.parent
    return None if span is tracer.root() else span


# --- threading.Thread -----------------------------------------------------------------------------

def _start(original):
    busy = waits.busy

    def start(self, *args, **kwargs):
        try:
            if tracer._enabled:
                try:
                    state = self.__dict__
                    if _SPAN not in state:  # a second start() fails: the thread keeps its span
                        state[_SPAN] = tracer.new_span_id()
                        state[_PARENT] = _handed_over()
                except Exception as exc:
                    tracer.exception_diagnostic("hook_failed:Thread.start", exc)
            # start() waits (an Event) for the new thread to begin: its start, not a wait on its work
            thread = get_ident()
            if thread in busy:  # inside a wait already
                return original(self, *args, **kwargs)
            try:
                busy.add(thread)  # in the try: let go after an exception of the program's right after it too
                return original(self, *args, **kwargs)
            finally:
                busy.discard(thread)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return start


def _bootstrap_inner(original):
    def _bootstrap_inner(self, *args, **kwargs):
        try:
            span = None
            try:
                state = self.__dict__
                parent = state.pop(_PARENT, None)
                span_id = state.get(_SPAN)
                if span_id and tracer._enabled:
                    # Both clocks: without the queued time at the start, the breakdown counted a spinning
                    # thread's busy time twice (tests/accuracy). Read by the C twin keeping the GIL.
                    attributes = process.thread_clocks(START_CLOCKS)
                    attributes["thread.id"], attributes["thread.name"] = get_native_id(), str(self.name)
                    span = tracer.start_span("thread", "thread", tracer.INTERNAL, attributes,
                                             parent=parent or tracer.root(), span_id=span_id)
                    _live[span_id] = span
                    tracer.activate(span)  # a new thread starts with an empty context: nothing to restore
            except Exception as exc:
                tracer.exception_diagnostic("hook_failed:Thread.run", exc)
            try:
                return original(self, *args, **kwargs)
            finally:
                if span is not None:
                    try:
                        # Read before the span leaves _live: until then the process's end ends it, should
                        # it come first (a daemon thread is stopped at any bytecode at shutdown).
                        clocks = _cpu(span)
                        if _live.pop(span.span_id, None) is not None:
                            tracer.end_span(span, attributes=clocks)
                    except Exception:  # (the new thread's: no signal handler runs there)
                        pass
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return _bootstrap_inner


def _is_alive(original):
    def is_alive(self):
        try:
            alive = original(self)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise
        if alive:  # noted for a sleep right after it: a poll loop's, a wait on the thread (hooks/time_.py)
            span_id = self.__dict__.get(_SPAN)
            if span_id:
                waits.note_poll(span_id)
        return alive

    return is_alive


def _finished(thread) -> bool:
    """The thread has ended (a join returns at once). Python < 3.13 keeps _is_stopped; else: not known."""
    return thread.__dict__.get("_is_stopped") is True


def _join_targets(thread, captured) -> tuple:
    span_id = waits.span_of(thread)
    return [span_id], (None if span_id else {"thread.name": str(thread.name)})


def _shutdown(original, threading):
    """At exit the interpreter waits here for the non-daemon threads (and executor workers) to end."""
    def _shutdown():
        try:
            try:
                threads = [thread for thread in threading.enumerate()
                           if not thread.daemon and thread is not threading.main_thread()]
            except Exception as exc:
                tracer.raise_if_programs(exc)
                threads = []
            if not threads:
                return original()
            t0 = time_ns()
            try:
                waits.busy.add(get_ident())  # in the try: let go after an exception of the program's right after it too
                return original()
            finally:
                waits.busy.discard(get_ident())
                t1 = time_ns()
                if t1 - t0 >= waits.THRESHOLD_NS:
                    waits.record("threading._shutdown", t0, t1, [waits.span_of(thread) for thread in threads])
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return waits.identity(_shutdown, original)


# --- threading.Condition: Event.wait, Queue.get and .join, Semaphore.acquire, ... -------------------

class _NotedWaiters(deque):
    """A Condition's waiters, noting who wakes one: `notify` removes each waiter it wakes (Python's
    threading.Condition), so the last remove says which unit notified, and when. A Condition nobody
    waits on keeps its own deque: its notify costs nothing more."""

    __slots__ = ("notified",)

    def remove(self, value) -> None:
        deque.remove(self, value)  # what it raises, as the original
        try:
            unit = _unit_here()
            self.notified = None if unit is None else (unit, time_ns())  # a thread we did not start: nobody known
        except Exception as exc:
            self.notified = None
            tracer.exception_diagnostic("hook_failed:Condition.notify", exc)


def _unit_here() -> str | None:
    """The span id of the unit the calling thread runs in (its `thread` or `task` span, a server span's
    handler, the process span in the main thread), as the breakdown counts units; None in a thread we
    did not start (no span of its own)."""
    span = tracer.current()
    if span is None:
        root = tracer.root()
        return root.span_id if root is not None and get_ident() == tracer._main_thread else None
    while span.parent is not None and span.category != "thread":
        span = span.parent
    return span.span_id


def _condition_wait(original):
    """A blocking Condition.wait is a wait on the unit that notified it, from its start to the notify
    (then the waiter only wakes). Named after its caller in threading or queue (`Event.wait`,
    `Queue.get`, `Queue.join`, ...). The Condition's waiters become a _NotedWaiters at its first wait
    (under its lock, as the wait is). One that timed out is a sleep the program asked for (a
    threading.Timer's delay, a poll's `Event.wait(0.1)`: `sleeps`, not an untraced wait); one that
    nobody we know notified is not recorded: it waited on nothing traced (an untraced wait)."""
    threshold = waits.THRESHOLD_NS
    busy = waits.busy

    def wait(self, timeout=None):
        if busy and get_ident() in busy:  # part of a wait recorded around it (Future.result, ...), or a start
            try:
                return original(self, timeout)
            except BaseException as exc:
                tracer.strip_own_frames(exc)
                raise
        try:
            waiters = self._waiters
            if type(waiters) is not _NotedWaiters and self._is_owned():
                self._waiters = _NotedWaiters(waiters)
        except Exception as exc:
            tracer.exception_diagnostic("hook_failed:Condition.wait", exc)
        t0 = time_ns()
        try:
            result = original(self, timeout)
        except BaseException as exc:
            tracer.strip_own_frames(exc)
            raise
        try:
            notified = getattr(self._waiters, "notified", None) if result else None
            if notified is not None and notified[1] - t0 >= threshold:
                waits.record(_wait_name(tracer.code_of(tracer.frame_at(1))), t0, notified[1], [notified[0]])
            elif not result and timeout is not None and time_ns() - t0 >= threshold:
                _timed_out(t0, timeout)
            else:
                waits.not_blocked(time_ns())
        except Exception as exc:
            tracer.exception_diagnostic("wait_failed:Condition.wait", exc)
        return result

    return waits.identity(wait, original)


_sleep_heads: dict = {}  # a timed-out wait's name -> its sleep record's head


def _timed_out(t0: int, timeout) -> None:
    """A Condition.wait that timed out, as a sleep named after its caller (`Event.wait`, `Queue.get`)."""
    from . import time_

    name = _wait_name(tracer.code_of(tracer.frame_at(2)))
    head = _sleep_heads.get(name)
    if head is None:
        head = _sleep_heads[name] = "\t%s\t%s\t%s\t" % (name, tracer.INTERNAL, time_.CATEGORY)
    time_.record(t0, time_ns(), timeout, head=head, depth=4)


def _wait_name(code) -> str:
    """What called Condition.wait: Event.wait, Queue.get, ... (in threading or queue), else itself."""
    if code.co_filename.endswith(("threading.py", "queue.py")):
        return getattr(code, "co_qualname", None) or "Condition.wait"
    return "Condition.wait"


# --- concurrent.futures.ThreadPoolExecutor ---------------------------------------------------------

def _adjust_thread_count(original):
    def _adjust_thread_count(self, *args, **kwargs):
        try:
            # A worker thread started here serves every later submitter: it hangs under the process span.
            token = tracer.activate(None)
            try:
                return original(self, *args, **kwargs)
            finally:
                tracer.deactivate(token)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return _adjust_thread_count


_WORK = "_selfopt_trace_work"  # on a _WorkItem: (span id, parent span) of its task


def _work_item_init(original):
    def __init__(self, future, *args, **kwargs):
        try:
            original(self, future, *args, **kwargs)
            if tracer._enabled:
                try:
                    span_id = tracer.new_span_id()
                    future.__dict__[_SPAN] = span_id
                    self.__dict__[_WORK] = (span_id, _handed_over())
                except Exception as exc:
                    tracer.exception_diagnostic("hook_failed:ThreadPoolExecutor.submit", exc)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return __init__


def _work_item_run(original):
    running = waits.running

    def run(self, *args, **kwargs):
        try:
            work = self.__dict__.pop(_WORK, None)
            if work is None or not tracer._enabled:
                return original(self, *args, **kwargs)
            try:
                future = self.future
                if future._state == "CANCELLED":  # the original only marks it notified
                    return original(self, *args, **kwargs)
                span_id = work[0]
                span = tracer.start_span("task", "thread", tracer.INTERNAL, _task_attributes(self),
                                         parent=work[1] or tracer.root(), span_id=span_id)
                _live[span_id] = span
                token = tracer.activate(span)
                copied = _copied_context(self)
                if copied is not None:  # asyncio.to_thread's: the task's span current in it too
                    copied.run(tracer.activate, span)
                running[future] = span
            except Exception as exc:
                tracer.exception_diagnostic("hook_failed:ThreadPoolExecutor.run", exc)
                return original(self, *args, **kwargs)
            try:
                return original(self, *args, **kwargs)
            finally:
                try:
                    running.pop(future, None)
                    tracer.deactivate(token)
                    if _live.pop(span_id, None) is not None:
                        tracer.end_span(span, attributes={CPU_NS: thread_time_ns()} if thread_time_ns else None)
                except Exception:  # (a pool's worker thread: no signal handler runs there)
                    pass
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return run


def _copied_context(work_item):
    """The context a work item runs its function in, where it is `partial(context.run, fn, ...)`
    (asyncio.to_thread's: a copy of the awaiting task's context, whose current span is that task's,
    in another thread: the function's spans hung there, and its sleeps were not recorded), else None."""
    fn = getattr(work_item, "fn", None)
    run = getattr(fn, "func", None) if type(fn).__name__ == "partial" else None
    if getattr(run, "__qualname__", "") == "Context.run":
        return getattr(run, "__self__", None)
    return None


def _task_attributes(work_item) -> dict:
    """thread.id, and the qualified name of what the work item calls (through functools.partial and
    Context.run, as asyncio.to_thread submits it) with its module as code.namespace."""
    fn = getattr(work_item, "fn", None)
    args = getattr(work_item, "args", ())
    if fn is None:  # Python >= 3.14: a (fn, args, kwargs) task
        task = getattr(work_item, "task", None)
        fn, args = (task[0], task[1]) if isinstance(task, tuple) and len(task) > 1 else (task, ())
    for _ in range(4):
        inner = getattr(fn, "func", None)
        if inner is not None and type(fn).__name__ == "partial":
            fn, args = inner, fn.args
        elif getattr(fn, "__qualname__", "") == "Context.run" and args:
            fn, args = args[0], args[1:]
        else:
            break
    attributes = {"thread.id": get_native_id(),
                  "code.function": str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)}
    module = getattr(fn, "__module__", None)
    if module and type(module) is str:
        attributes["code.namespace"] = module
    return attributes
