"""os-level process starts and exits: fork, exec*, posix_spawn, system, wait*, _exit.

process.py puts a stand-in at each os.<name> at start-up (an attribute assignment, no import);
the stand-in imports this module on its first call and delegates to `wrap(name, original)`.

Reaping a child of ours records the kernel's count of its CPU time on its span (REAPED_CPU, see
docs/agent.md "A child's CPU, counted at its reap"): a wait that may reap one (os.waitpid on its
pid, os.waitpid(-1 or a group) and os.wait while children of ours are alive) calls wait4 in place
of waitpid (wait3 in place of wait), the same system call with the rusage asked for too, and
returns exactly what the program asked for; the program's own wait3/wait4 bring theirs, and
os.system (the C library reaps the shell) takes RUSAGE_CHILDREN's growth over the call.
"""

from __future__ import annotations

import os
import sys
from _thread import allocate_lock, get_ident
from time import time_ns

from .. import process, tracer
from . import spawn, waits

# On the end of a child's span (subprocess, fork, multiprocessing): user + system CPU, in
# nanoseconds (microsecond resolution), of the child as the kernel counts it when it is reaped:
# its own threads' to their very end, plus what it collected from its own reaped descendants.
REAPED_CPU = "process.reaped.cpu_ns"

try:  # the originals: os.waitpid/wait3/wait4 are our stand-ins
    from posix import wait3 as _wait3, wait4 as _wait4, waitpid as _waitpid
except ImportError:  # no posix module, or no wait3/wait4 in it
    _wait3 = _wait4 = None
try:  # a WNOHANG poll first asks (without reaping) whether the child has exited: see _waitpid_measured
    if not sys.platform.startswith("linux"):
        raise ImportError
    from posix import P_PID, WEXITED, WNOWAIT, waitid as _waitid
    _PROBE = WEXITED | os.WNOHANG | WNOWAIT
except ImportError:
    _waitid = None

_WNOHANG = getattr(os, "WNOHANG", 1)
# The twin's wait with the rusage and RUSAGE_CHILDREN's CPU (importtime.c): no `resource` to load
# and lend (_own below), so no audit event of its import and nothing of it in sys.modules.
_twin = tracer.twin
_wait_cpu = _twin.wait_cpu if _twin is not None else None
_modules = sys.modules
_getrefcount = sys.getrefcount
_children = spawn._children
_frame_at, _code_of = tracer.frame_at, tracer.code_of
# the code of process.py's stand-in at os.waitpid (subprocess bound it as _internal_poll's default)
_STAND_IN = next(c for c in _code_of(process._stand_in).co_consts if getattr(c, "co_name", "") == "call")
_reaps = [0]  # reaps (and os.system calls' starts and ends) seen: os.system's CPU needs none meanwhile

_fork_span: tracer.Span | None = None  # set by callers (multiprocessing) that already opened a span


def wrap(name: str, original):
    """The traced version of os.<name> (process.py installs stand-ins that call this on first use)."""
    wrapper = tracer.own_wrapper(_WRAPPERS[name](original), original)
    wrapper.__name__ = original.__name__
    wrapper.__doc__ = original.__doc__
    return wrapper


def _wrap_fork(original):
    def fork():
        try:
            span, token = _fork_span, None
            owned = span is None
            try:
                if owned:
                    span = spawn.start_span("fork", ["fork"])
                token = tracer.activate(span)
            except Exception as exc:
                spawn.raise_if_programs(exc, span if owned else None, token)
                return original()
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
                spawn.started(span, pid)
            return pid
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return fork


def _wrap_exit(original):
    def _exit(status):
        try:
            try:
                process.set_exit(status if isinstance(status, int) else None)
                process.end_at_last()
            except Exception:  # a signal handler's too: the process ends, as the program asked
                pass
            original(status)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return _exit


def _wrap_system(original):
    def system(command):
        try:
            span = None
            try:
                span = spawn.start_span("subprocess", ["/bin/sh", "-c", command], attributes={"process.shell": True})
            except Exception as exc:
                spawn.raise_if_programs(exc, span)
                return original(command)
            # The C library reaps the shell: its CPU is what RUSAGE_CHILDREN gained meanwhile, when no
            # other reap the agent sees (another thread's wait, another system()) came in between.
            _reaps[0] += 1
            mark = _reaps[0]
            before = _children_cpu()
            with spawn.inherited_environ(span):
                status = original(command)
            try:
                attributes = None
                if before is not None and status >= 0:
                    after = _children_cpu()
                    if after is not None and _reaps[0] == mark:
                        attributes = {REAPED_CPU: after - before}
                _reaps[0] += 1
                spawn.end_with_code(span, spawn.exit_code(status) if status >= 0 else None, attributes)
            except Exception as exc:
                tracer.exception_diagnostic("hook_failed:os.system", exc)
            return status
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return system


