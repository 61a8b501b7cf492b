"""The CPU sampler's own cost: CPU of its thread, as a share of one core, with traced processes alive.

Steady state: a traced parent starts N traced children that sleep (each writes its span file at the
end of its start-up, as any traced process does); once all are past their first second (no young
thread left), the sampler (selfopt_trace/watchers/cpu_sampler.py) follows that run exactly as
`selfopt-trace run` would, once per rate and repeat, and once at the default rate without the young
phase (the sampler before it had one). Contended: --contended traced processes whose threads take
turns on the GIL (three spinning each), at the default rate with their GIL waits told (each wait
looked up in the thread's /proc syscall file, watchers/gil.py) and not told. Young-heavy: another traced parent keeps --young children
alive at a time, each sleeping --young-life seconds and replaced as it ends (so every child is in its
young phase all its life), measured at the default rate with each of --young-rates for young threads,
without the young phase, and with every thread at the young rate. The sampler thread's own on-CPU time is read from
/proc/self/task/<its tid>/schedstat over a window (after the first children were found); the figure
is that CPU over the window's wall time. Also prints what one reading of every process costs with
descriptors kept open (pread) against open/read/close, and how fast the loader turns readings into
`cpu_samples` rows (a synthetic file of --load-readings readings of 100 threads, loaded into a fresh
database; 0 skips it).

    python benchmarks/bench_sampler.py [--processes 50] [--rates 10,20,50,100] [--contended 4] [--young 20]
                                       [--young-life 1] [--young-rates 100,200] [--repeats 5] [--window 3]
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
from selfopt_trace.watchers import WatchedRun, gil  # noqa: E402
from selfopt_trace.watchers.cpu_sampler import (  # noqa: E402
    DEFAULT_RATE_HZ, HEADER, SAMPLES_PATH, YOUNG_NS, YOUNG_RATE_HZ, CpuSampler)

BOOTSTRAP = REPO / "selfopt_trace" / "bootstrap"
BUDGET_PCT = 2.0

# N children, each running CHILD (by default: idle until stdin closes), until stdin closes.
PARENT = """
import subprocess, sys, time
child = sys.argv[2] if len(sys.argv) > 2 else "import sys, time; sys.stdin.read()"
children = [subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE) for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
sys.stdin.read()
for child in children:
    child.stdin.close()
for child in children:
    child.wait()
