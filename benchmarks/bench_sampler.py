"""The CPU sampler's own cost: CPU of its thread, as a share of one core, with N traced idle processes.

A traced parent starts N traced children that sleep (each writes its span file at the end of its
start-up, as any traced process does), then the sampler (selfopt_trace/watchers/cpu_sampler.py)
follows that run exactly as `selfopt-trace run` would, once per rate and repeat. The sampler
thread's own on-CPU time is read from /proc/self/task/<its tid>/schedstat over a steady window
(after every child was found); the figure is that CPU over the window's wall time. Also prints what
one reading of every process costs with descriptors kept open (pread) against open/read/close,
and how fast the loader turns readings into `cpu_samples` rows (a synthetic file of --load-readings
readings of 100 threads, loaded into a fresh database; 0 skips it).

    python benchmarks/bench_sampler.py [--processes 50] [--rates 10,20,50,100] [--repeats 5] [--window 3]
                                       [--load-readings 1000000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from selfopt_trace.store import Store  # noqa: E402
from selfopt_trace.watchers import WatchedRun  # noqa: E402
from selfopt_trace.watchers.cpu_sampler import DEFAULT_RATE_HZ, HEADER, SAMPLES_PATH, CpuSampler  # noqa: E402

BOOTSTRAP = REPO / "selfopt_trace" / "bootstrap"
BUDGET_PCT = 2.0

PARENT = """
import subprocess, sys, time
children = [subprocess.Popen([sys.executable, "-c", "import sys, time; sys.stdin.read()"], stdin=subprocess.PIPE)
            for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
sys.stdin.read()
for child in children:
    child.stdin.close()
for child in children:
    child.wait()
"""


def thread_cpu_ns(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/schedstat", "rb") as stream:
        return int(stream.read().split()[0])


def sampler_tid() -> int:
    (thread,) = [t for t in threading.enumerate() if t.name == "selfopt-trace cpu sampler"]
    assert thread.native_id is not None
    return thread.native_id


def measure(run: WatchedRun, rate: float, window_s: float) -> tuple[float, float]:
    """(sampler CPU as % of one core over the window, stop() in ms)."""
    (run.run_dir / SAMPLES_PATH).unlink(missing_ok=True)
    sampler = CpuSampler(rate)
    sampler.start(run)
    time.sleep(0.5)  # every span file found, every process's threads listed
    tid = sampler_tid()
    cpu0, wall0 = thread_cpu_ns(tid), time.monotonic_ns()
    time.sleep(window_s)
    cpu1, wall1 = thread_cpu_ns(tid), time.monotonic_ns()
    t0 = time.perf_counter()
    notes = sampler.stop()
    stop_ms = (time.perf_counter() - t0) * 1e3
    assert not notes, notes
    return 100.0 * (cpu1 - cpu0) / (wall1 - wall0), stop_ms


def reading_costs(pids: list[int], rounds: int = 200) -> tuple[float, float]:
    """Microseconds to read every process's main-thread schedstat once: (pread on open fds, open/read/close)."""
    paths = [f"/proc/{pid}/task/{pid}/schedstat" for pid in pids]
    fds = [os.open(path, os.O_RDONLY) for path in paths]
    try:
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            for fd in fds:
                os.pread(fd, 64, 0)
        kept = (time.perf_counter_ns() - t0) / rounds / 1e3
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                os.read(fd, 64)
                os.close(fd)
        reopened = (time.perf_counter_ns() - t0) / rounds / 1e3
    finally:
        for fd in fds:
            os.close(fd)
    return kept, reopened


def load_speed(workdir: Path, readings: int, threads: int = 100, repeats: int = 3) -> tuple[float, float]:
    """(rows/s, seconds) of Store.load_run on a samples file of `readings` C records (median of repeats)."""
    run = workdir / "load-run"
    (run / "spans").mkdir(parents=True)
    (run / SAMPLES_PATH).parent.mkdir()
    t0 = 1_700_000_000_000_000_000
    lines = [HEADER] + [f"T\t{t0}\t{1000 + t // 4}\t{2000 + t}\t{t0}\t\t\tpython\t\t.\n" for t in range(threads)]
    cpu, runqueue = [0] * threads, [0] * threads
    for i in range(readings // threads):
        for t in range(threads):
            cpu[t] += random.randint(0, 50_000_000)
            runqueue[t] += random.randint(0, 1_000_000)
            lines.append(f"C\t{t0 + (i + 1) * 50_000_000 + t}\t{1000 + t // 4}\t{2000 + t}\t{t0}\t{cpu[t]}\t{runqueue[t]}\t\t\t.\n")
    (run / SAMPLES_PATH).write_text("".join(lines))
    times, rows = [], 0
    for n in range(repeats):
        with Store(workdir / f"load-{n}.duckdb") as store:
            started = time.perf_counter()
            rows = store.load_run(run).cpu_samples
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return rows / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--rates", default=f"10,{DEFAULT_RATE_HZ:g},50,100")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--window", type=float, default=3.0, help="seconds measured per repeat")
    parser.add_argument("--load-readings", type=int, default=1_000_000)
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    run_dir = workdir / "run"
    (run_dir / "spans").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k != "PYTHONPATH"}
    env.update(SELFOPT_TRACE_DIR=str(run_dir), SELFOPT_TRACE_RUN_ID="bench", SELFOPT_TRACE_BOOTSTRAP=str(BOOTSTRAP),
               PYTHONPATH=str(BOOTSTRAP))
    start_ns = time.time_ns()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(args.processes)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while len(os.listdir(run_dir / "spans")) < args.processes + 1:
            assert time.monotonic() < deadline, "the traced children did not all write their span files"
            time.sleep(0.05)
        pids = sorted(int(name.split("-", 1)[0]) for name in os.listdir(run_dir / "spans"))
        threads = sum(len(os.listdir(f"/proc/{pid}/task")) for pid in pids)
        run = WatchedRun("bench", run_dir, parent.pid, start_ns)
        print(f"traced processes alive: {len(pids)} ({threads} threads); window {args.window:g} s, "
              f"{args.repeats} repeats per rate, rates interleaved")
        results: dict[float, list[tuple[float, float]]] = {rate: [] for rate in rates}
        for _ in range(args.repeats):
            for rate in rates:
                results[rate].append(measure(run, rate, args.window))
        print(f"{'rate Hz':>8} {'sampler % of a core':>20} {'min':>6} {'max':>6} {'vs 2 % budget':>14} {'stop() ms':>10}")
        for rate in rates:
            cpu = [pct for pct, _ in results[rate]]
            stops = [ms for _, ms in results[rate]]
            default = "  (default)" if rate == DEFAULT_RATE_HZ else ""
            print(f"{rate:8g} {statistics.median(cpu):20.3f} {min(cpu):6.3f} {max(cpu):6.3f} "
                  f"{statistics.median(cpu) / BUDGET_PCT:14.2f} {statistics.median(stops):10.2f}{default}")
        kept, reopened = reading_costs(pids)
        print(f"one reading of {len(pids)} processes: pread on open descriptors {kept:.0f} us, "
              f"open/read/close {reopened:.0f} us (x{reopened / kept:.1f})")
        if args.load_readings:
            rate, seconds = load_speed(workdir, args.load_readings)
            print(f"loading {args.load_readings:,} readings: {seconds:.2f} s, {rate:,.0f} cpu_samples rows/s (median of 3)")
    finally:
        if parent.stdin is not None:
            parent.stdin.close()
        parent.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