def _children_cpu():
    """RUSAGE_CHILDREN's user + system CPU in ns (the reaped children's), or None."""
    try:
        if _twin is not None:
            return _twin.children_cpu()
        if _usable():
            module = _own if _own is not None else _checked
            usage = module.getrusage(module.RUSAGE_CHILDREN)
            return round((usage.ru_utime + usage.ru_stime) * 1e6) * 1000
    except Exception as exc:
        tracer.raise_if_programs(exc)
    return None


def _exec_span(path, args) -> tuple:
    """exec replaces this image: close our spans now; the new image's process span is a child of this
    one. Returns that span and the argv to exec: a container CLI's rewritten first, so that its
    injection's span and diagnostics are recorded before the span file closes."""
    span = spawn.start_span("exec", args if args else [path])
    try:
        args = spawn.rewrite_argv(args, span)
    except Exception as exc:  # exec'd as given
        spawn.raise_if_programs(exc, span)
        tracer.exception_diagnostic("hook_failed:os.exec", exc)
    tracer.end_span(span, tracer.UNSET, {"process.pid": os.getpid()})
    process.set_exit(None, **{"process.exec.replaced": True})
    process.end()
    return span, args


def _exec_failed() -> None:
    process.reopen()


def _exec_interrupted(exc: Exception) -> None:
    """The agent's own failure before an exec: exec'd as given. A signal handler's exception is the
    program's (tracer.raise_if_programs): it goes on, and so does the process, its span open again."""
    if tracer.is_programs(exc):
        _exec_failed()
        raise exc


def _wrap_execv(original):
    def execv(path, args):
        try:
            try:
                span, args = _exec_span(path, args)
            except Exception as exc:
                _exec_interrupted(exc)
                return original(path, args)
            with spawn.inherited_environ(span):
                try:
                    original(path, args)
                except BaseException:
                    _exec_failed()
                    raise
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return execv


def _wrap_execve(original):
    def execve(path, args, env):
        try:
            try:
                span, args = _exec_span(path, args)
                env = spawn.child_environ(span, env)
            except Exception as exc:
                _exec_interrupted(exc)
                return original(path, args, env)
            try:
                original(path, args, env)
            except BaseException:
                _exec_failed()
                raise
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return execve


def _wrap_posix_spawn(original):
    def posix_spawn(path, argv, env, *args, **kwargs):
        try:
            if get_ident() in tracer.in_spawn:  # subprocess.Popen's own (_USE_POSIX_SPAWN): its span is open
                ours = spawn.pending.pop(get_ident(), None)  # what to add, if Popen was given env=None
                if ours is not None:  # (3.13's Popen passes env=None on: this process's environment)
                    env = {**(os.environ if env is None else env), **ours}
                return original(path, argv, env, *args, **kwargs)
            span = None
            try:
                span = spawn.start_span("subprocess", argv)
                env = spawn.child_environ(span, env)
                argv = spawn.rewrite_argv(argv, span)
            except Exception as exc:
                spawn.raise_if_programs(exc, span)
                return original(path, argv, env, *args, **kwargs)
            return spawn.run_spawning(span, lambda: original(path, argv, env, *args, **kwargs))
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return posix_spawn


def _reap(result, measured: bool = False) -> str:
    """The child's span ends with its exit status (and, from a wait that asked for the rusage,
    its CPU); returns that span's id ("" for no child of ours)."""
    pid = result[0]
    if pid > 0:
        _reaps[0] += 1
        entry = _children.get(pid)
        if entry is not None:
            status = result[1]
            if status & 0x7F == 0x7F:  # stopped or continued (WUNTRACED, WCONTINUED): not reaped
                return entry[0].span_id
            try:
                if measured:
                    usage = result[2]  # the twin's CPU ns, or a struct_rusage
                    if type(usage) is int:
                        entry[1][REAPED_CPU] = usage
                    elif usage is not None:
                        entry[1][REAPED_CPU] = round((usage.ru_utime + usage.ru_stime) * 1e6) * 1000
                spawn.reaped(pid, status)
            except Exception as exc:
                tracer.raise_if_programs(exc)
            return entry[0].span_id
    return ""


