"""Case (c): a multiprocessing Pool (spawn: with its resource tracker) doing known CPU work.

    python pool.py TRUTH_DIR

multiprocessing starts its resource tracker (a process alive, idle, until after the end: it
measures nothing, nobody waits on it) before the pool's first lock. Two spawned workers start
while the main process works; once both say they are ready, the main process maps tasks of known
CPU time onto them and waits, then closes the pool, polls its three threads until they have ended
and joins each worker. Each worker records its tasks, the CPU they took and its waits for the next
one; the pool's threads, their lives (and the main thread reads their clocks around each of its
polling sleeps, which wait on them).
"""

import time

# truth.clocks() and clocks_before() before truth.py (its import is measured) is imported. `first` ends
# start-up: the wall clock, the queued time as of then (a read that took long waited for a CPU, after
# `first`), the CPU clock last (its read can end the time slice: that wait too comes after `first`).
# `imports` starts the imports: the wall clock last (the import spans start after it).
QUEUED = "/proc/thread-self/schedstat"
at, queued = time.time_ns(), int(open(QUEUED, "rb").read().split()[1])
waited = time.time_ns() - at
first = (at, time.thread_time_ns(), queued - (waited if waited > 100_000 else 0))
cpu, queued = time.thread_time_ns(), int(open(QUEUED, "rb").read().split()[1])
imports = (time.time_ns(), cpu, queued)
import atexit  # noqa: E402
import functools  # noqa: E402

if __name__ == "__main__":
    # The main's truth is written at exit right before the tracer's handler ends the process span:
    # registered after it, before multiprocessing's, that its import registers (it finalizes the
    # pool: 5.8 ms after `last` on a busy machine, in the process span, teardown for the truth).
    atexit.register(lambda: record.write())
import multiprocessing  # noqa: E402
import multiprocessing.context  # noqa: E402
import multiprocessing.pool  # noqa: E402
import multiprocessing.popen_spawn_posix  # noqa: E402,F401  (imported on first use otherwise)
import multiprocessing.resource_tracker  # noqa: E402,F401
import multiprocessing.queues  # noqa: E402,F401
import multiprocessing.synchronize  # noqa: E402,F401
import os  # noqa: E402
import sys  # noqa: E402

import truth  # noqa: E402

imported = truth.clocks()
record = None  # this process's truth.Recorder (the main's, or a worker's from its initializer)


class Worker(multiprocessing.context.SpawnProcess):
    """A pool worker whose start (the spawning call) the main process times."""

    def start(self):
        spawn = record.begin_call()
        super().start()
        record.end(spawn, "spawn", pid=self.pid)

    def join(self, timeout=None):  # Pool.join joins each worker: part of its wait on them (reaps)
        record.wait(lambda: super(Worker, self).join(timeout), pids=[self.pid], recorded=False)

    def run(self):
        """In the worker: each read of its next task (the pool's `inqueue.get`, a pipe read under
        the queue's lock) is a wait on nothing it can name, as the tracer records it, the read that
        ends the worker (the sentinel) too, and named as the tracer names it (`SimpleQueue.get`): a
        wait on the pool is not one on a worker in such a read while another worker is not in one
        (docs/queries.md, "wait"; the reference's rule goes by that name: named `wait`, an idle
        worker took half of the other's task time as untraced waits, 10-90 ms beside two CPU hogs,
        where the workers' tasks drift apart). The tracer's
        wrapper (multiprocessing.pool.worker's) goes around this one: its edges come before the
        start's reading and after the end's, so the end reads its CPU clock first (clocks_before)."""
        inqueue = self._args[0]
        get = inqueue.get

        def read():
            begun = truth.clocks()
            task = get()
            ended = truth.clocks_before()
            record.add("wait", begun, ended, name="SimpleQueue.get")  # `record`: the worker's, once initialized
            return task

        inqueue.get = read
        super().run()


class Pool(multiprocessing.pool.Pool):
    @staticmethod
    def Process(ctx, *args, **kwds):  # noqa: N802 (multiprocessing's name)
        return Worker(*args, **kwds)


def timed(name, handler):
    """The pool's thread function `handler` (multiprocessing's _handle_workers, _handle_tasks,
    _handle_results) as a `thread` block named `name` in its own thread, from its start to its return
    (the tracer's `thread` span ends after it: clocks_before), under the handler's name (the thread's)."""
    @functools.wraps(handler)
    def run(*args, **kwargs):
        begun = truth.clocks()
        try:
            return handler(*args, **kwargs)
        finally:
            record.add("thread", begun, truth.clocks_before(), name=name)
    return staticmethod(run)


