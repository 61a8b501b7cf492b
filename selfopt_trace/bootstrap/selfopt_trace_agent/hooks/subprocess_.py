"""subprocess.Popen (and so run/call/check_output and asyncio subprocesses): one CLIENT span per child.

We wrap `Popen._execute_child`, which every Popen goes through with the final argv, cwd and env.
It returns only once the child has exec'd (or failed to), so its duration is the spawn cost.
`Popen.wait` and `Popen.communicate` (so run/call/check_call/check_output) are waits on the
child's span (hooks/waits.py): the Popen keeps its span id for them after the child is reaped.
The reap itself is `os.waitpid` (in `_try_wait`, and in `_internal_poll` through the default
argument bound at import to our stand-in): hooks/os_.py ends the span there, with the child's exit
status and the kernel's count of its CPU (`process.reaped.cpu_ns`).
"""

from __future__ import annotations


from .. import lazy, tracer
from . import spawn, waits


def install(target: str, module) -> None:
    popen = module.Popen
    original = lazy.original(popen.__dict__["_execute_child"])  # what stands in until the first Popen wraps it
    if tracer.is_own_wrapper(original):
        return

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest):
        try:
            try:
                span = spawn.start_span("subprocess", args, cwd)
                env = spawn.child_environ(span, env)
                args = spawn.rewrite_argv(args, span)
            except Exception:
                return original(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest)
            tracer.in_spawn += 1
            try:
                original(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest)
            except BaseException as exc:
                spawn.failed(span, exc)
                raise
            finally:
                tracer.in_spawn -= 1
            spawn.started(span, self.pid)
            self.__dict__[waits.SPAN] = span.span_id
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    popen._execute_child = tracer.own_wrapper(_execute_child, original)
    # A Popen whose returncode is known cannot block (Popen.__exit__ waits after every run()).
    waits.wrap(popen, "wait", lambda original: waits.method(original, "Popen.wait", _targets, outer=True, own=True,
                                                            ready=_reaped))
    waits.wrap(popen, "communicate", lambda original: waits.communicate_method(original, "Popen.communicate", _targets,
                                                                                    own=True))


def _reaped(popen) -> bool:
    return popen.returncode is not None


def _targets(popen, captured) -> tuple:
    span_id = waits.span_of(popen)
    return [span_id], (None if span_id else {"process.pid": popen.pid})
