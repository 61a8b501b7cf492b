"""Wrappers for calls that are spans when slow and sums when small (serialization, parsing).

A call shorter than SELFOPT_TRACE_SMALL_NS (default 100 us) is not a span: its count, time and
bytes are summed onto the enclosing span (`selfopt_trace.small.<name>.count|duration_ns|bytes`),
so json-heavy code stays fast and the totals stay exact. A longer call is a complete span with
its sizes, the Python type and the calling site. A call made inside another measured call on
the same thread (json.load -> json.loads, ast.parse -> compile, pydantic -> json) runs untouched:
it is part of the outer call and counts once.

Hot path (under 1 us, benchmarks/bench_serialization.py): a thread-id lookup (and the thread
entered and left where the call can run Python code), two clocks, a few dict operations; its own cost is charged to the
tracer's overhead at a calibrated constant (`_calibrate`). Sizes are what the
call hands us for free (the length of the str/bytes going in or coming out), never computed.
"""

from __future__ import annotations

import os
from _thread import get_ident
from time import time_ns

from .. import config, lazy, tracer

DEFAULT_SMALL_NS = 100_000
MARK = tracer.WRAPPER_MARK

# What a wrapped call's data argument and result are (for sizes and the Python type).
DUMP = 1   # object -> text/bytes: bytes_out = len(result), type of the data argument
LOAD = 2   # text/bytes -> object: bytes_in = len(data argument), type of the result
PARSE = 3  # source -> tree: bytes_in = len(data argument)

TEXT = (str, bytes, bytearray)  # the types whose len() is a size


# The threads inside a measured call. A measured call cannot await, so per thread is per asyncio
# task too; a set of thread ids costs less to enter and leave than a ContextVar's set and reset
# (~85 ns against ~130 ns here).
_busy: set = set()
_small_ns = -1


def small_ns() -> int:
    """The threshold, read once per process (after fork the value is inherited)."""
    global _small_ns
    if _small_ns < 0:
        try:
            _small_ns = max(0, int(float(os.environ.get(config.ENV_SMALL_NS) or DEFAULT_SMALL_NS)))
        except ValueError as exc:
            tracer.raise_if_programs(exc)
            _small_ns = DEFAULT_SMALL_NS
            tracer.diagnostic("bad_setting", "%s is not a number of nanoseconds" % config.ENV_SMALL_NS)
    return _small_ns


class Call:
    """What is known about a wrapped function before it is called (one per wrapper)."""

    __slots__ = ("name", "category", "library", "operation", "shape", "data_index", "data_name", "subject", "leaf")

    def __init__(self, name: str, category: str, library: str, operation: str, shape: int,
                 data_index: int = 0, data_name: str = "", subject=None, leaf: bool = False):
        self.name = name
        self.category = category
        self.library = library
        self.operation = operation
        self.shape = shape
        self.data_index = data_index  # position of the data argument (self/cls count); -1: keyword only
        self.data_name = data_name
        self.subject = subject  # (args, kwargs) -> the file or thing worked on, for spans only
        # Runs no Python code when called without keyword arguments (json.dumps(obj), compile):
        # nothing can nest inside, so the nesting flag need not be set (~0.1 us saved per call).
        self.leaf = leaf


def is_wrapped(function) -> bool:
    return getattr(function, MARK, False)


def identity(wrapper, original, where: tuple = ()):
    """Look like the original to pickle (by reference), inspect (via __wrapped__) and help().

    `where` is (module name, qualname) of the attribute the wrapper replaces: pickle finds a
    function by those, and must find the wrapper (`pickle.dumps` is `_pickle.dumps` untraced).
    """
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        try:
            setattr(wrapper, attribute, getattr(original, attribute))
        except (AttributeError, TypeError) as exc:
            tracer.raise_if_programs(exc)
    if where:
        wrapper.__module__, wrapper.__qualname__ = where
    wrapper.__wrapped__ = original
    setattr(wrapper, MARK, True)
    return tracer.unbound(wrapper, original)  # binds on no class where the original does not (pickle.dumps)


