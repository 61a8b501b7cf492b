"""Cost of recording waits (Popen.wait, Future.result, Thread.join, ...): per wait that did not block, and per recorded wait.

Waits that return at once (most of them: a child already reaped, a future already done, a thread
already finished) run the real APIs N times per round in fresh interpreters, untraced and traced
(the agent started as in a traced process), the two alternating --repeat times; the figure is the
median per-call time over all rounds, and the added cost is traced minus untraced. Three of them
are calls the hooks know cannot block (not even timed); `Popen.communicate` on a reaped child is
timed (two clock reads, the set of threads inside a wait) and not recorded; a Queue's put and get
each notify a threading.Condition with no waiter (nothing of the agent's runs: a Condition's
waiters are noted only once something waits on it, hooks/threads.py).

A wait that blocks is recorded as a span. Its added cost is measured in one traced interpreter,
paired within it: a call that spins for 30 us (a deadline, so what it costs does not depend on
when it started) run bare and through the wait wrapper (hooks/waits.py `method`, as Thread.join
is wrapped, on an object that carries the span it waits on as a Thread does), in alternating rounds of N calls timed as a whole, flush to the span file included;
the added cost per wait is the difference of the paired rounds' times divided by N.

Times are given as the thread's CPU time and as wall time. This machine is shared: with its
neighbours busy both move by tens of percent, so --instructions counts CPU instructions instead
(valgrind --tool=callgrind, which no neighbour can move): each case runs in two interpreters with
N and 3N calls, and the difference divided by 2N is the per-call count, traced minus untraced.

    python benchmarks/bench_waits.py [--calls 100000] [--recorded 20000] [--rounds 7] [--repeat 3]
    python benchmarks/bench_waits.py --instructions [--calls 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parent.parent / "selfopt_trace" / "bootstrap"

# The waits that do not block, each as (name, statement on the objects set up below).
SETUP = """
import concurrent.futures, json, subprocess, sys, threading, time
child = subprocess.Popen([sys.executable, "-c", "pass"])
child.wait()  # reaped: every later wait returns at once
running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # polled: still running
sleeper = threading.Thread(target=time.sleep, args=(600,), daemon=True)  # asked whether alive: it is
sleeper.start()
pool = concurrent.futures.ThreadPoolExecutor(1)
future = pool.submit(int, "1")
future.result()
thread = threading.Thread(target=int)
thread.start()
thread.join()
import queue
items = queue.Queue()
def put_get():  # each notifies a Condition nobody waits on (not_empty, not_full)
    items.put(1)
    items.get()
CASES = {
    "Popen.wait (reaped child)": child.wait,
    "Future.result (done)": future.result,
    "Thread.join (finished)": thread.join,
    "Popen.communicate (reaped)": child.communicate,
    "Queue.put + Queue.get (no waiter)": put_get,
    "Popen.poll (running child)": running.poll,
    "Thread.is_alive (running)": sleeper.is_alive,
}
"""

NOT_BLOCKING = SETUP + """
n, rounds = int(sys.argv[1]), int(sys.argv[2])

def loop(call, n):
    for _ in range(n):
        call()

out = {}
for name, call in CASES.items():
    for _ in range(rounds):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        loop(call, n)
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        out.setdefault(name + "|cpu", []).append((c1 - c0) / n)
        out.setdefault(name + "|wall", []).append((w1 - w0) / n)
pool.shutdown()
running.kill()
running.wait()
print(json.dumps(out))
"""

RECORDED = """
import json, sys, time
from selfopt_trace_agent import tracer
from selfopt_trace_agent.hooks import threads, waits
n, rounds = int(sys.argv[1]), int(sys.argv[2])
SPIN_NS = 30_000
clock = time.perf_counter_ns

class Waiter:
    def wait(self, timeout=None):
        deadline = clock() + SPIN_NS
        while clock() < deadline:
            pass

    traced = waits.method(wait, "Thread.join", threads._join_targets, own=True)  # as Thread.join is wrapped

    def at_once(self, timeout=None):
        return None

    waits.THRESHOLD_NS, threshold = 0, waits.THRESHOLD_NS  # every call is recorded
    at_once_traced = waits.method(at_once, "Thread.join", threads._join_targets, own=True)
    waits.THRESHOLD_NS = threshold

waiter = Waiter()
waiter.__dict__[waits.SPAN] = "00f067aa0ba902b7"  # the span of the thread joined

def loop(call, n):
    w0, c0 = clock(), time.thread_time_ns()
    for _ in range(n):
        call()
    tracer.flush()
    c1, w1 = time.thread_time_ns(), clock()
    return (c1 - c0) / n, (w1 - w0) / n

out = {}
for _ in range(rounds):
    for side, call in (("spin|bare", waiter.wait), ("spin|traced", waiter.traced),
                       ("at once|bare", waiter.at_once), ("at once|traced", waiter.at_once_traced)):
        c, w = loop(call, n)
        out.setdefault(side + "|cpu", []).append(c)
        out.setdefault(side + "|wall", []).append(w)
print(json.dumps(out))
"""

# --instructions: one case, N calls (argv: case, N). The recorded case wraps a method that returns
# at once with the threshold at 0, so every call takes the recording path (its untraced side is
# the bare method); for the others the threshold is out of reach (under valgrind a call that does
# not block can take 20 us).
INSTRUCTIONS = """
import os, sys
if "SELFOPT_TRACE_DIR" in os.environ:  # valgrind makes every call slow: only the recorded case may record
    from selfopt_trace_agent.hooks import waits
    waits.THRESHOLD_NS = 0 if sys.argv[1].startswith("recorded") else 10**15
