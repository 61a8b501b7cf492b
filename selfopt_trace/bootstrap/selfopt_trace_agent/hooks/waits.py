"""What a thread waits on: a `wait` span for every call that blocked on a child process, a thread or a future.

A wait span (category `wait`, kind INTERNAL) is named after the API waited in (`Popen.wait`,
`Thread.join`, `Future.result`, ...) and says what it waited on in `selfopt_trace.wait.on`: the
span ids of the child processes' `subprocess`/`multiprocessing`/`fork` spans, of the threads'
`thread` spans, of the futures' `task` spans (and of the unit that notified a threading.Condition
wait: hooks/threads.py). An unknown target (an untraced child, a thread
started before the agent) leaves the list empty and says what is known (`process.pid`,
`thread.name`).

Cost: the clock is read before and after the original call; only a call that blocked for
config.WAIT_THRESHOLD_NS or more is recorded (one formatted X record, no Span object). A wait
inside another wait on the same thread (communicate -> wait -> os.waitpid, Pool.map -> get ->
wait) is part of the outer one: a set of thread ids says which threads are inside a wait, as in
timed.py.

The waited call raises exactly what it raises untraced, with the same traceback: on Python >= 3.11
the wrappers' frames are taken off the traceback before the exception goes on (a program that
prints the traceback of a failed future sees the same lines; tracer.strip_own_frames). A failure
of the hook itself is a diagnostic, never an exception in the program.

This module also hooks concurrent.futures (Future.result/exception, wait, as_completed, and
ProcessPoolExecutor.submit), multiprocessing.pool results, Pool.join and a pool worker's reads of its next task, asyncio subprocesses, and
asyncio's futures over a pool's (run_in_executor, to_thread); Popen,
os.wait*, Thread.join and multiprocessing's Process.join are wrapped in their own hook modules
with the helpers below.
"""

from __future__ import annotations

import os
from _thread import get_ident
from _functools import partial  # functools.py imports collections, operator, types: ~3.4 ms
from time import time_ns

from .. import config, lazy, tracer
from ..tracer import thread_cpu_ns

THRESHOLD_NS = config.WAIT_THRESHOLD_NS
SPAN = "_selfopt_trace_span"  # on a Popen, a multiprocessing Process, a Thread, a Future: the id of its span
_POOL = "_selfopt_trace_pool"  # on a ProcessPoolExecutor's Future: a weak reference to the executor
ON = "selfopt_trace.wait.on"

# The threads inside a wait (see the module docstring); cleared in a forked child.
busy: set = set()
# Thread id -> {pid or thread span id: when} of the polls since its last sleep that found a child of
# ours (a WNOHANG wait: hooks/os_.py) or a thread (Thread.is_alive: hooks/threads.py) running: a sleep
# that follows them at once is a poll loop's, a wait on them (hooks/time_.py).
polled: dict = {}
POLL_GAP_NS = 5_000_000  # a sleep begun this long after a poll or sooner follows it
# The pids of children of ours this process asked to end (os.kill with a signal that ends a process
# by default: Popen.terminate and kill, a supervisor stopping its workers) and not seen reaped yet. A
# sleep meanwhile waits for their exit (hooks/time_.py): gunicorn's arbiter sleeps until its workers
# are gone, which was its `sleeps`, the workers' graceful exit nobody's. Filled by spawn.py's os.kill.
signalled: set = set()


def note_poll(key) -> None:
    """A poll of this thread's found `key` (a child's pid, a thread's span id) running, now."""
    seen = polled.get(get_ident())
    if seen is None or len(seen) > 64:  # polls that no sleep followed: children long reaped
        seen = polled[get_ident()] = {}
    seen[key] = time_ns()

# Waits that did not block are counted as tracer overhead at the calibrated cost of one: timed.py's
# way (a clock read to time each would cost as much as the bookkeeping it times). The first
# CALIBRATION are timed; then their trimmed mean (tracer.cost_per_call). Waits recorded the common
# way (one target, `_write`) are counted by the flush that writes them (tracer.formatted_cost), at
# the trimmed mean of the first CALIBRATION of them timed (the estimate so far until then), in the
# thread's CPU time: beside a thread spinning on the GIL each record's wall time held a hand-over of
# the GIL (5 ms, the switch interval), and a program that sleeps 1 ms in a loop beside a CPU-bound
# thread was told the tracer took 82 % of its wall time.
CALIBRATION = tracer.CALIBRATION
_fast = tracer.counted_overhead()
_fast_samples: list = []
_recorded_samples: list = []


