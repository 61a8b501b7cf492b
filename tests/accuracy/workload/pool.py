"""Case (c): a multiprocessing Pool (spawn: with its resource tracker) doing known CPU work.

    python pool.py TRUTH_DIR

multiprocessing starts its resource tracker (a process alive, idle, until after the end: it
measures nothing, nobody waits on it) before the pool's first lock. Two spawned workers start
while the main process works; once both say they are ready, the main process maps tasks of known
CPU time onto them and waits, then closes the pool and joins each worker. Each worker records its
tasks, the CPU they took and its waits for the next one.
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

    def join(self, timeout=None):  # Pool.join joins each worker: a wait on it, until it is reaped
        record.wait(lambda: super(Worker, self).join(timeout), pids=[self.pid])

    def run(self):
        """In the worker: each read of its next task (the pool's `inqueue.get`, a pipe read under
        the queue's lock) is a wait on nothing it can name, as the tracer records it, the read that
        ends the worker (the sentinel) too. The tracer's
        wrapper (multiprocessing.pool.worker's) goes around this one: its edges come before the
        start's reading and after the end's, so the end reads its CPU clock first (clocks_before)."""
        inqueue = self._args[0]
        get = inqueue.get

        def read():
            begun = truth.clocks()
            task = get()
            ended = truth.clocks_before()
            record.add("wait", begun, ended)  # `record` is the worker's once the initializer ran
            return task

        inqueue.get = read
        super().run()


class Pool(multiprocessing.pool.Pool):
    @staticmethod
    def Process(ctx, *args, **kwds):  # noqa: N802 (multiprocessing's name)
        return Worker(*args, **kwds)


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
    # polling, so that Pool.join's joins of them are not waits (their lives are multiprocessing's,
    # nothing here can time them); it then only joins the workers (Worker.join, timed). Each poll's
    # sleep is a sleep (one on a quiet machine, three on a busy one).
    while any(thread.is_alive() for thread in (pool._worker_handler, pool._task_handler, pool._result_handler)):
        record.sleep(0.001, begin=truth.clocks_before)
    pool.join()
