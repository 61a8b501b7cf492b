"""What every way of starting a process shares: the CLIENT span, the child's environment, reaping.

A child's `process` span is the child of the span that started it, carried by TRACEPARENT in the
child's environment (OTel's environment-variable carrier). The span ends when this process sees
the child's exit status (any os.wait* call), so it covers spawn, run and reap.
"""

from __future__ import annotations

import os
from _thread import get_native_id
from time import time_ns

import _signal

from .. import config, process, redact, tracer
from . import waits

_children: dict = {}  # pid -> span of the child's start, ended when the exit status is seen
RUNNING_AT_EXIT = "selfopt_trace.child.running_at_exit"
EXITED_UNSEEN = "selfopt_trace.child.exited_unseen"


def _end_unreaped() -> None:
    """At our exit, children we never saw exit end their span here, saying which of two they are:
    one still running (a helper that outlives us by design, like multiprocessing's resource
    tracker), or one that exited and was reaped where no hook sees it (gevent's event loop reaps in
    C), whose span the loader ends at the child's own last record."""
    for pid, (span, attributes) in list(_children.items()):
        status = tracer.ERROR if attributes.get("process.exit.code") else tracer.UNSET  # (seen by an asyncio wait)
        if _exited(pid):
            # As at a reap: the spawning thread's CPU since the call tells whether it read the child
            # until EOF (`os.popen(cmd).read()`, which nobody reaps); the loader ends such a read at
            # the child's end, and the CPU after it counts against the read (the test errs on no wait).
            _read_spawner_clocks(attributes)
            attributes[EXITED_UNSEEN] = True
        else:
            attributes[RUNNING_AT_EXIT] = True
        tracer.end_span(span, status, attributes)
    _children.clear()


def _exited(pid: int) -> bool:
    """The child is gone (reaped) or a zombie (exited, not reaped yet); a process that reused its pid
    counts as the child running."""
    try:
        os.kill(pid, 0)
        return tracer.read_file(f"/proc/{pid}/stat", 0, 4096).rsplit(b")", 1)[1].split()[0] == b"Z"
    except ProcessLookupError:  # (at the process's end, both: see process.end)
        return True
    except Exception:
        return False


process.on_end(_end_unreaped)
os.register_at_fork(after_in_child=_children.clear)  # a forked child's children are its own


# The signals that end a process by default, as a program sends them to stop a child.
_ENDING = frozenset((_signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGKILL))


def _install_kill() -> None:
    """os.kill notes a child of ours asked to end (waits.signalled), from this module's load on: a
    process has children of ours only after it (`from os import kill` before then keeps the original)."""
    original = os.kill
    if tracer.is_own_wrapper(original):
        return

    def kill(pid, signal):
        try:
            if signal in _ENDING and pid in _children:
                waits.signalled.add(pid)
            return original(pid, signal)
        except BaseException as exc:  # a bad argument, a gone process: as untraced, no frame of ours
            tracer.strip_own_frames(exc)
            raise

    kill.__name__, kill.__doc__ = original.__name__, original.__doc__
    os.kill = tracer.unbound(tracer.own_wrapper(tracer.at_home(kill, "os", "kill"), original), original)


_install_kill()


def start_span(name: str, args, cwd=None, attributes: dict | None = None) -> tracer.Span:
    """The spawning call's span, from now: preparing its attributes is part of the call."""
    now, cpu = time_ns(), tracer.thread_cpu_ns()
    if isinstance(args, (str, bytes)):
        args = [args]
    argv = redact.argv(list(args))
    attrs = {"process.command_args": argv, "process.executable.name": os.path.basename(argv[0]) if argv else "",
             "process.command": process.command_name(argv)}
    if cwd is not None:
        attrs["process.working_directory"] = os.fsdecode(cwd)
    if attributes:
        attrs.update(attributes)
    if cpu and "process.shell" not in attrs:  # the call's CPU edges (tracer.CPU_START): this one now,
        attrs[tracer.CPU_START] = cpu            # the other in started(); os.system is a wait on its shell
    span = tracer.start_span(name, "subprocess", tracer.CLIENT, attrs, start_ns=now)
    try:
        tracer.flush()  # the child may outlive us or be killed with us: its parent span must be on disk
    except BaseException as exc:  # the program's (a signal handler's): the call ends with it
        tracer.end_interrupted(span, exc)
        raise
    return span