# CPython's wait3/wait4 take `resource.struct_rusage` from sys.modules["resource"], importing it
# when it is not there: a `resource.py` of the program's would be imported (and crash the
# interpreter), and a program whose `resource` is imported later must find what it finds untraced.
# So the standard library's module is loaded by its path (no sys.path search, no import span),
# kept out of sys.modules, and put there only for the duration of our wait3/wait4 calls (left
# there if someone took it meanwhile); a `resource` the program has that is not it: no rusage.
_own = None  # the standard library's `resource`, loaded by us
_own_refs = 0  # its reference count (as getrefcount says) while only we and sys.modules hold it
_checked = None  # the program's sys.modules["resource"], found to be the standard one
# One item per wait3/wait4 of ours in progress (append and pop are atomic): threads wait at once,
# and the last to end takes the module out. A lender holds `own` in its frame before it registers,
# so a lender that ends as another begins sees the reference count above _own_refs and leaves it.
_lenders: list = []
_load_failed = False
_load_lock = allocate_lock()  # threads reaping at once wait for the one load, not go without rusage


def _renew_load_lock() -> None:
    """In a forked child: a lock another thread held at the fork would never be released."""
    global _load_lock
    _load_lock = allocate_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_load_lock)


def _usable() -> bool:
    """True when wait3/wait4 can be called for the program (with _measured)."""
    module = _modules.get("resource")
    if module is None or module is _own:
        return _own is not None or _load_own()
    return module is _checked or _check(module)


def _genuine(module) -> bool:
    rusage = getattr(module, "struct_rusage", None)
    return isinstance(rusage, type) and issubclass(rusage, tuple) and getattr(rusage, "n_fields", 0) >= 16


def _check(module) -> bool:
    global _checked
    try:
        if _wait4 is not None and _genuine(module):
            _checked = module
            return True
    except Exception as exc:
        tracer.raise_if_programs(exc)
    return False


def _load_own() -> bool:
    global _load_failed
    if _wait4 is None or _load_failed:
        return False
    with _load_lock:
        if _own is None and not _load_failed:
            _load_failed = not _load_own_locked()  # one attempt
        return _own is not None


def _load_own_locked() -> bool:
    global _own, _own_refs
    t0 = time_ns()
    try:
        bootstrap = _modules["_frozen_importlib"]
        if "resource" in sys.builtin_module_names:
            spec = bootstrap.BuiltinImporter.find_spec("resource")
        else:
            dirs = [entry for entry in sys.path if isinstance(entry, str) and entry.endswith("lib-dynload")]
            dirs.append(os.path.join(os.path.dirname(os.__file__), "lib-dynload"))
            spec = _modules["_frozen_importlib_external"].PathFinder.find_spec("resource", dirs)
        if spec is not None:
            module = bootstrap._load(spec)  # not through the import hook
            if _modules.get("resource") is module:
                del _modules["resource"]
            if _genuine(module):
                _own_refs = _getrefcount(module) + 2  # + sys.modules' while we wait, + _own's (set next)
                _own = module  # last: a thread that sees it without the lock finds _own_refs set
                return True
    except Exception as exc:
        tracer.exception_diagnostic("hook_failed:os.wait4", exc)
    finally:
        tracer.add_overhead(time_ns() - t0)
    return False


def _measured(call, *args):
    """call(*args), a wait3/wait4, with the standard `resource` in sys.modules for it (see _own)."""
    modules = _modules
    module = modules.get("resource")
    if module is not None and module is not _own:  # the program's, found genuine by _usable
        return call(*args)
    module = None  # only the references counted in _own_refs when the last lender looks
    own = _own  # (before registering: the last lender sees this reference; see _lenders)
    _lenders.append(None)
    modules["resource"] = own
    try:
        return call(*args)
    finally:
        _lenders.pop()
        if not _lenders and modules.get("resource") is own and _getrefcount(own) <= _own_refs:
            del modules["resource"]


def _waitpid_measured(pid: int, options: int) -> tuple:
    """os.waitpid(pid, options) as the program gets it, with the rusage of the child it reaps third
    (None when there is none to have). wait4 is waitpid's system call with the rusage filled in: the
    same waits, errors, EINTR retries and WNOHANG (0, 0)."""
    if _wait_cpu is not None:
        return _wait_cpu(pid, options)
    modules = _modules
    module = modules.get("resource")
    if module is None or module is _own:  # _measured, inlined
        if _own is None and not _load_own():
            return _waitpid(pid, options) + (None,)
        module = None
        own = _own
        _lenders.append(None)
        modules["resource"] = own
        try:
            return _wait4(pid, options)
        finally:
            _lenders.pop()
            if not _lenders and modules.get("resource") is own and _getrefcount(own) <= _own_refs:
                del modules["resource"]
    if module is _checked or _check(module):
        return _wait4(pid, options)
    return _waitpid(pid, options) + (None,)


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


