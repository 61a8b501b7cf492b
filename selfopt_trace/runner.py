"""`selfopt-trace run`: execute CMD exactly as the shell would, with the bootstrap injected.

What "exactly" means here, and how:
- PATH lookup, messages and exit codes of a shell: not found -> 127, found but not executable -> 126,
  a file without a `#!` line is run by /bin/sh (POSIX execvp does the same).
- stdin, stdout and stderr are inherited file descriptors, never pipes: the bytes are CMD's own.
  So are other inheritable descriptors (a make jobserver, for instance).
- The exit status is CMD's. A CMD killed by signal N makes this process kill itself with N (core
  dumps disabled first), so a shell prints 128+N and a program sees "killed by N" as untraced.
- Signals: Ctrl-C and Ctrl-\\ from a terminal reach CMD directly (same process group); we forward
  SIGINT and SIGQUIT only when they did not come from the terminal (our process group is not the
  terminal's foreground group), and always forward SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2. Signals
  ignored when we started stay ignored, and CMD inherits that, as it would from a shell.
- Nothing of ours is written to stdout or stderr until CMD has exited.

A supervisor: prepare (every check that can fail, before CMD), start CMD, start the watchers that
follow it while it lives (selfopt_trace/watchers: the live OTLP export, the CPU sampler), wait,
stop them; then run_report.py loads and summarizes. Everything around CMD (the run directory,
run.json, loading into the store) happens before the timed window starts or after it ends.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TextIO

# The agent's contract (docs/architecture.md): its config module is the one definition of the names.
from .bootstrap.selfopt_trace_agent import config as agent_config
from .bootstrap.selfopt_trace_agent import container
from .errors import SelfoptTraceError
from .export.otlp_settings import OtlpSettings, OtlpSettingsError
from .export.otlp_settings import resolve as resolve_otlp
from .paths import default_runs_dir as home_runs_dir
from .paths import unwritable, working_directory
from .watchers import Watcher, WatchedRun, start_all, stop_all
from .watchers.cpu_sampler import CpuSampler

if TYPE_CHECKING:
    from .watchers.profiler import ProfileSettings

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"

ENV_OUT = "SELFOPT_TRACE_OUT"
ENV_QUIET = "SELFOPT_TRACE_QUIET"
ENV_JSON = "SELFOPT_TRACE_JSON"
ENV_NO_LOAD = "SELFOPT_TRACE_NO_LOAD"
ENV_LOCK_WAIT = "SELFOPT_TRACE_LOCK_WAIT_S"  # how long loading waits for another process's database lock
ENV_EXPORT = "SELFOPT_TRACE_EXPORT"  # auto | always | never: the live OTLP export

EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# SIGINT/SIGQUIT come from the terminal to the whole foreground group: forwarded only when they did not.
_TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class RunSetupError(SelfoptTraceError):
    """The run cannot start (unwritable output, bad option): raised before CMD runs."""


class CommandNotRunnable(SelfoptTraceError):
    """CMD cannot be executed: not found (127) or not executable (126), as a shell says it."""

    def __init__(self, command: str, reason: str, exit_code: int) -> None:
        super().__init__(f"{command}: {reason}")
        self.exit_code = exit_code


@dataclass
class RunOptions:
    """What `run` was asked to do (the CLI merges flags with SELFOPT_TRACE_* variables into it)."""

    command: list[str]
    out_dir: Path
    db_path: Path
    run_id: str | None = None
    service: str | None = None
    import_threshold_ms: float | None = None
    quiet: bool = False
    json_target: str | None = None  # "-" for stdout, else a file path
    repeat: int = 1
    warmup: int = 0
    load: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)  # module:qualname, from --target and pyproject.toml
    export: str = "auto"  # live OTLP export: auto (when a collector answers), always, never
    otlp_endpoint: str | None = None  # else OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT
    otlp_protocol: str | None = None  # else OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL
    otlp: OtlpSettings | None = None  # resolved by prepare(); None: no export
    cpu_sampling: bool = True  # follow every traced thread's CPU time from /proc (watchers/cpu_sampler.py)
    cpu_rate_hz: float | None = None  # readings per second; None: the sampler's default
    replace: bool = False  # a stored run of the same id (from elsewhere) is replaced, not refused
    profile: ProfileSettings | None = None  # run --profile: py-spy samples (watchers/profiler.py)


@dataclass
class RunRecord:
    """One execution of CMD: what run.json says."""

    run_id: str
    group_id: str | None
    run_dir: Path | None
    command: list[str]
    cwd: str
    service: str | None
    traced: bool
    start_ns: int = 0
    end_ns: int = 0
    returncode: int | None = None  # like Popen.returncode: -N when killed by signal N
    pid: int | None = None  # CMD's process id
    notes: list[str] = field(default_factory=list)  # from the watchers, for the summary
    # The run's place in its trace (export/run_span.py): an incoming TRACEPARENT's trace and span, else a new trace.
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None

    def to_json(self) -> dict:
        """run.json: text that is not UTF-8 (a Latin-1 argument or directory) escaped as the span
        files escape it, the keys so written listed in `escaped`."""
        from .bootstrap.selfopt_trace_agent import redact, spanfile

        data = {
            "run_id": self.run_id,
            "group_id": self.group_id,
            "command": redact.argv(self.command),
            "cwd": self.cwd,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns or None,
            "exit_code": self.returncode,
            "pid": self.pid,
            "service": self.service,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
        }
        if self.notes:  # the watchers' (run_once): stored with the run, for `summary RUN` and a later `load`
            data["notes"] = self.notes
        escaped = [key for key in ("command", "cwd", "service") if spanfile.needs_escape(data[key])]
        for key in escaped:
            data[key] = spanfile.escape(data[key])
        if escaped:
            data["escaped"] = escaped
        return data


def tracing_disabled_by(environ: dict[str, str] | os._Environ) -> str | None:
    """The variable that turns tracing off, or None."""
    for name in (agent_config.ENV_DISABLED, "OTEL_SDK_DISABLED"):
        if (environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def new_run_id() -> str:
    """Sortable by time (UTC, milliseconds) and unique: 20250105T143012.123Z-a1b2c3."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000))
    return f"{stamp}.{now // 1_000_000 % 1000:03d}Z-{os.urandom(3).hex()}"  # secrets.token_hex, without importing it


