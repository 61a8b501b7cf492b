"""Spans, the current-span context, and the per-process span file.

Hot path rules: starting a span appends its Span to a buffer and ending it sets its end; lines are
formatted and written only at a flush (docs/span-format.md, "Flushing"), mostly as one X record
per span. Instrumentation code catches its own errors: nothing here may raise into the traced
program. docs/benchmarks.md ("One span") says what each of the hot path's shortcuts saves.
"""

from __future__ import annotations

import os
import sys
from _thread import RLock, allocate_lock, get_ident, get_native_id
from time import time_ns

from . import config, spanfile

try:
    from time import thread_time_ns as thread_cpu_ns
except ImportError:  # no per-thread CPU clock here: spans carry no CPU edges (cpu_anchor)
    def thread_cpu_ns() -> int:
        return 0

FLUSH_INTERVAL_NS = 100_000_000
# The flusher thread: each of its wakes takes the GIL from a busy main thread (a hand-over both ways,
# ~0.5 ms of the process's system time each in a pytest process: docs/benchmarks.md), and a program
# recording fast flushes by itself at the deadline anyway. So the thread wakes FLUSH_GRACE_NS after
# the deadline (a busy program's next record flushes first), sleeps twice as long after each wake
# that found the program had flushed since the last, up to FLUSH_NAP_MAX_NS, and flushes at the
# deadline again once the program has not (it blocks, or records nothing). Records reach the disk
# within FLUSH_INTERVAL_NS + FLUSH_GRACE_NS of being made, within FLUSH_NAP_MAX_NS + FLUSH_GRACE_NS
# after a stretch of flushing by itself.
FLUSH_GRACE_NS = 10_000_000
FLUSH_NAP_MAX_NS = 400_000_000
# The thread starts only once its process is this old, or blocks for long in a hooked call
# (before_block): a second thread costs a busy pytest process ~3 ms (system time, glibc's locked
# malloc: docs/benchmarks.md), more than all its wakes, and most processes of a tree live less.
# Until then records flush at the deadline the program's own records cross: what a young process
# killed with SIGKILL loses is what it recorded in its last 100 ms before it went quiet somewhere
# the agent does not hook (a busy loop, a socket read), and its open spans end there.
FLUSHER_AGE_NS = 1_000_000_000
# How long a hooked blocking call waits, at most, for the thread it starts to sleep (_start_flusher):
# ~0.1 ms as a rule, two hand-overs of the GIL beside a busy program thread. A wait cut short leaves
# the thread asking for the GIL as the call begins, where a signal can be lost for the call's length:
# in a container throttled by its CPU quota, 18 of 200 threads took over 50 ms to reach it (96 at most).
FLUSHER_START_WAIT_S = 1.0
# How long a fatal signal's handler waits for another thread's flush (the flusher's: one write, well
# under a millisecond as a rule) before the process dies: what it took from the buffer dies with it.
DEATH_WAIT_S = 0.5
# ...or when this many records wait: buffered spans then never live long enough for the garbage
# collector's older generations to scan them (~0.6 us per span in a burst of 50,000).
FLUSH_RECORDS = 1000
INTERNAL, CLIENT, SERVER = "INTERNAL", "CLIENT", "SERVER"

# A span's CPU edges: the thread's CPU clock where the span's activity starts and ends. The CPU
# sampler reads a thread from outside, where the kernel's count of a running thread lags up to a
# scheduler tick, and a reading's CPU is spread over its 10-50 ms; the loader cuts the thread's
# readings at these exact points (docs/queries.md, "Evidence"). Read only where the CPU on either
# side goes to different categories and the span costs far more than a clock read: the outermost
# recorded imports and the spawning calls. Each read goes inside the span (after its start time,
# before its end time): the read brings the kernel's accounting up to date, which can end the
# thread's time slice there, and the wait for a CPU that follows belongs to the span.
CPU_TID, CPU_START, CPU_END = "selfopt_trace.cpu.tid", "selfopt_trace.cpu.start_ns", "selfopt_trace.cpu.end_ns"
# A spawning span's thread's CPU clock when the child was reaped (by that thread, or another: asyncio's
# child watcher): how much it ran while the child lived tells the loader whether it was waiting on
# the child (store/macros.sql, read_waits).
CPU_REAP = "selfopt_trace.cpu.reap_ns"
# ...and its time queued for a CPU at the spawning call's end and at the reap: a thread preempted by a
# busy machine ran, for that test, as the breakdown counts it (80 ms of CPU took 315 ms beside two CPU
# hogs: a quarter of the time, read as a wait on the child).
CPU_END_QUEUED, CPU_REAP_QUEUED = "selfopt_trace.cpu.end_runqueue_ns", "selfopt_trace.cpu.reap_runqueue_ns"
# A time.sleep that returned more than LATE_WAKE_NS after the time asked for was up (hooks/time_.py):
# the thread's CPU clock, its time queued for a CPU and the wall clock, read in that order as the
# recorder begins. The kernel counts a queue stretch only when the thread gets a CPU again, so the
# sampler's reading taken in the wake-up queue shows no progress, and that stretch read as an
# untraced wait (tests/accuracy, polled, beside two CPU hogs); this exact reading dates it.
CPU_WAKE_TIME, CPU_WAKE, CPU_WAKE_QUEUED = ("selfopt_trace.cpu.wake_time_ns", "selfopt_trace.cpu.wake_ns",
                                            "selfopt_trace.cpu.wake_runqueue_ns")
LATE_WAKE_NS = 500_000


def cpu_end_edge(end_cpu_ns: int) -> dict:
    """The end attributes of a span whose start record carried CPU_START: its thread and end reading."""
    return {CPU_TID: get_native_id(), CPU_END: end_cpu_ns}


def cpu_anchor(start_cpu_ns: int, end_cpu_ns: int) -> str:
    """A complete record's CPU edges, as the JSON members its attributes end with."""
    return f',"{CPU_TID}":{get_native_id()},"{CPU_START}":{start_cpu_ns},"{CPU_END}":{end_cpu_ns}'
UNSET, OK, ERROR = "UNSET", "OK", "ERROR"


class Span:
    """A span being recorded. `deferred` spans (imports) are written only if they turn out to matter.

    A started span sits in the buffer as this object and is formatted at the next flush: as one
    X record if it has ended by then (most spans), else as an S record followed later by an E.
    """

    __slots__ = ("span_id", "parent_id", "parent", "trace_id", "name", "kind", "category",
                 "start_ns", "end_ns", "attributes", "deferred", "keep", "sums", "child_ns",
                 "status", "end_attributes", "written")

    def __init__(self, span_id: str, parent: Span | None, parent_id: str, trace_id: str, name: str,
                 kind: str, category: str, start_ns: int, attributes: dict | None, deferred: bool = False):
        self.span_id = span_id
        self.parent = parent
        self.parent_id = parent_id
        self.trace_id = trace_id
        self.name = name
        self.kind = kind
        self.category = category
        self.start_ns = start_ns
        self.end_ns = 0
        self.attributes = attributes
        self.deferred = deferred
        self.keep = False
        self.sums: dict | None = None
        self.child_ns = 0  # imports: cumulative time of nested imports, for self time
        self.status = UNSET
        self.end_attributes: dict | None = None
        self.written = False  # its S record is on disk: its end needs an E record

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