def _calibrate(spent_ns: int, cell: list = _fast, samples: list = _fast_samples) -> None:
    tracer.add_overhead(spent_ns)
    samples.append(spent_ns)
    if len(samples) >= CALIBRATION:
        # What was timed is the part after the call; the part before it costs about as much.
        cell[1] = 2 * tracer.cost_per_call(samples)


def not_blocked(t1: int) -> None:
    """Account a wait that returned at once (called right after its clock read)."""
    if _fast[1]:
        _fast[0] += 1
    else:
        _calibrate(time_ns() - t1)


# True while recorded waits still have work after their append: timing the first CALIBRATION, or
# starting the flusher thread (a record made nothing else in this process yet; a forked child).
_settling = True


def _settle(cpu0: int) -> None:
    """After a recorded wait's append (see _settling), the thread's CPU clock read before its record
    was made. Never raises but the program's own exceptions (tracer.raise_if_programs)."""
    global _settling
    try:
        if not tracer._flusher_started:
            tracer._start_flusher()
        samples = _recorded_samples
        if len(samples) < CALIBRATION:
            samples.append(thread_cpu_ns() - cpu0)
            tracer.formatted_cost[1] = tracer.cost_per_call(samples)
        _settling = len(samples) < CALIBRATION or not tracer._flusher_started
    except Exception as exc:
        tracer.raise_if_programs(exc)


def _after_fork_in_child() -> None:
    global _settling
    busy.clear()
    running.clear()
    polled.clear()
    signalled.clear()
    _settling = True


os.register_at_fork(after_in_child=_after_fork_in_child)


_ON_PREFIX = '{"%s":[' % ON
# The common record (one span waited on, no error): one f-string with its constant parts written
# out (the attributes' {"selfopt_trace.wait.on":["..."]} included) and the name, kind and
# category built once per wait's name (head_of), appended to tracer.formatted (docs/benchmarks.md,
# "Waits"). tests/agent/test_waits.py checks it against the general encoder.
_heads: dict = {}
_current = tracer.current
_formatted = tracer.formatted  # one list for the process's life (emptied in place)
_add = _formatted.append
FLUSH_RECORDS = tracer.FLUSH_RECORDS


def head_of(name: str) -> str:
    """The part of a wait's X record between its trace id and its start: name, kind, category."""
    text = _heads.get(name)
    if text is None:
        text = _heads[name] = "\t%s\t%s\twait\t" % (tracer.spanfile.clean(name), tracer.INTERNAL)
    return text


def _write(head: str, t0: int, t1: int, on_id: str) -> None:
    """The X record of a wait on one span, UNSET, under the current span (tracer.record_line's way).

    Its cost is counted by the flush that writes it (tracer.formatted_cost). Inlined in
    _record_targets and in method()'s leaf wrapper (keep the three the same: tests/agent/test_waits.py).
    """
    write_under(_current() or tracer._root, head, t0, t1, f'{{"selfopt_trace.wait.on":["{on_id}"]}}')


def write_under(parent, head: str, t0: int, t1: int, attributes: str, cpu0: int = 0) -> None:
    """An UNSET X record under `parent` (None: the remote parent), formatted at once: a flush only
    when the buffer is full (the flusher thread keeps time). Also time_.py's sleeps. `cpu0`: the
    thread's CPU clock where the recorder began (while _settling), else read here."""
    if _settling and not cpu0:
        cpu0 = thread_cpu_ns()
    if parent is None:
        parent_id, trace_id = tracer._remote_parent_id, tracer._trace_id
    else:
        if parent.deferred:
            tracer._mark_kept(parent)
        parent_id, trace_id = parent.span_id, parent.trace_id
    _add(f'X\t{next(tracer._id_text)}\t{parent_id}\t{trace_id}{head}{t0}\t{t1}\tUNSET\t{attributes}\t.\n')
    if len(_formatted) > FLUSH_RECORDS:
        tracer.flush(blocking=False)
    if _settling:
        _settle(cpu0)


def record(name: str, t0: int, t1: int, on: list, extra: dict | None = None, exc: BaseException | None = None) -> None:
    """The wait span: `on` the ids waited on (falsy ones dropped), `extra` what else is known. Never raises."""
    try:
        if not tracer._enabled:
            return
        if extra is None and exc is None:  # the common cases: no encoder
            if len(on) == 1 and on[0]:
                _write(head_of(name), t0, t1, on[0])
                return
            tracer.record_line(name, "wait", t0, t1,
                               _ON_PREFIX + ",".join([f'"{span_id}"' for span_id in on if span_id]) + "]}")
        else:
            attrs = {ON: [span_id for span_id in on if span_id]}
            if extra:
                attrs.update(extra)
            if exc is not None:
                attrs["error.type"] = _type_name(exc)
            tracer.record_line(name, "wait", t0, t1, tracer.encode(attrs))
        tracer.add_overhead(time_ns() - t1)
    except Exception as error:
        tracer.exception_diagnostic("wait_failed:" + name, error)


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    module = getattr(kind, "__module__", "")
    return kind.__qualname__ if module == "builtins" else "%s.%s" % (module, kind.__qualname__)


