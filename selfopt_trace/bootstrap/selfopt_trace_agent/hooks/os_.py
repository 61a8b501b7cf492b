"""os-level process starts and exits: fork, exec*, posix_spawn, system, wait*, _exit.

process.py puts a stand-in at each os.<name> at start-up (an attribute assignment, no import);
the stand-in imports this module on its first call and delegates to `wrap(name, original)`.
"""

from __future__ import annotations

import os
from _thread import get_ident
from time import time_ns

from .. import process, tracer
from . import spawn, waits

_fork_span: tracer.Span | None = None  # set by callers (multiprocessing) that already opened a span


def wrap(name: str, original):
    """The traced version of os.<name> (process.py installs stand-ins that call this on first use)."""
    wrapper = _WRAPPERS[name](original)
    wrapper.__wrapped__ = original
    wrapper.__name__ = original.__name__
    wrapper.__doc__ = original.__doc__
    return wrapper


def _wrap_fork(original):
    def fork():
        span = _fork_span
        owned = span is None
        try:
            if owned:
                span = spawn.start_span("fork", ["fork"])
            token = tracer.activate(span)
        except Exception:
            return original()
        t0 = time_ns()
        try:
            pid = original()
        except BaseException as exc:
            tracer.deactivate(token)
            if owned:
                spawn.failed(span, exc)
            raise
        if pid == 0:
            return 0  # the child: its own process span was opened by the at-fork handler
        tracer.deactivate(token)
        if owned:
            spawn.started(span, pid, time_ns() - t0)
        return pid

    return fork


def _wrap_exit(original):
    def _exit(status):
        try:
            process.set_exit(status if isinstance(status, int) else None)
            process.end()
        except Exception:
            pass
        original(status)

    return _exit


def _wrap_system(original):
    def system(command):
        try:
            span = spawn.start_span("subprocess", ["/bin/sh", "-c", command], attributes={"process.shell": True})
        except Exception:
            return original(command)
        with spawn.inherited_environ(span):
            status = original(command)
        spawn.end_with_code(span, spawn.exit_code(status) if status >= 0 else None)
        return status

    return system


def _exec_span(path, args) -> tracer.Span:
    """exec replaces this image: close our spans now; the new image's process span is a child of this one."""
    span = spawn.start_span("exec", args if args else [path])
    tracer.end_span(span, tracer.UNSET, {"process.pid": os.getpid()})
    process.set_exit(None, **{"process.exec.replaced": True})
    process.end()
    return span


def _exec_failed() -> None:
    process.reopen()


def _wrap_execv(original):
    def execv(path, args):
        try:
            span = _exec_span(path, args)
            args = spawn.rewrite_argv(args, span)
        except Exception:
            return original(path, args)
        with spawn.inherited_environ(span):
            try:
                original(path, args)
            except BaseException:
                _exec_failed()
                raise

    return execv


def _wrap_execve(original):
    def execve(path, args, env):
        try:
            span = _exec_span(path, args)
            env = spawn.child_environ(span, env)
            args = spawn.rewrite_argv(args, span)
        except Exception:
            return original(path, args, env)
        try:
            original(path, args, env)
        except BaseException:
            _exec_failed()
            raise

    return execve


def _wrap_posix_spawn(original):
    def posix_spawn(path, argv, env, *args, **kwargs):
        if tracer.in_spawn:  # subprocess.Popen's own (_USE_POSIX_SPAWN): its span is already open
            return original(path, argv, env, *args, **kwargs)
        try:
            span = spawn.start_span("subprocess", argv)
            env = spawn.child_environ(span, env)
            argv = spawn.rewrite_argv(argv, span)
        except Exception:
            return original(path, argv, env, *args, **kwargs)
        return spawn.run_spawning(span, lambda: original(path, argv, env, *args, **kwargs))

    return posix_spawn


def _reap(pid: int, status: int) -> str:
    """The child's span ends with its exit status; returns that span's id ("" for no child of ours)."""
    if pid > 0:
        entry = spawn._children.get(pid)
        if entry is not None:
            try:
                spawn.reaped(pid, status)
            except Exception:
                pass
            return entry[0].span_id
    return ""


# The wait* calls are waits (hooks/waits.py) unless WNOHANG makes them polls. On a pid of ours the
# wait is on that child's span; on any child (-1, a process group) on every child alive when it
# began: the one it reaped and those still alive after.


def _waited(pid: int, reaped: str) -> tuple:
    if pid > 0:
        if reaped:
            return [reaped], None
        entry = spawn._children.get(pid)
        return ([entry[0].span_id], None) if entry is not None else ([], {"process.pid": pid})
    return [reaped] + [entry[0].span_id for entry in list(spawn._children.values())], None


def _waiting(name: str, call, pid: int, options: int, args: tuple):
    """Call os.<name>(*args), reap what it returns, and record a wait if it blocked."""
    if not isinstance(options, int) or options & os.WNOHANG or get_ident() in waits.busy:  # a poll, or part of an outer wait
        result = call(*args)
        _reap(result[0], result[1])
        return result
    t0 = time_ns()
    try:
        result = call(*args)
    except BaseException as exc:
        t1 = time_ns()
        if t1 - t0 >= waits.THRESHOLD_NS:
            on, extra = _waited(pid, "")
            waits.record(name, t0, t1, on, extra, exc)
        raise
    t1 = time_ns()
    reaped = _reap(result[0], result[1])
    if t1 - t0 >= waits.THRESHOLD_NS:
        try:
            on, extra = _waited(pid, reaped)
        except Exception:
            on, extra = [reaped], None
        waits.record(name, t0, t1, on, extra)
    else:
        waits.not_blocked(t1)
    return result


def _wrap_waitpid(original):
    def waitpid(pid, options):
        return _waiting("os.waitpid", original, pid, options, (pid, options))

    return waitpid


def _wrap_wait(original):
    def wait():
        return _waiting("os.wait", original, -1, 0, ())

    return wait


def _wrap_wait3(original):
    def wait3(options):
        return _waiting("os.wait3", original, -1, options, (options,))

    return wait3


def _wrap_wait4(original):
    def wait4(pid, options):
        return _waiting("os.wait4", original, pid, options, (pid, options))

    return wait4


_WRAPPERS = {
    "fork": _wrap_fork, "_exit": _wrap_exit, "system": _wrap_system,
    "execv": _wrap_execv, "execve": _wrap_execve,
    "posix_spawn": _wrap_posix_spawn, "posix_spawnp": _wrap_posix_spawn,
    "waitpid": _wrap_waitpid, "wait": _wrap_wait, "wait3": _wrap_wait3, "wait4": _wrap_wait4,
}