# each of the pool's threads: its function (timed), the pool's attribute holding it
THREADS = {"workers": ("_handle_workers", "_worker_handler"), "tasks": ("_handle_tasks", "_task_handler"),
           "results": ("_handle_results", "_result_handler")}


def read_thread(thread):
    """Another thread's clocks read from this one, as a reading of that thread (none once it has
    ended): its CPU clock (exact, running or not) and its time queued for a CPU (its schedstat; a
    stretch in progress is counted once it gets a CPU, as for the tracer's sampler)."""
    tid = thread.native_id
    try:
        cpu = time.clock_gettime_ns((~tid << 3) | 6)  # the thread's CPU clock (CPUCLOCK_SCHED, per thread)
        with open("/proc/self/task/%d/schedstat" % tid, "rb") as stats:
            queued = int(stats.read().split()[1])
    except OSError:  # ended (EINVAL, ENOENT)
        return
    record.readings.append((time.time_ns(), cpu, tid, queued))


def poll(threads):
    """`any(thread.is_alive() for thread in threads)`, naming the thread found alive (the polls stop
    there): a sleep right after is a wait on it, as the tracer records it (docs/agent.md, "Waits")."""
    for name, thread in threads.items():
        if thread.is_alive():
            return name
    return None


def ready(truth_dir, queue):
    """A worker's initializer: from here on it measures itself (its start-up is not waited on)."""
    global record
    now = truth.clocks()
    record = truth.Recorder(truth_dir, now, role="worker")
    atexit.register(record.write)
    queue.put(os.getpid())


def task(ms):
    begun = record.begin()
    truth.spin(ms, record)
    record.end(begun, "spin", task=True)


if __name__ == "__main__":
    TRUTH_DIR = sys.argv[1]
    WORKERS, TASKS = 2, 4
    record = truth.Recorder(TRUTH_DIR, first, role="main")
    record.add("imports", imports, imported)
    context = multiprocessing.get_context("spawn")
    # The pool's first lock would start the resource tracker; started here, its spawn is timed.
    tracker = record.begin_call()
    multiprocessing.resource_tracker.ensure_running()
    record.end(tracker, "spawn", pid=multiprocessing.resource_tracker._resource_tracker._pid)
    started = context.SimpleQueue()
    # the pool's threads' functions timed (Pool.__init__ names them as multiprocessing.pool.Pool's)
    for name, (handler, _) in THREADS.items():
        setattr(multiprocessing.pool.Pool, handler, timed(name, getattr(multiprocessing.pool.Pool, handler)))
    pool = Pool(WORKERS, initializer=ready, initargs=(TRUTH_DIR, started), context=context)
    workers = [worker.pid for worker in pool._pool]
    work = record.begin()  # own work while the workers start: nobody waits on them yet
    truth.spin(float(os.environ["ACCURACY_WORK_MS"]), record)
    record.end(work, "spin")
    blocked = record.begin()
    for _ in range(WORKERS):
        started.get()
    record.end(blocked, "blocked")
    # pool.map is map_async(...).get(): map_async is the main's own work (it lists the iterable, cuts
    # it into chunks and queues them for the pool's task thread, whatever their number), get() the
    # wait on the workers: a long iterable takes the main's CPU before anything is waited on.
    mapped = pool.map_async(task, [float(os.environ["ACCURACY_TASK_MS"])] * TASKS, chunksize=1)
    record.wait(mapped.get, pids=workers)
    pool.close()
    # The pool's own threads (workers, tasks, results) end by themselves once it is closed: let them,
    # polling, so that Pool.join's joins of them find them ended (it then only joins the workers:
    # a wait on them, their joins, Worker.join, inside it). A sleep right after a poll found a thread alive is a wait on that thread
    # for the tracer (docs/agent.md, "Waits"): the truth times the threads' lives (timed) and the main
    # reads their clocks before its polls and after each sleep, so the breakdown's truth follows the
    # sleep into the thread as the tracer's does (the truth had them as sleeps: 1-5 ms of `sleeps`
    # that the tracer, by that rule, gives to the threads; one or two sleeps on a quiet machine, up
    # to five beside two CPU hogs).
    threads = {name: getattr(pool, attribute) for name, (_, attribute) in THREADS.items()}
    for thread in threads.values():
        read_thread(thread)
    while (alive := poll(threads)) is not None:
        record.sleep(0.001, begin=truth.clocks_before, threads=[alive])
        for thread in threads.values():
            read_thread(thread)
    # one wait on the workers; their joins inside it reap them
    record.wait(pool.join, pids=workers, name="Pool.join", reaps=False)