def check_run_id(run_id: str) -> None:
    if not _RUN_ID.fullmatch(run_id):
        raise RunSetupError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")


# ---------------------------------------------------------------------------------------------
# Before CMD: everything that can fail must fail here.


def check_writable_dir(directory: Path, what: str) -> None:
    """Create `directory` if needed and prove a file can be created in it."""
    reason = unwritable(directory)
    if reason is not None:
        raise RunSetupError(f"{what} {directory} {reason}")


def check_writable_db(path: Path) -> None:
    """The database file can be opened for writing, or created. DuckDB itself is opened after CMD."""
    if path.is_dir():
        raise RunSetupError(f"trace database {path} is a directory")
    if path.exists() and not path.is_file():  # /dev/null, a FIFO: DuckDB cannot keep a database there
        raise RunSetupError(f"trace database {path} is not a regular file: choose another --db")
    if path.exists():
        try:
            with open(path, "r+b") as stream:
                head = stream.read(12)
        except OSError as exc:
            raise RunSetupError(f"trace database {path} is not writable: {exc.strerror or exc}") from exc
        if head and head[8:12] != b"DUCK":  # DuckDB's file header: a checksum, then its magic bytes
            raise RunSetupError(f"trace database {path} is not a DuckDB database: choose another --db")
    else:
        check_writable_dir(path.parent, "the directory of the trace database")