class ImportFrame:
    """An import being timed (importtime.py): the current span while its module loads (`current`),
    written only if it turns out to matter (its cumulative time, or something recorded inside it).

    Most imports are never written, so their frame is as light as a frame can be: the fields a Span
    reader may ask for as class constants (`deferred`, no end, no sums: small calls are summed above
    it, hooks/timed.py). Its span id is taken when first asked for, by a span
    recorded under it or by its own record (an import nothing asks about takes none), its trace id
    is its parent's (kept once asked for). The id is taken without a lock: the thread that asks is the
    importing one, the only one the frame is current in (a thread started meanwhile hands over above
    the frame, hooks/threads.py). A Span as a frame cost 4,600 instructions an import
    (docs/benchmarks.md).
    """

    # The import's own state (importtime.py keeps it here, not in its wrapper's locals: docs/agent.md,
    # "Imports"): the ContextVar's value when it began (`outer`), the import it is nested in on its
    # thread (`below`, see `_imports`), start time, CPU edge, status, and the time its bookkeeping
    # began while the cost per import is being calibrated.
    __slots__ = ("parent", "keep", "child_ns", "_span_id", "_trace_id", "outer", "below", "start_ns", "cpu0", "status",
                 "began_ns")
    deferred = True
    category = "import"
    kind = INTERNAL
    end_ns = 0
    sums = None
    written = False

    @property
    def span_id(self) -> str:
        span_id = self._span_id  # "" until asked for (set with the frame: an unset slot's AttributeError costs 1 us)
        if not span_id:
            span_id = self._span_id = next(_id_text)
        return span_id

    @property
    def trace_id(self) -> str:
        trace_id = self._trace_id  # "" until asked for: its parent's, kept (each level of nested imports asks once)
        if not trace_id:
            trace_id = self._trace_id = self.parent.trace_id
        return trace_id

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


def python_import_line(frame: ImportFrame, name: str, end: int, extra: str) -> str:
    """A recorded import's X record, under its frame's span id (importtime._recorded). One f-string: a
    module's name is almost always plain text, written as it is (no attribute dict, no call to
    spanfile.encode, no record_line with its keyword arguments: ~1/3 of a record's cost went there,
    docs/benchmarks.md); another name takes spanfile's general path."""
    if name.isprintable() and '"' not in name and "\\" not in name:
        module = '"python.import.module":"' + name + '"'
    else:  # JSON escapes, or bytes that are not UTF-8 (spanfile.escape)
        module = spanfile.encode({"python.import.module": name})[1:-1]
        name = spanfile.clean(name)
    parent, start = frame.parent, frame.start_ns
    cumulative = end - start
    return (f'X\t{frame.span_id}\t{parent.span_id}\t{parent.trace_id}\timport {name}\tINTERNAL\timport\t{start}\t'
            f'{end}\t{frame.status}\t{{{module},"python.import.cumulative_ns":{cumulative},'
            f'"python.import.self_ns":{cumulative - frame.child_ns}{extra}}}\t.\n')


import_line = python_import_line  # what the flush writes a recorded import with: the C twin's in its place


def _load_twin() -> tuple:
    """(the C twin of the import wrapper, importtime.c, or None; why one that is there did not load, or
    None). None: not built (no compiler), built from another importtime.c (its file is named after
    the source's mtime and size, as selfopt_trace/import_twin.py builds it), another interpreter, or
    the Python wrapper asked for (SELFOPT_TRACE_PURE_PYTHON, the reference the tests also run).
    Loaded with the tracer: its ContextVar and span ids spare start-up _contextvars and itertools."""
    if os.environ.get(config.ENV_PURE_PYTHON):
        return None, None
    try:
        from _frozen_importlib import ModuleSpec
        from _imp import create_dynamic, extension_suffixes

        package = __name__.rpartition(".")[0]
        directory = sys.modules[package].__path__[0]
        source = os.stat(directory + "/importtime.c")
        path = f"{directory}/__pycache__/_importtime.{source.st_mtime_ns}.{source.st_size}{extension_suffixes()[0]}"
        if not os.path.exists(path):
            return None, None
        return create_dynamic(ModuleSpec(package + "._importtime", None, origin=path)), None
    except Exception as exc:  # not loadable here (another C library, a damaged file): the Python wrapper
        return None, exc


twin, twin_failure = _load_twin()  # importtime.install reports the failure once the span file is set up

# The span file's descriptor is moved to the top of the numbers a program gets: the soft RLIMIT_NOFILE
# minus one, at most OPEN_FD_HIGH - 1 (bash keeps its own at 255 so). The program's own numbers are
# then what they are untraced (an os.pipe() after a daemon's os.closerange(3, ...), which the flush
# answers by opening the file again: (3, 4), not (3, 5)), and a program that lowers the limit to what
# it needs (setrlimit(RLIMIT_NOFILE, (4, 4))) still has 3 to open: a descriptor above the limit stays
# valid. Not higher: the kernel's table of a process's descriptors grows to the highest one (a
# container's limit of 1,048,576: 8 MB of it, copied at every fork).
OPEN_FD_HIGH = 1024

# What raises an audit event that a program's audit hooks would see the agent cause: sys._getframe,
# `__code__`, `f_code`, `tb_frame`, opening a file, os.environ's changes. The twin's do the same
# without one (importtime.c); setenv changes what children inherit and leaves os.environ alone.
if twin is not None:
    frame_at, code_of, frame_of = twin.frame_at, twin.code_of, twin.frame_of
    read_file, open_fd, getenv, setenv = twin.read_file, twin.open_fd, twin.getenv, twin.setenv
else:
    frame_at = sys._getframe

    def open_fd(path: str, flags: int, mode: int) -> int:
        """os.open, the descriptor moved to the top of the program's numbers (see OPEN_FD_HIGH), or,
        where that one is taken, at least above 0-2: stdin, stdout or stderr closed when the program
        started stay closed, as the program had them."""
        try:
            top = os.sysconf("SC_OPEN_MAX")  # the soft RLIMIT_NOFILE (no `resource` to import)
        except (ValueError, OSError) as exc:
            raise_if_programs(exc)
            top = -1
        fd, below = os.open(path, flags, mode), []
        high = (OPEN_FD_HIGH if top <= 0 or top > OPEN_FD_HIGH else top) - 1
        if fd < high:
            try:
                os.fstat(high)  # the program's: left alone (the twin's F_DUPFD_CLOEXEC finds it taken too)
            except OSError as exc:
                try:
                    raise_if_programs(exc)
                except BaseException:  # the program's exception (an alarm's): raised on, no file opened
                    os.close(fd)
                    raise
                os.dup2(fd, high, inheritable=False)
                os.close(fd)
                return high
        while 0 <= fd < 3:
            below.append(fd)
            fd = os.dup(fd)
        for low in below:
            os.close(low)
        return fd

    def code_of(obj):
        return getattr(obj, "f_code", None) or getattr(getattr(obj, "__func__", obj), "__code__", None)

    def frame_of(traceback):
        return traceback.tb_frame

    def read_file(path: str, offset: int, length: int) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def getenv(name: str):
        return os.environ.get(name)

    def setenv(name: str, value) -> None:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

