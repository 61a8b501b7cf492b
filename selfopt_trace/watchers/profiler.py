"""Profiler: py-spy samples of every traced process, from the `run` process (`run --profile`).

One py-spy per traced process, started by `run` as the process appears: a traced process writes its
span file at the end of its start-up, the watcher's thread sees the new file in `spans/` (it looks
every POLL_S) and starts `py-spy record --pid PID` on it. Against py-spy's own subprocess mode
(`--subprocesses`, one py-spy for the tree, looking for new children every 100 ms), this loses
fewer short-lived children (docs/benchmarks.md, "Profiling"), works when CMD is a shell or any
other program, and profiles the traced processes only (those whose samples have spans to go to).

py-spy writes what it sampled when it stops (its target exited, or SIGINT), as a Chrome trace in
`profile/<pid>-<n>.json`: the watcher then turns it into lines of `profile/samples.tsv`
(watchers/profile_samples.py) and deletes it. Its times count microseconds from py-spy's start: the
watcher records the wall-clock time at which each py-spy started (the anchor, a `P` line) and when
it said it samples (an `A` line, which rules out an anchor its slow start-up made wrong), the
samples go on the trace's clock with them, and the loader checks the result against span
boundaries (the `profile.alignment` diagnostic). So a profiler killed mid-run loses only the
samples of the processes it was still sampling: every file already written is in samples.tsv, and
`load` converts any py-spy file the watcher had no time to.

py-spy runs in its own session (a Ctrl-C at the terminal is CMD's, not py-spy's), with its output
in `profile/<pid>-<n>.log` (kept only when it failed), never on CMD's terminal. Its failures become
notes and diagnostics: they never change CMD's exit status or output.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SelfoptTraceError
from . import WatchedRun, pid_is_ours, span_file_header
from . import profile_samples as fmt

ENV_PYSPY = "SELFOPT_TRACE_PYSPY"  # the py-spy executable to use (default: beside python, else on PATH)
ENV_SPAWN = "SELFOPT_TRACE_PROFILE_SPAWN"  # each (default) | tree: one py-spy --subprocesses for the tree
ENV_NONBLOCKING = "SELFOPT_TRACE_PROFILE_NONBLOCKING"  # 1: py-spy --nonblocking, 0: pause to read
# Pausing (py-spy's ptrace stops) loses the tail of a message over 64 KB written to a pipe through
# a buffered file (pickle.dump to a Popen's stdin): the two processes then wait on each other for
# ever. Profiled codeflash runs hung so (jedi's subprocess) in 5 of 11 runs; reading without pausing,
# never (docs/profiling.md, "Blocking").
NONBLOCKING_DEFAULT = True

DEFAULT_RATE_HZ = 100
POLL_S = 0.005  # how often the watcher looks for new span files, attached and finished py-spys
SAMPLING_LINE = "Sampling process"  # what py-spy prints once it attached (_sampling_since)
STOP_BUDGET_S = 10.0  # py-spys still sampling when CMD has exited: SIGINT, then this long to write
INSTALL_HINT = "pip install 'selfopt-trace[profile]' (or pip install py-spy)"


class ProfilerUnavailable(SelfoptTraceError):
    """py-spy cannot profile here: its message is one line that says why and what to do."""


@dataclass
class ProfileSettings:
    """What `run --profile` was asked for."""

    mode: str = "on"  # on: unavailable is an error before CMD; auto: trace without samples, and say so
    rate_hz: int = DEFAULT_RATE_HZ
    native: bool = False  # py-spy --native: C/C++/Cython frames too
    idle: bool = False  # keep the samples of idle threads (always recorded; dropped at load without it)
    nonblocking: bool = NONBLOCKING_DEFAULT  # py-spy --nonblocking: read without pausing the process
    spawn: str = "each"  # each: one py-spy per traced process; tree: one py-spy --subprocesses on CMD
    pyspy: str | None = None  # the executable, found by check()
    unavailable: str | None = None  # auto: why there will be no samples


# ---------------------------------------------------------------------------------------------
# Before CMD: is py-spy there, and may it read other processes?


def find_pyspy(environ: dict[str, str]) -> str | None:
    """The py-spy executable: $SELFOPT_TRACE_PYSPY, else beside this Python (its venv), else on PATH."""
    explicit = environ.get(ENV_PYSPY)
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy", path=environ.get("PATH"))


def check(settings: ProfileSettings, environ: dict[str, str]) -> None:
    """Find py-spy and make sure it may read the traced processes: for `--profile`, raise
    ProfilerUnavailable (one line with the fix); for `--profile=auto`, set settings.unavailable."""
    if settings.spawn not in ("each", "tree"):
        raise ProfilerUnavailable(f"{ENV_SPAWN} must be each or tree, not {settings.spawn!r}")
    pyspy = find_pyspy(environ)
    if pyspy is None:
        where = f"{ENV_PYSPY}={environ[ENV_PYSPY]} is not an executable file" if environ.get(ENV_PYSPY) \
            else "py-spy is not installed"
        problem = f"{where}: {INSTALL_HINT}"
    else:
        problem = ptrace_problem()
    if problem is None:
        settings.pyspy = pyspy
        return
    if settings.mode == "auto":
        settings.unavailable = problem
        return
    raise ProfilerUnavailable(f"--profile: {problem}; or --profile=auto to trace without samples")


def ptrace_problem(proc_root: str = "/proc", platform: str = sys.platform, effective_caps: int | None = None,
                   probe: bool = True) -> str | None:
    """Why py-spy may not read the traced processes' memory here, with the fix; None when it may."""
    if platform == "darwin":
        return None if os.geteuid() == 0 else \
            "py-spy needs root on macOS to read other processes: sudo selfopt-trace run --profile ..."
    if not platform.startswith("linux"):
        return None  # py-spy says what it thinks on the first attach
    caps = _effective_caps(proc_root) if effective_caps is None else effective_caps
    has_ptrace_cap = bool(caps >> 19 & 1)  # CAP_SYS_PTRACE
    try:
        scope = int(Path(proc_root, "sys/kernel/yama/ptrace_scope").read_text().strip())
    except (OSError, ValueError):
        scope = 0  # no Yama
    if scope >= 3:
        return ("ptrace is disabled on this machine (kernel.yama.ptrace_scope = 3, until the next reboot): "
                "py-spy cannot read other processes")
    if scope == 2 and not has_ptrace_cap:
        return ("ptrace not permitted: kernel.yama.ptrace_scope = 2 allows it to CAP_SYS_PTRACE only: "
                "run as root, or `sudo sysctl kernel.yama.ptrace_scope=0`")
    if scope == 1 and not has_ptrace_cap:
        return ("ptrace not permitted: kernel.yama.ptrace_scope = 1 lets a process read its own descendants only, "
                "and py-spy is not the traced processes' parent: `sudo sysctl kernel.yama.ptrace_scope=0`, or run as root")
    if probe:
        failure = _probe_read()
        if failure is not None:
            return (f"ptrace not permitted ({failure}): in a container, add the capability "
                    "(docker run --cap-add SYS_PTRACE, Kubernetes securityContext.capabilities.add: [SYS_PTRACE])")
    return None