def resolve_command(argv0: str, path_env: str | None) -> tuple[str, bool]:
    """The file a shell would execute for argv0: (path, True) or, for a non-executable file, (path, False).

    Raises CommandNotRunnable with the shell's message and code when there is none.
    """
    if "/" in argv0:
        if os.path.isdir(argv0):
            raise CommandNotRunnable(argv0, "Is a directory", EXIT_NOT_EXECUTABLE)
        if not os.path.exists(argv0):
            raise CommandNotRunnable(argv0, "No such file or directory", EXIT_NOT_FOUND)
        return argv0, os.access(argv0, os.X_OK)
    if not argv0:
        raise CommandNotRunnable(argv0, "command not found", EXIT_NOT_FOUND)
    not_executable = None
    for entry in (path_env if path_env is not None else os.defpath).split(os.pathsep):
        candidate = os.path.join(entry or ".", argv0)  # an empty PATH entry is the working directory
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate, True
            not_executable = not_executable or candidate
    if not_executable:
        return not_executable, False
    raise CommandNotRunnable(argv0, "command not found", EXIT_NOT_FOUND)


def precompile_bootstrap(directory: Path = BOOTSTRAP_DIR, command: Sequence[str] = (),
                         environ: dict[str, str] | None = None) -> None:
    """The agent under `directory` prepared before CMD starts (agent_build.py: .pyc files, bundles,
    the import wrapper's C twin), for this interpreter and for each other one CMD names
    (interpreters.py). Best effort, silent."""
    from . import agent_build

    agent_build.prepare(directory)
    if command:
        from . import interpreters

        interpreters.prepare_for(list(command), os.environ if environ is None else environ, directory)


def traced_environ(base: dict[str, str], record: RunRecord, options: RunOptions, spawn_ns: int) -> dict[str, str]:
    """CMD's environment: the caller's, plus what the agent needs. TRACEPARENT passes through as it
    is; the run's trace id (`join_trace`) is for the processes without one: every top-level Python
    process of CMD (the children of a shell, of make) joins that one trace, where each would start
    its own."""
    env = dict(base)
    env.update(options.extra_env)
    assert record.trace_id is not None
    env[agent_config.ENV_TRACE_ID] = record.trace_id
    env[agent_config.ENV_DIR] = str(record.run_dir)
    env[agent_config.ENV_RUN_ID] = record.run_id
    env[agent_config.ENV_BOOTSTRAP] = str(BOOTSTRAP_DIR)
    if options.service:
        env[agent_config.ENV_SERVICE] = options.service
    if options.import_threshold_ms is not None:
        env[agent_config.ENV_IMPORT_THRESHOLD_MS] = repr(options.import_threshold_ms)
    if options.targets:
        given = agent_config.target_items(env.get(agent_config.ENV_TARGETS, ""))
        env[agent_config.ENV_TARGETS] = ";".join(dict.fromkeys(given + options.targets))
    env["PYTHONPATH"] = agent_config.with_bootstrap(env.get("PYTHONPATH", ""), str(BOOTSTRAP_DIR))
    # read here, once: a traced process that is first in its container otherwise reads /proc for it
    # (~1 M instructions, docs/benchmarks.md)
    container_id = container.passed_on()
    if container_id:
        env[agent_config.ENV_CONTAINER_ID] = container_id
    # CMD's process span starts when we spawn it (the agent trusts this when we are its parent).
    env[agent_config.ENV_SPAWN] = f"{os.getpid()}:{spawn_ns}"
    return env


def join_trace(record: RunRecord, environ: dict[str, str]) -> None:
    """The run's place in a trace: under an incoming TRACEPARENT's span, else at the root of a new
    trace; its own span id, the parent the exports give CMD's top-level spans (export/run_span.py)."""
    incoming = agent_config.traceparent_ids(environ.get(agent_config.ENV_TRACEPARENT))
    record.trace_id, record.parent_span_id = incoming or (os.urandom(16).hex(), None)
    record.span_id = os.urandom(8).hex()


