"""Settings of a traced process, read once from the environment (see docs/architecture.md)."""

# No `typing` import: it costs milliseconds at start-up; annotations stay unevaluated strings.
from __future__ import annotations

import os

ENV_DIR = "SELFOPT_TRACE_DIR"
ENV_RUN_ID = "SELFOPT_TRACE_RUN_ID"
ENV_SERVICE = "SELFOPT_TRACE_SERVICE"
ENV_IMPORT_THRESHOLD_MS = "SELFOPT_TRACE_IMPORT_THRESHOLD_MS"
ENV_BOOTSTRAP = "SELFOPT_TRACE_BOOTSTRAP"
ENV_DISABLED = "SELFOPT_TRACE_DISABLED"
ENV_SPAWN = "SELFOPT_TRACE_SPAWN"
ENV_TRACE_ID = "SELFOPT_TRACE_TRACE_ID"  # the run's trace: a process without TRACEPARENT starts no trace of its own
ENV_TRACEPARENT = "TRACEPARENT"
ENV_TRACESTATE = "TRACESTATE"
ENV_SMALL_NS = "SELFOPT_TRACE_SMALL_NS"
ENV_TARGETS = "SELFOPT_TRACE_TARGETS"
ENV_PURE_PYTHON = "SELFOPT_TRACE_PURE_PYTHON"  # the agent's Python code only, not its C twin (importtime.c)
ENV_GC = "SELFOPT_TRACE_GC"  # time the garbage collector's passes (process.py, _watch_gc): opt-in, ~8,600 instructions a pass
ENV_CONTAINER_IMAGE = "SELFOPT_TRACE_CONTAINER_IMAGE"  # set by the host that injected the trace (hooks/docker_.py)
ENV_CONTAINER_NAME = "SELFOPT_TRACE_CONTAINER_NAME"
# "<mount namespace>\t<container id>": the id the first traced process of a container read
# (container.py), for the others in the same mount namespace (process.py, _container_resource).
ENV_CONTAINER_ID = "SELFOPT_TRACE_CONTAINER_ID"

# A wait (Popen.wait, Thread.join, Future.result, ...) becomes a `wait` span only when it blocked at
# least this long. A wait that returns at once (a child already reaped, a future already done) is
# then two clock reads and no record, so recording waits costs well under 1 us per call; 20 us is
# above the time such a call takes when it does not block (1-5 us with a GIL hand-over on a loaded
# VM) and far below any wait worth following (a process start is ~1 ms, a thread's work rarely less).
WAIT_THRESHOLD_NS = 20_000

# Optional settings a traced parent passes on as it got them (read by the hooks that use them), and
# the container id it read or got (process.py).
PASSED_ON = (ENV_SMALL_NS, ENV_TARGETS, ENV_PURE_PYTHON, ENV_CONTAINER_ID, ENV_GC)


def target_items(text: str) -> list:
    """The entries of a SELFOPT_TRACE_TARGETS value (`a.b:C.f, d:g; ...`), stripped, none empty."""
    return [item.strip() for item in text.replace(";", ",").split(",") if item.strip()]


def hex_id(text: str | None, length: int) -> str | None:
    """`text` as a W3C trace (32) or span (16) id: that many hex digits, not all zero; lower case."""
    text = (text or "").strip()
    try:
        return text.lower() if len(text) == length and int(text, 16) else None
    except ValueError as exc:  # (an incoming request's traceparent: hooks/http_common.py)
        raise_if_programs(exc)
        return None