def method(original, name: str, targets, capture=None, outer: bool = False, ready=None, own: bool = False,
           on_child: bool = False):
    """A wrapper of the blocking method `original(self, timeout=None)`: a wait span when it blocked.

    `targets(self, captured)` -> (span ids waited on, extra attributes or None), asked only when
    the call is recorded; `captured` is what `capture(self)` returned before the call (for what
    the call itself forgets, like a pool result its pool), else None.
    `own`: the span waited on is the one stored on `self` (SPAN: a Thread, a Popen, a Process, a
    thread pool's Future) when it is there; `targets` is asked only when it is not.
    `outer`: other waits run inside this one (Popen.wait -> os.waitpid): it marks its thread busy.
    A leaf wait only looks (no thread id at all while no thread is inside a wait).
    `on_child` (outer waits only): a wait on a child process, which may last: the flusher thread
    starts first (tracer.before_block).
    `ready(self)`: True when the call cannot block (a Popen whose returncode is known, a finished
    future or thread): the original is called at once, not timed. Cheaper than two clock reads,
    and exact: a call that returns at once is never recorded, however late a loaded machine
    lets it return.

    The wrappers take the one `timeout` parameter every wrapped wait has rather than *args and
    **kwargs: packing those cost 1,300 more instructions per call (callgrind), a third of the
    wrapper's cost.
    """
    threshold = THRESHOLD_NS
    fast = _fast
    text = head_of(name)

    if not outer:
        def wrapper(self, timeout=None):
            if busy and get_ident() in busy or ready is not None and ready(self):  # part of an outer wait, or done
                try:
                    return original(self, timeout)
                except BaseException as exc:
                    tracer.strip_own_frames(exc)
                    raise
            t0 = time_ns()
            try:
                result = original(self, timeout)
            except BaseException as exc:
                t1 = time_ns()
                if t1 - t0 >= threshold:
                    _record_targets(text, name, t0, t1, self, targets, None, exc, own)
                tracer.strip_own_frames(exc)
                raise
            t1 = time_ns()
            if t1 - t0 >= threshold:
                try:
                    on_id = own and self.__dict__.get(SPAN)
                    if on_id and tracer._enabled:  # _write, inlined: the most frequent waits (Thread.join, Future.result)
                        cpu0 = thread_cpu_ns() if _settling else 0
                        parent = _current() or tracer._root
                        if parent is None:
                            parent_id, trace_id = tracer._remote_parent_id, tracer._trace_id
                        else:
                            if parent.deferred:
                                tracer._mark_kept(parent)
                            parent_id, trace_id = parent.span_id, parent.trace_id
                        _add(f'X\t{next(tracer._id_text)}\t{parent_id}\t{trace_id}{text}{t0}\t{t1}'
                             f'\tUNSET\t{{"selfopt_trace.wait.on":["{on_id}"]}}\t.\n')
                        if len(_formatted) > FLUSH_RECORDS:
                            tracer.flush(blocking=False)
                        if _settling:
                            _settle(cpu0)
                        return result
                except Exception as exc:  # _record_targets says what failed
                    tracer.raise_if_programs(exc)
                _record_targets(text, name, t0, t1, self, targets, None, None, own)
            elif fast[1]:
                fast[0] += 1
            else:
                _calibrate(time_ns() - t1)
            return result

        return identity(wrapper, original)

    def outer_wrapper(self, timeout=None):
        if ready is not None and ready(self) or busy and get_ident() in busy:  # done, or part of an outer wait
            try:
                return original(self, timeout)
            except BaseException as exc:
                tracer.strip_own_frames(exc)
                raise
        thread = get_ident()
        try:
            busy.add(thread)  # in the try: an exception of the program's right after it lets it go too
            captured = capture(self) if capture is not None else None
            t0 = time_ns()
            if on_child and not tracer._flusher_started:
                tracer.before_block()  # in the wait's span: the program is in its call
            try:
                result = original(self, timeout)
            except BaseException as exc:
                t1 = time_ns()
                if t1 - t0 >= threshold:
                    _record_targets(text, name, t0, t1, self, targets, captured, exc, own)
                tracer.strip_own_frames(exc)
                raise
            t1 = time_ns()
        finally:
            busy.discard(thread)
        if t1 - t0 >= threshold:
            _record_targets(text, name, t0, t1, self, targets, captured, None, own)
        elif fast[1]:
            fast[0] += 1
        else:
            _calibrate(time_ns() - t1)
        return result

    return identity(outer_wrapper, original)