def raise_if_programs(exc: BaseException, span: tracer.Span | None, token=None) -> None:
    """tracer.raise_if_programs, in a spawning wrapper's `except` around its preparation: before the
    program's exception (a signal handler's) goes on, the span the wrapper began ends and what it
    made current is undone (tracer.end_interrupted: left open, the span ran to the process's end, a
    spawn for the breakdown)."""
    if tracer.is_programs(exc):
        tracer.end_interrupted(span, exc, token)
        raise exc


_CONTAINER_CLIS = ("docker", "podman")


def rewrite_argv(args, span: tracer.Span):
    """Commands that start containers get the trace carried inside (hooks/docker_.py), `env` keeps the
    bootstrap in a PYTHONPATH it sets (config.env_argv); others pass as they are."""
    if isinstance(args, (str, bytes)) or not args:
        return args
    name = os.path.basename(os.fsdecode(args[0]))
    if name == "env":
        settings = process.settings()
        return config.env_argv(list(args), settings.bootstrap_dir) if settings else args
    if name not in _CONTAINER_CLIS:
        return args
    from . import docker_

    return docker_.rewrite_argv(list(args), span)


def spawn_marker() -> str:
    return "%d:%d" % (os.getpid(), time_ns())


def child_environ(span: tracer.Span, env) -> dict:
    """The environment for a child: the caller's (or ours), merged with what tracing needs."""
    base = dict(os.environ if env is None else env)
    base.update(additions(span, base))
    return base


def additions(span: tracer.Span, base) -> dict:
    """What tracing sets in a child's environment `base` (str or bytes keys, as `base` has them)."""
    settings = process.settings()
    ours = dict(config.propagated_environ(settings)) if settings else {}
    own_dir = _get(base, config.ENV_DIR)
    if settings and own_dir and own_dir != settings.run_dir:
        # A run of its own (a nested `selfopt-trace run`): it keeps its settings, joined to our trace.
        ours = {}
    ours[config.ENV_TRACEPARENT] = span.traceparent()
    ours[config.ENV_SPAWN] = spawn_marker()
    if settings:
        ours["PYTHONPATH"] = config.with_bootstrap(_get(base, "PYTHONPATH"), settings.bootstrap_dir)
    if base and isinstance(next(iter(base)), bytes):
        ours = {os.fsencode(k): os.fsencode(v) for k, v in ours.items()}
    return ours


# thread -> what tracing adds to the environment of the child a Popen starts (hooks/subprocess_.py):
# added where that environment is built (fork_exec, or os.posix_spawn), so Popen._execute_child's
# frame keeps `env` as given, None or the program's own (pytest prints a failed call's arguments:
# they showed the whole environment where untraced it printed env = None).
pending: dict = {}


def _get(env: dict, key: str) -> str:
    value = env.get(key)
    if value is None:
        value = env.get(key.encode())
    return os.fsdecode(value) if value is not None else ""


class inherited_environ:
    """For calls that take the environment from os.environ (os.system, exec*, multiprocessing spawn):
    point TRACEPARENT at `span` for the duration of the call."""

    def __init__(self, span: tracer.Span):
        self.span = span

    def __enter__(self):
        self.saved = {k: tracer.getenv(k) for k in (config.ENV_TRACEPARENT, config.ENV_SPAWN, "PYTHONPATH")}
        tracer.setenv(config.ENV_TRACEPARENT, self.span.traceparent())
        tracer.setenv(config.ENV_SPAWN, spawn_marker())
        settings = process.settings()
        if settings:  # the program may have set PYTHONPATH itself: the child keeps the bootstrap
            tracer.setenv("PYTHONPATH", config.with_bootstrap(self.saved["PYTHONPATH"] or "", settings.bootstrap_dir))
        return self

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            tracer.setenv(key, value)


