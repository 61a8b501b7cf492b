"""CPU sampler: every traced process's and thread's on-CPU time, read from /proc by the `run` process.

The traced program pays nothing: a thread of `run` reads
`/proc/<pid>/task/<tid>/schedstat` (nanoseconds on CPU and nanoseconds runnable but waiting for a
CPU, cumulative since the thread started) of CMD and of every process that has a span file in
`<run_dir>/spans/`, and appends the readings to
`<run_dir>/cpu/samples.tsv` (docs/span-format.md, "CPU samples"). The loader turns consecutive
readings of a thread into the intervals of the `cpu_samples` table.

Two rates: every thread is read at the run's rate (20 Hz by default: a full tick), and a thread in
its first YOUNG_NS (counted from its start) also between full ticks, at YOUNG_RATE_HZ (a young
tick reads the young threads only). A short-lived child does its few phases (start-up, imports,
work, a short wait) in its first second, and an interval spreads its CPU evenly over itself: 50 ms
intervals smeared a 15 ms sleep over the imports beside it. Long-lived threads cost what they did.

New processes: a full tick lists `spans/` (when its mtime moved), and, where inotify is available,
the thread also wakes as a span file is created (by the agent, at the end of its start-up) and
reads the new process then: its first interval, from its start, is its start-up, not its start-up,
imports and first lines up to the next full tick (a child read 60 ms late had a 3.8 ms stall of its
first lines spread over with its imports' running fraction: tests/accuracy, parallel).

Why it is cheap (benchmarks/bench_sampler.py): the schedstat files stay open and are `pread` each
tick (1.4 us against 8 us for open/read/close), all threads in one flat loop; a process's thread
list is read again only when the link count of its `task` directory (2 + its threads) changed,
and that count is looked at only for a process one of whose threads ran (only a running thread can
start or end one) or could not be read; `spans/` is listed again only when its mtime moved; a
reading equal to the thread's previous one is written only when the next one differs or at the
next flush, so an idle thread costs two lines a second instead of one per tick, and nothing is
lost (an unchanged stretch is one interval of zero CPU either way).

Late counts: the kernel adds a thread's wait in the run queue when the thread gets a CPU, and its
CPU time at the scheduler's tick, so a queued thread reads unchanged, then tens of ms at once: more
than the time since the previous reading, which the loader cuts to the interval's length (a thread
spinning 1.5 s beside three CPU hogs on 2 cores lost 6-12 % of its time read every 50 ms, 18-24 %
with its first second read every 10 ms). So the lines wait for the flush, and a reading's excess
goes back into the room of the lines not yet written, newest first: the wait happened just before
it was counted (CpuSampler._move_back; that thread now loses 0.2-2 %). A flush keeps a thread's
last HOLD_BACK_NS of lines back for that: a line written has no room left.

Waits for the GIL: a thread of a process with others, off the CPU for part of a reading's interval,
is looked at in its /proc syscall file (gil.py): blocked on the interpreter's own futex, that time
is counted as a wait for the GIL (the `gil_ns` field; the summary says how long threads waited).

Pid reuse: every file is opened through the process's `task` directory descriptor, which the
kernel ties to that process, so a reused pid can never be read through old descriptors; each
process is named by pid *and* start time, and a span file's process is taken only when it had
started by the time the file's header was written.
"""

from __future__ import annotations

import errno
import os
import select
import struct
import sys
import threading
import time
from pathlib import Path

from . import WatchedRun, gil, pid_is_ours, span_file_header

FORMAT_NAME = "selfopt-trace/cpu"
FORMAT_VERSION = 2
FIELDS = ("rec", "time_ns", "pid", "tid", "process_start_ns", "cpu_ns", "runqueue_ns", "gil_ns", "name", "message",
          "terminator")
READABLE_VERSIONS = {1: FIELDS[:7] + FIELDS[8:], 2: FIELDS}  # the fields of each version the loader reads (1: no gil_ns)
THREAD, CPU, DIAGNOSTIC = "T", "C", "D"
TERMINATOR = "."
HEADER_PREFIX = f"#{FORMAT_NAME} "  # the header line: "#selfopt-trace/cpu 1" then the field names
HEADER = f"{HEADER_PREFIX}{FORMAT_VERSION}\t" + "\t".join(FIELDS[:-1]) + "\n"
SAMPLES_PATH = Path("cpu") / "samples.tsv"  # under the run directory