def raise_if_programs(exc: BaseException) -> None:
    """tracer.raise_if_programs for this module and spanfile, which tracer imports and the collector
    imports too: once the agent's tracer has loaded (before, no handler of the program's runs)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:  # (raised in the frame that caught it: the agent's own)
        import sys

        check = getattr(sys.modules.get(__name__.rpartition(".")[0] + ".tracer"), "raise_if_programs", None)
        if check is not None:
            check(exc)


def traceparent_ids(traceparent: str | None) -> tuple | None:
    """(trace id, parent span id) of a valid W3C traceparent, else None."""
    parts = (traceparent or "").strip().split("-")
    if len(parts) < 4 or parts[0] == "ff":
        return None
    trace_id, span_id = hex_id(parts[1], 32), hex_id(parts[2], 16)
    return (trace_id, span_id) if trace_id and span_id else None


class Settings:
    __slots__ = ("run_dir", "run_id", "service", "import_threshold_ns", "bootstrap_dir", "passed_on")

    def __init__(self, run_dir: str, run_id: str, service: str | None, import_threshold_ns: int, bootstrap_dir: str,
                 passed_on: dict | None = None):
        self.run_dir = run_dir
        self.run_id = run_id
        self.service = service
        self.import_threshold_ns = import_threshold_ns
        self.bootstrap_dir = bootstrap_dir
        self.passed_on = passed_on or {}


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def from_environ(environ: dict[str, str] | None = None) -> Settings | None:
    """The settings, or None when this process is not to be traced."""
    env = os.environ if environ is None else environ
    run_dir = env.get(ENV_DIR)
    if not run_dir or truthy(env.get(ENV_DISABLED)) or truthy(env.get("OTEL_SDK_DISABLED")):
        return None
    try:
        threshold_ms = float(env.get(ENV_IMPORT_THRESHOLD_MS) or 1.0)
    except ValueError:  # (start-up)
        threshold_ms = 1.0
    return Settings(
        run_dir=run_dir,
        run_id=env.get(ENV_RUN_ID) or os.path.basename(run_dir.rstrip("/")),
        service=env.get(ENV_SERVICE) or env.get("OTEL_SERVICE_NAME") or None,
        import_threshold_ns=int(threshold_ms * 1_000_000),
        bootstrap_dir=env.get(ENV_BOOTSTRAP) or os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        passed_on={name: env[name] for name in PASSED_ON if env.get(name)},
    )


def propagated_environ(settings: Settings) -> dict[str, str]:
    """The variables a child needs to be traced into the same run, even through an explicit `env=`."""
    env = {ENV_DIR: settings.run_dir, ENV_RUN_ID: settings.run_id, ENV_BOOTSTRAP: settings.bootstrap_dir}
    env.update(settings.passed_on)
    if settings.service:
        env[ENV_SERVICE] = settings.service
    env[ENV_IMPORT_THRESHOLD_MS] = str(settings.import_threshold_ns / 1_000_000)
    return env


def with_bootstrap(pythonpath: str, bootstrap_dir: str) -> str:
    """PYTHONPATH with the bootstrap directory first (never an empty entry: that would be the cwd)."""
    entries = [p for p in pythonpath.split(os.pathsep) if p] if pythonpath else []
    if entries[:1] == [bootstrap_dir]:
        return pythonpath
    return os.pathsep.join([bootstrap_dir] + [p for p in entries if p != bootstrap_dir])


def env_argv(args: list, bootstrap_dir: str) -> list:
    """`env [-u NAME]... [NAME=VALUE]... CMD`: the PYTHONPATH env sets (or unsets) for CMD keeps the
    bootstrap directory first, so a Python CMD stays traced. Other argv, and `env -i` / `-S` (a
    cleared environment, a split string), are returned as they are."""
    if not args or os.path.basename(os.fsdecode(args[0])) != "env":
        return args
    out = list(args)
    i = 1
    while i < len(out):
        arg = os.fsdecode(out[i])
        if arg in ("-i", "-", "--ignore-environment") or arg.startswith(("-S", "--split-string")):
            return args
        if arg in ("-u", "--unset") and i + 1 < len(out) and os.fsdecode(out[i + 1]) == "PYTHONPATH":
            out[i:i + 2] = ["PYTHONPATH=" + bootstrap_dir]
        elif arg in ("-uPYTHONPATH", "--unset=PYTHONPATH"):
            out[i] = "PYTHONPATH=" + bootstrap_dir
        elif arg.startswith("PYTHONPATH="):
            out[i] = "PYTHONPATH=" + with_bootstrap(arg[len("PYTHONPATH="):], bootstrap_dir)
        elif arg in ("-u", "--unset", "-C", "--chdir"):
            i += 1  # the option's value
        elif not arg.startswith("-") and "=" not in arg:
            break  # CMD
        i += 1
    if isinstance(args[0], bytes):
        out = [os.fsencode(item) for item in out]
    return out
