"""os-level process starts and exits: fork, exec*, posix_spawn, system, wait*, _exit.

process.py puts a stand-in at each os.<name> at start-up (an attribute assignment, no import);
the stand-in imports this module on its first call and delegates to `wrap(name, original)`.
"""

from __future__ import annotations

import os
from time import time_ns

from .. import process, tracer
from . import spawn

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
        try:
            span = spawn.start_span("subprocess", argv)
            env = spawn.child_environ(span, env)
            argv = spawn.rewrite_argv(argv, span)
        except Exception:
            return original(path, argv, env, *args, **kwargs)
        t0 = time_ns()
        try:
            pid = original(path, argv, env, *args, **kwargs)
        except BaseException as exc:
            spawn.failed(span, exc)
            raise
        spawn.started(span, pid, time_ns() - t0)
        return pid

    return posix_spawn


def _reap(pid: int, status: int) -> None:
    if pid > 0 and pid in spawn._children:
        try:
            spawn.reaped(pid, status)
        except Exception:
            pass


def _wrap_waitpid(original):
    def waitpid(pid, options):
        result = original(pid, options)
        _reap(result[0], result[1])
        return result

    return waitpid


def _wrap_wait(original):
    def wait():
        result = original()
        _reap(result[0], result[1])
        return result

    return wait


def _wrap_wait3(original):
    def wait3(options):
        result = original(options)
        _reap(result[0], result[1])
        return result

    return wait3


def _wrap_wait4(original):
    def wait4(pid, options):
        result = original(pid, options)
        _reap(result[0], result[1])
        return result

    return wait4


_WRAPPERS = {
    "fork": _wrap_fork, "_exit": _wrap_exit, "system": _wrap_system,
    "execv": _wrap_execv, "execve": _wrap_execve,
    "posix_spawn": _wrap_posix_spawn, "posix_spawnp": _wrap_posix_spawn,
    "waitpid": _wrap_waitpid, "wait": _wrap_wait, "wait3": _wrap_wait3, "wait4": _wrap_wait4,
}