def write_run_json(record: RunRecord) -> None:
    """run.json, replaced atomically: written at start (a crash still names the run) and at the end."""
    assert record.run_dir is not None
    target = record.run_dir / "run.json"
    partial = target.with_name(".run.json.tmp")
    partial.write_text(json.dumps(record.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, target)


# ---------------------------------------------------------------------------------------------
# CMD itself.


class SignalForwarder:
    """Installs forwarding handlers for the lifetime of one child (see the module docstring)."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.pending: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalForwarder:
        for signum in FORWARDED_SIGNALS:
            current = signal.getsignal(signum)
            if current is None or current == signal.SIG_IGN:
                continue  # ignored (nohup, a background job): CMD inherits that, as from a shell
            self._previous[signum] = current
            signal.signal(signum, self._forward)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def started(self, child: subprocess.Popen) -> None:
        self.child = child
        for signum in self.pending:
            self._send(signum)
        self.pending.clear()

    def _forward(self, signum: int, frame: object) -> None:
        if signum in _TERMINAL_SIGNALS and _in_terminal_foreground():
            return  # the terminal sent it to CMD as well
        if self.child is None:
            self.pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        child = self.child
        if child is not None and child.returncode is None:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass


def _in_terminal_foreground() -> bool:
    """True when our process group is the foreground group of our controlling terminal."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def execute(command: list[str], env: dict[str, str], forwarder: SignalForwarder,
            on_start=None) -> subprocess.Popen:
    """Run CMD to completion as a shell would; the finished child (pid, returncode).

    `on_start(child)` is called once CMD runs, before waiting for it (the watchers start there)."""
    path, executable = resolve_command(command[0], env.get("PATH"))
    if not executable:
        raise CommandNotRunnable(command[0], "Permission denied", EXIT_NOT_EXECUTABLE)
    argv = list(command)
    if container_command(argv) is not None:
        argv, path = [sys.executable, "-c", _EXEC_SHIM, path, *argv], sys.executable
    try:
        child = _spawn(argv, path, env)
    except OSError as exc:
        if exc.errno != errno.ENOEXEC:
            reason = exc.strerror or str(exc)
            code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE
            raise CommandNotRunnable(command[0], reason, code) from exc
        # No #! line: POSIX execvp hands such a file to the shell, and so do we.
        child = _spawn(["/bin/sh", path] + argv[1:], "/bin/sh", env)
    forwarder.started(child)
    if on_start is not None:
        on_start(child)
    child.wait()
    return child


# CMD that starts a container (`docker run ...`) is started by a traced Python process that execs it:
# the agent's exec hook carries the trace into the container (hooks/docker_.py), as for a program's
# own `docker run`. The process stays CMD's (the same pid, signals, exit status). Python ignores
# SIGPIPE and SIGXFSZ, which an exec keeps: back to their defaults, as subprocess gives CMD otherwise
# (restore_signals); its SIGINT handler, where it set one, too before the exec (not a traceback).
_EXEC_SHIM = ("import os, sys, _signal as s\n"  # the exec first, for its name in the tree; the resets add no argument
              "os.execv(sys.argv[1], sys.argv[2:] + [s.signal(n, s.SIG_DFL) for n in {s.SIGPIPE, getattr(s, 'SIGXFSZ', s.SIGPIPE)}"
              " | ({s.SIGINT} if s.getsignal(s.SIGINT) is s.default_int_handler else set())][:0])\n")


def container_command(command: Sequence[str]):
    """CMD as the docker hook reads it when it starts a process in a container (`docker` or `podman`
    `run`, `create`, `exec`), else None. The hook's module (and the agent's tracer with it, ~2.4 ms)
    loads only for such a CMD."""
    if not command or os.path.basename(command[0]) not in ("docker", "podman"):
        return None
    from .bootstrap.selfopt_trace_agent.hooks.docker_ import parse

    return parse(list(command))


def _spawn(argv: list[str], path: str, env: dict[str, str]) -> subprocess.Popen:
    # close_fds=False: inheritable descriptors pass through as a shell passes them.
    return subprocess.Popen(argv, executable=path, env=env, close_fds=False)