UNAVAILABLE = "cpu.unavailable"  # diagnostic codes the loader copies into `diagnostics`
FAILED = "cpu.failed"
PARTIAL = "cpu.partial"

# 20 Hz: 0.7 % of one core with 50 idle traced processes (benchmarks/bench_sampler.py; 50 Hz: 1.7 %,
# too close to the 2 % budget); a reading every 50 ms tells running from waiting well enough once a
# thread is past its first second.
DEFAULT_RATE_HZ = 20.0
# Young threads are read faster: a short child (a test runner's worker, a 100 ms tool) goes through
# most of its phases (start-up, imports, work, short waits) in its first second, where 50 ms intervals
# smeared a 15 ms sleep over the imports beside it. 100 Hz: tests/accuracy's CPU-split figures off
# (5 %, 2 ms) in a quarter to a third of the comparisons instead of two thirds; 200 Hz did better (a
# sixth) for 1.4 times the cost with 20 young processes alive (benchmarks/bench_sampler.py, 3.5 % of a
# core against 4.8 %; 2.3 % without a young phase). Once every thread is past YOUNG_NS, nothing more.
YOUNG_RATE_HZ = 100.0
YOUNG_NS = 1_000_000_000
FLUSH_INTERVAL_NS = 500_000_000  # a killed `run` loses at most this much, and HOLD_BACK_NS more
# A flush writes a thread's lines (and an unchanged stretch) up to this long before its last reading:
# a thread queued for a CPU reads unchanged or low, and the wait the kernel counts when it ends goes
# back there (_move_back).
HOLD_BACK_NS = 100_000_000
STOP_TIMEOUT_S = 0.1
HEADER_START_SLACK_NS = 20_000_000  # /proc start times count clock ticks (10 ms): two of them
HEADER_RETRIES = 20  # ticks to wait for an empty span file's header before giving it up
# A directory's mtime has the kernel's coarse clock (<= 10 ms steps): once this much older than the
# listing that saw it, an unchanged mtime proves no file was added since.
DIR_MTIME_SLACK_NS = 50_000_000

# inotify (inotify(7)): its event header (wd, mask, cookie, name length), and the masks used.
_EVENT = struct.Struct("iIII")
_IN_MOVED_TO, _IN_CREATE, _IN_Q_OVERFLOW = 0x80, 0x100, 0x4000
UNREAD_RETRY_NS = 1_000_000  # a file created without its header yet (the agent writes it next): again in a ms
_STOPPED, _CREATED, _TIMEOUT = object(), object(), object()  # what _wait woke for

_SCHEDSTAT_BYTES = 64  # "<run ns> <wait ns> <slices>\n"
# A reading's time is the middle of its read, read again while the sampler was preempted during it
# (a busy machine does that at the system call's return): a reading stamped milliseconds after the
# values it holds moves that much of the thread's time into the next interval (tests/accuracy).
_READ_WITHIN_NS = 100_000
_READ_TRIES = 3
_STAT_BYTES = 1024


class _Process:
    __slots__ = ("pid", "start_ns", "task_fd", "nlink", "threads", "gil_ranges")

    def __init__(self, pid: int, start_ns: int, task_fd: int) -> None:
        self.pid = pid
        self.start_ns = start_ns
        self.task_fd = task_fd  # /proc/<pid>/task: every file of the process is opened through it
        self.nlink = 0  # the task directory's link count when its threads were last listed
        self.threads: dict[int, _Thread] = {}
        self.gil_ranges: list[tuple[int, int]] | None = None  # the interpreter's data (gil.py), looked up once


class _Thread:
    __slots__ = ("process", "tid", "fd", "young_until_ns", "data", "cpu", "runqueue", "gil", "time_ns", "pending",
                 "base", "syscall_fd", "on_gil")

    def __init__(self, process: _Process, tid: int, fd: int, start_ns: int, young_until_ns: int = 0) -> None:
        self.process = process
        self.tid = tid
        self.fd = fd
        self.young_until_ns = young_until_ns  # epoch ns: read at the young rate until then
        self.data = b""  # the last reading, as read: no reading yet, so the first always differs
        self.cpu = self.runqueue = 0  # ... parsed
        self.gil = 0  # the time it waited for the GIL so far, as estimated (gil.py)
        self.time_ns = 0  # when it was last read (an unchanged reading moves only this)
        self.pending: list[list[int]] = []  # [time, cpu, runqueue, gil] of the lines not yet written
        self.base = (start_ns, 0, 0, 0)  # the last line written: at first its start, a reading of zero (T)
        self.syscall_fd = -1  # its /proc syscall file, opened when first needed (gil.py)
        self.on_gil: bool | None = None  # what its last wait seen was: the GIL, something else, not seen yet