def communicate_method(original, name: str, targets, own: bool = False):
    """Like an `outer` method(), for `original(self, input=None, timeout=None)` (Popen.communicate)."""
    threshold = THRESHOLD_NS
    fast = _fast
    text = head_of(name)

    def wrapper(self, input=None, timeout=None):
        thread = get_ident()
        if thread in busy:
            try:
                return original(self, input, timeout)
            except BaseException as exc:
                tracer.strip_own_frames(exc)
                raise
        try:
            busy.add(thread)  # in the try: an exception of the program's right after it lets it go too
            t0 = time_ns()
            if not tracer._flusher_started:
                tracer.before_block()  # in the wait's span: the program is in its call
            try:
                result = original(self, input, timeout)
            except BaseException as exc:
                t1 = time_ns()
                if t1 - t0 >= threshold:
                    _record_targets(text, name, t0, t1, self, targets, None, exc, own)
                tracer.strip_own_frames(exc)
                raise
            t1 = time_ns()
        finally:
            busy.discard(thread)
        if t1 - t0 >= threshold:
            _record_targets(text, name, t0, t1, self, targets, None, None, own)
        elif fast[1]:
            fast[0] += 1
        else:
            _calibrate(time_ns() - t1)
        return result

    return identity(wrapper, original)


def _record_targets(head: str, name: str, t0: int, t1: int, owner, targets, captured, exc, own: bool) -> None:
    """The wait span of a wrapped method. The common case inline: no error, one known target (the
    owner's own span, or the one `targets` names), one f-string (`_write`'s)."""
    cpu0 = thread_cpu_ns() if _settling else 0
    try:
        on_id = exc is None and own and owner.__dict__.get(SPAN)
        if not on_id:
            on, extra = targets(owner, captured)
            if extra is not None or exc is not None or len(on) != 1 or not on[0]:
                record(name, t0, t1, on, extra, exc)
                return
            on_id = on[0]
        if tracer._enabled:  # _write, inlined: one call less for Popen.wait, Process.join, communicate
            parent = _current() or tracer._root
            if parent is None:
                parent_id, trace_id = tracer._remote_parent_id, tracer._trace_id
            else:
                if parent.deferred:
                    tracer._mark_kept(parent)
                parent_id, trace_id = parent.span_id, parent.trace_id
            _add(f'X\t{next(tracer._id_text)}\t{parent_id}\t{trace_id}{head}{t0}\t{t1}'
                 f'\tUNSET\t{{"selfopt_trace.wait.on":["{on_id}"]}}\t.\n')
            if len(_formatted) > FLUSH_RECORDS:
                tracer.flush(blocking=False)
            if _settling:
                _settle(cpu0)
        return
    except Exception as error:
        tracer.exception_diagnostic("wait_failed:" + name, error)
    record(name, t0, t1, [], None, exc)


def identity(wrapper, original):
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        try:
            setattr(wrapper, attribute, getattr(original, attribute))
        except (AttributeError, TypeError) as exc:
            tracer.raise_if_programs(exc)
    return tracer.unbound(tracer.own_wrapper(wrapper, original), original)


def wrap(owner, name: str, make) -> None:
    """owner.name = make(owner.name), once (what a lazy.py stand-in stands for, if one is there)."""
    original = lazy.original(owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name))
    if not tracer.is_own_wrapper(original):
        setattr(owner, name, tracer.unbound(tracer.own_wrapper(make(original), original), original))


def span_of(thing) -> str:
    """The span id stored on a Popen, Process, Thread or Future (or "")."""
    try:
        return thing.__dict__.get(SPAN) or ""
    except AttributeError as exc:
        tracer.raise_if_programs(exc)
        return ""


# --- concurrent.futures ---------------------------------------------------------------------------

def install(target: str, module) -> None:
    if target == "concurrent.futures._base":
        _install_futures(module)
    elif target == "concurrent.futures.process":
        wrap(module.ProcessPoolExecutor, "submit", _process_pool_submit)
        wrap(module, "_process_worker", lambda original: _pool_worker(original, "Queue.get"))
    elif target == "multiprocessing.pool":
        _install_pool(module)
    elif target == "asyncio.subprocess":
        _install_asyncio(module)
    elif target == "asyncio.futures":
        wrap(module, "wrap_future", _wrap_future)