def _waiting(name: str, call, pid: int, options: int, args: tuple, measured: bool = False, trim: bool = False):
    """Call os.<name>(*args), reap what it returns, and record a wait if it blocked. `measured`:
    `call` returns the rusage third; `trim`: the program asked for (pid, status) only."""
    if not isinstance(options, int) or options & os.WNOHANG or get_ident() in waits.busy:  # a poll, or part of an outer wait
        result = call(*args)
        _reap(result, measured)
        return result[:2] if trim else result
    t0 = time_ns()
    if not tracer._flusher_started:
        tracer.before_block()  # in the wait's span: the program is in its call
    try:
        result = call(*args)
    except BaseException as exc:
        t1 = time_ns()
        if t1 - t0 >= waits.THRESHOLD_NS:
            on, extra = _waited(pid, "")
            waits.record(name, t0, t1, on, extra, exc)
        raise
    t1 = time_ns()
    reaped = _reap(result, measured)
    if t1 - t0 >= waits.THRESHOLD_NS:
        try:
            on, extra = _waited(pid, reaped)
        except Exception as exc:
            tracer.raise_if_programs(exc)
            on, extra = [reaped], None
        waits.record(name, t0, t1, on, extra)
    else:
        waits.not_blocked(t1)
    return result[:2] if trim else result


def _wrap_waitpid(original):
    def waitpid(pid, options):
        # A wait that may reap a child of ours asks for its rusage: wait4 is waitpid's system call
        # with the rusage filled in (the same waits, errors, EINTR retries and WNOHANG (0, 0)).
        if _children and type(pid) is int and (pid in _children or pid <= 0) and (_wait_cpu or _wait4) is not None:
            # wait4's rusage costs the kernel and CPython ~1.5 us more than waitpid (`resource`
            # imported, a struct_rusage built): a WNOHANG poll on a child first asks waitid, which
            # reaps nothing, whether it has exited. A poll that finds it running makes one system
            # call, as untraced, and returns what waitpid returns then.
            if options == _WNOHANG and pid > 0 and _waitid is not None and _waitid(P_PID, pid, _PROBE) is None:
                # noted for a sleep right after it (a poll loop's: hooks/time_.py), but not subprocess's
                # own polls of the Popen objects the program let go (__del__, _cleanup() at the next
                # Popen: _internal_poll from elsewhere than poll())
                try:
                    depth = 2 if _code_of(_frame_at(1)) is _STAND_IN else 1  # the first call comes through it
                    caller = _code_of(_frame_at(depth))
                    ours = caller is None or caller.co_name != "_internal_poll" or \
                        _code_of(_frame_at(depth + 1)).co_name == "poll"
                except (ValueError, AttributeError) as exc:  # called from no Python frame
                    tracer.raise_if_programs(exc)
                    ours = True
                if ours:
                    waits.note_poll(pid)
                return 0, 0
            return _waiting("os.waitpid", _waitpid_measured, pid, options, (pid, options), True, True)
        return _waiting("os.waitpid", original, pid, options, (pid, options))

    return waitpid


def _wrap_wait(original):
    def wait():
        if _children and _wait_cpu is not None:  # wait() is wait4(-1, 0), the rusage aside
            return _waiting("os.wait", _wait_cpu, -1, 0, (-1, 0), True, True)
        if _children and _usable():  # or wait3(0)
            return _waiting("os.wait", _measured, -1, 0, (_wait3, 0), True, True)
        return _waiting("os.wait", original, -1, 0, ())

    return wait


def _wrap_wait3(original):
    def wait3(options):
        return _waiting("os.wait3", original, -1, options, (options,), True)

    return wait3


def _wrap_wait4(original):
    def wait4(pid, options):
        return _waiting("os.wait4", original, pid, options, (pid, options), True)

    return wait4


_WRAPPERS = {
    "fork": _wrap_fork, "_exit": _wrap_exit, "system": _wrap_system,
    "execv": _wrap_execv, "execve": _wrap_execve,
    "posix_spawn": _wrap_posix_spawn, "posix_spawnp": _wrap_posix_spawn,
    "waitpid": _wrap_waitpid, "wait": _wrap_wait, "wait3": _wrap_wait3, "wait4": _wrap_wait4,
}
