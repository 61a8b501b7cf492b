"""run --profile: what py-spy costs the traced program, which way of starting it misses fewer short
children, and how fast a million samples load and answer hot_frames.

    python benchmarks/bench_profile.py overhead [--rounds 5] [--seconds 2]
    python benchmarks/bench_profile.py coverage [--children 10] [--rounds 3]
    python benchmarks/bench_profile.py store [--samples 1000000] [--repeat 3] [--shape codeflash|moment|random]
                                             [--spans 100000] [--stacks 20000]

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

store: SAMPLES sample lines (slices) in a synthetic run, loaded with Store.load_run, then hot_frames
(every span name, then -p span=NAME); medians of REPEAT, wall and CPU seconds (this process's, every
thread: steadier than wall time on a shared machine), beside two baselines measured in the same run:
DuckDB reading samples.tsv (the least a load does) and a GROUP BY stack_id of the loaded samples
(the least hot_frames does). Shapes:
  codeflash  a codeflash-like tree (benchmarks/bench_queries.py: a main process, a server, pytest
             children with their imports, a thread pool, CPU samples; SPANS spans) sampled over every
             thread's life, from STACKS distinct stacks of 14-91 frames: 31 of pytest and pluggy
             (pluggy's functions repeated at each hook level) or 4 of codeflash, then walks down a call
             graph of 8,000 functions in 700 files, each line varying;
  moment     one process, 8 threads, 4,680 spans in 4 levels, 5,000 stacks of 20-40 frames from 2,000
             functions; a sample's stack is one of the 10 of its moment;
  random     the same, any stack anywhere: every stack under every span name, the worst case for
             hot_frames without parameters.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    out.append(fmt.line(fmt.CONVERTED, pid=pid, name="4242-1.json", message="{}"))
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


# A codeflash-like program's code: pytest and pluggy under every test (pluggy's three functions
# repeated at each hook level, as recursion does), the program's own functions calling each other.
PYTEST_PREFIX = [("<module>", "/venv/lib/python3.11/site-packages/pytest/__main__.py"),
                 ("console_main", "/venv/lib/python3.11/site-packages/_pytest/config/__init__.py"),
                 ("main", "/venv/lib/python3.11/site-packages/_pytest/config/__init__.py")]
for _hook in ("pytest_cmdline_main", "wrap_session", "pytest_runtestloop", "pytest_runtest_protocol",
              "runtestprotocol", "pytest_runtest_call", "pytest_pyfunc_call"):
    PYTEST_PREFIX += [("HookCaller.__call__", "/venv/lib/python3.11/site-packages/pluggy/_hooks.py"),
                      ("PluginManager._hookexec", "/venv/lib/python3.11/site-packages/pluggy/_manager.py"),
                      ("_multicall", "/venv/lib/python3.11/site-packages/pluggy/_callers.py"),
                      (_hook, "/venv/lib/python3.11/site-packages/_pytest/main.py")]
CODEFLASH_PREFIX = [("<module>", "/src/codeflash/main.py"), ("main", "/src/codeflash/main.py"),
                    ("Optimizer.run", "/src/codeflash/optimization/optimizer.py"),
                    ("FunctionOptimizer.optimize_function", "/src/codeflash/optimization/function_optimizer.py")]


def stack_pool(rng: random.Random, prefix: list[tuple[str, str]], size: int,
               functions: list[tuple[str, str]], callees: list[list[int]]) -> list[tuple[int, str]]:
    """`size` distinct stacks under `prefix`: walks of 10-60 calls down the call graph, lines varying."""
    pool: dict[int, str] = {}
    while len(pool) < size:
        frames = [(function, file, rng.randrange(1, 400)) for function, file in prefix]
        at = rng.randrange(len(functions) // 10)  # the code under test: where walks start
        for _ in range(rng.randrange(10, 61)):
            frames.append(functions[at] + (rng.randrange(1, 400),))
            at = rng.choice(callees[at])
        frames = tuple(frames)
        pool.setdefault(fmt.stack_id(frames), fmt.stack_json(frames))
    return list(pool.items())


def codeflash_run(run_dir: Path, samples: int, spans: int, stacks: int, seed: int = 1) -> str:
    """A codeflash-like run (benchmarks/bench_queries.py: a main process, a server, pytest children
    with their imports, a thread pool, CPU samples) with SAMPLES slices of py-spy samples over the
    life of every thread, from STACKS stacks of 14-91 frames; returns a span name to choose."""
    from bench_queries import generate_run
    from selfopt_trace.store import Store

    rng = random.Random(seed)
    generate_run(run_dir, run_dir.name, spans, seed)
    with tempfile.TemporaryDirectory() as scratch, Store(Path(scratch) / "spans.duckdb") as db:
        db.load_run(run_dir)
        _, threads = db.sql("""
            SELECT pid, coalesce(TRY_CAST(attributes->>'thread.id' AS INTEGER), pid), start_ns, end_ns FROM spans
            WHERE (name = 'process' AND category = 'process') OR category = 'thread' ORDER BY start_ns""")
    functions = [(f"mod{n % 700}.fn{n}", f"/src/app/pkg{n % 60}/mod{n % 700}.py") for n in range(8000)]
    callees = [[rng.randrange(len(functions)) for _ in range(4)] for _ in functions]
    pools = {"main": stack_pool(rng, CODEFLASH_PREFIX, stacks // 4, functions, callees),
             "child": stack_pool(rng, PYTEST_PREFIX, stacks - stacks // 4, functions, callees)}
    lived = sum(end - start for _, _, start, end in threads)
    mean_ns = max(lived // samples, 1)
    rate_hz = 1e9 / mean_ns  # about one sample a slice
    out = [fmt.header()]
    out += [fmt.line(fmt.STACK, stack_id=sid, name=text) for pool in pools.values() for sid, text in pool]
    written = 0
    profiled: set[int] = set()
    for number, (pid, tid, start, end) in enumerate(threads):
        pool = pools["main" if pid == 1000 else "child"]
        share = samples - written if number == len(threads) - 1 else round(samples * (end - start) / lived)
        if pid not in profiled:  # one py-spy per process, its file converted
            profiled.add(pid)
            out.append(fmt.line(fmt.PROFILER, start, pid, duration_ns=1_000_000, weight=f"{rate_hz:.6g}",
                                name=f"{pid}-1.json", message='{"rate_hz":100,"idle":false}'))
            out.append(fmt.line(fmt.CONVERTED, pid=pid, name=f"{pid}-1.json", message="{}"))
        step = (end - start) / max(share, 1)
        for k in range(share):  # what runs depends on where the thread is: one of 20 stacks of its stretch
            stretch = k // 50
            sid = pool[(hash((pid, tid, stretch)) % len(pool) + rng.randrange(20)) % len(pool)][0]
            t = start + int(k * step)
            out.append(fmt.line(fmt.SAMPLE, t, pid, tid, int(step), step * rate_hz / 1e9, sid,
                                fmt.LAST_FLAG if k == share - 1 else "", "MainThread" if tid == pid else f"pool-{tid}"))
        written += share
    (run_dir / fmt.PROFILE_DIR).mkdir(exist_ok=True)
    (run_dir / fmt.SAMPLES_PATH).write_text("".join(out))
    return "optimize_function"


def cpu_seconds() -> float:
    """This process's CPU time, every thread (DuckDB's too): steadier than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(function) -> tuple[float, float, Any]:
    """(wall s, CPU s, result) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def store(samples: int, repeat: int, shape: str, spans: int, stacks: int) -> None:
    from selfopt_trace.store import Store

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "bench-run"
        if shape == "codeflash":
            name = codeflash_run(run_dir, samples, spans, stacks)
        else:
            name = synthetic_run(run_dir, samples, random_stacks=shape == "random")
        path = run_dir / fmt.SAMPLES_PATH
        # Baselines, same run: DuckDB reading the file (the least a load does), and one pass over
        # the loaded samples grouped by stack (the least hot_frames does).
        read_sql = ("SELECT count(*), sum(length(column08)) FROM read_csv($file, delim = '\t', quote = '', "
                    "header = false, skip = 1, auto_detect = false, columns = {%s}, null_padding = true)"
                    % ", ".join(f"'column{n:02}': 'VARCHAR'" for n in range(11)))
        group_sql = "SELECT stack_id, sum(weight), sum(duration_ns::DOUBLE) FROM samples GROUP BY stack_id"
        figures: dict[str, list[tuple[float, float]]] = {}
        for number in range(repeat):
            with Store(Path(scratch) / f"db{number}.duckdb") as db:
                measured = {"read_csv (baseline)": timed(lambda: db.sql(read_sql, {"file": str(path)}))}
                measured["load"] = timed(lambda: db.load_run(run_dir))
                loaded = measured["load"][2]
                measured["group by stack (baseline)"] = timed(lambda: db.sql(group_sql))
                measured["hot_frames"] = timed(lambda: db.query("hot_frames", {"run_id": "bench-run"}))
                measured[f"hot_frames -p span={name}"] = timed(
                    lambda: db.query("hot_frames", {"run_id": "bench-run", "span": name}))
                measured["report's hottest frames"] = timed(lambda: report_hot_frames(db))
            for what, (wall, cpu, _) in measured.items():
                figures.setdefault(what, []).append((wall, cpu))
        print(f"{shape}: {loaded.samples} samples loaded of {samples} (the others idle), "
              f"{path.stat().st_size / 1e6:.0f} MB samples.tsv, {loaded.spans} spans; medians of {repeat}")
        print(f"{'':32} {'wall s':>7} {'CPU s':>7} {'wall / baseline':>16}")
        baseline = None
        for what, values in figures.items():
            wall = statistics.median(value[0] for value in values)
            cpu = statistics.median(value[1] for value in values)
            if what.endswith("(baseline)"):
                baseline = wall
            ratio = "" if baseline is None or what.endswith("(baseline)") else f"{wall / baseline:16.1f}"
            print(f"{what:32} {wall:7.2f} {cpu:7.2f} {ratio}")


def report_hot_frames(db) -> dict:
    """The HTML report's hottest frames of the spans it draws (its longest: report.data's limit)."""
    from selfopt_trace.report import data

    _, rows = db.sql("SELECT span_id FROM spans WHERE run_id = 'bench-run' ORDER BY duration_ns DESC LIMIT $limit",
                     {"limit": data.SPAN_LIMIT})
    return data._hot_frames(db, "bench-run", [row[0] for row in rows])


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
    big.add_argument("--shape", choices=("codeflash", "moment", "random"), default="codeflash",
                     help="codeflash: a codeflash-like tree; moment, random: one process, 8 threads, stacks of its "
                          "moment or any stack anywhere (the worst case for hot_frames without parameters)")
    big.add_argument("--spans", type=int, default=100_000, help="spans of the codeflash shape")
    big.add_argument("--stacks", type=int, default=20_000, help="distinct stacks of the codeflash shape")
    args = parser.parse_args()
    if args.what == "overhead":
        overhead(args.rounds, args.seconds)
    elif args.what == "coverage":
        coverage(args.children, args.rounds)
    else:
        store(args.samples, args.repeat, args.shape, args.spans, args.stacks)


if __name__ == "__main__":
    main()