def drop_output(stream: TextIO) -> None:
    """Point `stream`, our stdout or stderr, at /dev/null: it could not take our output (its reader
    gone, a full disk), and the status `run` exits with is CMD's, whatever becomes of ours."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)
    except (OSError, ValueError):  # ValueError: closed by the program that embeds us: nothing to write
        pass


def flush_output() -> None:
    """Flush our stdout and stderr; one that cannot be written is dropped (drop_output). None: no
    stream at all (a caller's closed descriptor: cli.main puts /dev/null there first)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            drop_output(stream)


def die_like(returncode: int) -> int:
    """Exit as CMD did: for a signal, kill ourselves with it (no core file); returns the shell code
    to fall back to should the signal not kill us."""
    if returncode >= 0:
        return returncode
    signum = -returncode
    flush_output()
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, OSError, ValueError):
        pass
    try:
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # these cannot be caught, so need no reset
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
        time.sleep(1)  # delivery is immediate in practice; never go on as if it had not happened
    except (OSError, ValueError):
        pass
    return 128 + signum


# ---------------------------------------------------------------------------------------------
# A whole run: prepare, execute, record.


def prepare(options: RunOptions, environ: dict[str, str]) -> None:
    """Every check that must fail before CMD starts (exit 2, CMD not run); resolves options.otlp."""
    if not options.command:
        raise RunSetupError("no command given: selfopt-trace run [OPTIONS] -- CMD [ARGS...]")
    if options.repeat < 1 or options.warmup < 0:
        raise RunSetupError("--repeat must be >= 1 and --warmup >= 0")
    if options.run_id is not None:
        check_run_id(options.run_id)
    if options.import_threshold_ms is not None and not 0 <= options.import_threshold_ms < math.inf:
        raise RunSetupError(f"--import-threshold-ms must be a number >= 0, not {options.import_threshold_ms}")
    for target in options.targets:
        check_target(target)
    for target in agent_config.target_items(environ.get(agent_config.ENV_TARGETS, "")):
        check_target(target, agent_config.ENV_TARGETS)
    check_writable_dir(options.out_dir, "the run output directory")
    if options.load:
        check_writable_db(options.db_path)
    if options.json_target not in (None, "-"):
        target = Path(options.json_target)
        check_writable_dir(target.parent if str(target.parent) else Path("."), "the directory of the --json file")
    if options.export not in ("auto", "always", "never"):
        raise RunSetupError(f"--export must be auto, always or never, not {options.export!r}")
    if options.export != "never":
        try:
            options.otlp = resolve_otlp(environ, options.otlp_endpoint, options.otlp_protocol)
        except OtlpSettingsError as exc:
            raise RunSetupError(str(exc)) from None
    if options.profile is not None:
        from .watchers.profiler import ProfilerUnavailable, check

        try:
            check(options.profile, environ)
        except ProfilerUnavailable as exc:
            raise RunSetupError(str(exc)) from None


_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.<>]*")


def check_target(target: str, given_by: str = "--target") -> None:
    if not _TARGET.fullmatch(target):
        raise RunSetupError(f"{given_by} {target!r}: expected module:qualname, e.g. codeflash.optimization.optimizer:Optimizer.run")
    module, _, qualname = target.partition(":")
    if module in ("__main__", "__mp_main__"):  # there, empty, when the agent looks: it said "not found", and no span
        raise RunSetupError(f"{given_by} {target!r}: a target must be in a module the program imports; the script "
                            f"itself ({module}: python FILE, -m, -c) is not imported, so none of its functions can be "
                            f"one: put {qualname} in a module the script imports and name that (MODULE:{qualname})")