def _effective_caps(proc_root: str) -> int:
    try:
        for text in Path(proc_root, "self/status").read_text().splitlines():
            if text.startswith("CapEff:"):
                return int(text.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _probe_read() -> str | None:
    """Read one byte of a child's memory the way py-spy does (process_vm_readv): the error, or None.

    Catches what Yama's setting does not show: a container without CAP_SYS_PTRACE, whose seccomp
    profile refuses the call."""
    try:
        import ctypes
    except ImportError:
        return None
    child = None
    try:
        child = subprocess.Popen(["sleep", "5"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        with open(f"/proc/{child.pid}/maps") as maps:
            first = next((row for row in maps if row.split()[1].startswith("r")), None)
        if first is None:
            return None
        address = int(first.split("-", 1)[0], 16)

        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]

        libc = ctypes.CDLL(None, use_errno=True)
        buffer = ctypes.create_string_buffer(1)
        local, remote = IoVec(ctypes.addressof(buffer), 1), IoVec(address, 1)
        read = libc.process_vm_readv(child.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if read == 1:
            return None
        code = ctypes.get_errno()
        if code in (errno.EPERM, errno.EACCES, errno.ENOSYS):
            return f"process_vm_readv: {os.strerror(code)}"
        return None  # anything else (the child gone): not a permission, let py-spy try
    except (OSError, AttributeError, ValueError, StopIteration):
        return None
    finally:
        if child is not None:
            child.kill()
            child.wait()


# ---------------------------------------------------------------------------------------------
# While CMD runs.


@dataclass(slots=True)
class _Spy:
    """One py-spy process and what it writes."""

    pid: int
    process: subprocess.Popen
    output: Path
    log: Path
    anchor_ns: int  # when it was started, on the trace's clock (its time zero is at, or after)
    attached_ns: int | None = None  # when it said it samples (fmt.time_zero)
    stopping: bool = False


class Profiler:
    """A Watcher (selfopt_trace/watchers): py-spy on every traced process while CMD lives."""

    name = "profiler"

    def __init__(self, settings: ProfileSettings) -> None:
        self.settings = settings
        self._run: WatchedRun | None = None
        self._dir = Path()
        self._fd = -1
        self._lock = threading.Lock()  # the samples file: the watcher's thread and stop()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spies: list[_Spy] = []  # still sampling
        self._profiled: dict[int, int] = {}  # pid -> py-spys started for it
        self._seen_files: set[str] = set()
        self._unread: set[str] = set()  # span files without their header yet
        self._spans_mtime = -1
        self._known = fmt.Interned()  # the frames and stacks in the samples file
        self._notes: list[str] = []
        self._counts = {"samples": 0, "processes": set(), "failed": 0, "lost": 0}

    # -- Watcher -----------------------------------------------------------------------------

    def start(self, run: WatchedRun) -> None:
        self._run = run
        self._dir = run.run_dir / fmt.PROFILE_DIR
        self._dir.mkdir(exist_ok=True)
        self._fd = os.open(run.run_dir / fmt.SAMPLES_PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._write([fmt.header()])
        if self.settings.unavailable:
            self._write([fmt.line(fmt.DIAGNOSTIC, time.time_ns(), name=fmt.UNAVAILABLE,
                                  message=f"--profile=auto: no samples: {self.settings.unavailable}")])
            self._notes.append(f"{self.name}: no samples (--profile=auto): {self.settings.unavailable}")
            return
        if self.settings.spawn == "tree":
            self._start_spy(run.pid, subprocesses=True)
        self._thread = threading.Thread(target=self._follow, name="selfopt-trace profiler", daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        try:
            self._finish()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        return self._summary_notes() + self._notes

    # -- the watcher's thread ------------------------------------------------------------------

    def _follow(self) -> None:
        assert self._run is not None
        spans_dir = self._run.run_dir / "spans"
        try:
            while not self._stop.is_set():
                if self.settings.spawn == "each":
                    self._look_for_processes(spans_dir)
                self._look_for_attachments()
                self._collect_finished()
                self._stop.wait(POLL_S)
        except Exception as exc:  # never the run's failure: a note, and the samples written so far stay
            self._diagnostic(fmt.FAILED, f"the profiler stopped: {type(exc).__name__}: {exc}")
            self._notes.append(f"{self.name}: stopped: {type(exc).__name__}: {exc}")

    def _look_for_processes(self, spans_dir: Path) -> None:
        try:
            mtime = os.stat(spans_dir).st_mtime_ns
        except OSError:
            return
        if mtime == self._spans_mtime and not self._unread:
            return
        self._spans_mtime = mtime
        for name in sorted(os.listdir(spans_dir)):
            if name in self._seen_files or not name.endswith(".spans"):
                continue
            header = span_file_header(spans_dir / name)
            if header is None:  # created, its header not written yet: at the next look
                self._unread.add(name)
                continue
            self._unread.discard(name)
            self._seen_files.add(name)
            pid, _, container_id = header
            if not pid_is_ours(container_id):  # another container's: its pid names another process here
                continue
            if pid in self._profiled:
                # The same pid again: an exec (a new interpreter in the process) or a reused pid:
                # the py-spy that followed the old one stops and writes, a new one follows this one.
                for spy in self._spies:
                    if spy.pid == pid and not spy.stopping:
                        self._interrupt(spy)
            self._start_spy(pid)

    def _start_spy(self, pid: int, subprocesses: bool = False) -> None:
        settings = self.settings
        number = self._profiled.get(pid, 0) + 1
        self._profiled[pid] = number
        stem = f"{pid}-{number}"
        output, log = self._dir / f"{stem}.json", self._dir / f"{stem}.log"
        argv = [settings.pyspy or "py-spy", "record", "--pid", str(pid), "--format", "chrometrace",
                "--output", str(output), "--rate", str(settings.rate_hz), "--threads", "--idle"]
        argv += ["--native"] * settings.native + ["--nonblocking"] * settings.nonblocking
        argv += ["--subprocesses"] * subprocesses
        with open(log, "wb") as log_file:
            before = time.time_ns()
            try:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                           start_new_session=True, close_fds=True)
            except OSError as exc:
                self._diagnostic(fmt.FAILED, f"py-spy could not start for pid {pid}: {exc.strerror or exc}", pid)
                self._counts["failed"] += 1
                return
            # Popen returns once py-spy has exec'd; py-spy takes its time zero just after, before
            # attaching: the anchor is now, py-spy's zero within [before, now + its start-up].
            anchor = time.time_ns()
        spy = _Spy(pid, process, output, log, anchor)
        self._spies.append(spy)
        self._write([fmt.line(fmt.PROFILER, anchor, pid, duration_ns=anchor - before, weight=str(settings.rate_hz),
                              name=output.name,
                              message=json.dumps({"rate_hz": settings.rate_hz, "native": settings.native,
                                                  "idle": settings.idle, "nonblocking": settings.nonblocking,
                                                  "spawn": settings.spawn, "py-spy": settings.pyspy},
                                                 separators=(",", ":")))])

    def _look_for_attachments(self) -> None:
        """When each new py-spy said it samples: an A record, that places its time zero at conversion."""
        for spy in self._spies:
            if spy.attached_ns is None and not spy.stopping:
                spy.attached_ns = _sampling_since(spy.log)
                if spy.attached_ns is not None:
                    self._write([fmt.line(fmt.ATTACHED, spy.attached_ns, spy.pid, name=spy.output.name)])

    def _collect_finished(self) -> None:
        for spy in [spy for spy in self._spies if spy.process.poll() is not None]:
            self._spies.remove(spy)
            self._convert(spy)

    def _interrupt(self, spy: _Spy) -> None:
        """py-spy writes what it has on SIGINT (its Ctrl-C)."""
        spy.stopping = True
        try:
            spy.process.send_signal(signal.SIGINT)
        except OSError:
            pass

    def _convert(self, spy: _Spy) -> None:
        """py-spy's file into the samples file; a C record says it was dealt with (the loader
        converts the files that have none: the watcher was stopped before it could)."""
        code = spy.process.returncode
        done = fmt.line(fmt.CONVERTED, pid=spy.pid, name=spy.output.name, message='{"samples":0}')
        if not spy.output.is_file() or spy.output.stat().st_size == 0:
            lost = code is not None and code < 0 and code != -signal.SIGINT
            reason = _last_line(spy.log) or (f"killed by signal {-code}" if code and code < 0 else f"exit status {code}")
            self._diagnostic(fmt.LOST if lost else fmt.FAILED,
                             f"no samples from pid {spy.pid}: py-spy {'was killed' if lost else 'failed'}: {reason}", spy.pid)
            self._write([done])
            self._counts["lost" if lost else "failed"] += 1
            return
        try:
            lines, counts = fmt.convert_file(spy.output, spy.anchor_ns, self.settings.rate_hz, self._known, spy.pid,
                                             spy.attached_ns)
        except (OSError, ValueError) as exc:
            self._diagnostic(fmt.FAILED, f"py-spy's file for pid {spy.pid} could not be read: {exc}", spy.pid)
            self._write([done])
            self._counts["failed"] += 1
            return
        self._write(lines)
        self._counts["samples"] += counts["samples"]
        self._counts["processes"].update(counts["pids"])
        for path in (spy.output, spy.log):
            try:
                path.unlink()
            except OSError:
                pass

    # -- after CMD -----------------------------------------------------------------------------

    def _finish(self) -> None:
        """py-spys whose process outlived CMD (or that have not noticed its end yet): SIGINT, a short
        wait for them to write, then whatever they wrote goes into the samples file."""
        deadline = time.monotonic() + STOP_BUDGET_S
        grace = time.monotonic() + 0.2  # py-spy notices its process exited within a sample or two
        while self._spies and time.monotonic() < deadline:
            self._collect_finished()
            if time.monotonic() >= grace:
                for spy in self._spies:
                    if not spy.stopping:
                        self._interrupt(spy)
            time.sleep(POLL_S)
        self._collect_finished()
        for spy in self._spies:
            spy.process.kill()
            spy.process.wait()
            self._convert(spy)
        self._spies.clear()

    def _summary_notes(self) -> list[str]:
        if self.settings.unavailable:
            return []
        counts = self._counts
        processes = len(counts["processes"])
        run_id = self._run.run_id if self._run is not None else "RUN"
        note = (f"{self.name}: {counts['samples']} samples at {self.settings.rate_hz} Hz from {processes} "
                f"process{'es' if processes != 1 else ''} (py-spy): `selfopt-trace query hot_frames --run {run_id}`, "
                f"`selfopt-trace flame {run_id} -o flame.svg`")
        missing = counts["failed"] + counts["lost"]
        if missing:
            note += f"; {missing} py-spy run{'s' if missing != 1 else ''} gave none (table diagnostics, code profile.*)"
        return [note]

    # -- the samples file --------------------------------------------------------------------------

    def _diagnostic(self, code: str, message: str, pid: int | str = "") -> None:
        self._write([fmt.line(fmt.DIAGNOSTIC, time.time_ns(), pid, name=code, message=message)])

    def _write(self, lines: list[str]) -> None:
        data = "".join(lines).encode("utf-8", "surrogateescape")
        with self._lock:
            if self._fd < 0:
                return
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]


def _sampling_since(log: Path) -> int | None:
    """When py-spy printed that it samples: its log's mtime, while that line is the log's last (py-spy
    prints nothing more until it stops); None before, or once it printed more."""
    try:
        before = os.stat(log)
        if before.st_size == 0:
            return None
        text = log.read_bytes()
        after = os.stat(log)
    except OSError:
        return None
    if len(text) != after.st_size or (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None  # written meanwhile: the next look
    lines = text.decode(errors="replace").split("\n")
    last = next((row for row in reversed(lines) if row.strip()), "")
    return after.st_mtime_ns if SAMPLING_LINE in last else None


def _last_line(path: Path) -> str:
    """The last meaningful line py-spy printed (its error), without terminal colours."""
    import re

    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [row.strip() for row in text.splitlines() if row.strip() and not row.strip().startswith("py-spy>")]
    errors = [row for row in lines if row.startswith("Error")]
    return (errors or lines or [""])[-1][:300]
