"""Import spans, nested as `python -X importtime` nests them.

CPython's import statement calls `importlib._bootstrap._find_and_load` by attribute lookup for
every module not yet in sys.modules (3.8 to 3.13), which is exactly what -X importtime times. We
put our own in its place (its body and frame size, the span's bookkeeping in calls beside the
load): each import gets a deferred span that is written only if its cumulative time reaches the
threshold (or something inside it was recorded), with self and cumulative time.
"""

from __future__ import annotations

import marshal
import os
import sys
from _frozen_importlib_external import MAGIC_NUMBER
from _thread import get_ident
from time import time_ns

from . import lazy, tracer
from .tracer import cpu_anchor, thread_cpu_ns

_original = None
_ModuleLockManager = _NEEDS_LOADING = _find_and_load_unlocked = _lock_unlock_module = None  # importlib's (install)
_in_startup = True  # imports before the program's first line are part of interpreter.startup
_AGENT = __name__.partition(".")[0]
_threshold_ns = 1_000_000
_current_get = tracer._current_get  # module globals: each import looks them up once, not through tracer.
_imports = tracer._imports
_Frame = tracer.ImportFrame
_buffer = tracer._buffer
_pending = lazy._pending
# The wrapper's bookkeeping around an import (its frame, the context switch, the sums below) is
# counted, at a cost per import calibrated on the first imports (tracer.calibrate): timing it with
# two more clock reads and a call was a fifth of the wrapper's cost. A recorded import's record is
# timed on top.
_bookkeeping = tracer.counted_overhead()
_samples: list = []
# The reads of the thread's CPU clock for an outermost import's edges, each timed: a system call
# (~1.5 us inside an import here), not the bookkeeping's calibrated cost. [ns, 1].
_edge_reads = tracer.counted_overhead()
_edge_reads[1] = 1
# The time the C twin spent on recorded imports' ends (tracer.add_overhead without a Python call).
_record_costs = tracer.counted_overhead()
_record_costs[1] = 1
runqueue_ns = None  # the twin's reader of this thread's time queued for a CPU (process.thread_clocks)
sleep_after_signals = None  # the twin's time.sleep with no gap where a signal goes unseen (process.py's sleep)
sleeper = None  # the twin's maker of time.sleep's wrapper, timed with no frame of its own (process.py's sleep)
gc_watcher = gc_passes = None  # the twin's timing of the garbage collector's passes (process.py's _watch_gc)
after_agent_import = None  # given each agent module once it has loaded (hooks/time_machine_.py)


def install(threshold_ns: int, run_module=None) -> Exception | None:
    """The import wrapper in importlib's place: its C twin (importtime.c, tracer.twin) when `run` built
    it for this interpreter and source, else the function below. `run_module`: the shim's runner of bundled
    modules (sitecustomize._selfopt_trace_run_module); without it, the agent's modules load through
    importlib. Returns why the twin that is there did not load (for a diagnostic once the span
    file is set up), else None."""
    global _original, _threshold_ns, _ModuleLockManager, _NEEDS_LOADING, _find_and_load_unlocked, _lock_unlock_module
    global _run_module, runqueue_ns, sleep_after_signals, sleeper, gc_watcher, gc_passes, _pop
    import _frozen_importlib as bootstrap

    if _original is not None or getattr(bootstrap._find_and_load, "__selfopt_trace__", False):
        return None
    _threshold_ns, _run_module = threshold_ns, run_module
    _ModuleLockManager, _NEEDS_LOADING = bootstrap._ModuleLockManager, bootstrap._NEEDS_LOADING
    _find_and_load_unlocked, _lock_unlock_module = bootstrap._find_and_load_unlocked, bootstrap._lock_unlock_module
    _original = bootstrap._find_and_load
    wrapper, failure, twin = _find_and_load, tracer.twin_failure, tracer.twin
    try:
        if twin is not None:
            wrapper = twin.install(sys.modules[__name__])
            runqueue_ns, sleep_after_signals, sleeper = twin.runqueue_ns, twin.sleep_after_signals, twin.sleeper
            gc_watcher, gc_passes = twin.gc_watcher, twin.gc_passes
            # the twin keeps the imports under way in its thread-local store, not in tracer._imports
            tracer.current, _pop = twin.current_span, twin.pop_import
            tracer.import_line = twin.import_line
    except Exception as exc:  # a twin that loaded but does not install here: the Python wrapper
        failure = exc
    bootstrap._find_and_load = wrapper
    return failure


