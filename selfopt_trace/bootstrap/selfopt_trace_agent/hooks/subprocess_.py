"""subprocess.Popen (and so run/call/check_output and asyncio subprocesses, uvloop's too): one CLIENT
span per child.

We wrap `Popen._execute_child`, which every Popen goes through with the final argv, cwd and env.
It returns only once the child has exec'd (or failed to), so its duration is the spawn cost.
`Popen.wait` and `Popen.communicate` (so run/call/check_call/check_output) are waits on the
child's span (hooks/waits.py): the Popen keeps its span id for them after the child is reaped.
The reap itself is `os.waitpid` (in `_try_wait`, and in `_internal_poll` through the default
argument bound at import to our stand-in): hooks/os_.py ends the span there, with the child's exit
status and the kernel's count of its CPU (`process.reaped.cpu_ns`).
"""

from __future__ import annotations


import os
from _thread import get_ident

from .. import lazy, tracer
from . import spawn, waits

# fork_exec's environment argument (CPython 3.8-3.13: args, executable_list, close_fds, fds_to_keep,
# cwd, env_list, ...)
_ENV_LIST = 5


_NO_PIPE = {"selfopt_trace.child.no_pipe": True}


def install(target: str, module) -> None:
    if target == "uvloop":
        _install_uvloop(module)
        return
    popen = module.Popen
    original = lazy.original(popen.__dict__["_execute_child"])  # what stands in until the first Popen wraps it
    if tracer.is_own_wrapper(original):
        return
    at_fork_exec = _wrap_fork_exec(module)

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest):
        try:
            thread, span = get_ident(), None
            try:
                # (Popen set its pipes' ends before this call) a child whose output the parent cannot
                # read is never read until it exits (macros.sql, read_candidates)
                no_pipe = self.stdout is None and self.stderr is None
                span = spawn.start_span("subprocess", args, cwd, _NO_PIPE if no_pipe else None)
                if at_fork_exec:  # added where the child's environment is built: env stays as given
                    spawn.pending[thread] = spawn.additions(span, os.environ if env is None else env)
                else:
                    env = spawn.child_environ(span, env)
                args = spawn.rewrite_argv(args, span)
            except Exception as exc:
                spawn.raise_if_programs(exc, span)
                return original(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest)
            tracer.in_spawn.add(thread)
            try:
                original(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest)
            except BaseException as exc:
                spawn.failed(span, exc)
                raise
            finally:
                tracer.in_spawn.discard(thread)
                spawn.pending.pop(thread, None)
            spawn.started(span, self.pid)
            self.__dict__[waits.SPAN] = span.span_id
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    popen._execute_child = tracer.own_wrapper(_execute_child, original)
    # A Popen whose returncode is known cannot block (Popen.__exit__ waits after every run()).
    waits.wrap(popen, "wait", lambda original: waits.method(original, "Popen.wait", _targets, outer=True, own=True,
                                                            ready=_reaped, on_child=True))
    waits.wrap(popen, "communicate", lambda original: waits.communicate_method(original, "Popen.communicate", _targets,
                                                                                    own=True))


def _install_uvloop(module) -> None:
    """uvloop's event loop starts children in C (libuv's uv_spawn), past Popen: its subprocess_exec and
    subprocess_shell, which asyncio.create_subprocess_* call, get the spawn span and the child's
    environment here. libuv reaps in C too: the span ends as a child that exited unseen (spawn.py),
    and an asyncio.Process wait names it by pid (waits.py)."""
    loop = module.Loop  # uvloop's Python subclass of its Cython loop: the methods can be set on it

    def wrap(name: str, argv) -> None:
        original = getattr(loop, name)
        if tracer.is_own_wrapper(original):
            return

        async def start(self, protocol_factory, *args, **kwargs):
            try:
                thread, span = get_ident(), None
                try:
                    span = spawn.start_span("subprocess", argv(args), kwargs.get("cwd"))
                    kwargs["env"] = spawn.child_environ(span, kwargs.get("env"))
                except Exception as exc:
                    spawn.raise_if_programs(exc, span)
                    return await original(self, protocol_factory, *args, **kwargs)
                # the fork runs Python's at-fork handlers before libuv's exec (PyOS_AfterFork_Child):
                # the exec'd image traces itself (process._after_fork_in_child)
                tracer.in_spawn.add(thread)
                try:
                    transport, protocol = await original(self, protocol_factory, *args, **kwargs)
                except BaseException as exc:
                    spawn.failed(span, exc)
                    raise
                finally:
                    tracer.in_spawn.discard(thread)
                spawn.started(span, transport.get_pid())
                return transport, protocol
            except BaseException as exc:  # as untraced: no frame of ours
                tracer.strip_own_frames(exc)
                raise

        setattr(loop, name, waits.identity(start, original))

    wrap("subprocess_exec", list)
    wrap("subprocess_shell", lambda args: ["/bin/sh", "-c", args[0]] if args else [])


def _wrap_fork_exec(module) -> bool:
    """_posixsubprocess.fork_exec, which Popen calls with the environment as a list (None: ours),
    given the variables tracing adds for the Popen being started on this thread (spawn.pending):
    subprocess's `_fork_exec` (3.11 on), else `_posixsubprocess.fork_exec`. False where there is
    none to wrap (the Popen then passes the merged environment itself)."""
    owner, name = (module, "_fork_exec") if hasattr(module, "_fork_exec") else \
        (getattr(module, "_posixsubprocess", None), "fork_exec")
    original = getattr(owner, name, None)
    if original is None:
        return False
    if tracer.is_own_wrapper(original):
        return True

    def fork_exec(*args):
        try:
            ours = spawn.pending.pop(get_ident(), None)
            if ours is not None and len(args) > _ENV_LIST:
                given = args[_ENV_LIST]
                added = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in ours.items()]
                names = {line.partition(b"=")[0] for line in added}
                kept = [k + b"=" + v for k, v in os.environb.items()] if given is None else list(given)
                args = (*args[:_ENV_LIST], [line for line in kept if line.partition(b"=")[0] not in names] + added,
                        *args[_ENV_LIST + 1:])
            return original(*args)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    setattr(owner, name, tracer.unbound(tracer.own_wrapper(fork_exec, original), original))
    return True


def _reaped(popen) -> bool:
    return popen.returncode is not None


def _targets(popen, captured) -> tuple:
    span_id = waits.span_of(popen)
    return [span_id], (None if span_id else {"process.pid": popen.pid})