class CpuSampler:
    """A Watcher (selfopt_trace/watchers): samples CPU time from its own thread while CMD lives."""

    name = "cpu sampler"

    def __init__(self, rate_hz: float | None = None, proc_root: Path | str = "/proc",
                 fd_budget: int | None = None, young_rate_hz: float | None = None) -> None:
        self.period_ns = int(1e9 / (rate_hz or DEFAULT_RATE_HZ))
        # Young threads at YOUNG_RATE_HZ (0: no young phase), or at the chosen rate when that is
        # faster (then there are no young ticks).
        young_rate = YOUNG_RATE_HZ if young_rate_hz is None else young_rate_hz
        self.young_period_ns = min(self.period_ns, int(1e9 / young_rate)) if young_rate > 0 else self.period_ns
        self.proc_root = str(proc_root)
        # One descriptor per process and per thread, kept open: at most half of what the `run`
        # process may open (the other watchers and the load need the rest); past it, a diagnostic.
        self.fd_budget = fd_budget if fd_budget is not None else _default_fd_budget()
        self._open_fds = 0
        self._unsampled = 0  # threads and processes left out for want of a descriptor
        self._stop = threading.Event()
        # New span files, told by inotify as they are created (a process's at the end of its agent's
        # start-up): -1 where inotify is not available (then only full ticks list `spans/`).
        self._inotify = -1
        self._wake_r = self._wake_w = -1  # a pipe: stop() wakes the thread out of its poll
        self._poll: select.poll | None = None  # poll, not select: the sampler's descriptors go past 1024
        self._thread: threading.Thread | None = None
        self._notes: list[str] = []
        self._fd = -1
        self._lines: list[str] = []
        self._processes: dict[int, _Process] = {}
        self._threads: list[_Thread] = []  # every thread of every process, in one list for the tick's loop
        self._threads_changed = False
        self._young: list[_Thread] = []  # the threads still in their first YOUNG_NS, read at every tick
        self._young_until_ns = 0  # when the first of them grows up: the list is made again then
        self._to_list: set[_Process] = set()  # processes whose threads may have changed: look at them
        self._seen_files: set[str] = set()
        self._spans_mtime_ns = 0
        self._spans_listed_ns = 0
        self._header_waits: dict[str, int] = {}
        self._unread: dict[str, int] = {}  # created files without their header yet: looked at each ms, a few times
        self._spans_dir = ""
        self._flush_due_ns = 0
        # /proc start times are clock ticks since boot (CLOCK_BOOTTIME): epoch = boot epoch + ticks.
        self._ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 10_000_000
        self._boot_epoch_ns = (time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                               if hasattr(time, "CLOCK_BOOTTIME") else 0)

    # -- Watcher -----------------------------------------------------------------------------

    def start(self, run: WatchedRun) -> None:
        path = run.run_dir / SAMPLES_PATH
        path.parent.mkdir(exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._lines.append(HEADER)
        self._spans_dir = str(run.run_dir / "spans")
        try:
            reason = self._unavailable(run.pid)
        except Exception as exc:  # never fail the run: an unexpected failure is "unavailable" too
            reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            self._diagnostic(UNAVAILABLE, reason)
            self._close()
            return
        self._flush()  # the header now: the file says what it is even if `run` is killed at once
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="selfopt-trace cpu sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        if self._thread is not None:
            self._stop.set()
            if self._wake_w >= 0:
                os.write(self._wake_w, b".")
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                self._notes.append(f"{self.name}: still writing after {STOP_TIMEOUT_S} s; its last samples may be missing")
            else:  # a thread still running may yet poll them
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
        if self._unsampled:
            self._notes.append(f"{self.name}: {self._unsampled} threads or processes not sampled: "
                               f"its budget of {self.fd_budget} file descriptors was used up (ulimit -n)")
        return list(self._notes)

    # -- the sampling thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._inotify = _watch_created(self._spans_dir)
            if self._inotify >= 0:
                self._poll = select.poll()
                self._poll.register(self._inotify, select.POLLIN)
                self._poll.register(self._wake_r, select.POLLIN)
            period, young_period = self.period_ns, self.young_period_ns
            due = full_due = time.monotonic_ns()
            while True:
                full = due >= full_due
                self._tick(full)
                now = time.monotonic_ns()
                if full:
                    full_due += period
                    if full_due < now:  # late (the machine is busy): skip the missed ticks, never burst
                        full_due = now + period
                if self._young and young_period < period:
                    due += young_period
                    if due < now:  # late: the next young tick a young period from now, never at once
                        due = now + young_period
                    if full_due - due < young_period // 2:  # a young tick just before a full one: the full one
                        due = full_due
                else:
                    due = full_due
                while (woke := self._wait(due - now)) is _CREATED:
                    self._created()
                    now = time.monotonic_ns()
                    if self._threads_changed and young_period < period and due - now > young_period:
                        due = now + young_period  # a new (young) process: its next reading a young period on
                if woke is _STOPPED:
                    break
            self._tick(True)  # the last reading, CMD just exited
            for process in list(self._processes.values()):
                self._retire_process(process)
        except Exception as exc:  # the sampler's failure is a note, never the run's
            self._notes.append(f"{self.name}: sampling stopped: {type(exc).__name__}: {exc}")
            self._diagnostic(FAILED, f"sampling stopped: {type(exc).__name__}: {exc}")
        finally:
            try:
                self._close()
            except OSError as exc:
                self._notes.append(f"{self.name}: could not write {SAMPLES_PATH}: {exc.strerror or exc}")

    def _wait(self, timeout_ns: int) -> object:
        """Sleep up to `timeout_ns`: _STOPPED, _CREATED (a span file was created: look at it now), or
        _TIMEOUT. Without inotify, only a full tick finds new span files."""
        if self._inotify < 0:
            return _STOPPED if self._stop.wait(max(0, timeout_ns) / 1e9) else _TIMEOUT
        deadline = time.monotonic_ns() + timeout_ns
        while not self._stop.is_set():
            left = deadline - time.monotonic_ns()
            if left <= 0:
                return _TIMEOUT
            retry = self._unread and left > UNREAD_RETRY_NS
            ready = [fd for fd, _ in self._poll.poll((UNREAD_RETRY_NS if retry else left) / 1e6)]
            if self._inotify in ready or (retry and not ready):
                return _CREATED
        return _STOPPED

    def _created(self) -> None:
        """New span files (inotify's events), and those created without their header yet: their
        processes are followed, and read, at once. A process's span file is created as its agent's
        start-up ends, so its first reading, from its start, is its start-up instead of running up to
        the next full tick (50 ms, 60 ms with its listing: the start-up, imports and first lines
        shared one running fraction, tests/accuracy)."""
        names = list(self._unread)
        try:
            data = os.read(self._inotify, 1 << 16)
        except BlockingIOError:
            data = b""
        at = 0
        while at + _EVENT.size <= len(data):
            _, mask, _, size = _EVENT.unpack_from(data, at)
            name = data[at + _EVENT.size:at + _EVENT.size + size].rstrip(b"\0")
            at += _EVENT.size + size
            if mask & _IN_Q_OVERFLOW:
                self._spans_mtime_ns = 0  # events were lost: the next full tick lists `spans/`
            elif name:
                names.append(os.fsdecode(name))
        for name in names:
            if name in self._seen_files:
                self._unread.pop(name, None)
                continue
            header = span_file_header(os.path.join(self._spans_dir, name))
            if header is None:  # created, not written yet: again in a ms, a few times, then at full ticks
                tries = self._unread.get(name, 0) + 1
                if tries < HEADER_RETRIES:
                    self._unread[name] = tries
                else:
                    self._unread.pop(name, None)
                continue
            self._unread.pop(name, None)
            self._seen_files.add(name)
            self._header_waits.pop(name, None)
            self._add_span_file_process(*header)
        if self._to_list:
            to_list, self._to_list = self._to_list, set()
            new = []
            for process in to_list:
                new += self._check_threads(process)
            self._read(new)

    def _tick(self, full: bool = True) -> None:
        """Read every thread (a full tick) or only the young ones. New span files are looked for at
        full ticks only: listing `spans/` on every young tick cost more than the young readings
        (benchmarks/bench_sampler.py, young-heavy: 7.3 % of a core, then 3.9 % with `spans/` listed
        at full ticks only), and a new process's first interval, from its start, is its start-up."""
        if full:
            self._discover()
        if self._to_list:
            to_list, self._to_list = self._to_list, set()
            new = []
            for process in to_list:
                new += self._check_threads(process)
            self._read(new)  # a new thread's first reading now, not a tick later
        changed = self._threads_changed
        if changed:
            self._threads = [thread for process in self._processes.values() for thread in process.threads.values()]
            self._threads_changed = False
        if changed or (self._young and time.time_ns() >= self._young_until_ns):  # new threads, or one grew up
            now = time.time_ns()
            self._young = [thread for thread in self._threads if thread.young_until_ns > now]
            self._young_until_ns = min((thread.young_until_ns for thread in self._young), default=0)
        self._to_list.update(self._read(self._threads if full else self._young))
        if time.monotonic_ns() >= self._flush_due_ns:
            self._flush()

    def _read(self, threads: list[_Thread]) -> set[_Process]:
        """Read threads' schedstat; the processes one of whose threads ran or ended (look at them next tick)."""
        pread, time_ns, changed = os.pread, time.time_ns, self._changed
        ran: set[_Process] = set()
        for thread in threads:
            for _ in range(_READ_TRIES):
                before = time_ns()
                try:
                    data = pread(thread.fd, _SCHEDSTAT_BYTES, 0)
                except OSError:  # ESRCH: the thread has exited (and been reaped)
                    data = b""
                now = time_ns()
                if now - before <= _READ_WITHIN_NS or not data:
                    break
            if not data:
                ran.add(thread.process)
                self._retire_thread(thread)
                continue
            now = (before + now) >> 1
            if data == thread.data:  # unchanged: held back until a reading differs or the next flush
                thread.time_ns = now
                continue
            ran.add(thread.process)
            changed(thread, data, now)
        return ran

    def _changed(self, thread: _Thread, data: bytes, now: int) -> None:
        """A reading that differs from the thread's previous one: a line for the end of the previous
        one's unchanged stretch, if any, and one for this one (written at the next flush)."""
        fields = data.split()
        cpu, runqueue = int(fields[0]), int(fields[1])
        pending = thread.pending
        previous = pending[-1] if pending else thread.base
        if thread.time_ns > previous[0] and thread.data:  # the unchanged stretch ends
            previous = [thread.time_ns, thread.cpu, thread.runqueue, thread.gil]
            pending.append(previous)
        off = now - previous[0] - (cpu - previous[1]) - (runqueue - previous[2])
        if off >= gil.MIN_OFF_NS and len(thread.process.threads) > 1 and self._on_gil(thread):
            thread.gil += off
        pending.append([now, cpu, runqueue, thread.gil])
        thread.data, thread.cpu, thread.runqueue, thread.time_ns = data, cpu, runqueue, now
        excess = cpu - previous[1] + runqueue - previous[2] - (now - previous[0])
        if excess > 0:
            self._move_back(thread, excess, runqueue - previous[2])

    @staticmethod
    def _move_back(thread: _Thread, excess: int, queued: int) -> None:
        """The kernel adds a thread's wait in the run queue when the thread gets a CPU, and its CPU
        time at the scheduler's tick (4 ms here) or when it stops: a reading can hold more than the
        time since the previous one (a thread queued 30 ms shows nothing, then 30 ms at once). The
        loader would cut the interval to its length; the wait was just before, so the excess goes
        back into the room of the lines not yet written, newest first (their values raised, the
        run-queue part first), at the end of a stretch that looked idle (a line inserted where the
        wait starts). What finds no room (the lines before are written already) is cut, as before."""
        pending, base = thread.pending, thread.base
        moves: list[tuple[int, int]] = []  # (index of the line ending an interval, ns moved into it), newest first
        j = len(pending) - 2
        while excess > 0 and j >= 0:
            a, b = (pending[j - 1] if j else base), pending[j]
            room = b[0] - a[0] - (b[1] - a[1]) - (b[2] - a[2])
            if room > 0:
                moves.append((j, min(excess, room)))
                excess -= moves[-1][1]
            j -= 1
        if not moves:
            return
        idle = [j for j, _ in moves if tuple(pending[j][1:]) == tuple((pending[j - 1] if j else base)[1:])]
        queued = min(queued, sum(x for _, x in moves))
        raised, moved = 0, dict(moves)
        for m in range(moves[-1][0], len(pending) - 1):  # a line is raised by what moved into it and before it
            raised += moved.get(m, 0)
            line = pending[m]
            line[2] += min(raised, queued)
            line[1] += raised - min(raised, queued)
        for j in idle:  # newest first: the indexes below stay right
            before = pending[j - 1] if j else base
            start = pending[j][0] - moved[j]
            if start > before[0]:
                pending.insert(j, [start, *before[1:]])

    def _on_gil(self, thread: _Thread) -> bool:
        """Whether a thread of a process with others, off the CPU for part of the interval its reading
        ends, waited for the GIL there: what its wait is now (its /proc syscall file), or, when it is
        running, what its last wait seen was (a thread taking turns on the GIL reads as running about
        half the time)."""
        process = thread.process
        try:
            if thread.syscall_fd < 0:
                thread.syscall_fd = self._keep_open(f"{thread.tid}/syscall", os.O_RDONLY | os.O_CLOEXEC,
                                                    dir_fd=process.task_fd)
            if process.gil_ranges is None:
                process.gil_ranges = gil.interpreter_data(process.task_fd)
            waiting = gil.waiting_on(os.pread(thread.syscall_fd, gil.SYSCALL_BYTES, 0), process.gil_ranges)
        except OSError:  # gone, or no descriptor left: nothing known of this wait
            return bool(thread.on_gil)
        if waiting is not None:
            thread.on_gil = waiting
        return bool(thread.on_gil)

    def _check_threads(self, process: _Process) -> list[_Thread]:
        """List a process's threads again when their number changed; the new ones. Retires it when it
        has no thread left (exited and reaped)."""
        try:
            nlink = os.fstat(process.task_fd).st_nlink
        except OSError:
            nlink = 0
        new: list[_Thread] = []
        if nlink != process.nlink:
            process.nlink = nlink
            try:
                tids = {int(name) for name in os.listdir(process.task_fd)}
            except (OSError, ValueError):
                tids = set()
            for tid, thread in list(process.threads.items()):
                if tid not in tids:
                    self._retire_thread(thread)
            for tid in tids.difference(process.threads):
                thread = self._add_thread(process, tid)
                if thread is not None:
                    new.append(thread)
        if not process.threads:
            self._retire_process(process)
        return new

    def _add_thread(self, process: _Process, tid: int) -> _Thread | None:
        try:
            start_ticks, comm = self._read_stat(process.task_fd, tid)
            fd = self._keep_open(f"{tid}/schedstat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=process.task_fd)
        except OSError as exc:
            self._left_out(exc)
            return None
        except ValueError:
            return None  # gone already
        start_ns = self._epoch_ns(start_ticks)
        thread = process.threads[tid] = _Thread(process, tid, fd, start_ns, start_ns + YOUNG_NS)
        self._threads_changed = True
        # The thread's start is a reading of zero CPU: the loader's first interval runs from there.
        self._lines.append(f"T\t{start_ns}\t{process.pid}\t{tid}\t{process.start_ns}\t\t\t\t{comm}\t\t.\n")
        return thread

    def _retire_thread(self, thread: _Thread) -> None:
        self._write(thread, final=True)
        self._release_thread(thread)
        del thread.process.threads[thread.tid]
        self._threads_changed = True

    def _retire_process(self, process: _Process) -> None:
        for thread in list(process.threads.values()):
            self._retire_thread(thread)
        self._release(process.task_fd)
        self._to_list.discard(process)
        if self._processes.get(process.pid) is process:
            del self._processes[process.pid]

    # -- which processes ----------------------------------------------------------------------

    def _discover(self) -> None:
        """New span files name new traced processes (their header says the pid and when it was written)."""
        try:
            mtime = os.stat(self._spans_dir).st_mtime_ns
            if (mtime == self._spans_mtime_ns and not self._header_waits
                    and self._spans_listed_ns - mtime > DIR_MTIME_SLACK_NS):
                return  # no file added since the last listing
            self._spans_mtime_ns, self._spans_listed_ns = mtime, time.time_ns()
            names = os.listdir(self._spans_dir)
        except OSError:
            return
        for name in names:
            if name in self._seen_files:
                continue
            header = span_file_header(os.path.join(self._spans_dir, name))
            if header is None:  # created, not written yet: look again next tick, a few times
                waits = self._header_waits.get(name, 0) + 1
                self._header_waits[name] = waits
                if waits < HEADER_RETRIES:
                    continue
            self._seen_files.add(name)
            self._header_waits.pop(name, None)
            if header is not None:
                self._add_span_file_process(*header)

    def _add_span_file_process(self, pid: int, header_ns: int, container_id: str) -> None:
        """A span file's process, unless it is another container's: its pid there names another process
        here (a container's pid 1 read as the host's init: its CPU made the container's server idle)."""
        if pid_is_ours(container_id):
            self._add_process(pid, header_ns)

    def _add_process(self, pid: int, header_ns: int | None = None) -> None:
        """Follow a process (once per pid and start time); for a span file's, only when it had started
        by the time the file's header was written (else its pid was already reused)."""
        try:
            process = self._open_process(pid)
        except OSError as exc:
            self._left_out(exc)
            return
        except ValueError:
            return  # exited before its first reading
        known = self._processes.get(pid)
        if (header_ns is not None and process.start_ns > header_ns + HEADER_START_SLACK_NS) or (
                known is not None and known.start_ns == process.start_ns):
            self._release(process.task_fd)
            return
        if known is not None:  # the pid now belongs to another process: the one we knew is gone
            self._retire_process(known)
        self._processes[pid] = process
        self._to_list.add(process)

    def _open_process(self, pid: int) -> _Process:
        task_fd = self._keep_open(f"{self.proc_root}/{pid}/task", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            start_ticks, _ = self._read_stat(task_fd, pid)  # the main thread started with the process
        except BaseException:
            self._release(task_fd)
            raise
        return _Process(pid, self._epoch_ns(start_ticks), task_fd)

    @staticmethod
    def _read_stat(task_fd: int, tid: int) -> tuple[int, str]:
        """(start time in clock ticks since boot, comm) from /proc/<pid>/task/<tid>/stat."""
        fd = os.open(f"{tid}/stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=task_fd)
        try:
            data = os.pread(fd, _STAT_BYTES, 0)
        finally:
            os.close(fd)
        # "tid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ")".
        close = data.rindex(b")")
        comm = data[data.index(b"(") + 1:close].decode("utf-8", "replace")
        start_ticks = int(data[close + 2:].split()[19])  # field 22 of the line, 20th after comm
        return start_ticks, comm.replace("\t", " ").replace("\n", " ").replace("\r", " ")

    def _keep_open(self, path: str, flags: int, dir_fd: int | None = None) -> int:
        if self._open_fds >= self.fd_budget:
            raise OSError(errno.EMFILE, "the CPU sampler's file descriptor budget is used up")
        fd = os.open(path, flags, dir_fd=dir_fd)
        self._open_fds += 1
        return fd

    def _release(self, fd: int) -> None:
        os.close(fd)
        self._open_fds -= 1

    def _release_thread(self, thread: _Thread) -> None:
        """A thread's descriptors: its schedstat, and its syscall file where it was looked at."""
        self._release(thread.fd)
        if thread.syscall_fd >= 0:
            self._release(thread.syscall_fd)

    def _left_out(self, exc: OSError) -> None:
        """A thread or process could not be opened: gone (fine), or no descriptor left (say so, once)."""
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            return
        self._unsampled += 1
        if self._unsampled == 1:
            self._diagnostic(PARTIAL, f"threads left out from now on: {exc.strerror or exc} "
                                      f"(budget {self.fd_budget} descriptors, half of ulimit -n)")

    def _epoch_ns(self, ticks: int) -> int:
        return self._boot_epoch_ns + ticks * self._ns_per_tick

    def _unavailable(self, pid: int) -> str | None:
        """Why CPU time cannot be sampled here, or None (then CMD is followed from now on)."""
        if not sys.platform.startswith("linux"):
            return f"no /proc schedstat on {sys.platform}"
        try:
            process = self._open_process(pid)
        except (OSError, ValueError) as exc:
            return f"cannot read {self.proc_root}/{pid}/task: {getattr(exc, 'strerror', None) or exc}"
        try:
            with open(f"{self.proc_root}/{pid}/task/{pid}/schedstat", "rb") as stream:
                fields = stream.read(_SCHEDSTAT_BYTES).split()
        except OSError as exc:
            self._release(process.task_fd)
            return f"cannot read {self.proc_root}/{pid}/task/{pid}/schedstat: {exc.strerror or exc}"
        if fields[:1] == [b"0"] and fields[2:3] == [b"0"]:  # CMD has run: zeros mean schedstat is off
            self._release(process.task_fd)
            return "the kernel keeps no schedstat (CONFIG_SCHED_INFO off)"
        self._processes[pid] = process
        self._to_list.add(process)
        return None

    # -- the file ------------------------------------------------------------------------------

    def _diagnostic(self, code: str, message: str) -> None:
        text = message.replace("\t", " ").replace("\n", " ").replace("\r", " ")
        self._lines.append(f"D\t{time.time_ns()}\t\t\t\t\t\t\t{code}\t{text}\t.\n")

    def _write(self, thread: _Thread, final: bool = False) -> None:
        """The thread's pending lines and its unchanged stretch so far: all of it when `final`, else
        up to HOLD_BACK_NS before its last reading. The newer lines wait for the next flush: a count
        the kernel adds late goes back into them (_move_back), and a line already written has no
        room left (a flush between a queued stretch and its count lost it: up to 10 ms a flush,
        given to the thread's tail by the final reading instead, tests/accuracy)."""
        pending = thread.pending
        end = thread.time_ns if final else thread.time_ns - HOLD_BACK_NS
        ready = len(pending)
        while ready and pending[ready - 1][0] > end:
            ready -= 1
        if ready == len(pending) and end > (pending[-1] if pending else thread.base)[0] and thread.data:
            pending.append([end, thread.cpu, thread.runqueue, thread.gil])
            ready += 1
        if not ready:
            return
        process = thread.process
        head = f"\t{process.pid}\t{thread.tid}\t{process.start_ns}\t"
        self._lines += [f"C\t{t}{head}{cpu}\t{runqueue}\t{waited}\t\t\t.\n" for t, cpu, runqueue, waited in pending[:ready]]
        thread.base = tuple(pending[ready - 1])
        thread.pending = pending[ready:]

    def _flush(self) -> None:
        """Write what is buffered, with the readings older than HOLD_BACK_NS (a killed run loses one flush
        interval and HOLD_BACK_NS at most)."""
        self._flush_due_ns = time.monotonic_ns() + FLUSH_INTERVAL_NS
        for thread in self._threads:
            if thread.pending or thread.time_ns - HOLD_BACK_NS > thread.base[0]:
                self._write(thread)
        if not self._lines or self._fd < 0:
            return
        payload = "".join(self._lines).encode("utf-8", "replace")
        self._lines.clear()
        while payload:
            payload = payload[os.write(self._fd, payload):]

    def _close(self) -> None:
        try:
            self._flush()
        finally:
            for process in list(self._processes.values()):
                for thread in process.threads.values():
                    self._release_thread(thread)
                self._release(process.task_fd)
            self._processes.clear()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._inotify >= 0:  # closed aside: closing an inotify descriptor waits 10-25 ms for the kernel
                threading.Thread(target=os.close, args=(self._inotify,), name="selfopt-trace inotify close",
                                 daemon=True).start()
                self._inotify = -1


def _watch_created(directory: str) -> int:
    """An inotify descriptor (non-blocking) telling the files created in or moved into `directory`,
    or -1 where there is none (not Linux, no libc to call). ctypes is imported here, in the sampler's
    thread: not before CMD starts."""
    if not sys.platform.startswith("linux"):
        return -1
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return -1
        if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CREATE | _IN_MOVED_TO) < 0:
            os.close(fd)
            return -1
        return fd
    except (ImportError, OSError, AttributeError):
        return -1


def _default_fd_budget() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 512
    return 65536 if soft == resource.RLIM_INFINITY else max(16, soft // 2)
