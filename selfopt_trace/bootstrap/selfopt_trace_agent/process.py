"""The process span: from the kernel's start time of this process to its exit.

Start-up does the least it can: read the start time, write two records to the buffer, install
the import wrapper and a handful of os.* wrappers (attribute assignments), register exit and fork
handlers. No thread, no file opened until the first flush, no third-party import.
"""

from __future__ import annotations

import os
import sys
from _thread import get_ident
from time import time_ns

from . import config, redact, spanfile, tracer

_settings: config.Settings | None = None
_exit_code: int | None = None
_exit_attributes: dict = {}
_reparent = ""  # a forkserver child learns its real parent span only after start-up
# interpreter.startup until the program's own code starts: [start, bootstrap entered, agent ready]
_startup: list | None = None
_main_kind = ""  # what the command line runs: "script", "command" (-c), "module" (-m), or "" (other)
_last_flush_ns = 0  # what the flush at the process's end will cost, as start-up's flush cost: it is
# written after the process span's end (which carries selfopt_trace.overhead_ns), so it is estimated


def settings() -> config.Settings | None:
    return _settings


def start(settings_: config.Settings, shim_entered: int = 0, run_module=None, bundled: bool = True) -> None:
    """`shim_entered`: when the shim began loading the agent (that loading is counted as overhead);
    `run_module`: the shim's runner of bundled modules (importtime.install); `bundled`: the start-up
    modules came from their bundle (else `_unprepared` says so)."""
    global _settings, _last_flush_ns
    entered = time_ns()
    counted = tracer.overhead_ns()  # what start-up's parts count themselves is not counted twice
    _settings = settings_
    tracer._main_thread = get_ident()
    trace_id, remote_parent = _incoming_context(os.environ.get(config.ENV_TRACEPARENT, ""),
                                                os.environ.get(config.ENV_TRACE_ID, ""))
    start_ns, source = _start_time(entered)
    from . import importtime, lazy

    # first: an agent module _begin imports (container.py) comes from the lazy bundle
    twin_failure = importtime.install(settings_.import_threshold_ns, run_module)
    _begin(start_ns, entered, source, trace_id, remote_parent)
    if twin_failure is not None:
        tracer.exception_diagnostic("import_twin", twin_failure)
    if not bundled:
        _unprepared()
    lazy.install_builtin_hooks()
    _install_os_stand_ins()
    _install_sleep_hook()
    import atexit

    atexit.register(_at_exit)
    os.register_at_fork(before=tracer.before_fork, after_in_parent=tracer.after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
    # registered after the tracer's: its `before` runs first (a resolution under way may flush)
    os.register_at_fork(before=lazy.before_fork, after_in_parent=lazy.after_fork_in_parent,
                        after_in_child=lazy.after_fork_in_child)
    _install_sigterm()
    _watch_gc()
    flushed = time_ns()
    tracer.started_up()
    ready = time_ns()
    _last_flush_ns = ready - flushed
    if _startup is None:
        importtime.startup_over()
    else:
        _startup[2] = ready  # the shim calls watch_for_main once it has chained the user's sitecustomize
    began = shim_entered if 0 < shim_entered <= entered else entered
    tracer.add_overhead(time_ns() - began - (tracer.overhead_ns() - counted))


def _unprepared() -> None:
    """No start-up bundle made for this interpreter from these sources (`run` prepares the agent for
    the Pythons CMD names, not for a container image's): the agent's modules came through importlib,
    compiled from source where no .pyc could be written (a container's read-only bootstrap), ~20 ms
    a process. The diagnostic says how to prepare it (the summary's notes gather them)."""
    image = os.environ.get(config.ENV_CONTAINER_IMAGE)
    how = "--image " + image if image else "--python " + sys.executable
    tracer.diagnostic("agent_unprepared", "Python %d.%d (%s%s) has no bundle of the agent made for it: "
                      "`selfopt-trace prepare %s`" % (sys.version_info[0], sys.version_info[1], sys.executable,
                                                       " in " + image if image else "", how))


# os functions that start, replace, end or reap processes; wrapped in hooks/os_.py.
_OS_HOOKED = ("fork", "_exit", "system", "execv", "execve", "posix_spawn", "posix_spawnp",
              "waitpid", "wait", "wait3", "wait4")


def _install_os_stand_ins() -> None:
    for name in _OS_HOOKED:
        original = getattr(os, name, None)
        if original is not None and not tracer.is_own_wrapper(original):
            setattr(os, name, _stand_in(name, original))


def _install_sleep_hook() -> None:
    """time.sleep, timed from its first call with nothing imported before the sleep itself: a
    program that starts its first sleep right after saying it is ready (a signal's sender waits
    for that) is asleep as soon as untraced. Building the wrapper on the first call (importing
    hooks/time_.py) put a millisecond there, and a SIGTERM landing in CPython's gap between its
    last signal check and the sleep's system call was not handled for the whole sleep (1 run in
    80 of such a program; the C twin's sleep has no such gap). hooks/time_.py records the sleeps
    that blocked."""
    import time

    from .importtime import sleep_after_signals, sleeper

    original = time.sleep
    if tracer.is_own_wrapper(original):
        return
    threshold = config.WAIT_THRESHOLD_NS
    recorder: list = []
    depth = 2 if sleeper is not None else 3  # the sleeping line's frame, above the recorders (and our wrapper's)

    def record(t0: int, t1: int, seconds, asleep: int) -> None:
        if not recorder:
            try:
                from .hooks import time_

                recorder.append(time_.record)
            except Exception as error:
                tracer.exception_diagnostic("hook_failed:time.sleep", error)
                recorder.append(lambda *_: None)
        recorder[0](t0, t1, seconds, asleep, depth=depth)

    if sleeper is not None:  # the twin's: no frame of ours on the program's stack while it sleeps
        wrapper = object.__new__(tracer.Builtin)
        wrapper.__call__ = sleeper(original, record, tracer.before_block, threshold, tracer.__dict__)
        wrapper.__dict__.update(__module__="time", __name__=original.__name__, __qualname__="sleep",
                                __doc__=original.__doc__)
        time.sleep = tracer.own_wrapper(wrapper, original)
        return

    def sleep(seconds):
        t0 = asleep = time_ns()
        if not tracer._flusher_started:
            tracer.before_block(seconds)  # in the sleep's span: the program is in its call
            if tracer._flusher_started:  # it started the thread: the time asked for runs from here
                asleep = time_ns()
        try:
            if sleep_after_signals is None:
                original(seconds)
            else:  # signals blocked from the last check for them into the sleep (importtime.c)
                sleep_after_signals(original, seconds)
        except BaseException as exc:  # a bad argument, a signal handler's exception: as untraced
            t1 = time_ns()
            if t1 - t0 >= threshold:
                record(t0, t1, seconds, asleep)
            tracer.strip_own_frames(exc)
            raise
        t1 = time_ns()
        if t1 - t0 >= threshold:
            record(t0, t1, seconds, asleep)

    tracer.own_wrapper(tracer.at_home(sleep, "time", "sleep"), original)
    sleep.__name__ = original.__name__
    sleep.__doc__ = original.__doc__
    time.sleep = tracer.unbound(sleep, original)  # a built-in: binds on no class (tracer.Builtin)


def _stand_in(name: str, original):
    """os.<name> until its first call, which builds the real wrapper: no hook module loads at start-up."""
    resolved = []

    def call(*args, **kwargs):
        if not resolved:
            try:
                from .hooks import os_

                resolved.append(os_.wrap(name, original))
            except Exception as exc:
                tracer.exception_diagnostic("hook_failed:os." + name, exc)
                resolved.append(original)
        try:
            return resolved[0](*args, **kwargs)
        except BaseException as exc:  # the os function's own error, as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    call.__name__ = original.__name__
    call.__doc__ = original.__doc__
    # built-ins: a wrapper that binds on no class as they do (tracer.Builtin)
    return tracer.unbound(tracer.own_wrapper(tracer.at_home(call, "os", name), original), original)


# SIGTERM: flush and close the process span, then die of SIGTERM exactly as untraced. Installed
# only where SIGTERM has its default action; hooks/signal_.py keeps it first when the program
# installs its own handler, and keeps signal.getsignal answering what the program set.
program_sigterm_handler = 0  # what the program believes is installed (0 = SIG_DFL)


# A pass of the garbage collector this long is a span (the rest are only counted): in codeflash's
# processes, 83-93 % of the collector's time in 10-15 % of its passes (docs/codeflash.md).
GC_SPAN_NS = 100_000
_gc_watcher = None  # the twin's gc_watcher, once its callback is in gc.callbacks
_gc_dropped = 0  # long passes not kept: more than the twin holds between two flushes


def _watch_gc() -> None:
    """With SELFOPT_TRACE_GC, the garbage collector's passes, timed by the C twin's callback in gc.callbacks
    (none without the twin: a Python one would cost ~1.5 us a pass): the process span's end carries their counts
    and time by generation, and each pass of GC_SPAN_NS or more is a `gc` span under the span it
    interrupted, recorded by the next flush. `gc` stays out of sys.modules (a program's later `import gc`
    makes it anew: the same callbacks), as untraced."""
    global _gc_watcher
    if not config.truthy(os.environ.get(config.ENV_GC)):
        return
    from . import importtime

    if importtime.gc_watcher is None:
        return
    loaded = "gc" in sys.modules
    import gc

    if not loaded:
        del sys.modules["gc"]
    gc.callbacks.append(importtime.gc_watcher(GC_SPAN_NS))
    _gc_watcher = importtime.gc_watcher
    tracer.at_flush.append(_record_gc_passes)
    on_end(_end_gc)


def _record_gc_passes() -> tuple:
    """The long passes since the last call as `gc` spans, buffered (every flush calls it first, so a
    process killed later or a server that never exits keeps them); returns the counts and times by
    generation so far. Never raises but the program's own exceptions."""
    global _gc_dropped
    from . import importtime

    try:
        counts, durations, long_ones, dropped = importtime.gc_passes()
        _gc_dropped += dropped
        root = tracer.root()  # a pass outside every span: the process's (not the flushing thread's current one)
        for start_ns, end_ns, generation, collected, parent in long_ones:
            tracer.record_complete("gc", "gc", start_ns, end_ns,
                                   {"python.gc.generation": generation, "python.gc.collected": collected},
                                   parent=parent or root, quiet=True)
        return counts, durations
    except Exception as exc:
        tracer.raise_if_programs(exc)
        return (), ()


def _end_gc() -> None:
    counts, durations = _record_gc_passes()
    _exit_attributes["python.gc.collections"] = list(counts)
    _exit_attributes["python.gc.duration_ns"] = list(durations)
    if _gc_dropped:
        _exit_attributes["python.gc.spans_dropped"] = _gc_dropped


# How long a SIGTERM waits for the agent's handler to begin (the main thread in a long C call) before
# the process dies of it, as untraced, without its last flush (importtime.c, sigterm_grace): well past
# the 100 ms in which a sleeping main thread sees a signal another thread took (process.py's sleep)
SIGTERM_GRACE_NS = 300_000_000


def _install_sigterm() -> None:
    """Not in a container's first process (pid 1, no `--init`): the kernel drops a signal whose action
    is the default there, so untraced it lives on through a SIGTERM (`docker stop` waits its timeout,
    then kills it), where a handler of ours would make it flush, end its span and go on."""
    import _signal

    try:
        if _signal.getsignal(_signal.SIGTERM) == _signal.SIG_DFL and os.getpid() != 1:
            _signal.signal(_signal.SIGTERM, on_sigterm)
            sigterm_grace(True)
    except (ValueError, OSError):  # not the main thread, or an unusual platform (start-up)
        pass


def sigterm_grace(default_action: bool) -> None:
    """SIGTERM's grace on while the program leaves its default action (hooks/signal_.py); the C twin's."""
    if tracer.twin is not None:
        tracer.twin.sigterm_grace(SIGTERM_GRACE_NS if default_action else 0)


def on_sigterm(signum, frame) -> None:
    import _signal

    if tracer.twin is not None:
        tracer.twin.sigterm_handling()
    handler = program_sigterm_handler
    if handler == _signal.SIG_IGN:
        return
    if callable(handler):
        tracer.flush(blocking=False)
        handler(signum, frame)
        return
    try:
        set_exit(-signum, **{"process.signal": "SIGTERM"})
        end(tracer.ERROR, blocking=False)
    except Exception:  # a signal handler's too: the process dies of the signal, as untraced
        pass
    tracer.flush_before_death(lambda: _die_of(signum))


def _die_of(signum: int) -> None:
    import _signal

    _signal.signal(signum, _signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _begin(start_ns: int, entered: int, source: str, trace_id: str, remote_parent: str,
           parent: tracer.Span | None = None) -> None:
    """Open this process's span file and its process and interpreter.startup spans."""
    assert _settings is not None
    pid = os.getpid()
    args = redact.argv(_command_line())
    name = command_name(args, python=True)
    tracer.configure(os.path.join(_settings.run_dir, "spans"),
                     spanfile.header_line(entered, _settings.run_id, pid, _resource(pid, name)))
    tracer.set_root(None, trace_id, remote_parent)
    root = tracer.start_span("process", "process", tracer.INTERNAL, _process_attributes(pid, source, args, name),
                             parent=parent, start_ns=start_ns)
    tracer.set_root(root, trace_id, remote_parent)
    if entered > start_ns:
        _await_main(start_ns, entered)
    # Non-Python intermediaries (bash, make, xargs) pass the context on to their children.
    os.environ[config.ENV_TRACEPARENT] = root.traceparent()
    os.environ.pop(config.ENV_SPAWN, None)


def _await_main(start_ns: int, entered: int) -> None:
    """interpreter.startup runs until the program's first line; what that is, the command line says."""
    global _startup, _main_kind
    _startup = [start_ns, entered, entered]
    _main_kind = _kind_of_main(getattr(sys, "orig_argv", None) or [])


def _kind_of_main(argv: list) -> str:
    """How CPython was asked to run the program (its option parser's rules, as far as they matter)."""
    kind = python_main(argv)[0]
    return kind if kind in ("script", "command", "module") else ""


def watch_for_main() -> None:
    """Once the agent is ready and the user's sitecustomize has run (the shim calls it): watch for
    the program's first line, and end start-up there.

    A script or a -c string: the first frame of module `__main__`. With -m, runpy's
    `_run_module_as_main`, armed only once runpy is imported (CPython calls it right after), so
    the imports of the module's packages are not start-up. Otherwise (stdin, an interactive
    session, Python < 3.10 without sys.orig_argv), start-up ends now.

    Up to 3.11 a profile function sees that frame, then goes. From 3.12 a profile function is
    sys.monitoring's, and setting or removing it makes every code object the program runs afterwards
    update its instrumentation once (+4.2 M instructions in a 717-module process, docs/benchmarks.md):
    there, one code object is watched instead, with a local event: `_run_module_as_main`'s start,
    or for a script or -c the return of `site.main` (the rest of site, the user's usercustomize, is
    start-up; reading and compiling a script, after it, is not).
    """
    try:
        if _main_kind == "module":
            from . import lazy

            lazy.when_imported("runpy", _watch_runpy)
        elif not _main_kind:
            _end_startup(time_ns())
        elif not hasattr(sys, "monitoring"):
            _profile_until_main()
        elif not _watch_site_main():
            _end_startup(time_ns())
    except Exception:  # (start-up: docs/agent.md, "Failing open")
        _end_startup(time_ns())


def _watch_runpy(runpy) -> None:
    if not hasattr(sys, "monitoring"):
        _profile_until_main()
    elif not _watch_code(tracer.code_of(runpy._run_module_as_main), sys.monitoring.events.PY_START):
        _end_startup(time_ns())


def _profile_until_main() -> None:
    if sys.getprofile() is None:
        sys.setprofile(_on_frame)


def _on_frame(frame, event: str, arg) -> None:
    if event != "call":
        return
    code = tracer.code_of(frame)
    if (code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__") or (
            code.co_name == "_run_module_as_main"):
        now = time_ns()
        sys.setprofile(None)
        _end_startup(now)


def _watch_site_main() -> bool:
    """End start-up when `site.main`, which runs the sitecustomize that started us, returns."""
    site = sys.modules.get("site")
    code = tracer.code_of(getattr(site, "main", None))
    frame = tracer.frame_at(0)
    while frame is not None and tracer.code_of(frame) is not code:
        frame = frame.f_back
    return frame is not None and _watch_code(code, sys.monitoring.events.PY_RETURN)


def _watch_code(code, event: int) -> bool:
    """End start-up at `event` of `code` (sys.monitoring, 3.12+), with a tool id nobody holds, given
    back at once (the program may want it). False where every free id is taken."""
    monitoring = sys.monitoring
    tool = next((tool for tool in (4, 3) if monitoring.get_tool(tool) is None), None)
    if tool is None:
        return False
    monitoring.use_tool_id(tool, "selfopt-trace")

    def seen(*_) -> None:  # never raises: it runs in the program's frame
        now = time_ns()
        try:
            monitoring.set_local_events(tool, code, 0)
            monitoring.register_callback(tool, event, None)
            monitoring.free_tool_id(tool)
        except Exception:  # (start-up: docs/agent.md, "Failing open")
            pass
        _end_startup(now)

    monitoring.register_callback(tool, event, seen)
    monitoring.set_local_events(tool, code, event)
    return True


def _end_startup(end_ns: int) -> None:
    """Record interpreter.startup; never raises (it runs inside a profile function)."""
    global _startup
    pending, _startup = _startup, None
    if pending is None:
        return
    try:
        from . import importtime

        importtime.startup_over()
        start_ns, entered, ready = pending
        tracer.record_complete("interpreter.startup", "startup", start_ns, max(end_ns, ready), {
            "python.startup.before_bootstrap_ns": entered - start_ns,
            "selfopt_trace.startup.agent_ns": ready - entered,
        }, parent=tracer.root(), quiet=True)
    except Exception as exc:
        tracer.exception_diagnostic("startup_span_failed", exc)


def _incoming_context(traceparent: str, run_trace: str) -> tuple:
    """(trace_id, parent span id) from a W3C traceparent, else the run's trace as a root (a top-level
    process of CMD: `run` gives its trace id to them all), else a new trace."""
    return config.traceparent_ids(traceparent) or (config.hex_id(run_trace, 32) or tracer.new_trace_id(), "")


def _start_time(entered: int) -> tuple:
    """When this process started: the traced spawner's clock when it is our parent, else the kernel's."""
    kernel = _kernel_start_ns(entered)
    spawn = os.environ.get(config.ENV_SPAWN, "")
    at_ns = 0
    if spawn:
        spawner, _, at = spawn.partition(":")
        try:
            spawner_pid, at_ns = int(spawner), int(at)
        except ValueError:  # (start-up: docs/agent.md, "Failing open")
            spawner_pid, at_ns = 0, 0
        if spawner_pid in (os.getppid(), os.getpid()) and at_ns <= entered and (not kernel or at_ns > kernel - 50_000_000):
            return at_ns, "parent"
    if kernel:
        # The kernel counts in clock ticks, rounded down (up to a tick early); a traced ancestor's
        # spawn, through an untraced shell, came before this process: both bound the start from
        # below. The time this process has run or waited for a CPU so far bounds it from above (it
        # lived at least that long): within the tick, that is the start, unless it blocked (a disk
        # read) before now. Sequential processes a shell starts then no longer overlap by a tick.
        earliest = at_ns if kernel < at_ns <= entered else kernel
        lived = _lived_ns()
        latest = min(entered - lived, kernel + 1_000_000_000 // os.sysconf("SC_CLK_TCK")) if lived else earliest
        return max(earliest, latest), "kernel"
    # No /proc (macOS): the earliest point known is now minus the CPU time this process used.
    return entered - _process_cpu_ns(), "cpu"


def _kernel_start_ns(now_ns: int) -> int:
    """/proc/self/stat starttime (clock ticks since boot) as epoch ns; 0 where unavailable."""
    try:
        from time import CLOCK_BOOTTIME, clock_gettime_ns

        data = tracer.read_file("/proc/self/stat", 0, 4096)
        start_ticks = int(data[data.rindex(b")") + 2:].split()[19])
        hz = os.sysconf("SC_CLK_TCK")
        return now_ns - (clock_gettime_ns(CLOCK_BOOTTIME) - start_ticks * 1_000_000_000 // hz)
    except Exception:
        return 0


def _lived_ns() -> int:
    """This thread's CPU time and time queued for a CPU so far (since its fork, as the kernel's
    start time counts: thread_clocks); 0 where either cannot be read."""
    clocks = thread_clocks("")
    return clocks["cpu_ns"] + clocks["runqueue_ns"] if len(clocks) == 2 else 0


def _process_cpu_ns() -> int:
    from time import process_time_ns

    return process_time_ns()


def _command_line() -> list:
    """This process's argv as the kernel has it, whole (it may be megabytes), bytes that are not
    UTF-8 kept as surrogates (os.fsdecode's way): the span file escapes them (spanfile.escape)."""
    try:
        raw = tracer.read_file("/proc/self/cmdline", 0, 1 << 16)
        if len(raw) == 1 << 16:
            chunks, offset = [raw], len(raw)
            while True:
                chunk = tracer.read_file("/proc/self/cmdline", offset, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
            raw = b"".join(chunks)
        if raw:
            return [part.decode("utf-8", "surrogateescape") for part in raw.rstrip(b"\0").split(b"\0")]
    except OSError:  # (start-up, or a fork's child: an at-fork handler)
        pass
    return list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)


def _process_attributes(pid: int, source: str, args: list, name: str) -> dict:
    return {
        "process.pid": pid,
        "process.parent_pid": os.getppid(),
        "process.executable.path": sys.executable,
        "process.executable.name": os.path.basename(sys.executable),
        "process.command_args": args,
        "process.command": name,
        "process.start.source": source,
    }


def _resource(pid: int, name: str) -> dict:
    assert _settings is not None
    resource = {}
    for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, eq, value = item.partition("=")
        if eq and key.strip():
            if "%" in value:
                from urllib.parse import unquote

                value = unquote(value)
            resource[key.strip()] = value.strip()
    resource = redact.attributes(resource)  # `app.token=X,db.password=Y`: secrets, as any span attribute's
    service = _settings.service or resource.get("service.name") or name
    resource.update({
        "service.name": service,
        "host.name": os.uname().nodename,
        "process.pid": pid,
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": "%d.%d.%d" % sys.version_info[:3],
        "telemetry.sdk.name": "selfopt-trace",
        "telemetry.sdk.language": "python",
    })
    podman = os.path.exists("/run/.containerenv")
    if podman or os.path.exists("/.dockerenv"):
        resource.update(_container_resource("podman" if podman else "docker"))
    return resource


def _container_resource(runtime: str) -> dict:
    """container.* attributes: the runtime, the id, and the name and image the host that injected
    the trace gave (hooks/docker_.py). The id is read once per container: the first traced process
    of a mount namespace reads it (container.py) and passes it on (config.ENV_CONTAINER_ID), so the
    others neither load container.py nor read /proc (0.6 M instructions a process:
    docs/benchmarks.md)."""
    assert _settings is not None
    try:
        namespace = os.readlink("/proc/self/ns/mnt")
    except OSError:  # no /proc: nothing to key the id by, so nothing passed on (start-up, or a fork's child)
        namespace = ""
    known, tab, container_id = os.environ.get(config.ENV_CONTAINER_ID, "").partition("\t")
    if not namespace or not tab or known != namespace:
        from . import container

        value = container.passed_on()  # "" without /proc: nothing passed on, and no id to read
        container_id = value.partition("\t")[2]
        if value:
            os.environ[config.ENV_CONTAINER_ID] = _settings.passed_on[config.ENV_CONTAINER_ID] = value
    attributes = {"container.runtime": runtime}
    if container_id:
        attributes["container.id"] = container_id
    name = os.environ.get(config.ENV_CONTAINER_NAME)
    if name:
        attributes["container.name"] = name
    image = os.environ.get(config.ENV_CONTAINER_IMAGE)
    if image:
        attributes["container.image.name"], tag = _split_image(image)
        if tag:
            attributes["container.image.tags"] = [tag]
    return attributes


def _split_image(image: str) -> tuple:
    """("registry/name", "tag") of an image reference; a digest stays in the name."""
    if "@" in image:
        return image, ""
    name, colon, tag = image.rpartition(":")
    if colon and "/" not in tag:
        return name, tag
    return image, ""


def set_exit(code: int | None, **attributes) -> None:
    """What the process span should say about how this process ended."""
    global _exit_code
    if code is not None:
        _exit_code = code
    _exit_attributes.update(attributes)


def set_reparent(parent_span_id: str) -> None:
    global _reparent
    _reparent = parent_span_id


_closers: list = []  # called when the process span ends: they end what is still open (hooks/threads.py)


def on_end(callback) -> None:
    _closers.append(callback)


def end(status: str = tracer.UNSET, blocking: bool = True) -> None:
    """Close the process span and flush. Called at exit, in os._exit, on SIGTERM and before exec.

    Signal handlers pass blocking=False: they may have interrupted a flush of their own thread. Its
    steps swallow a signal handler's exception too (the flush aside): the process ends, and its span
    must end with it.
    """
    began = time_ns()
    root = tracer.root()
    if root is None or root.end_ns:
        tracer.flush(blocking)
        return
    if _startup is not None:  # the program never ran (embedded, an exit in a sitecustomize, a syntax error)
        if sys.getprofile() is _on_frame:
            sys.setprofile(None)
        _end_startup(_startup[2])
    for close in _closers:
        try:
            close()
        except Exception:
            pass
    # The program's end, before the agent's own reads of it (rusage, /proc: ~40 us, more when the
    # process is preempted in them): those are the process's teardown, as the interpreter's is.
    ended = time_ns()
    attributes = dict(_exit_attributes)
    if _exit_code is not None:
        attributes["process.exit.code"] = _exit_code
    attributes.update(_resource_usage())
    _final_cpu(attributes)
    attributes["selfopt_trace.overhead_ns"] = tracer.overhead_ns() + time_ns() - began + _last_flush_ns
    tracer.end_span(root, status, attributes, end_ns=ended, reparent=_reparent)
    tracer.flush(blocking)


def reopen() -> None:
    """The process goes on after all (a failed exec): its span is open again."""
    root = tracer.root()
    if root is not None:
        root.end_ns = 0


def _final_cpu(attributes: dict) -> None:
    """The CPU clocks at the process span's end: exact where the CPU sampler's last 50 ms are lost.

    process.cpu_ns: all threads' CPU time so far (time.process_time_ns()). When the main thread
    ends the span (at exit, on SIGTERM; not an os._exit or exec in another thread), the main
    thread's own, as on thread spans (thread_clocks).
    """
    try:
        from time import process_time_ns

        if get_ident() == tracer._main_thread:
            attributes.update(thread_clocks())
        attributes["process.cpu_ns"] = process_time_ns()
    except Exception:  # a platform without these clocks
        pass


THREAD_CLOCKS = "selfopt_trace.thread."


def thread_clocks(prefix: str = THREAD_CLOCKS) -> dict:
    """The calling thread's CPU time since it started (time.thread_time_ns(), 0.7 us) and its time
    queued for a CPU, as the kernel counts it for the CPU sampler (/proc/thread-self/schedstat, 7 us;
    its CPU time there lags up to a scheduler tick for a running thread, its queued time does not):
    a thread queued behind another program at its end ran, for the breakdown, as its readings say.
    What cannot be read is left out. Keys: PREFIX + cpu_ns, runqueue_ns. Read in threads of the
    program's other than the main one, where no signal handler runs, or as the process starts or ends."""
    clocks = {}
    try:  # at interpreter shutdown (a daemon thread's end) anything may fail: the span still ends
        from time import thread_time_ns

        clocks[prefix + "cpu_ns"] = thread_time_ns()
        queued = runqueue_ns()
        if queued is not None:
            clocks[prefix + "runqueue_ns"] = queued
    except Exception:
        pass
    return clocks


def runqueue_ns() -> int | None:
    """The calling thread's time queued for a CPU so far, as the kernel counts it, None where it
    cannot be read: the C twin's reader keeps the GIL (importtime.c), this one's hands it over."""
    from .importtime import runqueue_ns as twin_reader

    if twin_reader is not None:
        return twin_reader()
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        try:
            return int(os.read(fd, 128).split()[1])
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError) as exc:  # (read at a spawn and a reap too: the main thread's)
        tracer.raise_if_programs(exc)
        return None


def _resource_usage() -> dict:
    usage = {}
    try:
        times = os.times()
        usage["process.cpu.user_seconds"] = times.user
        usage["process.cpu.system_seconds"] = times.system
        usage["process.memory.peak_rss_bytes"] = _peak_rss_bytes()
    except Exception:
        pass
    return usage


def _peak_rss_bytes() -> int:
    """VmHWM from /proc (a read, where `import resource` would load an extension module)."""
    try:
        status = tracer.read_file("/proc/self/status", 0, 1 << 14)
        at = status.index(b"VmHWM:")
        return int(status[at + 6:status.index(b"kB", at)]) * 1024
    except (OSError, ValueError):  # (at the process's end: see end)
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _at_exit() -> None:
    try:
        exc = getattr(sys, "last_value", None)
        if exc is not None and not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            set_exit(1, **{"exception.type": type(exc).__qualname__, "exception.message": redact.text(str(exc))[:1000]})
            end_at_last(tracer.ERROR)
        else:
            end_at_last()
        _await_finalization()
    except Exception:  # a signal handler's too: the process ends
        pass


def _await_finalization() -> None:
    """The interpreter's finalization after the agent's last record (the collector's full passes over
    every object still alive, the modules' teardown): the C twin ends an `interpreter.finalize` span,
    from the process span's end, to the process's exit (with glibc, with its exit status as the
    parent sees it: importtime.c) and writes it. None without the twin, or where the process ends
    otherwise (os._exit, a signal, an exec)."""
    root, twin, fd = tracer.root(), tracer.twin, tracer._fd
    if twin is None or root is None or not root.end_ns or fd is None:
        return
    prefix = (f"X\t{tracer.new_span_id()}\t{root.span_id}\t{root.trace_id}\tinterpreter.finalize\t{tracer.INTERNAL}"
              f"\tfinalize\t{root.end_ns}\t")
    twin.at_finalized(fd, prefix.encode(), f"\t{tracer.UNSET}\t".encode(), b"\t.\n")


def end_at_last(status: str = tracer.UNSET) -> None:
    """end() where the process ends anyway (its exit, os._exit): an exception of the program's signal
    handler (an interval timer's) that lands in it is dropped, and the end tried once more, so the
    records its flush kept (tracer._keep_interrupted) and the process span's end reach the file."""
    try:
        end(status)
    except Exception:
        end(status)


def _after_fork_in_child() -> None:
    """A forked child gets its own process span (child of the span that forked) and its own file."""
    global _exit_code, _reparent, _gc_dropped
    if get_ident() in tracer.in_spawn:  # the thread that forked is the child's only thread
        return  # a subprocess child running preexec_fn before exec: the exec'd image traces itself
    tracer.in_spawn.clear()  # other threads' spawns: none of this process's
    tracer._main_thread = get_ident()
    try:
        parent = tracer.current() or tracer.root()
        tracer.reset_after_fork()
        _exit_code, _reparent = None, ""
        _exit_attributes.clear()
        if _gc_watcher is not None:
            _gc_watcher(GC_SPAN_NS)  # the counts start anew (the parent's callback stays in gc.callbacks)
            _gc_dropped = 0
        now = time_ns()
        trace_id = parent.trace_id if parent else tracer.new_trace_id()
        _begin(now, now, "fork", trace_id, parent.span_id if parent else "", parent=parent)
        tracer.activate(tracer.root())
        tracer.started_up()
        import _signal

        current = _signal.getsignal(_signal.SIGTERM)
        if current is on_sigterm:  # a timer of its own for SIGTERM's grace
            sigterm_grace(program_sigterm_handler == _signal.SIG_DFL)
        elif current == _signal.SIG_DFL:  # a fork of a container's first process (which has none): not pid 1
            _install_sigterm()
    except Exception:  # (an at-fork handler: Python would only print its exception)
        pass


# ---------------------------------------------------------------------------------------------
# Process names: what a person calls a process, one short name from its command line (docs/agent.md,
# "Process names"). The one rule: recorded as `process.command` on every process span (its
# service.name too, unless one is set) and subprocess span; everything else reads it from there (the
# `subprocess` and `process_tree` queries, the summary, `tree`, the report, the exports, Jaeger).
#     python app.py --x                                  app.py
#     python -m pytest -q                                pytest
#     /venv/bin/python /venv/bin/codeflash --file f.py   codeflash   (a console script)
#     python -c "import sys; sys.path.insert(0, p); from tool.cli import main; main()"
#                                                        python -c from tool.cli import main
#     python .../jedi/inference/compiled/subprocess/__main__.py   subprocess/__main__.py
#     sh -c "make -j4 && ./check"                        sh -c make -j4 && ./check
#     git status --short                                 git status
# Here, not in a module of its own: one module more to import costs every traced process ~1.2M CPU
# instructions (callgrind); string operations only, no `re`.

CODE_CHARS = 60  # of a -c program, at most this much is in the name (then "…")
_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "ash", "busybox")


def command_name(args: list, python: bool = False) -> str:
    """The name of the process `args` starts (`python`: args is a Python interpreter's command line)."""
    return split_command(args, python)[0]


def split_command(args: list, python: bool = False) -> tuple:
    """(name, the arguments after what the name stands for): `python -m pytest -q` -> ("pytest", ["-q"])."""
    if not args:
        return "python" if python else "", []
    program = _basename(str(args[0]))
    if python or program.startswith(("python", "pypy")):
        kind, target, rest = python_main(args)
        if kind == "command":
            return ("python -c " + code_summary(target)).rstrip(), args[rest:]
        if kind == "module":
            return target, args[rest:]
        if kind == "script":
            return script_name(target), args[rest:]
        return program or "python", args[rest:]
    if program in _SHELLS and len(args) > 2 and args[1] == "-c":
        return (program + " -c " + code_summary(str(args[2]))).rstrip(), args[3:]
    if len(args) > 1 and not str(args[1]).startswith("-") and len(str(args[1])) <= 32 and "/" not in str(args[1]):
        return program + " " + str(args[1]), args[2:]  # git status, docker run, pip install
    return program, args[1:]


def python_main(args: list) -> tuple:
    """(kind, target, index of the program's first argument) of a Python command line, by CPython's
    option parser: kind is "command" (-c CODE), "module" (-m MOD), "script" (a file), "stdin" or ""."""
    i = 1
    while i < len(args):
        arg = str(args[i])
        if arg == "--":
            return ("script", str(args[i + 1]), i + 2) if i + 1 < len(args) else ("stdin", "", i + 1)
        if arg == "-":
            return "stdin", "", i + 1
        if not arg.startswith("-"):
            return "script", arg, i + 1
        if arg.startswith("--"):
            i += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        for j in range(1, len(arg)):
            letter = arg[j]
            if letter in "cm":
                kind = "command" if letter == "c" else "module"
                if j + 1 < len(arg):  # -cCODE, -mMOD
                    return kind, arg[j + 1:], i + 1
                return kind, (str(args[i + 1]) if i + 1 < len(args) else ""), i + 2
            if letter in "WX":
                if j == len(arg) - 1:
                    i += 1  # -W ignore: the value is the next argument
                break
        i += 1
    return "", "", len(args)


def script_name(path: str) -> str:
    """A script's file name; a package's __main__.py with its package's."""
    name = _basename(path)
    if name in ("__main__.py", "__init__.py"):
        parent = _basename(path[:len(path) - len(name)].rstrip("/"))
        if parent:
            return parent + "/" + name
    return name or path


def code_summary(code: str) -> str:
    """A -c program in a few words: its first statement that is not a plain import or a sys.path
    change (else its first), on one line, at most CODE_CHARS characters."""
    first = ""
    start = 0
    length = len(code)
    while start < length:
        end = code.find("\n", start)
        if end < 0:
            end = length
        for statement in _statements(code[start:end]):
            if not first:
                first = statement
            if not statement.startswith(("import ", "sys.path.", "from __future__ ")):
                return _cut(statement)
        start = end + 1
    return _cut(first)


def _statements(line: str) -> list:
    """The statements of one line (`a; b`), outside quotes; comments and blanks left out."""
    out = []
    quote = ""
    begin = 0
    for i, char in enumerate(line):
        if quote:
            if char == quote and line[i - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#":
            line = line[:i]
            break
        elif char == ";":
            out.append(line[begin:i])
            begin = i + 1
    out.append(line[begin:])
    return [s for s in (" ".join(part.split()) for part in out) if s]


def _cut(text: str) -> str:
    return text if len(text) <= CODE_CHARS else text[:CODE_CHARS - 1] + "…"


def _basename(path: str) -> str:
    return path.rpartition("/")[2]
