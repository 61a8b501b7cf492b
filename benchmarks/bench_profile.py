"""run --profile: what py-spy costs the traced program, which way of starting it misses fewer short
children, and how fast a million samples load and answer hot_frames.

    python benchmarks/bench_profile.py overhead [--rounds 5] [--seconds 2]
    python benchmarks/bench_profile.py coverage [--children 10] [--rounds 3]
    python benchmarks/bench_profile.py store [--samples 1000000] [--repeat 3] [--shape codeflash|moment|random]
                                             [--spans 100000] [--slices 69000] [--stacks 60000]
    python benchmarks/bench_profile.py store ... --keep DIR; python benchmarks/bench_profile.py load DIR/bench-run --span NAME
    python benchmarks/bench_profile.py real [--rate 100]

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

store: a synthetic run loaded with Store.load_run, then hot_frames (every span name, then -p
span=NAME), the report's hottest frames and flame's stacks (every sample, then --span NAME); medians of REPEAT, wall and CPU seconds (this process's, every thread: steadier than wall
time on a shared machine), beside two baselines measured in the same run: DuckDB reading
samples.tsv (the least a load does) and a GROUP BY stack_id of the loaded samples (the least
hot_frames does). Shapes:
  codeflash  a codeflash-like tree (benchmarks/bench_queries.py: a main process, a server, pytest
             children with their imports, a thread pool, CPU samples; SPANS spans) sampled over every
             thread's life: SAMPLES samples in SLICES slices, from STACKS distinct stacks as deep as
             a real codeflash run's (`real`): 31 frames of pytest and pluggy (pluggy's functions
             repeated at each hook level) or 4 of codeflash, then a walk down a call graph of 8,000
             functions in 700 files of site-packages, median 45 frames, mean 53, up to 249, a call
             made from one line of its caller, the running line varying. The defaults are 1 M samples
             as the real run has them (14.4 samples a slice; 0.88 distinct stacks a slice, which in a
             run 65 times as long can only be less): 69,000 slices from 60,000 stacks, of which they
             use 39,923 (each thread goes through the stacks from a place of its own, and threads
             overlap). `--slices 1000000 --stacks 40000` is the stress case of the earlier
             measurements (a slice a sample);
  moment     one process, 8 threads, 4,680 spans in 4 levels, 5,000 stacks of 20-40 frames from 2,000
             functions; a sample's stack is one of the 10 of its moment; SAMPLES slices of a sample;
  random     the same, any stack anywhere: every stack under every span name, the worst case for
             hot_frames without parameters.

store --keep DIR keeps the run in DIR/bench-run, and the same as a samples file of version 1 in
DIR/version-1/bench-run; `load` measures the load of a kept run again: copied beside an older
checkout (the branch's base), this script measures the loader before a change on the same file.

real: a real profiled codeflash run (tests/e2e's: codeflash optimizing the toy bubble sort against
the stand-in, `run --profile --rate RATE`), and the shape of its samples file: slices, samples,
distinct stacks, frames per stack, bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import os
import resource
import shutil
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
    known = fmt.Interned()
    for _ in range(5000):
        frames = tuple(rng.choice(functions) + (rng.randrange(1, 900),) for _ in range(rng.randrange(20, 41)))
        sid = fmt.stack_id(frames)
        stacks.append(sid)
        out += known.stack_lines(sid, frames)
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


# A codeflash-like program's code, as a real profiled codeflash run has it (`real` below;
# docs/benchmarks.md): pytest and pluggy under every test (pluggy's three functions repeated at each
# hook level, as recursion does), the program's own functions calling each other, site-packages paths.
SITE = "/home/user/project/.venv/lib/python3.11/site-packages"
PYTEST_PREFIX = [("<module>", f"{SITE}/pytest/__main__.py"), ("console_main", f"{SITE}/_pytest/config/__init__.py"),
                 ("main", f"{SITE}/_pytest/config/__init__.py")]
for _hook in ("pytest_cmdline_main", "wrap_session", "pytest_runtestloop", "pytest_runtest_protocol",
              "runtestprotocol", "pytest_runtest_call", "pytest_pyfunc_call"):
    PYTEST_PREFIX += [("HookCaller.__call__", f"{SITE}/pluggy/_hooks.py"),
                      ("PluginManager._hookexec", f"{SITE}/pluggy/_manager.py"),
                      ("_multicall", f"{SITE}/pluggy/_callers.py"), (_hook, f"{SITE}/_pytest/main.py")]
CODEFLASH_PREFIX = [("<module>", f"{SITE}/codeflash/main.py"), ("main", f"{SITE}/codeflash/main.py"),
                    ("Optimizer.run", f"{SITE}/codeflash/optimization/optimizer.py"),
                    ("FunctionOptimizer.optimize_function", f"{SITE}/codeflash/optimization/function_optimizer.py")]
MAX_DEPTH = 249  # the deepest stack of the real run


def stack_pool(rng: random.Random, prefix: list[tuple[str, str]], size: int,
               functions: list[tuple[str, str]], callees: list[list[int]]) -> list[tuple[int, tuple]]:
    """`size` distinct stacks under `prefix`: walks down the call graph, as deep as the real run's
    stacks (with the pytest prefix: median 45 frames, mean 53, up to 249); a call is made from one
    line of its caller (stacks share their prefixes), the running frame's line varies."""
    pool: dict[int, tuple] = {}
    while len(pool) < size:
        frames = [(function, file, 10 + 7 * n) for n, (function, file) in enumerate(prefix)]
        at = rng.randrange(len(functions) // 10)  # the code under test: where walks start
        for _ in range(min(int(rng.expovariate(1 / 25)) + 1, MAX_DEPTH - len(prefix) - 1)):
            callee = rng.choice(callees[at])
            frames.append(functions[at] + (1 + (at * 31 + callee) % 400,))
            at = callee
        frames.append(functions[at] + (rng.randrange(1, 400),))
        frames = tuple(frames)
        pool.setdefault(fmt.stack_id(frames), frames)
    return list(pool.items())


def codeflash_run(run_dir: Path, samples: int, slices: int, spans: int, stacks: int, seed: int = 1) -> str:
    """A codeflash-like run (benchmarks/bench_queries.py: a main process, a server, pytest children
    with their imports, a thread pool, CPU samples) with SAMPLES py-spy samples in SLICES slices over
    the life of every thread, from STACKS stacks; returns a span name to choose."""
    from bench_queries import generate_run
    from selfopt_trace.store import Store

    rng = random.Random(seed)
    generate_run(run_dir, run_dir.name, spans, seed)
    with tempfile.TemporaryDirectory() as scratch, Store(Path(scratch) / "spans.duckdb") as db:
        db.load_run(run_dir)
        _, threads = db.sql("""
            SELECT pid, coalesce(TRY_CAST(attributes->>'thread.id' AS INTEGER), pid), start_ns, end_ns FROM spans
            WHERE (name = 'process' AND category = 'process') OR category = 'thread' ORDER BY start_ns""")
    functions = [(f"Class{n % 900}.method_{n}", f"{SITE}/package{n % 60}/module_{n % 700}.py") for n in range(8000)]
    callees = [[rng.randrange(len(functions)) for _ in range(4)] for _ in functions]
    pools = {"main": stack_pool(rng, CODEFLASH_PREFIX, stacks // 4, functions, callees),
             "child": stack_pool(rng, PYTEST_PREFIX, stacks - stacks // 4, functions, callees)}
    lived = sum(end - start for _, _, start, end in threads)
    mean_ns = max(lived // slices, 1)
    rate_hz = 1e9 * samples / slices / mean_ns  # SAMPLES in all
    out = [fmt.header()]
    known = fmt.Interned()  # a stack is written by its first slice, as the profiler writes them
    written = 0
    profiled: set[int] = set()
    for number, (pid, tid, start, end) in enumerate(threads):
        pool = pools["main" if pid == 1000 else "child"]
        share = slices - written if number == len(threads) - 1 else round(slices * (end - start) / lived)
        if pid not in profiled:  # one py-spy per process, its file converted
            profiled.add(pid)
            out.append(fmt.line(fmt.PROFILER, start, pid, duration_ns=1_000_000, weight=f"{rate_hz:.6g}",
                                name=f"{pid}-1.json", message='{"rate_hz":100,"idle":false}'))
            out.append(fmt.line(fmt.CONVERTED, pid=pid, name=f"{pid}-1.json", message="{}"))
        step = (end - start) / max(share, 1)
        first = rng.randrange(len(pool))
        for k in range(share):  # as in the real run, most slices a stack of their own; then the same again
            sid, frames = pool[(first + k) % len(pool)]
            out += known.stack_lines(sid, frames)
            t = start + int(k * step)
            out.append(fmt.line(fmt.SAMPLE, t, pid, tid, int(step), step * rate_hz / 1e9, sid,
                                "", "MainThread" if tid == pid else f"pool-{tid}"))
        written += share
    (run_dir / fmt.PROFILE_DIR).mkdir(exist_ok=True)
    (run_dir / fmt.SAMPLES_PATH).write_text("".join(out))
    return "optimize_function"


def real(rate: int) -> None:
    """A real profiled codeflash run (tests/e2e: codeflash optimizing the toy bubble sort against the
    stand-in), and the shape of its samples file: what the codeflash shape above imitates."""
    from tests.e2e import harness

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        project = harness.copy_toy(scratch / "project")
        env = harness.codeflash_environ(scratch)
        with harness.running_standin(harness.clean_environ(), scratch / "requests.jsonl"):
            done = subprocess.run(harness.selfopt_trace_argv(
                "run", "--run-id", "cf", "--out", str(scratch / "runs"), "--no-load", "-q", "--profile", "--rate",
                str(rate), "--", harness.codeflash_executable(), *harness.CODEFLASH_ARGS),
                cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        run_dir = scratch / "runs" / "cf"
        path = run_dir / fmt.SAMPLES_PATH
        wall = json.loads((run_dir / "run.json").read_text())
        print(f"codeflash run at {rate} Hz: {(wall['end_ns'] - wall['start_ns']) / 1e9:.1f} s, "
              f"load average {os.getloadavg()[0]:.1f}")
        print_shape(path)


def print_shape(path: Path) -> None:
    """Slices, samples, distinct stacks and frames, frames per stack and bytes of a samples file."""
    frames: dict[int, tuple[str, str]] = {}
    stacks: dict[int, list[int]] = {}
    slices = []
    size = {fmt.FRAME: 0, fmt.STACK: 0, fmt.SAMPLE: 0}
    with open(path, encoding="utf-8", errors="surrogateescape") as lines:
        lines.readline()
        for text in lines:
            fields = text.split("\t")
            rec = fields[0]
            size[rec] = size.get(rec, 0) + len(text.encode("utf-8", "surrogateescape"))
            if rec == fmt.FRAME:
                frames[int(fields[6])] = (fields[8], fields[9])
            elif rec == fmt.STACK:
                stacks[int(fields[6])] = [int(n) for n in fields[8].split(fmt.LIST_SEPARATOR)]
            elif rec == fmt.SAMPLE:
                slices.append((int(fields[6]), float(fields[5]), int(fields[2])))
    depths = sorted(len(numbers) for numbers in stacks.values())
    json_bytes = sum(len(json.dumps({"function": frames[n][0], "file": frames[n][1], "line": 100},
                                    separators=(",", ":"))) + 1 for numbers in stacks.values() for n in numbers)
    prefixes = {tuple(numbers[:depth]) for numbers in stacks.values() for depth in range(1, len(numbers) + 1)}
    samples = sum(weight for _, weight, _ in slices)
    print(f"{len(slices)} slices, {samples:.0f} samples ({samples / len(slices):.1f} a slice), "
          f"{len({pid for _, _, pid in slices})} processes")
    print(f"{len(stacks)} distinct stacks ({len(stacks) / len(slices):.2f} a slice) of {depths[0]}-{depths[-1]} frames "
          f"(median {depths[len(depths) // 2]}, mean {statistics.mean(depths):.1f}, 90th percentile "
          f"{depths[len(depths) * 9 // 10]}); {len(prefixes)} distinct prefixes ({len(prefixes) / sum(depths):.2f} "
          f"of the {sum(depths)} frames of the stacks); {len(frames)} distinct frames")
    print(f"samples.tsv {path.stat().st_size / 1e6:.2f} MB: F {size[fmt.FRAME] / 1e6:.2f} MB, "
          f"K {size[fmt.STACK] / 1e6:.2f} MB, S {size[fmt.SAMPLE] / 1e6:.2f} MB; the stacks as JSON (format 1) "
          f"{json_bytes / 1e6:.2f} MB, {json_bytes / sum(depths):.0f} bytes a frame")


def cpu_seconds() -> float:
    """This process's CPU time, every thread (DuckDB's too): steadier than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(function) -> tuple[float, float, Any]:
    """(wall s, CPU s, result) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def store(samples: int, slices: int, repeat: int, shape: str, spans: int, stacks: int, keep: Path | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = (keep or Path(scratch)) / "bench-run"
        if shape == "codeflash":
            name = codeflash_run(run_dir, samples, slices, spans, stacks)
            print_shape(run_dir / fmt.SAMPLES_PATH)
        else:
            name = synthetic_run(run_dir, samples, random_stacks=shape == "random")
        if keep is not None:  # and the same run as a samples file of version 1, for the loader before it
            version_1 = keep / "version-1" / "bench-run"
            shutil.copytree(run_dir, version_1)
            as_version_1(run_dir / fmt.SAMPLES_PATH, version_1 / fmt.SAMPLES_PATH)
            (keep / "span").write_text(name)
        measure(run_dir, name, repeat)


def measure(run_dir: Path, name: str, repeat: int) -> None:
    """Load RUN_DIR and answer hot_frames (every span name, then -p span=NAME), the report's hottest
    frames and flame's stacks (every sample, then --span NAME) REPEAT times: medians."""
    from selfopt_trace.flame.data import fetch_profile
    from selfopt_trace.store import Store

    path = run_dir / fmt.SAMPLES_PATH
    # Baselines, same run: DuckDB reading the file (the least a load does), and one pass over
    # the loaded samples grouped by stack (the least hot_frames does).
    read_sql = ("SELECT count(*), sum(length(column08)) FROM read_csv($file, delim = '\t', quote = '', "
                "header = false, skip = 1, auto_detect = false, columns = {%s}, null_padding = true)"
                % ", ".join(f"'column{n:02}': 'VARCHAR'" for n in range(11)))
    group_sql = "SELECT stack_id, sum(weight), sum(duration_ns::DOUBLE) FROM samples GROUP BY stack_id"
    figures: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        spans_only = Path(scratch) / "spans-only" / run_dir.name  # the same run without its samples
        shutil.copytree(run_dir, spans_only, ignore=shutil.ignore_patterns(fmt.PROFILE_DIR.name))
        for number in range(repeat):
            with Store(Path(scratch) / f"spans{number}.duckdb") as db:
                measured = {"load without samples (baseline)": timed(lambda: db.load_run(spans_only))}
            with Store(Path(scratch) / f"db{number}.duckdb") as db:
                measured["read_csv (baseline)"] = timed(lambda: db.sql(read_sql, {"file": str(path)}))
                measured["load"] = timed(lambda: db.load_run(run_dir))
                loaded = measured["load"][2]
                measured["group by stack (baseline)"] = timed(lambda: db.sql(group_sql))
                measured["hot_frames"] = timed(lambda: db.query("hot_frames", {"run_id": "bench-run"}))
                measured[f"hot_frames -p span={name}"] = timed(
                    lambda: db.query("hot_frames", {"run_id": "bench-run", "span": name}))
                measured["report's hottest frames"] = timed(lambda: report_hot_frames(db))
                measured["flame (every sample)"] = timed(lambda: fetch_profile(db, "bench-run"))
                measured[f"flame --span {name}"] = timed(lambda: fetch_profile(db, "bench-run", span=name))
            for what, (wall, cpu, _) in measured.items():
                figures.setdefault(what, []).append((wall, cpu))
    print(f"{run_dir}: {loaded.samples} slices loaded (the others idle), {path.stat().st_size / 1e6:.0f} MB "
          f"samples.tsv, {loaded.spans} spans; medians of {repeat}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':36} {'wall s':>7} {'CPU s':>7} {'wall / baseline':>16}")
    baseline = None
    for what, values in figures.items():
        wall = statistics.median(value[0] for value in values)
        cpu = statistics.median(value[1] for value in values)
        if what.endswith("(baseline)"):
            baseline = wall
        ratio = "" if baseline is None or what.endswith("(baseline)") else f"{wall / baseline:16.1f}"
        print(f"{what:36} {wall:7.2f} {cpu:7.2f} {ratio}")
    load, spans = (statistics.median(cpu for _, cpu in figures[what]) for what in
                   ("load", "load without samples (baseline)"))
    print(f"the samples' share of the load: {load - spans:.2f} CPU s (medians' difference)")


def as_version_1(source: Path, target: Path) -> None:
    """A samples file of version 2 written as version 1 (a stack's frames as JSON in its K record)."""
    frames: dict[str, tuple[str, str]] = {}
    with open(source, encoding="utf-8") as lines, open(target, "w", encoding="utf-8") as out:
        out.write(lines.readline().replace(f" {fmt.FORMAT_VERSION}\t", " 1\t", 1))
        for text in lines:
            fields = text.split("\t")
            if fields[0] == fmt.FRAME:
                frames[fields[6]] = (fields[8], fields[9])
                continue
            if fields[0] == fmt.STACK:
                fields[8] = json.dumps([{"function": frames[n][0], "file": frames[n][1], "line": int(line_no)}
                                        for n, line_no in zip(fields[8].split(","), fields[9].split(","))],
                                       separators=(",", ":"), ensure_ascii=False)
                fields[9] = ""
                text = "\t".join(fields)
            out.write(text)


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
    measured = sub.add_parser("real")
    measured.add_argument("--rate", type=int, default=100)
    big = sub.add_parser("store")
    big.add_argument("--samples", type=int, default=1_000_000,
                     help="samples (slices for moment and random, where a slice is one sample)")
    big.add_argument("--slices", type=int, default=69_000,
                     help="slices of the codeflash shape (a real run: 14.4 samples a slice at 100 Hz)")
    big.add_argument("--repeat", type=int, default=3)
    big.add_argument("--shape", choices=("codeflash", "moment", "random"), default="codeflash",
                     help="codeflash: a codeflash-like tree; moment, random: one process, 8 threads, stacks of its "
                          "moment or any stack anywhere (the worst case for hot_frames without parameters)")
    big.add_argument("--spans", type=int, default=100_000, help="spans of the codeflash shape")
    big.add_argument("--stacks", type=int, default=60_000, help="distinct stacks of the codeflash shape")
    big.add_argument("--keep", type=Path, help="write the run here (and as version 1 in KEEP/version-1), to `load` it")
    again = sub.add_parser("load", help="measure the load of a run kept by store --keep (with another checkout's code)")
    again.add_argument("run_dir", type=Path)
    again.add_argument("--span", required=True)
    again.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.what == "overhead":
        overhead(args.rounds, args.seconds)
    elif args.what == "coverage":
        coverage(args.children, args.rounds)
    elif args.what == "real":
        real(args.rate)
    elif args.what == "load":
        measure(args.run_dir, args.span, args.repeat)
    else:
        store(args.samples, args.slices, args.repeat, args.shape, args.spans, args.stacks, args.keep)


if __name__ == "__main__":
    main()