def _install_futures(module) -> None:
    future = module.Future
    settled = frozenset((module.FINISHED, module.CANCELLED, module.CANCELLED_AND_NOTIFIED))

    def ready(future) -> bool:  # result() and exception() return or raise at once
        return future._state in settled

    # outer: the threading.Condition wait inside is part of it (hooks/threads.py)
    wrap(future, "result", lambda original: method(original, "Future.result", _future_targets, _future_workers,
                                                   outer=True, ready=ready, own=True))
    wrap(future, "exception", lambda original: method(original, "Future.exception", _future_targets,
                                                      _future_workers, outer=True, ready=ready, own=True))
    done = (module.FINISHED, module.CANCELLED_AND_NOTIFIED)
    wrap(module, "wait", lambda original: _futures_wait(original, done, module))
    wrap(module, "as_completed", lambda original: _as_completed(original, done))


def _future_workers(future) -> list | None:
    """`capture` of a wait on a process pool's future: its workers at the wait's start. With
    max_tasks_per_child the worker that runs the task may exit and be replaced before the wait ends:
    named at the end only, the wait named the replacement, a child not started yet (a 100 ms task's
    wait read as 413 ms of spawn overhead)."""
    state = future.__dict__
    if state.get(SPAN) or state.get(_POOL) is None:
        return None
    on: list = []
    _add_future(future, on, set())
    return on


def _future_targets(future, captured) -> tuple:
    on: list = list(captured or ())
    _add_future(future, on, set())
    return list(dict.fromkeys(on)), None


def _add_future(future, on: list, pools: set) -> None:
    """The span ids a wait on `future` is a wait on: its task's, or its process pool's workers'."""
    state = future.__dict__
    span_id = state.get(SPAN)
    if span_id:
        on.append(span_id)
        return
    pool = state.get(_POOL)
    if pool is None or id(pool) in pools:
        return
    pools.add(id(pool))
    executor = pool()
    processes = getattr(executor, "_processes", None) if executor is not None else None
    if processes:
        on.extend([span_of(process) for process in list(processes.values())])


def _futures_wait(original, done: tuple, module):
    """concurrent.futures.wait: a wait on the futures not done when it was called.

    A call whose condition already holds returns at once: it is not timed.
    """
    threshold = THRESHOLD_NS
    first_completed, first_exception = module.FIRST_COMPLETED, module.FIRST_EXCEPTION

    def wait(fs, timeout=None, return_when=module.ALL_COMPLETED):
        try:
            if busy and get_ident() in busy:
                return original(fs, timeout, return_when)
            try:
                fs = set(fs)
                pending = [future for future in fs if future._state not in done]
                settled = not pending or (
                    len(pending) < len(fs) and (return_when == first_completed or return_when == first_exception and any(
                        future._exception is not None for future in fs if future._state in done)))
            except Exception as exc:  # not futures: the original says what is wrong
                tracer.raise_if_programs(exc)
                return original(fs, timeout, return_when)
            if settled:
                return original(fs, timeout, return_when)
        except BaseException as exc:
            tracer.strip_own_frames(exc)
            raise
        thread = get_ident()
        t0 = time_ns()
        try:
            busy.add(thread)  # the threading.Condition wait inside is part of this one (in the try: let go
            result = original(fs, timeout, return_when)  # after an exception of the program's right after it too)
        except BaseException as exc:
            t1 = time_ns()
            busy.discard(thread)
            if t1 - t0 >= threshold:
                _record_futures("futures.wait", t0, t1, pending, exc)
            tracer.strip_own_frames(exc)
            raise
        t1 = time_ns()
        busy.discard(thread)
        if t1 - t0 >= threshold:
            _record_futures("futures.wait", t0, t1, pending, None)
        else:
            not_blocked(t1)
        return result

    return identity(wait, original)


def _record_futures(name: str, t0: int, t1: int, futures, exc) -> None:
    on: list = []
    try:
        pools: set = set()
        for future in futures:
            _add_future(future, on, pools)
    except Exception as error:
        tracer.exception_diagnostic("wait_failed:" + name, error)
    record(name, t0, t1, on, None, exc)