def pyproject_targets(start: Path | None) -> list[str]:
    """`targets` of [tool.selfopt-trace] in the nearest pyproject.toml at or above `start` (none: a
    deleted working directory)."""
    for folder in (start, *start.parents) if start is not None else ():
        path = folder / "pyproject.toml"
        if path.is_file():
            break
    else:
        return []
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    try:
        targets = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get("selfopt-trace", {}).get("targets", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RunSetupError(f"{path}: {exc}") from None
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise RunSetupError(f"{path}: [tool.selfopt-trace] targets must be a list of \"module:qualname\" strings")
    return targets


def check_run_ids(options: RunOptions, ids: list[str]) -> None:
    """Every run id of the run is free, in the output directory and (when loading, and the database
    can be read now) in the database: a repeated run learns it before its first CMD, not after."""
    for run_id in ids:
        if (options.out_dir / run_id).exists():
            raise RunSetupError(f"run directory {options.out_dir / run_id} already exists: choose another --run-id")
    if not options.load or options.replace or options.run_id is None or not options.db_path.is_file() \
            or options.db_path.stat().st_size == 0:
        return  # a generated id is new (time and random digits); a database written later is checked at load
    from .errors import RunExistsError, StoreLockedError
    from .store import Store

    try:
        with Store(options.db_path, read_only=True) as store:
            for run_id in ids:
                stored = store.has_run(run_id)
                if stored is not None:
                    raise RunSetupError(str(RunExistsError(run_id, stored or None)))
    except StoreLockedError:
        pass  # another process writes it now: the load checks again, in its transaction


def run_ids(options: RunOptions) -> tuple[str | None, list[str]]:
    """(group id, run ids): a single run has no group; --repeat N gives <group>-1 .. <group>-N."""
    if options.repeat == 1:
        return None, [options.run_id or new_run_id()]
    group = options.run_id or new_run_id()
    return group, [f"{group}-{i}" for i in range(1, options.repeat + 1)]


def new_record(options: RunOptions, run_id: str, group_id: str | None, traced: bool) -> RunRecord:
    run_dir = options.out_dir / run_id if traced else None
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=False, exist_ok=False)
            (run_dir / "spans").mkdir()
        except FileExistsError as exc:
            raise RunSetupError(f"run directory {run_dir} already exists: choose another --run-id") from exc
        except OSError as exc:
            raise RunSetupError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from exc
    cwd = working_directory()
    return RunRecord(run_id=run_id, group_id=group_id, run_dir=run_dir, command=list(options.command),
                     cwd=str(cwd) if cwd is not None else os.environ.get("PWD", ""), service=options.service,
                     traced=traced)


def run_once(record: RunRecord, options: RunOptions, environ: dict[str, str],
             watchers: Sequence[Watcher] = ()) -> RunRecord:
    """Execute CMD once, traced into record.run_dir (or untraced), followed by `watchers` while it
    lives; fills in times, return code and the watchers' notes."""
    if record.traced:
        join_trace(record, {**environ, **options.extra_env})
        try:
            write_run_json(record)
        except OSError as exc:  # a full disk: nothing of the run could be kept
            import shutil

            shutil.rmtree(record.run_dir, ignore_errors=True)
            raise RunSetupError(f"cannot write {record.run_dir}/run.json: {exc.strerror or exc}") from exc
    started: list[Watcher] = []
    watched: list[WatchedRun] = []

    def start_watchers(child: subprocess.Popen) -> None:
        if watchers and record.run_dir is not None:
            started.extend(watchers)
            watched.append(WatchedRun(record.run_id, record.run_dir, child.pid, record.start_ns, env,
                                      trace_id=record.trace_id, span_id=record.span_id,
                                      parent_span_id=record.parent_span_id))
            record.notes.extend(start_all(started, watched[0]))

    with SignalForwarder() as forwarder:
        record.start_ns = time.time_ns()
        env = traced_environ(environ, record, options, record.start_ns) if record.traced else dict(environ)
        # `env PYTHONPATH=... CMD` keeps the bootstrap in the PYTHONPATH it sets (the agent does the same).
        command = agent_config.env_argv(record.command, str(BOOTSTRAP_DIR)) if record.traced else record.command
        try:
            child = execute(command, env, forwarder, start_watchers)
            record.pid, record.returncode = child.pid, child.returncode
        finally:
            record.end_ns = time.time_ns()
            for run in watched:
                run.returncode = record.returncode
            if record.traced and record.returncode is not None:
                try:
                    write_run_json(record)  # before the watchers stop: the live export sends the run's span from it
                except OSError as exc:  # a disk filled by CMD: the run.json of its start stays, CMD's status is kept
                    record.notes.append(f"cannot write {record.run_dir}/run.json at the end: {exc.strerror or exc}")
            record.notes.extend(stop_all(started))
            if record.traced and record.returncode is not None and record.notes:
                try:
                    write_run_json(record)  # with the watchers' notes
                except OSError:  # the summary prints them all the same
                    pass
    return record