# The current span, imports aside: asyncio tasks and greenlets keep their own.
if twin is not None:
    _current = twin.context_var("selfopt_trace_current_span")
else:
    from _contextvars import ContextVar  # the C module: contextvars.py only re-exports it

    _current = ContextVar("selfopt_trace_current_span", default=None)
_current_get = _current.get
# The imports under way: thread ident -> its innermost ImportFrame, which links the one it is nested
# in (`below`); the C twin of the import wrapper keeps its own in thread-local storage, and puts its
# reader in current's place (importtime.install). An import's frame is the current span while nothing
# was made current since it began (the ContextVar still holds the frame's `outer`): a module's body
# runs in one thread and cannot await, so the imports of a thread nest. Setting and resetting the
# ContextVar around every import instead was a new context mapping and a token each, every
# variable's cache emptied (docs/benchmarks.md, "Imports leave the ContextVar alone").
_imports: dict = {}

# Per-process state, reset after fork.
_buffer: list = []
# Spans started elsewhere (the OpenTelemetry bridge's SDK spans, hooks/otel_.py) kept out of the
# buffer until they end, by any key: a flush takes each one still here out and writes it as its S
# record; the end, taking it out first, writes its X record itself (else its E). The taking out
# (dict.pop, atomic) decides which of the two threads writes the start: never both.
unwritten: dict = {}
# ...or kept by the hook itself (the bridge's SDK spans: no record of ours until they end): a function
# adding the S records of those still open to the flush's list of lines, each taken out of its keeping
# (never raises but the program's own exceptions: raise_if_programs).
open_records = None
# Functions every flush calls first, under its lock, recording (quiet) what waited for a flush: the
# garbage collector's long passes (process.py, _watch_gc). Never raise but the program's own exceptions.
at_flush: list = []
_flush_due_ns = 0  # when the next flush is due (a deadline: the hot path compares, never subtracts)
_fd: int | None = None
_path = ""  # the span file, named at the first flush
_fd_file = (0, 0)  # its (st_dev, st_ino): what _fd must still be to be written to
_fd_size = 0  # its size before the flush's writes (the fstat that checks it)
_carry = ""  # lines an interrupted flush took out of the buffers' keeping and did not write (_keep_interrupted)
_header = ""
_enabled = False
_flusher_started = False
_flusher_from_ns = 0  # when the thread may start (see FLUSHER_AGE_NS)
_flushed_in_passing = 0  # flushes made by records at the deadline (flush(blocking=False)): the flusher's sleeps
# The threads in subprocess's fork of a child that will exec at once (its at-fork child is no process
# of ours; a fork on another thread meanwhile is one).
in_spawn: set = set()
_overhead_ns = 0
_spans_dir = ""
_main_thread = 0  # its ident: the thread that started the agent (process.py; in a forked child, the one that forked)
_root: Span | None = None  # the process span: parent of spans started where no span is current (new threads)
_trace_id = ""
_remote_parent_id = ""  # from TRACEPARENT: the parent of the process span
# The flusher thread and the program's threads take from one buffer. An RLock: its owner is known, so a
# flush whose thread a signal handler's exception left right after the lock came still lets it go (a
# Lock stayed held: the exit's flush waited for ever, 1 run in 4 of 200 alarms around docker runs).
_flush_lock = RLock()
_flushing_thread = 0  # the program thread inside flush(): a signal handler tells its own from another's
_then_die = None  # a fatal signal's death, put off to the end of the flush it interrupted (flush_before_death)
# The flusher thread's naps: a wait with a timeout on a lock never released. Not time.sleep: from
# Python 3.13 each sleep is an audit event, and the program's audit hooks would see the agent's.
_nap = allocate_lock()
_nap.acquire()


def _id_texts(start: int):
    """Span ids from `start` (a multiple of 256) up, as 16 hex digits: "%016x" % n for each n.

    The twin's iterator where it loaded (no itertools at start-up). Else a chain of C iterators, no
    bytecode and no format string per id: the upper 14 digits are formatted once per 256 ids, and
    each id is one of them joined to one of 256 two-digit strings (~900 instructions an id against
    ~2,000 for "%016x" % next(counter): docs/benchmarks.md; _operator.add would save 65 more, and
    cost 320,000 at start-up to import). Each step runs in C holding the GIL: two threads never get
    the same id.
    """
    if twin is not None:
        return twin.span_ids(start)
    from itertools import chain, count, cycle, repeat

    pairs = bytes(range(256)).hex(" ").split()  # "00".."ff", in C: no format or concatenation
    uppers = chain.from_iterable(map(repeat, map("%014x".__mod__, count(start >> 8)), repeat(256)))
    return map("".join, zip(uppers, cycle(pairs)))


_id_text = _id_texts(256)  # see configure


def set_root(span: Span | None, trace_id: str, remote_parent_id: str) -> None:
    global _root, _trace_id, _remote_parent_id
    _root, _trace_id, _remote_parent_id = span, trace_id, remote_parent_id


def root() -> Span | None:
    return _root


def configure(spans_dir: str, header: str) -> None:
    """Start a new span file for this process (at start-up and in a forked child).

    The flusher counts as started until start-up is over: start-up flushes by itself. What the
    buffer holds is kept: at start-up, diagnostics of what ran before the file could be named (a
    module of the lazy bundle that failed to load); a forked child's was emptied by reset_after_fork.
    """
    global _spans_dir, _header, _fd, _path, _id_text, _enabled, _flush_due_ns, _flusher_started, _flusher_from_ns
    _spans_dir = spans_dir
    _header = header
    _fd = None
    _path = ""
    # Span ids: a counter from a random 63-bit start (a multiple of 256), so two processes collide
    # only if their ranges overlap (~2^-30 for a pair that each record 2^32 spans).
    _id_text = _id_texts((int.from_bytes(os.urandom(8), "big") >> 1 | 256) & ~255)
    now = time_ns()
    _flush_due_ns = now + FLUSH_INTERVAL_NS
    _flusher_from_ns = now + FLUSHER_AGE_NS
    _flusher_started = True
    _enabled = True


def started_up() -> None:
    """Start-up is over: write what it recorded, and let the next record start the flusher."""
    global _flusher_started
    flush()
    _flusher_started = False


def new_span_id() -> str:
    return next(_id_text)


def new_trace_id() -> str:
    return os.urandom(16).hex()


def current() -> Span | ImportFrame | None:
    """The current span, or None (read through this module's global: the twin's takes its place)."""
    span = _current_get()
    if _imports:
        frame = _imports.get(get_ident())
        if frame is not None and frame.outer is span:
            return frame
    return span