def _as_completed(original, done: tuple):
    """as_completed: each next() that blocks is a wait on the futures not yet handed out.

    Of those, it names the one it yields, the thread-pool tasks running when it ends, and the
    workers of the process pools among them: a queued future did nothing during the wait, and
    naming thousands of them at every step would cost quadratic time. Finding them costs
    O(threads running tasks + process pools), not O(futures).
    """
    threshold = THRESHOLD_NS

    def as_completed(fs, timeout=None):
        fs = set(fs)
        remaining = set(fs)
        pools: dict = {}  # one future per process pool: it stands for the pool's workers
        try:
            for future in fs:
                pool = future.__dict__.get(_POOL)
                if pool is not None:
                    pools.setdefault(pool, future)
        except Exception as exc:
            tracer.raise_if_programs(exc)
        # The first steps hand out the futures done by then (the first also sets up a waiter on
        # every future): they do not wait.
        try:
            settled = sum([1 for future in fs if future._state in done])
        except Exception as exc:  # not futures: the original says what is wrong
            tracer.raise_if_programs(exc)
            settled = len(fs)
        inner = original(fs, timeout)
        try:
            while True:
                thread = get_ident()
                nested = settled > 0 or thread in busy  # done already, or inside an outer wait
                settled -= 1
                t0 = time_ns()
                try:
                    if not nested:  # the threading.Condition wait inside is part of this one (in the try: let
                        busy.add(thread)  # go after an exception of the program's right after it too)
                    future = next(inner)
                except StopIteration:  # the loop's end, not a failure: no check on this normal path
                    return
                except BaseException as exc:
                    t1 = time_ns()
                    if t1 - t0 >= threshold and not nested:
                        _record_futures("futures.as_completed", t0, t1, _waited(remaining, None, pools, t1), exc)
                    tracer.strip_own_frames(exc)
                    raise
                finally:
                    if not nested:
                        busy.discard(thread)
                t1 = time_ns()
                if t1 - t0 >= threshold and not nested:
                    _record_futures("futures.as_completed", t0, t1, _waited(remaining, future, pools, t1), None)
                elif not nested:
                    not_blocked(t1)
                remaining.discard(future)
                yield future
        finally:
            inner.close()

    return identity(as_completed, original)


# Futures whose thread-pool task is running now, with its task span (hooks/threads.py keeps it):
# what a wait on many futures is waiting on at this moment, without looking at every future.
running: dict = {}


def _waited(remaining: set, done, pools: dict, t1: int) -> list:
    """The futures a blocking next() of as_completed waited on (see _as_completed)."""
    futures = [done] if done is not None else []
    futures += [future for future, span in list(running.items())
                if span.start_ns < t1 and future in remaining and future is not done]  # not started since
    futures += pools.values()
    return futures


def _process_pool_submit(original):
    from _weakref import ref

    def submit(self, *args, **kwargs):
        try:
            future = original(self, *args, **kwargs)
            try:
                future.__dict__[_POOL] = ref(self)
            except Exception as exc:
                tracer.raise_if_programs(exc)
            return future
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return identity(submit, original)


# --- multiprocessing.pool ------------------------------------------------------------------------

def _install_pool(module) -> None:
    result = module.ApplyResult
    wrap(result, "get", lambda original: method(original, "AsyncResult.get", _pool_targets, _watch_pool, outer=True,
                                                ready=result.ready))
    wrap(result, "wait", lambda original: method(original, "AsyncResult.wait", _pool_targets, _watch_pool, outer=True,
                                                 ready=result.ready))
    iterator = module.IMapIterator
    original_next = iterator.__dict__.get("next")
    wrap(iterator, "next", lambda original: method(original, "IMapIterator.next", _pool_targets, _watch_pool,
                                                   outer=True))
    if original_next is not None and iterator.__dict__.get("__next__") is original_next:
        iterator.__next__ = iterator.next
    wrap(module, "worker", lambda original: _pool_worker(original, "SimpleQueue.get"))
    wrap(module.Pool, "join", _pool_join)
    _wrap_join_exited(module.Pool)


def _pool_join(original):
    """Pool.join after close(): a wait on the pool's workers, as a wait on its results is. Inside it
    the pool's thread waits for the tasks left (`connection.wait` on the workers' sentinels, where
    no hook sees it), and the joins of its threads and workers are one wait with it. Before, the
    main thread's join of that thread waited on a thread waiting on nothing traced: `apply_async`
    four times, then `close(); join()`, read the workers' 300 ms as untraced waits."""
    timed = method(lambda pool, timeout: original(pool), "Pool.join", _pool_targets, _watch_workers, outer=True,
                   on_child=True)

    def join(self):
        return timed(self)

    return identity(join, original)


def _watch_workers(pool):
    """`capture` of a wait on a pool itself (Pool.join): a watch of its workers, as _watch_pool's."""
    workers = getattr(pool, "_pool", None)
    if type(workers) is not list:
        return pool
    try:
        return _PoolWatch(pool, workers)
    except Exception as exc:  # _weakref missing: the workers at the end only
        tracer.raise_if_programs(exc)
        return pool