def measured(original, call: Call, where: tuple = ()):
    """A wrapper of `original` that records each call as a span or a sum."""
    busy = _busy
    current = tracer._current
    small = small_ns()
    shape = call.shape
    index = call.data_index
    name = call.data_name
    key = call.name
    leaf = call.leaf

    def wrapper(*args, **kwargs):
        try:
            thread = get_ident()
            if thread in busy:
                return original(*args, **kwargs)
            entered = not (leaf and not kwargs)
            try:
                if entered:  # in the try: let go after an exception of the program's right after it too
                    busy.add(thread)
                t0 = time_ns()
                try:
                    result = original(*args, **kwargs)
                except BaseException as exc:
                    finish(call, args, kwargs, None, exc, t0, time_ns(), small)
                    raise
                t1 = time_ns()
                spent = t1 - t0
                if spent >= small:
                    finish(call, args, kwargs, result, None, t0, t1, small)
                    return result
                try:  # the fast path, inline (a call costs ~1,500 instructions; parsing.py's compile has a copy)
                    if shape == DUMP:
                        size = len(result) if type(result) in TEXT else 0
                    else:
                        data = args[index] if len(args) > index >= 0 else kwargs.get(name)
                        size = len(data) if type(data) in TEXT else 0
                    span = current.get() or tracer._root
                    if span is not None:
                        if span.deferred or span.end_ns:  # where sums go: the last call's, if under the same frame
                            last, target = _last_target
                            span = target if span is last and not target.end_ns else _sum_target() or span
                        sums = span.sums
                        if sums is None:
                            span.sums = sums = {}
                        entry = sums.get(key)
                        if entry is None:
                            sums[key] = [1, spent, size]
                        else:
                            entry[0] += 1
                            entry[1] += spent
                            entry[2] += size
                    if _fast_path[0] & _SAMPLE_MASK:  # 0 while calibrating: every call is timed
                        _fast_path[0] += 1  # tracer overhead, counted: the hot path
                    else:
                        _calibrate(time_ns() - t1)
                except Exception as exc:  # never into the program
                    tracer.exception_diagnostic("measure_failed:" + key, exc)
                return result
            finally:
                if entered:
                    busy.discard(thread)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return identity(wrapper, original, where)


# What the fast path's bookkeeping costs, measured with a clock on the first summed calls of the
# process, then on one call in tracer.SAMPLE_EVERY (tracer.calibrate, tracer.sampled: a clock read
# costs as much as the bookkeeping it would time, ~0.1 us each on a VM).
_fast_path = tracer.counted_overhead()  # [calls, their cost per call in ns once calibrated]
_fast_path_samples: list = []
# calls & _SAMPLE_MASK: not 0 for the calls to count. The calls are 0 until calibrated (tracer.calibrate
# counts none), then every SAMPLE_EVERY-th is timed: one test where two were.
_SAMPLE_MASK = tracer.SAMPLE_EVERY - 1


def _calibrate(spent_ns: int) -> None:
    if _fast_path[1]:
        tracer.sampled(_fast_path, _fast_path_samples, spent_ns)
    else:
        tracer.calibrate(_fast_path, _fast_path_samples, spent_ns)


def framed(original, call: Call, where: tuple = ()):
    """Like `measured`, for calls that may start spans of their own (jedi starts a subprocess).

    The call runs under a deferred span: written only if it is slow or something inside it was
    recorded (which then has it as its parent), as import spans are.
    """
    busy = _busy
    small = small_ns()

    def wrapper(*args, **kwargs):
        try:
            parent = tracer.current() or tracer._root
            thread = get_ident()
            if parent is None or thread in busy:
                return original(*args, **kwargs)
            try:
                busy.add(thread)  # in the try: let go after an exception of the program's right after it too
                t0 = time_ns()
                frame = tracer.Span(tracer.new_span_id(), parent, parent.span_id, parent.trace_id, call.name,
                                    tracer.INTERNAL, call.category, t0, None, deferred=True)
                frame_token = tracer._current.set(frame)
                try:
                    result = original(*args, **kwargs)
                except BaseException as exc:
                    tracer._current.reset(frame_token)
                    finish(call, args, kwargs, None, exc, t0, time_ns(), small, frame)
                    raise
                t1 = time_ns()
                tracer._current.reset(frame_token)
                finish(call, args, kwargs, result, None, t0, t1, small, frame)
                return result
            finally:
                busy.discard(thread)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return identity(wrapper, original, where)


def finish(call: Call, args: tuple, kwargs: dict, result, exc: BaseException | None, t0: int, t1: int,
            small: int, frame: tracer.Span | None = None) -> None:
    """After a call: a sum if it was small (and nothing inside it was recorded), else a span."""
    try:
        if t1 - t0 < small and (frame is None or not frame.keep):
            data = result if call.shape == DUMP else data_argument(call, args, kwargs)
            add_small(call.name, t1 - t0, len(data) if exc is None and type(data) in TEXT else 0)
            if frame is not None and frame.sums:
                _merge_sums(frame.sums)
        else:
            if tracer.first_call is not None:  # the call that loaded this hook: its span from the call
                t0 = tracer._from_first_call(t0)
            _record(call, args, kwargs, result, t0, t1, exc, tracer.frame_at(2), frame)
        tracer.add_overhead(time_ns() - t1)
    except Exception as error:  # never into the program
        tracer.exception_diagnostic("measure_failed:" + call.name, error)