"""

# Keeps N children alive, one started every LIFE / N seconds, each sleeping LIFE seconds, until stdin closes.
CHURN = """
import select, subprocess, sys, time
n, life = int(sys.argv[1]), float(sys.argv[2])
children, due = [], time.monotonic()
print("ready", flush=True)
while not select.select([sys.stdin], [], [], max(0.0, due - time.monotonic()))[0]:
    children = [child for child in children if child.poll() is None]
    if len(children) < n:
        children.append(subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({life})"]))
    due += life / n
for child in children:
    child.wait()
"""

# A PARENT's child of three threads spinning (taking turns on the GIL), until stdin closes.
SPINNING_THREADS = """
import sys, threading
def spin():
    while True:
        pass
for _ in range(3):
    threading.Thread(target=spin, daemon=True).start()
sys.stdin.read()
"""


def thread_cpu_ns(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/schedstat", "rb") as stream:
        return int(stream.read().split()[0])


def sampler_tid() -> int:
    (thread,) = [t for t in threading.enumerate() if t.name == "selfopt-trace cpu sampler"]
    assert thread.native_id is not None
    return thread.native_id


def measure(run: WatchedRun, rate: float, young_rate: float | None, window_s: float) -> tuple[float, float]:
    """(sampler CPU as % of one core over the window, stop() in ms)."""
    (run.run_dir / SAMPLES_PATH).unlink(missing_ok=True)
    sampler = CpuSampler(rate, young_rate_hz=young_rate)
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
    lines = [HEADER] + [f"T\t{t0}\t{1000 + t // 4}\t{2000 + t}\t{t0}\t\t\t\tpython\t\t.\n" for t in range(threads)]
    cpu, runqueue = [0] * threads, [0] * threads
    for i in range(readings // threads):
        for t in range(threads):
            cpu[t] += random.randint(0, 50_000_000)
            runqueue[t] += random.randint(0, 1_000_000)
            lines.append(f"C\t{t0 + (i + 1) * 50_000_000 + t}\t{1000 + t // 4}\t{2000 + t}\t{t0}\t{cpu[t]}\t{runqueue[t]}\t0\t\t\t.\n")
    (run / SAMPLES_PATH).write_text("".join(lines))
    times, rows = [], 0
    for n in range(repeats):
        with Store(workdir / f"load-{n}.duckdb") as store:
            started = time.perf_counter()
            loaded = store.load_run(run)
            damaged = [w for w in loaded.warnings if w.code != "loader.no_span_files"]  # (it has samples only)
            if damaged or loaded.skipped_lines or not loaded.cpu_samples:  # every line, in the sampler's format
                raise SystemExit(f"the samples file did not load whole: {loaded}")
            rows = loaded.cpu_samples
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return rows / seconds, seconds


def traced_environ(run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k != "PYTHONPATH"}
    env.update(SELFOPT_TRACE_DIR=str(run_dir), SELFOPT_TRACE_RUN_ID=run_dir.name,
               SELFOPT_TRACE_BOOTSTRAP=str(BOOTSTRAP), PYTHONPATH=str(BOOTSTRAP))
    return env


def start_parent(run_dir: Path, code: str, *args: str) -> subprocess.Popen:
    (run_dir / "spans").mkdir(parents=True)
    parent = subprocess.Popen([sys.executable, "-c", code, *args], env=traced_environ(run_dir),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
    return parent


def wait_for_span_files(run_dir: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(os.listdir(run_dir / "spans")) < count:
        assert time.monotonic() < deadline, "the traced children did not all write their span files"
        time.sleep(0.05)


def stop(parent: subprocess.Popen) -> None:
    if parent.stdin is not None:
        parent.stdin.close()
    parent.wait(timeout=60)


Mode = tuple[str, float, "float | None"]  # (label, rate, young rate: None the default, 0 none)


def run_modes(run: WatchedRun, modes: list[Mode], repeats: int, window_s: float) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in modes}
    for _ in range(repeats):
        for label, rate, young_rate in modes:
            results[label].append(measure(run, rate, young_rate, window_s))
    return results


def print_results(results: dict[str, list[tuple[float, float]]], before: str) -> None:
    print(f"{'mode':<42} {'% of a core':>11} {'min':>6} {'max':>6} {'vs 2 %':>7} {'vs before':>9} {'stop() ms':>9}")
    base = statistics.median(pct for pct, _ in results[before])
    for label, measured in results.items():
        cpu = [pct for pct, _ in measured]
        median = statistics.median(cpu)
        print(f"{label:<42} {median:11.3f} {min(cpu):6.3f} {max(cpu):6.3f} {median / BUDGET_PCT:7.2f} "
              f"{median / base:9.2f} {statistics.median(ms for _, ms in measured):9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--rates", default=f"10,{DEFAULT_RATE_HZ:g},50,100")
    parser.add_argument("--contended", type=int, default=4, help="processes of threads taking turns on the GIL (0: skip)")
    parser.add_argument("--young", type=int, default=20, help="young children alive at a time (0: skip)")
    parser.add_argument("--young-life", type=float, default=1.0, help="seconds each young child lives")
    parser.add_argument("--young-rates", default=f"{YOUNG_RATE_HZ:g},200", help="young rates measured, young-heavy")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--window", type=float, default=3.0, help="seconds measured per repeat")
    parser.add_argument("--load-readings", type=int, default=1_000_000)
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    default = f"{DEFAULT_RATE_HZ:g} Hz, young threads {YOUNG_RATE_HZ:g} Hz (default)"
    before = f"{DEFAULT_RATE_HZ:g} Hz, no young phase (before)"
    workdir = Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    parents: list[subprocess.Popen] = []
    try:
        run_dir = workdir / "steady"
        start_ns = time.time_ns()
        parents.append(start_parent(run_dir, PARENT, str(args.processes)))
        wait_for_span_files(run_dir, args.processes + 1)
        time.sleep(YOUNG_NS / 1e9)  # every thread past its first second
        pids = sorted(int(name.split("-", 1)[0]) for name in os.listdir(run_dir / "spans"))
        threads = sum(len(os.listdir(f"/proc/{pid}/task")) for pid in pids)
        print(f"steady: traced processes alive: {len(pids)} ({threads} threads), all past their first second; "
              f"window {args.window:g} s, {args.repeats} repeats per mode, modes interleaved")
        modes: list[Mode] = [(default if rate == DEFAULT_RATE_HZ else f"{rate:g} Hz", rate, None) for rate in rates]
        modes.append((before, DEFAULT_RATE_HZ, 0))
        print_results(run_modes(WatchedRun("steady", run_dir, parents[0].pid, start_ns), modes, args.repeats,
                                args.window), before)
        kept, reopened = reading_costs(pids)
        print(f"one reading of {len(pids)} processes: pread on open descriptors {kept:.0f} us, "
              f"open/read/close {reopened:.0f} us (x{reopened / kept:.1f})")
        stop(parents.pop())

        if args.contended:
            run_dir = workdir / "contended"
            start_ns = time.time_ns()
            parents.append(start_parent(run_dir, PARENT, str(args.contended), SPINNING_THREADS))
            wait_for_span_files(run_dir, args.contended + 1)
            time.sleep(YOUNG_NS / 1e9)
            run = WatchedRun("contended", run_dir, parents[0].pid, start_ns)
            told, untold = "GIL waits told (default)", "GIL waits not told"
            results: dict[str, list[tuple[float, float]]] = {told: [], untold: []}
            for _ in range(args.repeats):
                for label, min_off_ns in ((told, gil.MIN_OFF_NS), (untold, 1 << 62)):
                    default_min, gil.MIN_OFF_NS = gil.MIN_OFF_NS, min_off_ns  # out of reach: never looked up
                    try:
                        results[label].append(measure(run, DEFAULT_RATE_HZ, None, args.window))
                    finally:
                        gil.MIN_OFF_NS = default_min
            print(f"contended: {args.contended} traced processes of three threads spinning on one GIL; same windows")
            print_results(results, untold)
            stop(parents.pop())

        if args.young:
            run_dir = workdir / "young"
            start_ns = time.time_ns()
            parents.append(start_parent(run_dir, CHURN, str(args.young), str(args.young_life)))
            wait_for_span_files(run_dir, args.young + 1)
            files = len(os.listdir(run_dir / "spans"))
            started = time.monotonic()
            modes = [(default if young == YOUNG_RATE_HZ else f"{DEFAULT_RATE_HZ:g} Hz, young threads {young:g} Hz",
                      DEFAULT_RATE_HZ, young) for young in map(float, args.young_rates.split(","))]
            modes += [(before, DEFAULT_RATE_HZ, 0), (f"every thread at {YOUNG_RATE_HZ:g} Hz", YOUNG_RATE_HZ, None)]
            results = run_modes(WatchedRun("young", run_dir, parents[0].pid, start_ns), modes, args.repeats,
                                args.window)
            spawned = (len(os.listdir(run_dir / "spans")) - files) / (time.monotonic() - started)
            print(f"young-heavy: {args.young} traced children alive at a time, each living {args.young_life:g} s "
                  f"(in its young phase all its life): {spawned:.1f} started a second; same windows")
            print_results(results, before)
            stop(parents.pop())

        if args.load_readings:
            rate, seconds = load_speed(workdir, args.load_readings)
            print(f"loading {args.load_readings:,} readings: {seconds:.2f} s, {rate:,.0f} cpu_samples rows/s (median of 3)")
    finally:
        for parent in parents:
            stop(parent)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