def activate(span: Span | None):
    """Make `span` current; returns the token for `deactivate`."""
    return _current.set(span)


def deactivate(token) -> None:
    try:
        _current.reset(token)
    except ValueError as exc:  # token from another context (e.g. a generator resumed elsewhere)
        raise_if_programs(exc)


def end_interrupted(span: Span | None, exc: BaseException, token=None) -> None:
    """An exception (the program's: a signal handler's, raised in the agent's code) interrupted the
    agent between beginning `span` (and making it current: `token`) and handing over to the call it
    covers, or in its end: what was made current is undone (a token reset already, or of another
    context, is let be) and the span ends with the error, as the call it interrupted (left open, it
    ran to the process's end, and the spans after it hung under it). Either may be None."""
    reset_quietly(_current.reset, token)
    if span is not None and not span.end_ns:
        end_span(span, ERROR, {"error.type": type(exc).__qualname__})


def reset_quietly(reset, token) -> None:
    """`reset(token)` (a ContextVar's, OTel's runtime's) where an interruption may have come after it:
    a token reset already (the interrupted code got that far), or of another context, is let be."""
    if token is not None:
        try:
            reset(token)
        except (ValueError, RuntimeError):
            pass


def _mark_kept(parent: Span | None) -> None:
    while parent is not None and parent.deferred and not parent.keep:
        parent.keep = True
        parent = parent.parent


def _parent_ids(parent: Span | None) -> tuple:
    if parent is None:
        return _remote_parent_id, _trace_id
    if parent.deferred:
        _mark_kept(parent)
    return parent.span_id, parent.trace_id


# A hook loaded by the first call of what it wraps (lazy.py's stand-ins): (thread ident, when that
# call began), until it returns. The first span the thread starts meanwhile starts there: loading
# the hook (0.4-0.5 ms) is time in the call as the program lives it, not the program's own work.
first_call: tuple | None = None


def _from_first_call(now: int) -> int:
    global first_call
    thread, began = first_call
    if thread != get_ident():
        return now
    first_call = None
    return min(now, began)


def start_span(name: str, category: str, kind: str = INTERNAL, attributes: dict | None = None,
               parent: Span | None = None, start_ns: int = 0, span_id: str = "") -> Span:
    """Record the start of a span under `parent` (default: the current span). Does not activate it.

    `span_id`: one allocated earlier with new_span_id (a thread's span, named by a join before the
    thread runs).
    """
    if parent is None:
        parent = current() or _root
    now = start_ns or time_ns()
    if first_call is not None:
        now = _from_first_call(now)
    if parent is None:
        parent_id, trace_id = _remote_parent_id, _trace_id
    else:  # _parent_ids, inlined: the hot path
        if parent.deferred:
            _mark_kept(parent)
        parent_id, trace_id = parent.span_id, parent.trace_id
    span = _new_span(span_id or next(_id_text), parent, parent_id, trace_id, name, kind, category, now, attributes)
    _buffer.append(span)
    due = now > _flush_due_ns or len(_buffer) > FLUSH_RECORDS
    if due or not _flusher_started:
        try:
            flush(blocking=False) if due else _start_flusher()
        except BaseException as exc:  # the program's (a signal handler's): the call ends with it
            end_interrupted(span, exc)
            raise
    return span


def end_span(span: Span, status: str = UNSET, attributes: dict | None = None, end_ns: int = 0,
             reparent: str = "") -> None:
    """Record the end of a span started with `start_span`. Ending twice records nothing more."""
    if span.end_ns:
        return
    if span.sums:
        attributes = dict(attributes or ())
        attributes.update(sum_attributes(span.sums))
    span.status, span.end_attributes = status, attributes
    if reparent:
        span.parent_id = reparent
    # End time last, `written` read after: a flush running in another thread writes either an S
    # (and we add the E) or the whole X (and at worst we add an identical E, which loads the same).
    span.end_ns = now = end_ns or time_ns()
    if span.written:
        _buffer.append(spanfile.end_line(span.span_id, now, status, encode(attributes), reparent))
    # No flusher start here (start_span and record_complete do): the span's start is on disk or
    # in a buffer the flusher already serves, and the process span's end at exit is flushed at
    # once; starting a thread there cost every short process ~0.1 ms.
    if now > _flush_due_ns:
        flush(blocking=False)


def _format(span: Span) -> str:
    """The line for a buffered span: X if it has ended, else S (and it is marked written)."""
    span.written = True
    if span.end_ns:
        attributes = span.end_attributes
        if not attributes:
            attributes = encode(span.attributes)
        else:
            attributes = encode({**span.attributes, **attributes} if span.attributes else attributes)
        return spanfile.complete_line(span.span_id, span.parent_id, span.trace_id, span.name, span.kind,
                                      span.category, span.start_ns, span.end_ns, span.status, attributes)
    return spanfile.start_line(span.span_id, span.parent_id, span.trace_id, span.name, span.kind,
                               span.category, span.start_ns, encode(span.attributes))


# A span's record and an attribute object's JSON: the C twin's writers where it loaded (a request
# span's ten attributes cost ~500 bytecodes to encode in Python), which leave what they do not write
# (text that is not plain ASCII, values of other types) to these Python ones.
# ...and a new Span, its slots set as Span.__init__ sets them, without the constructor's frame
# (tests/agent/test_tracer.py checks the two stay in step).
if twin is not None:
    _new_span, _span_line, encode = twin.span_writers(Span, _format, spanfile.encode, UNSET)
else:
    _new_span, _span_line, encode = Span, _format, spanfile.encode


def record_complete(name: str, category: str, start_ns: int, end_ns: int, attributes: dict | None = None,
                    parent: Span | None = None, kind: str = INTERNAL, status: str = UNSET,
                    span_id: str = "", quiet: bool = False) -> str:
    """Record a span that already ended (written once, as an X record). Returns its span id.

    `quiet`: only buffer it; the next record flushes or starts the flusher (for moments whose
    timing is measured, like the end of start-up).
    """
    if parent is None:
        parent = current() or _root
    parent_id, trace_id = _parent_ids(parent)
    span = _new_span(span_id or new_span_id(), parent, parent_id, trace_id, name, kind, category, start_ns, attributes)
    span.status, span.end_ns = status, end_ns
    _buffer.append(span)
    if not quiet:
        if end_ns > _flush_due_ns or len(_buffer) > FLUSH_RECORDS:
            flush(blocking=False)
        elif not _flusher_started:
            _start_flusher()
    return span.span_id


