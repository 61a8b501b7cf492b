"""run --profile: what py-spy costs the traced program, which way of starting it misses fewer short
children, and how fast a million samples load and answer hot_frames.

    python benchmarks/bench_profile.py overhead [--rounds 5] [--seconds 2]
    python benchmarks/bench_profile.py coverage [--children 10] [--rounds 3]
    python benchmarks/bench_profile.py store [--samples 1000000] [--repeat 3] [--random-stacks]

overhead: a CPU-bound workload (pure-Python calls in a loop for SECONDS, then the same calls again,
timed) reports, for the timed calls, its wall time and, from /proc/thread-self/schedstat, its time
on a CPU and its time queued for one. Each round runs it traced (`run`), then traced and profiled at
100 Hz and 1000 Hz, blocking (py-spy stops the process for each sample) and --nonblocking. On this
shared machine the neighbours' load moves the wall time by tens of %, but not what the profiler
adds: the CPU the work takes (vs traced), and the time the process was neither on a CPU nor queued
for one (stopped by py-spy; the work never sleeps). Printed: medians, and the slowdown they make
on an idle machine, CPU ratio / (1 - stopped share).

coverage: a parent starts CHILDREN children one after another, each a Python process that spins
for 50 ms (then as many of 200 ms, then of 1 s); counted: children with at least one sample, with one py-spy per
traced process started as its span file appears (`each`, the default) against py-spy's own
`--subprocesses` mode on CMD (`tree`, SELFOPT_TRACE_PROFILE_SPAWN=tree).

store: a synthetic run (one process, 8 threads, 585 spans per thread in 4 levels, 5,000 stacks of
20-40 frames from 2,000 functions in 300 files) with SAMPLES sample lines; times Store.load_run and
hot_frames (all span names, then -p span=NAME) on it: medians of REPEAT.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile  # noqa: E402
from selfopt_trace.watchers import profile_samples as fmt  # noqa: E402

CPU_WORKLOAD = """
import sys, time
def leaf(n):
    return sum(i * i for i in range(n))
def middle(n):
    return [leaf(n) for _ in range(5)]
def top(seconds):
    end = time.perf_counter() + seconds
    calls = 0
    while time.perf_counter() < end:
        middle(200)
        calls += 1
    return calls
def schedstat():  # this thread's ns on a CPU and ns runnable but waiting for one
    with open("/proc/thread-self/schedstat") as stat:
        return [int(field) for field in stat.read().split()[:2]]
calls = top(float(sys.argv[1]))
# the same number of calls again, timed: wall, on-CPU and queued-for-a-CPU time
cpu0, queued0 = schedstat()
t0 = time.perf_counter_ns()
for _ in range(calls):
    middle(200)
wall = time.perf_counter_ns() - t0
cpu1, queued1 = schedstat()
print(wall, cpu1 - cpu0, queued1 - queued0, calls)
"""

CHILDREN_WORKLOAD = """
import subprocess, sys, time
if len(sys.argv) > 2:
    end = time.perf_counter() + float(sys.argv[2])
    while time.perf_counter() < end:
        pass
    sys.exit(0)
for seconds in ("0.05", "0.2", "1.0"):
    for _ in range(int(sys.argv[1])):
        subprocess.run([sys.executable, __file__, "child", seconds], check=True)