def warm_up(options: RunOptions, environ: dict[str, str], traced: bool) -> int:
    """One untimed run before the measured ones, traced the same way; its files are discarded."""
    import shutil

    record = new_record(options, f".warmup-{new_run_id()}", None, traced)
    try:
        run_once(record, options, environ)
    finally:
        if record.run_dir is not None:
            shutil.rmtree(record.run_dir, ignore_errors=True)
    return record.returncode or 0


def watchers_for(options: RunOptions) -> list[Watcher]:
    """The watchers that follow each traced run (selfopt_trace/watchers/), new ones for each run."""
    from .watchers.live_export import LiveExport
    from .watchers.untraced import UntracedProcesses

    watchers: list[Watcher] = [CpuSampler(options.cpu_rate_hz)] if options.cpu_sampling else []
    watchers.append(UntracedProcesses(str(BOOTSTRAP_DIR)))
    if options.otlp is not None:
        watchers.append(LiveExport(options.otlp, options.export))
    if options.profile is not None:
        from .watchers.profiler import Profiler

        watchers.append(Profiler(options.profile))
    return watchers


def run(options: RunOptions, environ: dict[str, str] | None = None, available_commands: tuple[str, ...] = ()) -> int:
    """The whole `selfopt-trace run`. Returns the code to exit with; when CMD died of a signal this
    process dies of it too before returning (see die_like)."""
    environ = dict(os.environ if environ is None else environ)
    disabled = tracing_disabled_by(environ)
    traced = disabled is None
    prepare(options, environ)
    resolve_command(options.command[0], environ.get("PATH"))  # "command not found" before anything exists
    group_id, ids = run_ids(options)
    if traced:
        check_run_ids(options, ids)
        precompile_bootstrap(BOOTSTRAP_DIR, options.command, environ)
    records: list[RunRecord] = []
    try:
        for _ in range(options.warmup):
            code = warm_up(options, environ, traced)
            if code < 0:
                return die_like(code)  # interrupted during the warm-ups
        for run_id in ids:
            record = new_record(options, run_id, group_id, traced)
            records.append(record)
            run_once(record, options, environ, watchers_for(options) if traced else [])
            if (record.returncode or 0) < 0:
                break  # killed (Ctrl-C): no more repetitions
    except CommandNotRunnable:
        _discard_unstarted(records)
        raise
    records = [record for record in records if record.returncode is not None]
    code = records[-1].returncode or 0
    from .run_report import error, kept, report

    try:
        report(records, options, disabled, available_commands, environ)
    except KeyboardInterrupt:
        error("interrupted" + kept(records, options, environ))
        return die_like(-signal.SIGINT)
    except SelfoptTraceError as exc:
        error(str(exc) + kept(records, options, environ))
    return die_like(code)


def _discard_unstarted(records: list[RunRecord]) -> None:
    import shutil

    for record in records:
        if record.returncode is None and record.run_dir is not None:
            shutil.rmtree(record.run_dir, ignore_errors=True)


def default_out_dir(environ: dict[str, str] | os._Environ) -> Path:
    value = environ.get(ENV_OUT)
    return Path(value).expanduser() if value else home_runs_dir()