def _pool_worker(original, read: str):
    """multiprocessing.pool.worker or concurrent.futures.process._process_worker, the loop of a process
    pool's worker: its reads of the next task (`inqueue.get` or `call_queue.get`, a pipe read under
    the queue's lock) are waits, named `read`. The breakdown gives a wait on the pool to the workers
    not in such a read: a worker waiting for a task is not what its pool's caller waits on.

    Between tasks a worker blocks on that pipe, off the CPU, where no other hook sees it: the CPU
    sampler's readings (10 ms or more) then spread a task's CPU over the wait before it, so around
    the edge of a wait on the pool (the tasks start as it starts) the workers read as idle while
    they ran (tests/accuracy, pool: untraced waits +1.1 ms median, up to 2.2). A recorded wait marks
    that time off the CPU, where the breakdown does not put a reading's CPU. It waits on the
    parent's task handler, nothing traced here: an untraced wait. The wrapper is the module's
    `worker`, which a pool pickles by name for a spawned worker: it runs in the worker once its
    agent has hooked the module. A ThreadPool's queue (a C SimpleQueue) takes no attribute: its
    threads' reads are not recorded.
    """

    def worker(inqueue, *args, **kwargs):
        try:
            # a process pool's queue; a ThreadPool's C SimpleQueue takes no attribute
            if hasattr(inqueue, "__dict__"):
                try:
                    inqueue.get = _task_get(inqueue.get, read)
                except Exception as exc:
                    tracer.exception_diagnostic("hook_failed:" + original.__module__ + "." + original.__name__, exc)
            return original(inqueue, *args, **kwargs)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return identity(worker, original)


_NOTHING_ON = '{"selfopt_trace.wait.on":[]}'


def _task_get(get, read: str):
    """A pool worker's `get()` of its next task: a wait on nothing traced when it blocked (method()'s
    leaf wrapper, for a call without arguments; the record is _write's with no target).

    The read that ends the worker (the pool's sentinel, None) is recorded too: the worker's idle
    tail, from its last task's end to the pool's close. The critical path takes, of the workers
    alive at the end of a wait on the pool, the one whose work ended last, a worker in such a read
    having worked until it began (queries/critical_path.sql); without this read, the workers of a
    pool's last map tied, and the span id decided.
    """
    threshold = THRESHOLD_NS
    fast = _fast
    head = head_of(read)

    def timed_get(*args, **kwargs):
        t0 = time_ns()
        try:
            task = get(*args, **kwargs)
        except BaseException as exc:
            tracer.strip_own_frames(exc)
            raise
        t1 = time_ns()
        if t1 - t0 < threshold:
            if fast[1]:
                fast[0] += 1
            else:
                _calibrate(time_ns() - t1)
        elif tracer._enabled:
            write_under(_current() or tracer._root, head, t0, t1, _NOTHING_ON)
        return task

    return identity(timed_get, get)


# A wait on a pool's results names every worker of the pool that lived while it lasted, not only those
# alive at its end: with `maxtasksperchild` each worker exits after its tasks, and the pool's thread
# takes it out of `pool._pool` (Pool._join_exited_workers) and starts another. Named at the end only,
# a Pool(2, maxtasksperchild=1).map of 4 tasks of 0.2 s named the 2 workers of the second half: the
# first half's 200 ms read as the spawns' overhead, not the children's work (child work 206 of
# 400 ms). So while such a wait lasts it watches its pool's list (_PoolWatch, made by `capture`
# before the call): the pool's thread, before each clean-up, adds the workers the list holds to every
# watch of that list (taken out or not: it cannot tell without reaping them itself), and the wait's
# targets are those and the list's workers at its end. ProcessPoolExecutor's futures are waited one at
# a time and name its workers at each future's end (_add_future). Nothing is kept once no wait runs:
# a watch leaves _watches as it is freed (a weak reference's callback), with the wait's frame.
_watches: dict = {}  # weak reference to a _PoolWatch -> (the pool's worker list, the watch's `gone`)


class _PoolWatch:
    __slots__ = ("pool", "gone", "__weakref__")

    def __init__(self, pool, workers):
        from _weakref import ref

        self.pool = pool
        self.gone: dict = {}  # span ids (ordered, once each) of workers seen in the list meanwhile
        _watches[ref(self, _unwatch)] = (workers, self.gone)


def _unwatch(reference) -> None:
    _watches.pop(reference, None)


def _watch_pool(result):
    """`capture` of a wait on a pool's result: a watch of its pool's workers, or the pool (no list)."""
    return _watch_workers(getattr(result, "_pool", None))  # a result forgets its pool once it is set