""" + SETUP + """
case, n = sys.argv[1], int(sys.argv[2])
if case.startswith("recorded sleep"):  # time.sleep(0), every call recorded (hooks/time_.py); ", 1 us":
    import functools                     # a sleep that slept, back in time (a late one reads clocks)
    if "SELFOPT_TRACE_DIR" in os.environ:  # the wrapper again, with the threshold at 0
        from selfopt_trace_agent import config, process
        time.sleep, config.WAIT_THRESHOLD_NS = time.sleep.__wrapped__, 0
        process._install_sleep_hook()
    call = functools.partial(time.sleep, 1e-6 if case.endswith("1 us") else 0)
elif case.startswith("recorded wait"):
    class Waiter:
        def wait(self, timeout=None):
            return None
    waiter = Waiter()
    call = waiter.wait
    if "SELFOPT_TRACE_DIR" in os.environ:  # as Thread.join is wrapped, on a thread with its span
        from selfopt_trace_agent.hooks import threads
        waiter.__dict__[waits.SPAN] = "00f067aa0ba902b7"
        outer = case == "recorded wait, outer"  # as Popen.wait and Process.join are wrapped
        call = waits.method(Waiter.wait, "Popen.wait" if outer else "Thread.join", threads._join_targets, outer=outer,
                            own=True).__get__(waiter)
else:
    call = CASES[case]
for _ in range(n):
    call()
pool.shutdown()
running.kill()
running.wait()
"""


def measure(code: str, env: dict, calls: int, rounds: int) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(calls), str(rounds)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def instructions(case: str, env: dict, calls: int, tmp: str) -> float:
    """CPU instructions per call of `case` under callgrind: the slope between N and 3N calls."""
    counts = []
    for n in (calls, 3 * calls):
        result = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
                                 sys.executable, "-c", INSTRUCTIONS, case, str(n)],
                                env=env, check=True, capture_output=True, text=True)
        counts.append(int(re.search(r"Collected : (\d+)", result.stderr).group(1)))
    return (counts[1] - counts[0]) / (2 * calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=None, help="non-blocking waits per round (default 100000; "
                                                                "--instructions: 10000)")
    parser.add_argument("--recorded", type=int, default=20_000, help="recorded waits per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="interpreters per side, alternating")
    parser.add_argument("--instructions", action="store_true", help="count CPU instructions under callgrind instead")
    parser.add_argument("--case", default="", help="--instructions: only the cases whose name contains this")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(base, SELFOPT_TRACE_DIR=str(Path(tmp) / "run"), PYTHONPATH=str(BOOTSTRAP))
        if args.instructions:
            if not shutil.which("valgrind"):
                sys.exit("--instructions needs valgrind")
            calls = args.calls or 10_000
            print(f"CPU instructions per call (callgrind, {calls} and {3 * calls} calls per interpreter)")
            print(f"{'wait':<28}{'untraced':>10}{'traced':>10}{'added':>9}")
            for case in ("Popen.wait (reaped child)", "Future.result (done)", "Thread.join (finished)",
                         "Popen.communicate (reaped)", "Popen.poll (running child)", "Thread.is_alive (running)",
                         "recorded wait",
                         "recorded wait, outer", "recorded sleep", "recorded sleep, 1 us"):
                if args.case not in case:
                    continue
                off, on = instructions(case, base, calls, tmp), instructions(case, env, calls, tmp)
                print(f"{case:<28}{off:>10.0f}{on:>10.0f}{on - off:>+9.0f}")
            return
        calls = args.calls or 100_000
        untraced: dict = {}
        traced: dict = {}
        recorded: dict = {}
        for _ in range(args.repeat):
            for side, side_env in ((untraced, base), (traced, env)):
                for name, per_call in measure(NOT_BLOCKING, side_env, calls, args.rounds).items():
                    side.setdefault(name, []).extend(per_call)
            for name, per_call in measure(RECORDED, env, args.recorded, args.rounds).items():
                recorded.setdefault(name, []).extend(per_call)
        spans = sum(1 for p in (Path(tmp) / "run" / "spans").glob("*.spans") for line in p.open()
                    if "\twait\t" in line)
    print(f"waits that did not block: {calls} calls x {args.rounds} rounds x {args.repeat} interpreters per side "
          "(median ns per call; cpu: the thread's CPU time)")
    print(f"{'wait':<28}{'time':>5}{'untraced':>10}{'traced':>10}{'added':>9}{'ratio':>8}")
    for key in untraced:
        name, clock = key.split("|")
        off, on = statistics.median(untraced[key]), statistics.median(traced[key])
        print(f"{name:<28}{clock:>5}{off:>10.1f}{on:>10.1f}{on - off:>+9.1f}{on / off:>8.2f}")
    print(f"recorded waits: {args.recorded} calls x {args.rounds} rounds x {args.repeat} interpreters, bare and through "
          "the wait wrapper (median of paired rounds, flush included): a 30 us spin, and a call that returns at once "
          "with the threshold at 0, back to back")
    for case, label in (("spin", "recorded wait, 30 us spin"), ("at once", "recorded wait, at once")):
        for clock in ("cpu", "wall"):
            bare, wrapped = recorded[f"{case}|bare|{clock}"], recorded[f"{case}|traced|{clock}"]
            added = statistics.median([w - b for w, b in zip(wrapped, bare)])
            print(f"{label:<28}{clock:>5}{statistics.median(bare):>10.1f}{statistics.median(wrapped):>10.1f}"
                  f"{added:>+9.1f}{statistics.median(wrapped) / statistics.median(bare):>8.3f}")
    print(f"wait spans written: {spans}")


if __name__ == "__main__":
    main()