def startup_over() -> None:
    """The program's code runs: imports are spans from now on (before, they are interpreter start-up)."""
    global _in_startup
    _in_startup = False


def _find_and_load(name, import_):
    # importlib's own _find_and_load (3.11-3.13; 3.8-3.10 took the module's lock on every call, to
    # the same effect), run in this frame instead of under it, with the import's span begun and
    # ended around the load. CPython 3.11 keeps frames in 16 KiB chunks, maps one when a frame does
    # not fit and unmaps it when that frame returns: one more frame a nested import shifted every
    # deeper frame, and a pytest run crossed chunk ends 1,500 times instead of 470 (a mapping, its
    # page faults and an unmapping each: docs/benchmarks.md). So this frame takes the original's
    # place, as large as it (four locals; the import's state is on its ImportFrame), and the
    # bookkeeping runs in calls beside the load, not around it.
    module = sys.modules.get(name, _NEEDS_LOADING)
    if module is _NEEDS_LOADING or getattr(getattr(module, "__spec__", None), "_initializing", False):
        frame = _begin(name)
        try:
            with _ModuleLockManager(name):
                module = sys.modules.get(name, _NEEDS_LOADING)
                if module is _NEEDS_LOADING:
                    return _find_and_load_unlocked(name, import_)
            _lock_unlock_module(name)
        except BaseException:
            _failed(frame)
            raise
        finally:
            _end(frame, name)
    if module is None:
        raise ModuleNotFoundError("import of {} halted; None in sys.modules".format(name), name=name)
    return module


_find_and_load.__selfopt_trace__ = True


class _AgentImport:
    """A hook module of the agent loading on first use: the tracer's cost, not an import span."""

    __slots__ = ("counted", "began_ns")


def _begin(name: str):
    """The import's frame, made current; None for start-up's imports (no spans), an _AgentImport for
    the agent's own modules (run from the lazy bundle when it has them)."""
    if name.startswith(_AGENT):
        agent = _AgentImport()
        agent.counted = tracer.overhead_ns()  # what nested agent imports count must not count twice
        agent.began_ns = time_ns()
        try:
            _load_bundled(name)
        except Exception as exc:  # importlib loads the module (and raises what its code raises)
            tracer.exception_diagnostic("bundle_failed:" + name, exc)
        return agent
    outer = _current_get()
    thread = get_ident()
    below = _imports.get(thread)
    parent = below if below is not None and below.outer is outer else outer or tracer._root  # tracer.current()
    if parent is None or _in_startup:
        return None
    frame = _Frame()
    if not _bookkeeping[1]:  # calibrating
        frame.began_ns = time_ns()
    frame.parent = parent
    frame.keep = False
    frame.child_ns = 0
    frame._span_id = frame._trace_id = ""
    frame.status = "UNSET"
    frame.outer = outer
    frame.below = below
    _imports[thread] = frame  # the current span (tracer.current) until its end
    frame.start_ns = start = time_ns()
    # An outermost import's CPU edges (tracer.CPU_START), read inside the span: the read can end
    # the thread's time slice, and the wait for a CPU then belongs to the import.
    if parent.deferred:
        frame.cpu0 = 0
    else:
        frame.cpu0 = thread_cpu_ns()
        _edge_reads[0] += time_ns() - start
    return frame


# The agent's modules that start-up does not load (the hooks, container.py), from the lazy bundle
# (agent_build.write_bundles): name -> (path, st_mtime_ns, st_size, offset, length); read at the first
# such import, empty when the bundle cannot be used.
_bundled: dict | None = None
_bundle_path = _bootstrap_dir = ""
_run_module = None  # install's