def record_line(name: str, category: str, start_ns: int, end_ns: int, attributes_json: str,
                kind: str = INTERNAL, status: str = UNSET, parent: Span | None = None, span_id: str = "") -> None:
    """A complete span under `parent` (default: the current span), formatted at once as its X
    record: no Span object.

    For spans nothing is ever recorded under (waits), or that have ended with their Span still
    unbuffered (an import's frame: `span_id` is the frame's): cheaper than record_complete. The
    caller passes the attributes already encoded as a JSON object.
    """
    if parent is None:
        parent = current() or _root
    if parent is None:
        parent_id, trace_id = _remote_parent_id, _trace_id
    else:
        if parent.deferred:
            _mark_kept(parent)
        parent_id, trace_id = parent.span_id, parent.trace_id
    _buffer.append(f"X\t{span_id or next(_id_text)}\t{parent_id}\t{trace_id}\t{name}\t{kind}\t{category}\t{start_ns}\t{end_ns}\t"
                   f"{status}\t{attributes_json}\t.\n")
    if end_ns > _flush_due_ns or len(_buffer) > FLUSH_RECORDS:
        flush(blocking=False)
    elif not _flusher_started:
        _start_flusher()


def sum_attributes(sums: dict) -> dict:
    """What was summed onto a span (count, total time, bytes per kind of call), as its attributes."""
    out = {}
    for key, (calls, total_ns, size) in sums.items():
        out["selfopt_trace.small.%s.count" % key] = calls
        out["selfopt_trace.small.%s.duration_ns" % key] = total_ns
        if size:
            out["selfopt_trace.small.%s.bytes" % key] = size
    return out


# Set on every wrapper the agent installs. "Wrapped already" means by the agent: a function another
# library wrapped (functools.wraps, wrapt: Python 3.8's own signal.signal) has a __wrapped__ too, and
# is still wrapped. A wrapt proxy around one of ours answers for it (its attributes are the wrapped's).
WRAPPER_MARK = "__selfopt_trace__"


def own_wrapper(wrapper, original):
    """`wrapper` marked as the agent's, wrapping `original` (inspect follows __wrapped__)."""
    wrapper.__wrapped__ = original
    setattr(wrapper, WRAPPER_MARK, True)
    return wrapper


class Builtin:
    """A wrapper that does not bind, as the built-in function it stands for does not: put on a class
    (`class Poller: sleep = time.sleep`), a Python function would become a method there and get the
    instance as its first argument (`self.sleep(0.01)`: TypeError, traced only).

    The call goes straight into the wrapper function: `__call__` is a slot of the instance holding
    it, which CPython's call of the instance reads through the slot's descriptor (no frame of its own,
    ~30-50 ns a call more than the function called directly). Its identity is the function's
    (`__name__`, `__qualname__`, `__module__`, `__doc__`, `__wrapped__`, the agent's marks: in its
    __dict__); what it does not have comes from the built-in it wraps (`__self__`,
    `__text_signature__`), whose class it gives as its `__class__` (isinstance and inspect.isbuiltin as
    untraced), its repr the built-in's; pickle and copy find it by its module and qualified name."""

    __slots__ = ("__call__", "__dict__", "__weakref__")

    def __reduce__(self):
        return self.__qualname__

    @property
    def __class__(self):
        return self.__wrapped__.__class__

    def __getattr__(self, name: str):
        if name == "__wrapped__" or name.startswith("__selfopt_trace"):
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


def unbound(function, original):
    """What to put where `original` stood in place of it: `function` itself where `original` binds
    when stored on a class as a function does (a function, a method descriptor), else a Builtin
    calling `function` (a built-in function, a class, a partial: no __get__), with its attributes."""
    if hasattr(type(original), "__get__") or type(function) is Builtin:
        return function
    made = object.__new__(Builtin)
    made.__call__ = function
    attributes = made.__dict__
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        attributes[name] = getattr(function, name)
    attributes.update(function.__dict__)
    attributes.setdefault("__wrapped__", original)
    return made


def at_home(wrapper, module_name: str, qualname: str):
    """`wrapper` named by where it is put: pickle finds a function by its module and qualified name,
    and must find that very function there (time.sleep, os.system handed to a process pool)."""
    wrapper.__module__, wrapper.__qualname__ = module_name, qualname
    return wrapper


def program_frame(frame):
    """`frame`, or the first frame above it that is not the agent's (None when none is): the
    program's line a wrapper was called from, through a first-call stand-in or a wrapper of ours."""
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_OWN_MODULES):
        frame = frame.f_back
    return frame


def is_own_wrapper(function) -> bool:
    return getattr(function, WRAPPER_MARK, False) is True


def add_overhead(duration_ns: int) -> None:
    """Account time the tracer itself spent in this process (stored on the process span)."""
    global _overhead_ns
    _overhead_ns += duration_ns


# Hot paths too short to time themselves count their calls instead, each in a [calls, ns per call]
# cell: an item increment costs a seventh of a module attribute's (a summed json call: ~900
# instructions less).
_counted: list = []


def counted_overhead() -> list:
    """A new [calls, ns per call] cell; its calls x ns count as tracer overhead (reset after fork)."""
    cell = [0, 0]
    _counted.append(cell)
    return cell


# A counted hot path's cost per call is measured with a clock on its first CALIBRATION calls of the
# process, then charged at their mean: a clock read costs as much as the bookkeeping it would time.
# The mean, not the median: the costs are skewed (an import's bookkeeping in a pytest process:
# median 2.0-2.1 us, a quarter of the calls over 2.5-2.9 us). The longest sixteenth are left out: a
# preemption inside one timed call (19 ms seen at load 8) would otherwise be charged to every later
# call. A hot path whose first calls are not like its later ones samples on (`sampled`).
CALIBRATION = 64
# ...one call in SAMPLE_EVERY timed again once calibrated (callers test `calls & (SAMPLE_EVERY - 1)`),
# and from SAMPLES_TRUSTED such samples on, their mean is the cost per call: a summed compile in a
# pytest process costs 1.8-1.9 us in its first 64 calls (a new sum target, its dict) and 0.41 us in
# the next 760 (the last target again), so the first 64 alone charged it 4.5x. The longest eighth
# of the samples (at least one) is left out and each is capped at SAMPLE_CAP times the calibrated
# cost: a collection or a preemption inside one of a few samples would be charged to every call.
SAMPLE_EVERY = 64
SAMPLES_TRUSTED = 8
SAMPLE_CAP = 4


def calibrate(cell: list, samples: list, spent_ns: int) -> None:
    """One of a counted cell's first calls, timed (`spent_ns`): counted now, and once CALIBRATION
    are in, their trimmed mean is the cell's cost per call (cell[1] > 0: count the calls; a caller
    that samples on times one in SAMPLE_EVERY for `sampled`)."""
    add_overhead(spent_ns)
    samples.append(spent_ns)
    if len(samples) >= CALIBRATION:
        cell[1] = cost_per_call(samples)
        samples[:] = [cell[1]]  # from here on `sampled`'s: the calibrated cost, then the samples