def _wrap_join_exited(pool_class) -> None:
    """Pool._join_exited_workers(pool), a staticmethod the pool's thread calls before it replaces the
    workers that exited: their span ids go to the watches of that list first (see _PoolWatch)."""
    found = pool_class.__dict__.get("_join_exited_workers")
    if not isinstance(found, staticmethod) or tracer.is_own_wrapper(found.__func__):
        return
    original = found.__func__

    def join_exited_workers(pool):
        if _watches:
            try:
                seen = None
                for workers, gone in list(_watches.values()):
                    if workers is pool:
                        if seen is None:
                            seen = [span_of(worker) for worker in list(pool)]
                        for span_id in seen:
                            if span_id:
                                gone[span_id] = None
            except Exception as exc:
                tracer.exception_diagnostic("hook_failed:Pool._join_exited_workers", exc)
        return original(pool)

    pool_class._join_exited_workers = staticmethod(identity(join_exited_workers, original))


def _pool_targets(result, captured) -> tuple:
    """A pool's workers: processes (their multiprocessing spans) or, for a ThreadPool, threads: those
    its list held at some time during the wait (see _PoolWatch) and those it holds at its end."""
    if type(captured) is _PoolWatch:
        on = dict(captured.gone)
        pool = captured.pool
    else:
        on, pool = {}, captured
    for worker in list(getattr(pool, "_pool", None) or ()):
        on[span_of(worker)] = None
    return list(on), None


# --- asyncio subprocesses -------------------------------------------------------------------------

_IN_WAIT = "_selfopt_trace_waiting"  # on an asyncio Process while one of its waits is being timed


def _install_asyncio(module) -> None:
    process = module.Process
    wrap(process, "wait", lambda original: _async_wait(original, "asyncio.Process.wait"))
    wrap(process, "communicate", lambda original: _async_wait(original, "asyncio.Process.communicate"))


def _async_wait(original, name: str):
    """The await's interval. Other tasks run meanwhile, so nesting is told per Process, not per thread."""
    threshold = THRESHOLD_NS
    text = head_of(name)

    async def wrapper(self, *args, **kwargs):
        state = self.__dict__
        if state.get(_IN_WAIT) or self.returncode is not None:  # inside the other wait, or exited
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                tracer.strip_own_frames(exc)
                raise
            _exit_seen(self)
            return result
        state[_IN_WAIT] = True
        try:
            t0 = time_ns()
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                t1 = time_ns()
                if t1 - t0 >= threshold:
                    _record_targets(text, name, t0, t1, self, _asyncio_targets, None, exc, False)
                tracer.strip_own_frames(exc)
                raise
            t1 = time_ns()
        finally:
            state[_IN_WAIT] = False
        if t1 - t0 >= threshold:
            _record_targets(text, name, t0, t1, self, _asyncio_targets, None, None, False)
        else:
            not_blocked(t1)
        _exit_seen(self)
        return result

    return identity(wrapper, original)


def _exit_seen(process) -> None:
    """A child reaped where no hook sees it (uvloop's libuv) keeps its span open until our exit: its
    exit code, known here, goes on that span."""
    from . import spawn  # loaded with the child's start

    child = spawn._children.get(process.pid) if process.returncode is not None else None
    if child is not None:
        child[1]["process.exit.code"] = process.returncode


def _wrap_future(original):
    """asyncio.wrap_future, through which loop.run_in_executor and asyncio.to_thread hand work to a
    pool: the asyncio future's life, from the call until it is done, is a wait on the pool's task
    (its span, or a process pool's workers). Nothing blocks, the loop runs other tasks meanwhile:
    it is recorded when the future is done, by a callback that runs in the context of the call (the
    span of the task that awaits it)."""
    def wrap_future(future, *, loop=None):
        wrapped = original(future, loop=loop)
        try:
            if wrapped is not future and tracer._enabled:  # (an asyncio future comes back as it is)
                on: list = []
                _add_future(future, on, set())
                t0 = time_ns()
                task = running.get(future)  # begun already: a worker took the GIL for its switch interval
                wrapped.add_done_callback(partial(_pool_task_done, min(t0, task.start_ns) if task else t0, on))
        except Exception as error:
            tracer.exception_diagnostic("wait_failed:" + _POOL_TASK, error)
        return wrapped

    return identity(wrap_future, original)


_POOL_TASK = "asyncio.wrap_future"


def _pool_task_done(t0: int, on: list, future) -> None:
    t1 = time_ns()
    if t1 - t0 >= THRESHOLD_NS:
        record(_POOL_TASK, t0, t1, on)


def _asyncio_targets(process, captured) -> tuple:
    transport = getattr(process, "_transport", None)
    popen = transport.get_extra_info("subprocess") if transport is not None else None
    if popen is not None:
        span_id = span_of(popen)
    else:  # uvloop's transport has no Popen: its child's span by pid (libuv reaps it unseen)
        from . import spawn

        child = spawn._children.get(process.pid)
        span_id = child[0].span_id if child is not None else ""
    return [span_id], (None if span_id else {"process.pid": process.pid})
