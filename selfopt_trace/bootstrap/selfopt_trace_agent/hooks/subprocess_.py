"""subprocess.Popen (and so run/call/check_output and asyncio subprocesses): one CLIENT span per child.

We wrap `Popen._execute_child`, which every Popen goes through with the final argv, cwd and env.
It returns only once the child has exec'd (or failed to), so its duration is the spawn cost.
"""

from __future__ import annotations

from time import time_ns

from .. import tracer
from . import spawn


def install(target: str, module) -> None:
    popen = module.Popen
    original = popen._execute_child
    if hasattr(original, "__wrapped__"):
        return

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest):
        try:
            span = spawn.start_span("subprocess", args, cwd)
            env = spawn.child_environ(span, env)
            args = spawn.rewrite_argv(args, span)
        except Exception:
            return original(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest)
        t0 = time_ns()
        tracer.in_spawn += 1
        try:
            original(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, *rest)
        except BaseException as exc:
            spawn.failed(span, exc)
            raise
        finally:
            tracer.in_spawn -= 1
        spawn.started(span, self.pid, time_ns() - t0)

    _execute_child.__wrapped__ = original
    popen._execute_child = _execute_child