def sampled(cell: list, samples: list, spent_ns: int) -> None:
    """A calibrated cell's call that was timed (one in SAMPLE_EVERY): counted as one of its calls;
    from SAMPLES_TRUSTED on, the samples' trimmed mean is the cell's cost per call (recomputed at
    SAMPLES_TRUSTED samples and at each doubling: a sort at every sample cost the hot path more)."""
    cell[0] += 1
    samples.append(min(spent_ns, SAMPLE_CAP * samples[0]))
    n = len(samples) - 1
    if n >= SAMPLES_TRUSTED and not n & (n - 1):  # SAMPLES_TRUSTED is a power of two
        cell[1] = _trimmed_mean(sorted(samples[1:]), max(1, n // 8))


def cost_per_call(samples: list) -> int:
    """The mean of timed calls (not empty) without their longest sixteenth (see above)."""
    samples.sort()
    return _trimmed_mean(samples, len(samples) // 16)


def _trimmed_mean(ordered: list, longest: int) -> int:
    """The mean of `ordered` (ascending) without its `longest` last values, at least 1 ns."""
    kept = ordered[:len(ordered) - longest]
    return max(1, sum(kept) // len(kept))


# LATE: records a hot path buffers as values, a fixed number of them a record, flat in `late_records`
# (hooks/otel_.py: an ended SDK span, one value, its fields read by the flush), turned into text by
# the flush, all of a flush's at once: late_block(late_records, n) gives the lines of the first n
# values, in pieces the flush writes one by one (each of whole lines, none large: see _write); the
# hook sets it before it buffers any. A record is added with one `append` or `extend` (atomic: a
# flush takes whole records).
late_records: list = []
late_block = None  # (values, n) -> their lines, in pieces: the hook's


def joined_json(head: str, attributes: dict) -> str:
    """The JSON object of `head`'s attributes and `attributes` (not empty)."""
    return head + "," + encode(attributes)[1:]


# Records already formatted by hot paths that make no Span object (waits, hooks/waits.py) wait in a
# list of their own: a flush writes them after the buffer's records and counts them in
# `formatted_cost`, a counted cell whose cost per record their hook calibrates. Recording one is
# its f-string and an append: no flush deadline to compare (the flusher thread keeps it), no count.
formatted: list = []
formatted_cost = counted_overhead()


def overhead_ns() -> int:
    return _overhead_ns + sum([calls * ns for calls, ns in _counted])


_OWN_MODULES = __name__.rpartition(".")[0] + "."  # this package's modules (hooks included)
# Before Python 3.11, the C twin's replacement of the traceback a bare `raise` re-raises; from 3.11
# none is needed. The frames can be stripped unless an older Python runs without the twin.
handle_with_traceback = twin.handle_with_traceback if twin is not None and sys.version_info < (3, 11) else None
_STRIPS_OWN_FRAMES = sys.version_info >= (3, 11) or handle_with_traceback is not None


def strip_own_frames(exc: BaseException) -> None:
    """Before a wrapper re-raises the wrapped call's exception with a bare `raise`, in its handler:
    take the agent's frames off the head of its traceback, so the program prints what it would
    untraced.

    From Python 3.11, a bare `raise` re-raises with the exception's __traceback__ and adds no frame.
    Before, it re-raises the traceback it caught, which the C twin replaces (importtime.c's
    handle_with_traceback); without the twin there, the wrapper's frames stay.
    """
    if not _STRIPS_OWN_FRAMES:
        return
    tb = start = exc.__traceback__
    while tb is not None and frame_of(tb).f_globals.get("__name__", "").startswith(_OWN_MODULES):
        tb = tb.tb_next
    if tb is not start:
        exc.__traceback__ = tb  # None when the wrapped call is C code (os.waitpid): no frame at all
        if handle_with_traceback is not None:
            handle_with_traceback(exc, tb)


def diagnostic(code: str, message: str) -> None:
    """Record a problem of the tracer itself; never raises but the program's own exceptions."""
    try:
        _buffer.append(spanfile.diagnostic_line(time_ns(), code, message))
    except Exception as exc:
        raise_if_programs(exc)


def exception_diagnostic(code: str, exc: BaseException) -> None:
    """Record a failure of the tracer's own; raise on one of the program's (raise_if_programs)."""
    raise_if_programs(exc)
    diagnostic(code, "%s: %s" % (type(exc).__name__, exc))


def raise_if_programs(exc: BaseException) -> None:
    """Raise `exc` on where one of the program's signal handlers raised it (an alarm's timeout, where
    its signal found the agent's code): the agent's `except Exception` keeps its own failures from the
    program, never the program's exceptions from it (1-5 of 150 alarms were lost so). Called first in
    every `except Exception` of the agent's that does not re-raise, where a handler of the program's
    can run in its `try` (the main thread, once the program's code runs), but where the process ends
    anyway (docs/agent.md, "Failing open"). An exception raised in the frame that caught it (by C code
    it called: an unhashable value's TypeError) is told at once: no handler's frame is below."""
    if is_programs(exc):
        raise exc


def is_programs(exc: BaseException) -> bool:
    """Whether `exc`, caught by the agent, is the program's: see raise_if_programs."""
    tb = exc.__traceback__
    return tb is not None and tb.tb_next is not None and _raised_by_signal_handler(exc)


def flush(blocking: bool = True) -> None:
    """Write the buffer with one O_APPEND write (the LATE records' pieces with one each). Never raises
    but the program's own exceptions (a signal handler's, raised in it): a broken file disables tracing.

    `blocking=False` skips the flush when one is running (in another thread, or further up this
    thread's stack: a signal handler, or a record made while a flush runs): the records wait for
    the next one. Records made in passing flush that way; only flushes that must reach the disk
    (spawn, fork, exec, exit) block.
    """
    global _flushed_in_passing, _flushing_thread, _then_die
    if _flush_lock._is_owned():
        if _flush_on_stack():  # a flush further up this thread's stack
            return
        _let_go_of_a_left_lock()
    try:
        if not _flush_lock.acquire(blocking):
            return
        _flushing_thread = get_ident()
        _flush_locked()
        if not blocking:
            _flushed_in_passing += 1
    finally:
        if _flush_lock._is_owned():  # taken here, whatever raised since (a signal handler, as it came)
            _flushing_thread = 0
            _flush_lock.release()
            if _then_die is not None:
                die, _then_die = _then_die, None
                flush()  # what the signal's handler recorded (the process span's end)
                die()


_FLUSH_CODE = code_of(flush)


def flush_before_death(die) -> None:
    """A fatal signal's handler (process.on_sigterm): what is buffered reaches the file, then `die()`.
    A flush in progress took records out of the buffer, which would die with the process (a SERVER
    span answered just before a SIGTERM, lost 1 run in 10): another thread's is waited for (up to
    DEATH_WAIT_S); where the handler interrupted its own thread's flush, the death waits for that
    flush's end (flush above). Never raises but what `die` does."""
    global _then_die
    try:
        if _flushing_thread == get_ident():
            if _flush_on_stack():
                _then_die = die
                return
            _let_go_of_a_left_lock()
        if _flush_lock.acquire(True, DEATH_WAIT_S):
            try:
                _flush_locked()
            finally:
                _flush_lock.release()
    except Exception:  # a signal handler's too: the process dies, as it did untraced at the signal
        pass
    die()


def _flush_on_stack() -> bool:
    """Whether a flush is under way further up this thread's stack (a signal handler's record, or its
    death, while the flush it interrupted runs on below it)."""
    frame = frame_at(2)
    while frame is not None:
        if code_of(frame) is _FLUSH_CODE:
            return True
        frame = frame.f_back
    return False


def _let_go_of_a_left_lock() -> None:
    """The flush lock is this thread's, and no flush of it runs: an exception of the program's signal
    handler landed in a flush's `finally` before it let the lock go (every statement of Python can
    be such a point). Let go now: held, no flush of the flusher's or the exit's could write again
    (an interval timer raising every 0.5 ms around flushes: the process span and all records after
    it lost in 5 runs of 5)."""
    global _flushing_thread
    _flushing_thread = 0
    while _flush_lock._is_owned():
        _flush_lock.release()


def _flush_locked() -> None:
    global _flush_due_ns, _fd, _enabled, _carry
    if not _enabled:
        _drop_all()
        return
    now = time_ns()
    _flush_due_ns = now + FLUSH_INTERVAL_NS
    # Counted on the thread's CPU clock: the write gives up the GIL, and beside threads that compute
    # taking it back waits their turns (5 ms each), which the wall clock counted as the tracer's
    # (a pool of four spinning threads: 10 ms for one flush, 20-80 ms of "overhead" a run).
    t0 = thread_cpu_ns()
    # The buffers are emptied only once their lines are written: an exception of the program's signal
    # handler can land at any point (_keep_interrupted). Lines taken out of the buffers' keeping
    # before that (the carried ones, the open spans' S records) are lines[:held].
    lines = [_carry] if _carry else []
    held = -1
    writing = False
    try:
        for record_waiting in at_flush:
            record_waiting()
        add = lines.append
        if unwritten:  # first: an E the end adds once a span is taken out goes after its S
            for key in list(unwritten):
                span = unwritten.pop(key, None)
                if span is not None:
                    add(_format(span))
        if open_records is not None:
            open_records(lines)
        held = len(lines)
        n_buffered = len(_buffer)
        for item in _buffer[:n_buffered]:
            if type(item) is str:
                add(item)
            elif type(item) is tuple:  # a recorded import (importtime._recorded)
                add(import_line(*item))
            else:
                add(_span_line(item))
        n_late = len(late_records)
        pieces = [""]  # the lines above, joined below; then the LATE records' pieces
        if n_late:  # see LATE
            pieces += late_block(late_records, n_late)
        n_formatted = len(formatted)
        if n_formatted:
            lines += formatted[:n_formatted]
        add(spanfile.tick_line(now))
        pieces[0] = "".join(lines)
        if _fd is None or not _fd_is_ours():
            _fd = _open_span_file()
        if not _fd_size:  # a new file
            pieces[0] = _header + pieces[0]
        writing = True
        for data in pieces:
            _write(data.encode("utf-8", "replace"))
        _carry = ""
        del _buffer[:n_buffered]  # as _keep_interrupted does, inline: no call on every flush's path
        if n_late:
            del late_records[:n_late]
        if n_formatted:
            _taken_formatted(n_formatted)
    except Exception as exc:
        if is_programs(exc):  # a signal handler's, raised where its signal found the program: here
            if writing:
                _keep_interrupted(lines, held, pieces, n_buffered, n_late, n_formatted)
            else:
                _keep_interrupted(lines, held)
            raise
        _enabled = False  # e.g. a read-only run directory: stay silent, the program must not notice
        _drop_all()
    finally:
        add_overhead(thread_cpu_ns() - t0)


def _taken_formatted(n: int) -> None:
    """The first n preformatted records are written: out of their buffer, counted."""
    del formatted[:n]
    formatted_cost[0] += n


def _keep_interrupted(lines: list, held: int, pieces: list | None = None, n_buffered: int = 0, n_late: int = 0,
                      n_formatted: int = 0) -> None:
    """A flush interrupted by the program's exception (an interval timer's SIGALRM handler raising
    where its signal found the flush) keeps what it had not written for the next flush: the lines
    it held (`_carry`); where its writes had begun, the bytes the span file has not got (its size
    tells) and the buffers' records out (a timer every 0.5 ms around flushes lost 30-45 of 11,000
    records a run before). Never raises: a second exception here is lost with what it held."""
    global _carry
    try:
        if pieces is None:
            _carry = "".join(lines if held < 0 else lines[:held])
            return
        header = 0 if _fd_size else len(_header.encode("utf-8", "replace"))  # the next flush writes it again
        written = max(os.fstat(_fd).st_size - _fd_size, header)
        del _buffer[:n_buffered]
        del late_records[:n_late]
        if n_formatted:
            _taken_formatted(n_formatted)
        _carry = "".join(pieces).encode("utf-8", "replace")[written:].decode("utf-8", "replace")
    except BaseException:  # noqa: BLE001 - the program's exception is on its way already
        pass


def _drop_all() -> None:
    global _carry
    _carry = ""
    del _buffer[:]
    del formatted[:]
    del late_records[:]
    unwritten.clear()


def _raised_by_signal_handler(exc: BaseException) -> bool:
    """Whether `exc` came out of one of the program's signal handlers (an alarm's timeout: a SIGALRM
    landing in a flush), not out of the flush's own work: that one is the program's to see. Swallowed,
    it was never raised (the program ran on past its timeout) and tracing stopped for good.

    A traceback of the agent's frames only (its own failure, raised by its code or the C code it
    called: most of them) has no handler's frame, and is told so without looking at the handlers.
    No `try`: what can raise here is the program's own code (a handler object's attributes, another
    signal's handler run here), and its exception is the program's too."""
    tb = exc.__traceback__
    while tb is not None and frame_of(tb).f_globals.get("__name__", "").startswith(_OWN_MODULES):
        tb = tb.tb_next
    if tb is None:
        return False
    from _signal import getsignal, valid_signals

    codes = set()
    for signum in valid_signals():
        handler = getsignal(signum)
        handler = getattr(handler, "func", handler)  # a functools.partial
        code = code_of(handler) or code_of(getattr(type(handler), "__call__", None))  # (no audit event)
        if code is not None:
            codes.add(code)
    tb = exc.__traceback__  # from the top: the agent's SIGTERM handler calls the program's
    while tb is not None:
        if code_of(frame_of(tb)) in codes:
            return True
        tb = tb.tb_next
    return False


def _write(payload: bytes) -> None:
    """`payload` to the span file, whole. A flush writes its LATE records in pieces of ~60 KB, not in
    its one write: text of megabytes (thousands of SDK spans a flush), copied on its way, took fresh
    pages from the C allocator at every flush (~900 page faults a flush, kernel time the program's)."""
    while payload:
        written = os.write(_fd, payload)
        payload = payload[written:]


def _open_span_file() -> int:
    """The span file's descriptor, high (open_fd: the program's numbers and its lowered RLIMIT_NOFILE
    as untraced), never 0-2 (a program started with stdout closed must not print into it, nor its
    children inherit it as theirs): a new file at the first flush, the same one again, high again,
    when the program has closed ours (a daemon's closerange) and its number may be its own."""
    global _path, _fd_file, _fd_size
    if not _path:
        _path = os.path.join(_spans_dir, "%d-%s%s" % (os.getpid(), os.urandom(4).hex(), spanfile.SUFFIX))
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    try:
        fd = open_fd(_path, flags, 0o644)
    except FileNotFoundError as exc:
        raise_if_programs(exc)
        os.makedirs(_spans_dir, exist_ok=True)
        fd = open_fd(_path, flags, 0o644)
    status = os.fstat(fd)
    _fd_file, _fd_size = (status.st_dev, status.st_ino), status.st_size
    return fd


def _fd_is_ours() -> bool:
    """_fd is still the span file: the program may have closed it and opened a file of its own that
    took its number (checked at each flush, one fstat: never a record in the program's file)."""
    global _fd_size
    try:
        status = os.fstat(_fd)
    except OSError as exc:
        raise_if_programs(exc)
        return False
    _fd_size = status.st_size
    return (status.st_dev, status.st_ino) == _fd_file


def _start_flusher(at_any_age: bool = False, wait: bool = False) -> None:
    """A raw thread (invisible to threading.enumerate) so a blocked process still flushes every 100 ms.

    Started by the first record once the process is FLUSHER_AGE_NS old (start-up flushes what it
    recorded itself; until then each record asks again), so a process that records nothing more,
    or dies young, never pays for it; `at_any_age`, `wait`: before_block's.
    """
    global _flusher_started
    now = time_ns()
    if _root is None or now < _flusher_from_ns and not at_any_age:  # still starting up, or young
        return
    _flusher_started = True
    # The program's signals go to its own threads: one taken by this thread would not interrupt a
    # main thread blocked in a system call (a SIGTERM during time.sleep(30) waited for the sleep to
    # end, its handler unrun). So the thread is born with every signal blocked: the mask is set
    # around its creation (blocked by the thread itself, a signal could still reach it before it
    # ran). A signal meanwhile stays pending for this thread. The C module: `signal` imports enum
    # (ms of imports).
    try:
        from _signal import SIG_BLOCK, SIG_SETMASK, pthread_sigmask, valid_signals
    except ImportError:  # a platform without it (a builtin module's names: no handler runs in this `try`)
        pthread_sigmask = None
    # Before the main thread's blocking call (`wait`), the thread is also waited for until it sleeps,
    # signals still blocked: a thread asking for the GIL as the call begins makes the caller hand the
    # GIL over between its last check for signals and its system call, and a signal taken then was
    # seen only once the call returned (a SIGTERM during time.sleep(30) waited 30 s:
    # tests/agent/test_survival.py). Taken after the wait, a pending signal is handled before the
    # call, as untraced. The twin's sleep (importtime.sleep_after_signals) closes that gap for
    # sleeps whatever the thread does; a wait on a child keeps CPython's own.
    try:
        import _thread

        started = _thread.allocate_lock() if wait else None
        if started is not None:
            started.acquire()
        before = pthread_sigmask(SIG_BLOCK, valid_signals()) if pthread_sigmask is not None else None
        try:
            _thread.start_new_thread(_flusher_loop, (os.getpid(), started))
            if started is not None:
                started.acquire(True, FLUSHER_START_WAIT_S)
        finally:
            if before is not None:
                pthread_sigmask(SIG_SETMASK, before)
    except Exception as exc:
        raise_if_programs(exc)
    add_overhead(time_ns() - now)  # the thread's creation, in this thread (its start is its own CPU)


def before_block(seconds=None) -> None:
    """A hooked call that may block for long (a wait on a child process; a sleep of `seconds`, if
    more than FLUSH_INTERVAL_NS), or a server's request answered (it waits for the next one where
    no hook sees), where the flusher thread has not started (the callers look at
    _flusher_started): it starts now, whatever the process's age. While the process waits, the
    thread writes its records and the ticks that say it lived on (killed meanwhile, its open spans
    end near the kill), and a waiting process does not feel what a second thread costs a busy one.

    Only the main thread, where signal handlers run, waits for the thread to start (_start_flusher):
    beside a thread holding the GIL that wait is two hand-overs of it, 5 ms each and tens of ms on a
    busy machine (a sleeping thread beside a spinning one: 49 ms before its sleep began). The callers
    start their span before this call: the program is in its call meanwhile. Never raises but the
    program's own exceptions (raise_if_programs)."""
    try:
        if seconds is None or seconds * 1e9 > FLUSH_INTERVAL_NS:
            _start_flusher(at_any_age=True, wait=get_ident() == _main_thread)
    except Exception as exc:  # a sleep's bad argument: the sleep says what is wrong with it
        raise_if_programs(exc)


def _flusher_loop(pid: int, started=None) -> None:
    # The thread's own CPU time is the tracer's: its start (the kernel's and Python's thread state:
    # 40-120 us) and its wakes (taking the GIL), counted from its clock (thread_time_ns, ~0.7 us a
    # read) before it sleeps or flushes; a flush counts itself. `started`: released as it first
    # sleeps (_start_flusher waits for that).
    from time import thread_time_ns

    spent = 0
    nap = FLUSH_INTERVAL_NS
    seen = _flushed_in_passing
    try:
        while _enabled and os.getpid() == pid and not sys.is_finalizing():
            if _flushed_in_passing != seen:  # the program flushed by itself since the last wake: busy
                seen = _flushed_in_passing
                nap = min(2 * nap, FLUSH_NAP_MAX_NS)
            due = _flush_due_ns - FLUSH_INTERVAL_NS + nap + FLUSH_GRACE_NS - time_ns()  # the last flush + nap
            if due > 0:
                cpu = thread_time_ns()
                add_overhead(cpu - spent)
                spent = cpu
                if started is not None:
                    started.release()
                    started = None
                _nap.acquire(True, due / 1e9)
            elif _flush_lock.acquire(False):  # never wait on a program thread that is flushing
                nap = FLUSH_INTERVAL_NS
                try:
                    if time_ns() >= _flush_due_ns:
                        add_overhead(thread_time_ns() - spent)
                        _flush_locked()
                        spent = thread_time_ns()
                finally:
                    _flush_lock.release()
    finally:
        if started is not None:  # it ended before its first sleep
            started.release()


def before_fork() -> None:
    """Flush so the child never inherits (and writes again) what the parent buffered."""
    flush()
    _flush_lock.acquire()


def after_fork_in_parent() -> None:
    _flush_lock.release()


def reset_after_fork() -> None:
    """In a forked child: drop the parent's buffer, its other threads' imports, and close the parent's
    file descriptor."""
    global _fd, _flusher_started, _overhead_ns
    _flush_lock.release()
    try:  # (an at-fork handler: Python would only print its exception, a signal handler's too)
        if _fd is not None and _fd_is_ours():  # else the number is the program's now
            os.close(_fd)
    except Exception:
        pass
    _fd = None
    _overhead_ns = 0
    for cell in _counted:
        cell[0] = 0
    _drop_all()  # the parent's: written (or to be) in its file
    forking = _imports.get(get_ident())  # the imports of the thread that forked go on in the child
    _imports.clear()
    if forking is not None:
        _imports[get_ident()] = forking
