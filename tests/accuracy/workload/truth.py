"""What a workload process measured about itself: the ground truth the accuracy tests compare with.

Every step worth comparing is a *block*: its kind (imports, serialization, request, spawn, wait,
thread, task, spin, sleep, ...), its wall-clock interval (time.time_ns, the clock the tracer uses),
the CPU time its thread used meanwhile (time.thread_time_ns) and the time it waited for a CPU
(its own schedstat), read by the workload itself around the step, so nothing here depends on the
tracer. Between two blocks of a thread, what the thread did is its own work: running (on a CPU
or queued for one) or off it, as its clocks say.

Each process writes one file, <dir>/<pid>.truth, at its exit: a Python literal (repr), so that
writing it calls no serializer the tracer would record.
"""

import atexit
import os
import resource
import subprocess
import sys
import time
from _thread import get_native_id
from time import process_time_ns, thread_time_ns, time_ns

_schedstat = {}  # native thread id -> /proc/thread-self/schedstat, open


def queued_ns():
    """How long this thread has waited for a CPU while runnable (the kernel's run_delay, field 2 of
    /proc/thread-self/schedstat): a thread preempted by a busy machine is running, not waiting on
    anything, as the breakdown counts it."""
    tid = get_native_id()
    descriptor = _schedstat.get(tid)
    if descriptor is None:
        descriptor = _schedstat[tid] = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
    return int(os.pread(descriptor, 100, 0).split()[1])


CONSISTENT_NS = 100_000  # a read of the queued time that took longer was preempted


def clocks():
    """(wall clock, this thread's CPU time, its time queued for a CPU), in ns, all at the first.

    The queued time is a system call's read (the kernel's run_delay), and a busy machine preempts at
    a system call's return: read as it comes, a queue stretch after the wall clock would count
    before it (one interval over 100 % running, the next with a hole). So it is read until a read
    is quick, and what the thread spent queued since the wall clock is taken off: it was runnable
    all along (running: its CPU clock says how much; else queued), and on a CPU at the read, so the
    kernel had counted every stretch until then.

    But a read also gives up the GIL (os.pread), and a thread beside a busy one (spin_sleep's
    sleeper beside the spinner) waits a millisecond or more to take it back: off the CPU, not
    queued. So the wall clock comes first: read after a read, a block's end came after that GIL
    wait, which the tracer's span, ended inside the call, left to the thread's own work (the
    threads case beside two CPU hogs: `untraced waits` 2.5-7 ms over the truth, run after run). A
    slow read whose value did not move since the one before is taken (no stretch ended in it: a GIL
    wait, or a preemption after the value was read), and what is taken off is at most what the
    queued time grew since the first read: 20 reads of 4 ms GIL waits each, taken off as queued,
    had the sleeper queued 81 ms that the kernel never counted."""
    at, cpu = time_ns(), thread_time_ns()
    earlier = queued_ns()
    previous = earlier
    for _ in range(20):
        before = time_ns()
        queued, cpu_then = queued_ns(), thread_time_ns()
        after = time_ns()
        if after - before <= CONSISTENT_NS or queued == previous:
            break
        previous = queued
    since = (before + after) // 2 - at - (cpu_then - cpu)
    return at, cpu, queued - max(0, min(since, queued - earlier))


def clocks_before():
    """clocks() for a reading that an edge of the tracer's follows (a span the next call starts,
    the process span ending at exit after `last`): the same three, the wall clock read last.

    Reading the thread's CPU clock brings the kernel's accounting up to date, and this kernel
    (EEVDF) ends a used-up time slice right there: three processes spinning on two cores were
    preempted inside 38 % of their CPU clock reads, 0.1 % of their schedstat reads and 0.02 % of
    pure Python of the same length. clocks() reads the wall clock first, so that wait for a CPU
    comes after its reading: after a block's end, where the tracer's span has already ended, it is
    the program's own work for both. Before the tracer's edge it fell on the tracer's side: after
    a child's `last` its process span was still open (running, for the tracer: up to 22 ms of
    `child processes' own work` the truth gave to its parent's spawn overhead), after a spawn's
    start the subprocess span had not begun (own work for the tracer, the spawn and the child's
    start-up for the truth). Here the CPU clock is read first, then the queued time (a schedstat
    read, no accounting update) until a read is quick, then the wall clock: a wait the reads bring
    comes before the reading, on the program's side for both."""
    previous = None
    for _ in range(20):
        cpu = thread_time_ns()
        before = time_ns()
        queued = queued_ns()
        at = time_ns()
        if at - before <= CONSISTENT_NS or queued == previous:  # a GIL wait (clocks())
            break
        previous = queued
    return at, cpu, queued


