"""multiprocessing with fork, spawn and forkserver: each Process gets a CLIENT span, parent of the child's process span.

fork: the at-fork handler opens the child's process span under the current span (ours).
spawn: the child is a new interpreter started with os.environ, where TRACEPARENT points at our span.
forkserver: the child is forked by the server process, so we also put our span id into the
preparation data the parent sends, and the child re-parents its process span when it reads it.

multiprocessing's own helpers (the resource tracker, the forkserver) are started by
util.spawnv_passfds, out of the subprocess module's sight: each gets a `subprocess` span of its
own, so it is not taken for the Process being started when it was needed (a wait on that Process
must not wait on them). A spawned Process's own interpreter (`--multiprocessing-fork`) goes through
the same function and stays the child of its `multiprocessing` span.

With fork and spawn, the child is reaped by popen_fork's `os.waitpid` (join, is_alive, exitcode):
hooks/os_.py ends the `multiprocessing` span there with the kernel's count of the child's CPU
(`process.reaped.cpu_ns`). A forkserver child is reaped by the server: its span ends with the exit
code read from the pipe (`_poll`), and no CPU figure.

A forkserver child's start waits on the server, which forks it: a `forkserver` wait on the server's
`subprocess` span from its launch (or the server's spawn, when this start spawned it) until the
child's pid arrives. The first start's wait is the server's interpreter start-up and imports (the
modules it preloads: `set_forkserver_preload`), which counted as the start's spawn overhead before.
"""

from __future__ import annotations

import os
from time import time_ns

from .. import process, tracer
from . import os_, spawn, waits

_PREP_KEY = "selfopt_trace_parent"


def install(target: str, module) -> None:
    if target == "multiprocessing.process":
        waits.wrap(module.BaseProcess, "start", _start)
        waits.wrap(module.BaseProcess, "join", _join)
    elif target == "multiprocessing.spawn":
        waits.wrap(module, "get_preparation_data", _preparation_data)
        waits.wrap(module, "prepare", _prepare)
    elif target == "multiprocessing.popen_forkserver":
        waits.wrap(module.Popen, "poll", _poll)
        waits.wrap(module.Popen, "_launch", _launch)
    elif target == "multiprocessing.util":
        waits.wrap(module, "spawnv_passfds", _spawnv_passfds)


def _start(original):
    def start(self):
        try:
            span = token = None
            try:
                span = spawn.start_span("multiprocessing", [self.name], attributes={"process.multiprocessing.start_method": _method(self)})
                token = tracer.activate(span)
                os_._fork_span = span
            except Exception as exc:
                os_._fork_span = None
                spawn.raise_if_programs(exc, span, token)
                return original(self)
            try:
                with spawn.inherited_environ(span):
                    original(self)
            except BaseException as exc:
                spawn.failed(span, exc)
                raise
            finally:
                os_._fork_span = None
                tracer.deactivate(token)
            spawn.started(span, self.pid)  # start() is the spawning call (fork, or a new interpreter)
            self.__dict__[waits.SPAN] = span.span_id  # for waits on it (join, a pool's results)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return start


def _spawnv_passfds(original):
    def spawnv_passfds(path, args, passfds):
        try:
            if "--multiprocessing-fork" in args:
                return original(path, args, passfds)
            span = None
            try:
                span = spawn.start_span("subprocess", args)
            except Exception as exc:
                spawn.raise_if_programs(exc, span)
                return original(path, args, passfds)
            with spawn.inherited_environ(span):  # the helper takes os.environ
                return spawn.run_spawning(span, original, path, args, passfds)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return spawnv_passfds


def _method(proc) -> str:
    try:
        return proc._start_method or ""
    except Exception as exc:
        tracer.raise_if_programs(exc)
        return ""


def _join(original):
    def join(self, timeout=None):
        try:
            original(self, timeout)
            _ended(self.pid, self.exitcode)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    # Process.join is a wait on the child's span (hooks/waits.py): once, around the popen's wait
    # and the os.waitpid under it.
    return waits.method(join, "Process.join", _join_targets, outer=True, ready=_reaped, own=True, on_child=True)


def _reaped(proc) -> bool:
    popen = proc.__dict__.get("_popen")
    return popen is not None and popen.returncode is not None


def _join_targets(proc, captured) -> tuple:
    span_id = waits.span_of(proc)
    return [span_id], (None if span_id else {"process.pid": proc.pid})


def _poll(original):
    def poll(self, flag=os.WNOHANG):
        try:
            code = original(self, flag)
            _ended(self.pid, code)
            return code
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return poll


def _launch(original):
    def launch(self, process_obj):
        try:
            t0 = time_ns()
            original(self, process_obj)
            _waited_on_server(t0, time_ns())
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return launch


def _waited_on_server(t0: int, t1: int) -> None:
    """The `forkserver` wait of a launch from t0 to t1, on the server's span (one this process spawned)."""
    try:
        from multiprocessing import forkserver

        entry = spawn.child(forkserver._forkserver._forkserver_pid)
        if entry is None:  # a server of our parent's, or one we did not see spawned
            return
        server, attributes = entry
        t0 = max(t0, server.start_ns + attributes.get("selfopt_trace.spawn_ns", 0))  # after its spawn, if in this launch
        if t1 - t0 >= waits.THRESHOLD_NS:
            waits.record("forkserver", t0, t1, [server.span_id])
    except Exception as exc:
        tracer.raise_if_programs(exc)


def _ended(pid, code) -> None:
    if code is None or pid is None:
        return
    entry = spawn.forget(pid)
    if entry is not None:
        spawn.end_with_code(entry[0], code, entry[1])


def _preparation_data(original):
    def get_preparation_data(name):
        try:
            data = original(name)
            span = tracer.current()
            if span is not None and span.category == "subprocess":
                data[_PREP_KEY] = span.span_id
            return data
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return get_preparation_data


def _prepare(original):
    def prepare(data):
        try:
            parent_id = data.get(_PREP_KEY) if isinstance(data, dict) else None
            if parent_id:
                data = {k: v for k, v in data.items() if k != _PREP_KEY}
                root = tracer.root()
                if root is not None and root.parent_id != parent_id:
                    process.set_reparent(parent_id)
            return original(data)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return prepare