def _sum_target():
    """The span small calls are summed onto: the current one, above import frames (which drop sums)
    and above spans that have ended (their sums are written: work that outlives its span, like a
    thread still sending a request after the phase that started it ended, goes to an open one).

    The fast paths first try `_last_target` themselves (a call less: ~1,500 instructions)."""
    global _last_target
    current = span = tracer._current.get() or tracer._root
    while span is not None and (span.end_ns or span.deferred and span.category == "import"):
        span = span.parent
    if span is not None:
        _last_target = (current, span)  # one tuple: another thread reads both halves or neither
    return span


# The span a small call was last summed under, and where its sums went: typing compiles hundreds of
# annotations under one import frame, as deep as its nested imports.
_last_target: tuple = (None, None)


def add_small(key: str, duration_ns: int, size: int, calls: int = 1) -> None:
    span = _sum_target()
    if span is None:
        return
    sums = span.sums
    if sums is None:
        span.sums = sums = {}
    entry = sums.get(key)
    if entry is None:
        sums[key] = [calls, duration_ns, size]
    else:
        entry[0] += calls
        entry[1] += duration_ns
        entry[2] += size


def _merge_sums(sums: dict) -> None:
    """A deferred frame that is not written hands what was summed onto it to its own target."""
    for key, (calls, total_ns, size) in sums.items():
        add_small(key, total_ns, size, calls)


def data_argument(call: Call, args: tuple, kwargs: dict):
    index = call.data_index
    return args[index] if 0 <= index < len(args) else kwargs.get(call.data_name)


def type_name(value) -> str:
    kind = value if isinstance(value, type) else type(value)
    module = getattr(kind, "__module__", "")
    if module == "builtins":
        return kind.__qualname__
    return "%s.%s" % (module, getattr(kind, "__qualname__", kind.__name__))


def _record(call: Call, args: tuple, kwargs: dict, result, t0: int, t1: int, exc: BaseException | None,
            caller, frame: tracer.Span | None = None) -> None:
    """The call as a complete span (slow, failed, or the parent of something recorded)."""
    try:
        caller = tracer.program_frame(caller) or caller  # above a first-call stand-in (lazy.py) it went through
        code = tracer.code_of(caller)
        attributes = {
            "selfopt_trace.library": call.library,
            "selfopt_trace.operation": call.operation,
            "code.filepath": code.co_filename,
            "code.lineno": caller.f_lineno,
            "code.function": code.co_name,
        }
        data = data_argument(call, args, kwargs)
        if call.shape == DUMP:
            if data is not None:
                attributes["selfopt_trace.python.type"] = type_name(data)
            if type(result) in TEXT:
                attributes["selfopt_trace.bytes_out"] = len(result)
        else:
            if type(data) in TEXT:
                attributes["selfopt_trace.bytes_in"] = len(data)
            if call.shape == LOAD and exc is None:
                attributes["selfopt_trace.python.type"] = type_name(result)
        status = tracer.UNSET
        if exc is not None:
            status = tracer.ERROR
            attributes["error.type"] = type_name(exc)
        if call.subject is not None:
            subject = call.subject(args, kwargs)
            if subject:
                attributes["selfopt_trace.subject"] = str(subject)
        if frame is not None:
            if frame.sums:
                attributes.update(tracer.sum_attributes(frame.sums))
            tracer.record_complete(call.name, call.category, t0, t1, attributes, parent=frame.parent,
                                   status=status, span_id=frame.span_id)
        else:
            tracer.record_complete(call.name, call.category, t0, t1, attributes, status=status)
    except Exception as error:
        tracer.exception_diagnostic("measure_failed:" + call.name, error)


def wrap_attribute(owner, attribute: str, call: Call, frame: bool = False) -> bool:
    """Replace `owner.attribute` (a function, method, classmethod, staticmethod or property) by a wrapper.

    Returns False when there is nothing to wrap or it is already ours.
    """
    raw = owner.__dict__.get(attribute) if isinstance(owner, type) else getattr(owner, attribute, None)
    if raw is None:
        return False
    raw = lazy.original(raw)  # what a stand-in stands for, until the first call wraps it
    make = framed if frame else measured
    if isinstance(owner, type):
        where = (owner.__module__, "%s.%s" % (owner.__qualname__, attribute))
    else:
        where = (owner.__name__, attribute)
    if isinstance(raw, (classmethod, staticmethod)):
        if is_wrapped(raw.__func__):
            return False
        setattr(owner, attribute, type(raw)(make(raw.__func__, call, where)))
    elif isinstance(raw, property):
        if raw.fget is None or is_wrapped(raw.fget):
            return False
        setattr(owner, attribute, raw.getter(make(raw.fget, call, where)))
    else:
        if is_wrapped(raw) or not callable(raw):
            return False
        setattr(owner, attribute, make(raw, call, where))
    return True