class Recorder:
    def __init__(self, directory, first, **info):
        """`first`: clocks() at the program's first line (where start-up ends)."""
        self.directory = directory
        self.pid = os.getpid()
        self.first, self.first_cpu, self.first_queued = first
        self.info = info
        self.blocks = []
        self.readings = []  # (time, CPU, tid, queued) inside long blocks: the CPU truth at a finer grain

    begin = staticmethod(clocks)
    # a block around a call the tracer spans from inside it (a spawn, a request, a serialization)
    begin_call = staticmethod(clocks_before)

    def end(self, begun, kind, **info):
        """Close the block opened by begin(); returns its end time."""
        ended = clocks()
        self.add(kind, begun, ended, **info)
        return ended[0]

    def sleep(self, seconds, begin=clocks, **info):
        """time.sleep(seconds) as a `sleep` block opened with `begin` (clocks_before where the
        tracer's span starts right after, as beside another thread), with a reading where the sleep
        itself begins (`asleep`): where the first stretch as long as the sleep asked for with no
        event of a profile function begins (the call's start, the end of what a tracer's wrapper ran
        in Python before it, or the start of the C call that sleeps). A tracer's wrapper may work
        before the sleep begins (the flusher thread's start: 9-12 ms queued for a CPU beside two
        hogs); read only around the call, that queued time fell at the sleep's end, where the thread
        was asleep. (The start of the C call that blocked longest was the mark while the agent's
        wrapper was a Python function; the twin's sleeps in C, with no event of its own.)
        `info`: `polled`, the children a poll just found running, or `threads`, the threads (their
        `thread` blocks' names) a poll just found alive: the sleep is a wait on them."""
        asked = seconds * 1e9
        begun = begin()
        last, quiet = [begun], []

        def watch(frame, event, arg):
            now = clocks()
            if now[0] - last[0][0] >= asked:  # the sleep: what the call does after it (records it) runs unwatched
                quiet.append(last[0])
                sys.setprofile(None)
            last[0] = now

        sys.setprofile(watch)
        try:
            time.sleep(seconds)
        finally:
            sys.setprofile(None)
        ended = clocks()
        asleep = quiet[0] if quiet else last[0]
        if asleep is not begun:
            self.readings.append((asleep[0], asleep[1], get_native_id(), asleep[2]))
        self.add("sleep", begun, ended, seconds=seconds, asleep=asleep[0], **info)

    def wait(self, call, **info):
        """call() as a `wait` block (on the children `pids`, the `threads` or `tasks` named in
        `info`), with the CPU time of the children it reaped (their whole lives, from the kernel's
        accounting of reaped children) as `children_cpu`. `recorded=False`: a call the tracer
        records no wait for (a poll), that may reap. `reaps=False`: a wait on children that others
        inside it reap (Pool.join's joins of its workers)."""
        before = children_cpu_ns()
        begun = clocks_before()
        result = call()
        ended = clocks()
        self.add("wait", begun, ended, children_cpu=children_cpu_ns() - before, **info)
        return result

    def add(self, kind, begun, ended, tid=None, **info):
        """A block measured before the recorder existed, or in another thread: `begun` and `ended`
        are clocks() (or just wall and CPU time), `tid` the thread's native id (default: this one)."""
        queued = (begun[2], ended[2]) if len(begun) > 2 and len(ended) > 2 else (None, None)
        self.blocks.append((kind, begun[0], ended[0], begun[1], ended[1], tid or get_native_id(), info) + queued)

    def write(self, **extra):
        """Write everything, then take `last` (the process's end as it knows it) and write it: after
        `last`, one short write. Called at exit (an exit handler registered after the tracer's runs
        before it), so `last` is as close as the program can get to the end of its process span."""
        data = {"pid": self.pid, "tid": get_native_id(), "first": self.first, "first_cpu": self.first_cpu,
                "first_queued": self.first_queued,
                "blocks": self.blocks, "readings": self.readings, **self.info, **extra}
        descriptor = os.open(os.path.join(self.directory, "%d.truth" % self.pid),
                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(descriptor, repr(data)[:-1].encode())
        process_cpu = process_time_ns()  # before `last`: it reads CPU clocks too (clocks_before)
        last, last_cpu, last_queued = clocks_before()
        os.write(descriptor, (', "last": %d, "last_cpu": %d, "last_queued": %d, "process_cpu": %d}'
                              % (last, last_cpu, last_queued, process_cpu)).encode())
        os.close(descriptor)


def workload(script, record):
    """The command line of another workload process writing its truth where `record` writes this one's."""
    return [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), script), record.directory]


def main_process(first, imports, imported, wrap_waits=True):
    """The main process's Recorder (its truth directory: sys.argv[1]), with its imports block, written
    at exit (an exit handler registered after the tracer's runs before it). `wrap_waits`: os.waitpid
    called once first, as the tracer wraps it on first use (its own import, no span): here, not in a
    measured wait."""
    if wrap_waits:
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pass
    record = Recorder(sys.argv[1], first, role="main")
    atexit.register(record.write)
    record.add("imports", imports, imported)
    return record


def children_cpu_ns():
    """CPU time (user and system) of this process's children that have been reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * 1e9)


def spin(ms, record=None):
    """Keep this thread on the CPU for `ms` of its own CPU time (not wall time: a busy machine
    stretches the wall time, never the work), noting its clocks every ms of wall time in `record`."""
    deadline = thread_time_ns() + int(ms * 1e6)
    tid = get_native_id()
    readings = record.readings if record is not None else []
    next_reading = time_ns() + 1_000_000
    while True:
        cpu = thread_time_ns()
        if cpu >= deadline:
            return
        now = time_ns()
        if now >= next_reading:
            now, cpu, queued = clocks()
            readings.append((now, cpu, tid, queued))
            next_reading = now + 1_000_000


class Popen(subprocess.Popen):
    """A Popen that times its spawning call, `_execute_child` (fork and exec, until the exec is
    known to have succeeded: what a spawn is), as `spawned`: clocks_before() and clocks() after."""

    def _execute_child(self, *args, **kwargs):
        begun = clocks_before()
        try:
            super()._execute_child(*args, **kwargs)
        finally:
            self.spawned = (begun, clocks())


def spawn(record, *args, **kwargs):
    """Start a child with Popen(*args, **kwargs), recording its spawning call."""
    process = Popen(*args, **kwargs)
    record.add("spawn", *process.spawned, pid=process.pid,
               piped=process.stdout is not None or process.stderr is not None)
    return process
