"""CPU of the untraced-processes watcher (selfopt_trace/watchers/untraced.py) following a tree.

A parent with 10 idle children (5 threads each) runs for 8 s; the watcher follows it from this
process, whose main thread sleeps: the process's CPU time over 4 s is the watcher thread's, wake-ups
included. Also the CPU of one poll's body (one listing of /proc, the tree's bookkeeping).

    python benchmarks/bench_untraced.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from selfopt_trace.watchers import WatchedRun
from selfopt_trace.watchers.untraced import POLL_S, UntracedProcesses

TREE = ("import subprocess, sys, threading, time\n"
        "for _ in range(4): threading.Thread(target=time.sleep, args=(8,), daemon=True).start()\n"
        "ps = [subprocess.Popen([sys.executable, '-c', 'import threading, time\\n"
        "[threading.Thread(target=time.sleep, args=(8,), daemon=True).start() for _ in range(4)]\\ntime.sleep(8)'])"
        " for _ in range(10)]\n"
        "time.sleep(8)\n")


def poll_body_us(polls: int = 500) -> float:
    watcher = UntracedProcesses("/nowhere")
    known, tree = watcher._pids(), {os.getpid()}
    t0 = time.thread_time_ns()
    for _ in range(polls):
        listing = watcher._pids()
        for pid in sorted(listing - known):
            if watcher._parent_pid(pid) in tree:
                tree.add(pid)
        known, tree = listing, tree & listing
    return (time.thread_time_ns() - t0) / polls / 1e3


def main() -> None:
    print(f"one poll's body: {poll_body_us():.0f} us ({len(os.listdir('/proc'))} entries in /proc)")
    parent = subprocess.Popen([sys.executable, "-c", TREE])
    watcher = UntracedProcesses("/nowhere")
    watcher.start(WatchedRun("bench", Path("/tmp"), parent.pid, 0))
    time.sleep(1.0)
    before = os.times()
    time.sleep(4)
    after = os.times()
    watcher.stop()
    cpu = (after.user - before.user) + (after.system - before.system)
    print(f"the watcher at {1 / POLL_S:.0f} Hz on 11 processes: {cpu / 4 * 100:.2f} % of a core")
    parent.wait()


if __name__ == "__main__":
    main()