def agent_module(name: str):
    """Agent module `name` (a hook, container.py), loaded now unless it is: from the lazy bundle,
    else through importlib."""
    module = sys.modules.get(name)
    if module is None:
        module = bundled_module(name)
    if module is None:
        __import__(name)
        module = sys.modules[name]
    return module


def submodule(package: str, name: str):
    """`from <package> import <name>` of an agent module not loaded yet (the packages' __getattr__):
    run from the lazy bundle, not through the import statement. AttributeError when the bundle does
    not have it: the statement then imports it through importlib."""
    module = bundled_module(package + "." + name) if not name.startswith("__") else None
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (package, name))
    return module


def bundled_module(name: str):
    """Agent module `name` from the lazy bundle, run now unless it is loaded; None when the bundle
    does not have it. Not through the import system: with the twin, the program's audit hooks see
    none of the import, open and exec events a module's import raises (only its marshal.loads)."""
    module = sys.modules.get(name)
    if module is None:
        # less what nested loads count themselves; on the thread's CPU clock, as a hook's run (lazy._run)
        counted, t0 = tracer.overhead_ns(), thread_cpu_ns()
        try:
            _load_bundled(name)
        except Exception as exc:  # importlib loads the module (and raises what its code raises)
            tracer.exception_diagnostic("bundle_failed:" + name, exc)
        tracer.add_overhead(max(0, thread_cpu_ns() - t0 - (tracer.overhead_ns() - counted)))
        module = sys.modules.get(name)
    return module


# A lazy bundle's module runs without an exec audit event with the twin (tracer.read_file reads it
# without an open one; its unmarshal raises marshal.loads whichever way, as a .pyc's load does).
_exec_code = tracer.twin.exec_code if tracer.twin is not None else None


def _load_bundled(name: str) -> None:
    """Run agent module `name` from the lazy bundle into sys.modules, as importlib would load it: one
    stat of its source and one pread, no search of the package's directory, no .pyc read, no
    `__future__` import. Nothing when the bundle lacks it or is stale (importlib then loads it)."""
    global _bundled
    if _bundled is None:
        _bundled = _bundle_index()
    entry = _bundled.get(name)
    if entry is None or name in sys.modules:
        return
    package = name.rpartition(".")[0]
    if package not in sys.modules:
        _load_bundled(package)
        if package not in sys.modules:
            return
    path, mtime_ns, size, offset, length = entry
    filename = _bootstrap_dir + path
    with _ModuleLockManager(name):  # as importlib's: a module runs once, whichever thread imports it
        if name in sys.modules:
            return
        status = os.stat(filename)
        if status.st_mtime_ns != mtime_ns or status.st_size != size:
            return
        try:
            _run_module(name, filename, marshal.loads(tracer.read_file(_bundle_path, offset, length)), _exec_code)
        except BaseException:
            sys.modules.pop(name, None)  # as importlib leaves a module that failed
            del _bundled[name]  # importlib loads it from here on: one diagnostic, one attempt
            raise
        if after_agent_import is not None:  # (bundled_module's loads do not pass _end)
            after_agent_import(sys.modules[name])


def _bundle_index() -> dict:
    global _bootstrap_dir, _bundle_path
    package = sys.modules[_AGENT].__path__[0]
    tag = sys.implementation.cache_tag
    if _run_module is None or tag is None:  # (its code is the same for any -O: agent_build._compile_agent_module)
        return {}
    _bootstrap_dir = package.rpartition("/")[0] + "/"
    _bundle_path = package + "/__pycache__/lazy." + tag + ".bundle"
    try:
        head = tracer.read_file(_bundle_path, 0, 8)
        if head[:4] != MAGIC_NUMBER:
            return {}
        size = int.from_bytes(head[4:8], "little")
        index = marshal.loads(tracer.read_file(_bundle_path, 8, size))
        return {name: (path, mtime_ns, source_size, 8 + size + offset, length)
                for name, path, mtime_ns, source_size, offset, length in index}
    except Exception as exc:
        tracer.raise_if_programs(exc)
        return {}