"""


def selfopt(*args: str, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfopt_trace", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def overhead(rounds: int, seconds: float) -> None:
    import os

    variants = {"traced": None, "100 Hz": ("100", False), "100 Hz nonblocking": ("100", True),
                "1000 Hz": ("1000", False), "1000 Hz nonblocking": ("1000", True)}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    stopped: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "w.py").write_text(CPU_WORKLOAD)
        for _ in range(rounds):
            for name, variant in variants.items():
                env = dict(os.environ, SELFOPT_TRACE_HOME=str(work / "home"))
                options = []
                if variant is not None:
                    options = ["--profile", "--rate", variant[0]]
                    env["SELFOPT_TRACE_PROFILE_NONBLOCKING"] = "1" if variant[1] else "0"
                done = selfopt("run", "-q", "--no-load", *options, "--", sys.executable, "w.py", str(seconds),
                               env=env, cwd=work)
                assert done.returncode == 0, done.stderr
                wall, on_cpu, queued, calls = map(int, done.stdout.split())
                cpu[name].append(on_cpu / calls)
                stopped[name].append(max(wall - on_cpu - queued, 0) / wall)
    base = statistics.median(cpu["traced"])
    print(f"{'variant':22} {'CPU a call, vs traced':>26} {'stopped, % of wall':>19} {'slowdown on an idle machine':>28}"
          f"   ({rounds} rounds of {seconds} s of work)")
    for name in variants:
        cpu_ratio = statistics.median(cpu[name]) / base
        stop = statistics.median(stopped[name])
        print(f"{name:22} {cpu_ratio:26.3f} {100 * stop:19.2f} {cpu_ratio / (1 - stop):28.3f}")


def coverage(children: int, rounds: int) -> None:
    import os

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "c.py").write_text(CHILDREN_WORKLOAD)
        print(f"{'spawn':6} {'children sampled, of ' + str(children) + ' living 50 ms / 200 ms / 1 s':>48} "
              f"{'median samples of a 50 ms / 200 ms child':>42}")
        for spawn in ("each", "tree"):
            sampled: dict[str, list[int]] = {"0.05": [], "0.2": [], "1.0": []}
            per_child: dict[str, list[float]] = {"0.05": [], "0.2": []}
            for number in range(rounds):
                env = dict(os.environ, SELFOPT_TRACE_HOME=str(work / "home"), SELFOPT_TRACE_PROFILE_SPAWN=spawn)
                run_id = f"{spawn}-{number}"
                done = selfopt("run", "-q", "--profile", "--run-id", run_id, "--", sys.executable, "c.py",
                               str(children), env=env, cwd=work)
                assert done.returncode == 0, done.stderr
                rows = json.loads(selfopt("sql", "-f", "json", f"""
                    SELECT s.attributes->'process.command_args'->>3 AS seconds, s.pid,
                           coalesce(sum(p.weight) FILTER (WHERE NOT p.idle), 0) AS samples
                    FROM spans AS s LEFT JOIN samples AS p ON p.run_id = s.run_id AND p.pid = s.pid
                    WHERE s.run_id = '{run_id}' AND s.name = 'process' AND s.attributes->'process.command_args'->>2 = 'child'
                    GROUP BY ALL""", env=env, cwd=work).stdout)
                for seconds, counts in sampled.items():
                    counts.append(sum(1 for row in rows if row["seconds"] == seconds and row["samples"] > 0))
                for seconds, values in per_child.items():
                    values += [row["samples"] for row in rows if row["seconds"] == seconds]
            print(f"{spawn:6} {' / '.join(str(statistics.median(v)) for v in sampled.values()):>48} "
                  f"{' / '.join(f'{statistics.median(v):.1f}' for v in per_child.values()):>42}")


def synthetic_run(run_dir: Path, samples: int, seed: int = 1, random_stacks: bool = False) -> str:
    """A run directory: one process with 8 threads of nested spans, and SAMPLES sample lines.

    As in a real program, what runs depends on where it is: a sample's stack is one of the 10 of its
    moment (the run cut in 512 stretches, about an innermost span each); `random_stacks`: any of the
    5,000, the worst case for hot_frames without parameters (every stack under every span name)."""
    rng = random.Random(seed)
    start = 1_700_000_000_000_000_000
    pid, trace = 4242, "ab" * 16
    duration = 600_000_000_000  # 10 minutes
    lines = [spanfile.header_line(start, "bench", pid, {"service.name": "bench", "process.pid": pid})]
    ids = iter(f"{n:016x}" for n in range(1, 10**9))
    root = next(ids)
    lines.append(spanfile.complete_line(root, "", trace, "process", "INTERNAL", "process", start, start + duration,
                                        "UNSET", spanfile.encode({"process.pid": pid})))
    names = [f"phase{n}" for n in range(40)]
    for thread in range(8):
        tid = pid if thread == 0 else pid + thread
        parent = root
        if thread:
            parent = next(ids)
            lines.append(spanfile.complete_line(parent, root, trace, "thread", "INTERNAL", "thread", start, start + duration,
                                                "UNSET", spanfile.encode({"thread.id": tid, "thread.name": f"t{thread}"})))

        def nest(parent_id: str, begin: int, end: int, depth: int) -> None:
            pieces = 8 if depth < 3 else 0
            step = (end - begin) // max(pieces, 1)
            for piece in range(pieces):
                span = next(ids)
                a, b = begin + piece * step + step // 10, begin + (piece + 1) * step - step // 10
                lines.append(spanfile.complete_line(span, parent_id, trace, rng.choice(names), "INTERNAL", "phase",
                                                    a, b, "UNSET", "{}"))
                nest(span, a, b, depth + 1)

        nest(parent, start, start + duration, 0)
    (run_dir / "spans").mkdir(parents=True)
    (run_dir / "spans" / f"{pid}-00000000.spans").write_text("".join(lines))
    # 2,000 functions in 300 files (a function lives in one file), called from any line of it
    functions = [(f"f{n}", f"/src/pkg{n % 300}/mod{n % 13}.py") for n in range(2000)]
    stacks = []
    out = [fmt.header()]
    for _ in range(5000):
        frames = tuple(rng.choice(functions) + (rng.randrange(1, 900),) for _ in range(rng.randrange(20, 41)))
        sid = fmt.stack_id(frames)
        stacks.append(sid)
        out.append(fmt.line(fmt.STACK, stack_id=sid, name=fmt.stack_json(frames)))
    out.append(fmt.line(fmt.PROFILER, start, pid, duration_ns=1_000_000, weight="1000", name="4242-1.json",
                        message='{"rate_hz":1000,"idle":false}'))
    step = duration // samples
    for n in range(samples):
        thread = n % 8
        stretch = n * step * 512 // duration
        stack = rng.choice(stacks) if random_stacks else stacks[(stretch * 10 + rng.randrange(10)) % len(stacks)]
        out.append(fmt.line(fmt.SAMPLE, start + n * step, pid, pid if thread == 0 else pid + thread, step * 8,
                            step * 8 * 1000 / 1e9, stack, "", f"t{thread}"))
    (run_dir / "profile").mkdir()
    (run_dir / fmt.SAMPLES_PATH).write_text("".join(out))
    return names[0]


def store(samples: int, repeat: int, random_stacks: bool) -> None:
    from selfopt_trace.store import Store

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "bench-run"
        name = synthetic_run(run_dir, samples, random_stacks=random_stacks)
        size = (run_dir / fmt.SAMPLES_PATH).stat().st_size
        loads, all_spans, one_name = [], [], []
        for number in range(repeat):
            with Store(Path(scratch) / f"db{number}.duckdb") as db:
                t0 = time.perf_counter()
                loaded = db.load_run(run_dir)
                loads.append(time.perf_counter() - t0)
                assert loaded.samples == samples, loaded
                t0 = time.perf_counter()
                db.query("hot_frames", {"run_id": "bench-run"})
                all_spans.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                db.query("hot_frames", {"run_id": "bench-run", "span": name})
                one_name.append(time.perf_counter() - t0)
        print(f"{samples} samples ({size / 1e6:.0f} MB samples.tsv, {loaded.spans} spans"
              f"{', random stacks' if random_stacks else ''}): "
              f"load {statistics.median(loads):.2f} s, hot_frames {statistics.median(all_spans):.2f} s, "
              f"hot_frames -p span={name} {statistics.median(one_name):.2f} s (medians of {repeat})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    over = sub.add_parser("overhead")
    over.add_argument("--rounds", type=int, default=5)
    over.add_argument("--seconds", type=float, default=2.0)
    cover = sub.add_parser("coverage")
    cover.add_argument("--children", type=int, default=10)
    cover.add_argument("--rounds", type=int, default=3)
    big = sub.add_parser("store")
    big.add_argument("--samples", type=int, default=1_000_000)
    big.add_argument("--repeat", type=int, default=3)
    big.add_argument("--random-stacks", action="store_true", help="every stack under every span name: the worst case")
    args = parser.parse_args()
    if args.what == "overhead":
        overhead(args.rounds, args.seconds)
    elif args.what == "coverage":
        coverage(args.children, args.rounds)
    else:
        store(args.samples, args.repeat, args.random_stacks)


if __name__ == "__main__":
    main()