def started(span: tracer.Span, pid: int) -> None:
    """The child exists: remember it so that seeing its exit status ends the span.

    `selfopt_trace.spawn_ns` is the spawning call as the program lives it: from the span's start,
    the wrapper's entry (the agent's preparation of argv and environment included: a preemption
    there, or its first-call imports, is time in the call, not the program's own work), to now."""
    attributes: dict = {"process.pid": pid}
    if span.attributes and span.attributes.get(tracer.CPU_START):  # before the end time: inside the call
        attributes.update(tracer.cpu_end_edge(tracer.thread_cpu_ns()))
        queued = process.runqueue_ns()
        if queued is not None:
            attributes[tracer.CPU_END_QUEUED] = queued
    attributes["selfopt_trace.spawn_ns"] = time_ns() - span.start_ns
    _children[pid] = (span, attributes)


def run_spawning(span: tracer.Span, call, *args) -> int:
    """`call(*args)` starts the child and returns its pid: the span's spawning call."""
    try:
        pid = call(*args)
    except BaseException as exc:
        failed(span, exc)
        raise
    started(span, pid)
    return pid


def failed(span: tracer.Span, exc: BaseException) -> None:
    tracer.end_span(span, tracer.ERROR, {"error.type": type(exc).__qualname__,
                                         "exception.message": redact.text(str(exc))[:500]})


def reaped(pid: int, status: int) -> None:
    entry = _children.pop(pid, None)
    if entry is None:
        return
    _read_spawner_clocks(entry[1])
    end_with_code(entry[0], exit_code(status), entry[1])


def _read_spawner_clocks(attributes: dict) -> None:
    """The spawning thread's clocks now, as the child's exit is seen (tracer.CPU_REAP, CPU_REAP_QUEUED)."""
    spawner = attributes.get(tracer.CPU_TID)
    if spawner is None:
        return
    if spawner == get_native_id():
        cpu, queued = tracer.thread_cpu_ns(), process.runqueue_ns()
    else:
        cpu, queued = _thread_clocks(spawner)
    if cpu is not None:
        attributes[tracer.CPU_REAP] = cpu
    if queued is not None and tracer.CPU_END_QUEUED in attributes:
        attributes[tracer.CPU_REAP_QUEUED] = queued


def _thread_clocks(tid: int) -> tuple[int | None, int | None]:
    """Another thread's CPU time and time queued for a CPU as the kernel counts them (asyncio's
    child watcher reaps in a thread of its own), None when it is gone. Read at a reap, not a hot
    path: ~10-30 us."""
    try:
        cpu, queued = tracer.read_file("/proc/self/task/%d/schedstat" % tid, 0, 256).split()[:2]
        return int(cpu), int(queued)
    except (OSError, ValueError) as exc:  # (a reap in the main thread too)
        tracer.raise_if_programs(exc)
        return None, None


def exit_code(status: int) -> int | None:
    """A wait status as an exit code, negative for a signal (like Popen.returncode)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return None


def child(pid: int) -> tuple | None:
    """The span and attributes of a child not yet seen to exit."""
    return _children.get(pid)


def forget(pid: int) -> tuple | None:
    """The child's span and attributes, for a caller that learns the exit status another way."""
    return _children.pop(pid, None)


def end_with_code(span: tracer.Span, code: int | None, attributes: dict | None = None) -> None:
    attributes = dict(attributes or ())
    if code is not None:
        attributes["process.exit.code"] = code
    tracer.end_span(span, tracer.ERROR if code else tracer.UNSET, attributes)