def _failed(frame) -> None:
    """In the handler of the load's exception: the span's status, and the traceback as untraced."""
    exc = sys.exc_info()[1]
    if type(frame) is _Frame:
        frame.status = tracer.ERROR
    tracer.strip_own_frames(exc)  # a failed import's traceback shows no frame of ours, as untraced


def _end(frame, name: str) -> None:
    """After the load (or its failure): the hooks pending on a module just imported, and the span's end."""
    instrument_ns = 0
    if name in _pending:  # instrumenting the module is part of what importing it cost here
        module = sys.modules.get(name)
        if module is not None and (type(frame) is not _Frame or frame.status == "UNSET"):
            hooked = time_ns()
            try:
                lazy.fire(name, module)
            except BaseException:  # a KeyboardInterrupt meanwhile (each hook's own errors are caught)
                if type(frame) is _Frame:
                    _pop(frame)  # the program's import raises it, as untraced: its span is not current
                raise
            instrument_ns = time_ns() - hooked
    if type(frame) is not _Frame:
        if frame is not None:  # an agent module's import
            if after_agent_import is not None and name in sys.modules:
                after_agent_import(sys.modules[name])
            tracer.add_overhead(time_ns() - frame.began_ns - (tracer.overhead_ns() - frame.counted))
        return
    t2 = time_ns()
    _pop(frame)
    parent = frame.parent
    t1 = frame.start_ns
    cumulative = t2 - t1
    if parent.deferred:
        parent.child_ns += cumulative
    if cumulative >= _threshold_ns or frame.keep:
        cpu1 = 0
        if frame.cpu0:  # the end edge, for a recorded import only, read inside the span: it ends after
            cpu1 = thread_cpu_ns()
            read = time_ns()
            _edge_reads[0] += read - t2
            t2 = read
        _recorded(frame, name, t2, cpu1, instrument_ns)
    elif not _bookkeeping[1]:
        tracer.calibrate(_bookkeeping, _samples, t1 - frame.began_ns + time_ns() - t2)
    else:
        _bookkeeping[0] += 1


def _pop(frame: tracer.ImportFrame) -> None:
    """The import is over: the one it is nested in is its thread's innermost again. If imports
    nested in it ended after it (greenlets that switched inside a module's body), it leaves their
    chain. With the twin, its pop_import in this place: the twin's store."""
    thread = get_ident()
    nested = _imports.get(thread)
    if nested is frame:
        if frame.below is None:
            del _imports[thread]
        else:
            _imports[thread] = frame.below
    else:
        while nested is not None and nested.below is not frame:
            nested = nested.below
        if nested is not None:
            nested.below = frame.below
    frame.below = None  # (an ended frame keeps no other alive)


def _recorded(frame: tracer.ImportFrame, name: str, end: int, cpu1: int, instrument_ns: int = 0) -> None:
    """A recorded import's end (importtime.c's too): its ancestors kept, its record left in the buffer
    for the flush to write (tracer.import_line), its cost, the flush when one is due. Formatted at
    the flush, the records of ~100 ms of imports are written in one batch, the formatting's code and
    data warm: formatted at each import's end, between two modules' bodies, a record cost a pytest
    run 5.8 us of its wall against 1.9 us in a loop (docs/benchmarks.md). What only this moment
    knows is taken now: the importing thread's id of the CPU edges, the time hooks took."""
    parent = frame.parent
    if parent.deferred and not parent.keep:
        tracer._mark_kept(parent)
    extra = f',"selfopt_trace.instrument_ns":{instrument_ns}' if instrument_ns else ""
    cpu0 = frame.cpu0
    if cpu0:
        extra += cpu_anchor(cpu0, cpu1)
    _buffer.append((frame, name, end, extra))
    tracer.add_overhead(time_ns() - end)
    _bookkeeping[0] += 1
    # after the record's cost is counted: a flush counts its own
    if end > tracer._flush_due_ns or len(_buffer) > tracer.FLUSH_RECORDS:
        tracer.flush(blocking=False)
    elif not tracer._flusher_started:
        tracer._start_flusher()
