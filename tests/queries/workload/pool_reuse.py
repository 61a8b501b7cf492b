"""A reused process pool whose two workers end their tasks far apart: in each map, one worker spins
400 ms and the other 50 ms, then waits for its next task (a recorded wait on nothing) until the
next map. The long task goes to each worker in turn; the last map only ends those waits (the
worker's read of the pool's closing sentinel is recorded too).

Prints a line per map: the pid of the worker given the long task, then the pids that ran the tasks."""

import multiprocessing
import os
import time

barrier = None


def ready(shared, started):
    global barrier
    barrier = shared
    started.put(os.getpid())


def task(long_pid):
    barrier.wait()  # each worker takes one of the map's two tasks
    end = time.perf_counter() + (0.4 if os.getpid() == long_pid else 0.05)
    while time.perf_counter() < end:
        pass
    return os.getpid()


if __name__ == "__main__":
    context = multiprocessing.get_context("fork")
    started = context.SimpleQueue()
    pool = context.Pool(2, initializer=ready, initargs=(context.Barrier(2), started))
    first, second = (started.get() for _ in range(2))  # both workers ready before the first map
    for long_pid in (first, second, 0):
        print("map", long_pid, *pool.map(task, [long_pid] * 2, chunksize=1))
    pool.close()
    pool.join()
