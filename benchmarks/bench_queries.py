"""Speed of the named queries, the report and compare on a large synthetic run.

Generates a realistic run in the span file format (docs/span-format.md): a main process with its
start-up, nested imports, phases, serialization and parsing, HTTP calls answered by a server
process, and child processes (half started one at a time, half four at a time from a thread
pool whose tasks wait on them while the main thread waits on the tasks), each with its start-up, a
few hundred nested imports and its own work, an idle helper process alive for the whole run, and
CPU samples of every process every 20 ms (as `run`'s sampler stores them). It is loaded through
`Store.load_run`, like a real run. Then it times, as the median of a few repetitions:

- every shipped query on the 1M-span run (target <= 1 s each),
- the HTML report of a 100k-span run (target <= 5 s),
- compare of two runs (target <= 1 s),

each beside two baselines measured in the same run: a plain `SELECT count(*)` of the run's spans
(DuckDB answers it almost from metadata) and the least any tree query must do, joining every span
to its parent (`count(*)` of spans JOIN spans ON parent). Ratios are against the join.

`--baseline DIR --query NAME` then times that query on the 1M-span run in processes of this tree and
of another tree's selfopt_trace (a checkout of an older commit: `git archive COMMIT selfopt_trace
queries | tar -x -C DIR`; its queries and its store's macros), alternating, `--rounds` each.

    python benchmarks/bench_queries.py [--spans 1000000] [--report-spans 100000] [--repeat 3]
                                       [--baseline DIR --query breakdown [--rounds 3]] [--keep]

The store and the runs (~400 MB) go when it ends, unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfopt_trace import compare, queries, report  # noqa: E402
from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile  # noqa: E402
from selfopt_trace.store import Store  # noqa: E402

MS = 1_000_000
MODULES = [f"pkg{i}.mod{j}" for i in range(40) for j in range(40)]
ENDPOINTS = [("POST", "/ai/optimize"), ("POST", "/ai/testgen"), ("POST", "/ai/refinement"),
             ("GET", "/cfapi/cli-get-user"), ("POST", "/ai/rank")]


class ProcessFile:
    """One traced process's span file, written the way the agent writes it."""

    def __init__(self, run_dir: Path, run_id: str, pid: int, trace_id: str, rng: random.Random):
        self.pid, self.trace_id, self.rng = pid, trace_id, rng
        self.lines = [spanfile.header_line(0, run_id, pid, {"service.name": "synthetic", "process.pid": pid})]
        self.path = run_dir / "spans" / f"{pid}-{rng.getrandbits(32):08x}.spans"
        self.count = 0

    def span_id(self) -> str:
        return f"{self.rng.getrandbits(64) or 1:016x}"

    def complete(self, name: str, category: str, start: int, end: int, parent: str, attributes: dict | None = None,
                 kind: str = "INTERNAL", span_id: str = "", trace_id: str = "") -> str:
        span_id = span_id or self.span_id()
        self.lines.append(spanfile.complete_line(span_id, parent, trace_id or self.trace_id, name, kind, category, start, end,
                                                 "UNSET", spanfile.encode(attributes)))
        self.count += 1
        return span_id

    def opened(self, name: str, category: str, start: int, parent: str, attributes: dict, kind: str = "INTERNAL") -> str:
        span_id = self.span_id()
        self.lines.append(spanfile.start_line(span_id, parent, self.trace_id, name, kind, category, start,
                                              spanfile.encode(attributes)))
        self.count += 1
        return span_id

    def closed(self, span_id: str, end: int, attributes: dict | None = None) -> None:
        self.lines.append(spanfile.end_line(span_id, end, "UNSET", spanfile.encode(attributes)))

    def write(self) -> None:
        self.path.write_text("".join(self.lines), encoding="utf-8")


def imports(proc: ProcessFile, start: int, parent: str, budget: int, depth: int = 0) -> int:
    """Nested import spans from `start`, about `budget` of them; returns the end time."""
    t = start
    rng = proc.rng
    while budget > 0:
        module = rng.choice(MODULES)
        span_id = proc.span_id()
        children = 0 if depth >= 5 else min(budget - 1, rng.choice((0, 0, 1, 2, 4)))
        child_start = t + rng.randint(20_000, 200_000)
        end = imports(proc, child_start, span_id, children, depth + 1) if children else child_start
        end += rng.randint(200_000, 2 * MS)
        proc.complete("import " + module, "import", t, end, parent, {
            "python.import.module": module, "python.import.cumulative_ns": end - t,
            "python.import.self_ns": end - child_start}, span_id=span_id)
        budget -= children + 1
        t = end + rng.randint(5_000, 50_000)
    return t


def work(proc: ProcessFile, start: int, parent: str, spans: int) -> int:
    """Serialization, parsing, sleeps and plain spans one after another."""
    t = start
    rng = proc.rng
    for _ in range(spans):
        kind = rng.random()
        end = t + rng.randint(100_000, 3 * MS)
        if kind < 0.4:
            operation = rng.choice(("dumps", "loads"))
            proc.complete(f"json.{operation}", "serialization", t, end, parent, {
                "selfopt_trace.library": "json", "selfopt_trace.operation": operation,
                "code.filepath": f"/src/app/mod{rng.randint(0, 30)}.py", "code.lineno": rng.randint(1, 400),
                "code.function": "call", "selfopt_trace.python.type": "dict",
                "selfopt_trace.bytes_out" if operation == "dumps" else "selfopt_trace.bytes_in": rng.randint(100, 100_000)})
        elif kind < 0.65:
            proc.complete("ast.parse", "parse", t, end, parent, {
                "selfopt_trace.library": "ast", "selfopt_trace.operation": "parse",
                "code.filepath": "/src/app/discover.py", "code.lineno": 12, "code.function": "scan",
                "selfopt_trace.bytes_in": rng.randint(1000, 50_000)})
        elif kind < 0.7:  # a recorded time.sleep (off-CPU evidence for the breakdown)
            proc.complete("time.sleep", "sleep", t, end, parent)
        else:
            proc.complete("compute", "other", t, end, parent, {"selfopt_trace.small.json.dumps.count": 3,
                                                                "selfopt_trace.small.json.dumps.duration_ns": 90_000})
        t = end + rng.randint(10_000, 300_000)
    return t


def child(run_dir: Path, run_id: str, pid: int, trace_id: str, parent_span: str, start: int, rng: random.Random,
          spans: int) -> tuple[int, ProcessFile]:
    proc = ProcessFile(run_dir, run_id, pid, trace_id, rng)
    command = rng.choice(("-m pytest", "-m pytest", "discover.py", "-m coverage"))
    root = proc.opened("process", "process", start, parent_span, {
        "process.pid": pid, "process.command": command, "process.command_args": ["python", *command.split()]})
    startup_end = start + rng.randint(15 * MS, 30 * MS)
    proc.complete("interpreter.startup", "startup", start, startup_end, root)
    t = imports(proc, startup_end + 200_000, root, int(spans * 0.8))
    t = work(proc, t, root, spans - int(spans * 0.8) - 2)
    proc.closed(root, t, {"process.exit.code": 0, "selfopt_trace.overhead_ns": rng.randint(MS, 3 * MS)})
    proc.write()
    return t, proc


def generate_run(run_dir: Path, run_id: str, spans: int, seed: int = 1) -> int:
    """Write a synthetic run of about `spans` spans into `run_dir`; returns how many it wrote."""
    rng = random.Random(seed)
    (run_dir / "spans").mkdir(parents=True, exist_ok=True)
    trace_id = f"{rng.getrandbits(128):032x}"
    main = ProcessFile(run_dir, run_id, 1000, trace_id, rng)
    server = ProcessFile(run_dir, run_id, 999, f"{rng.getrandbits(128):032x}", rng)
    t0 = 1_700_000_000 * 1_000_000_000
    server_root = server.opened("process", "process", t0 - 500 * MS, "", {"process.pid": 999, "process.command": "server.py"})
    root = main.opened("process", "process", t0, "", {"process.pid": 1000, "process.command": "-m codeflash.main",
                                                      "process.command_args": ["python", "-m", "codeflash.main"]})
    main.complete("interpreter.startup", "startup", t0, t0 + 25 * MS, root)
    t = imports(main, t0 + 26 * MS, root, 2000)
    helper_start = t + MS  # an idle helper (a language server, a resource tracker): nobody waits on it
    helper_span = main.opened("subprocess", "subprocess", t, root, {
        "process.command_args": ["python", "-m", "jedi"], "process.executable.name": "python"}, kind="CLIENT")
    helper = ProcessFile(run_dir, run_id, 998, trace_id, rng)
    helper.root = helper.opened("process", "process", helper_start, helper_span, {"process.pid": 998})
    cpu: list[tuple[int, int, int]] = []  # (pid, start, end) of every process, for its CPU samples
    per_child = 500
    children = max(1, (spans - 2500) // (per_child + 1))
    total = 0
    pid = 2000
    index = 0
    while index < children:
        phase = main.opened("optimize_function", "phase", t, root, {"codeflash.function": f"f{index}"})
        # an HTTP call (client in main, server span in the server process), its payload serialized first
        method, route = rng.choice(ENDPOINTS)
        t = work(main, t + 100_000, phase, 3)
        client_start = t
        client = main.span_id()
        server_start = client_start + rng.randint(MS, 3 * MS)
        server_end = server_start + rng.randint(20 * MS, 200 * MS)
        server.complete(f"{method} {route}", "http", server_start, server_end, client, {
            "http.request.method": method, "http.route": route, "http.response.status_code": 200}, kind="SERVER", trace_id=trace_id)
        t = server_end + rng.randint(MS, 3 * MS)
        main.complete(f"{method}", "http", client_start, t, phase, {
            "http.request.method": method, "url.full": f"http://127.0.0.1:8000{route}/{rng.randint(1, 10**6)}",
            "server.address": "127.0.0.1", "server.port": 8000, "http.response.status_code": 200,
            "http.request.body.size": rng.randint(1000, 50_000), "http.response.body.size": rng.randint(100, 20_000),
            "selfopt_trace.http.connection.reused": rng.random() < 0.3},
            kind="CLIENT", span_id=client)
        # children: one at a time, or four at once from a thread pool
        batch = 1 if index % 2 else min(4, children - index)
        ends, tasks = [], []
        for k in range(batch):
            spawn_start = t + rng.randint(0, 2 * MS)
            owner = phase
            if batch > 1:  # a pool task: spawns the child and waits on it, in a worker thread
                owner = main.opened("task", "thread", spawn_start - 50_000, phase,
                                    {"thread.id": 5000 + k, "code.function": "run_tests"})
                tasks.append(owner)
            sub = main.opened("subprocess", "subprocess", spawn_start, owner, {
                "process.command_args": ["python", "-m", "pytest"], "process.executable.name": "python"}, kind="CLIENT")
            child_end, proc = child(run_dir, run_id, pid, trace_id, sub, spawn_start + 100_000, rng, per_child)
            reaped = child_end + rng.randint(MS, 5 * MS)
            main.closed(sub, reaped, {"process.pid": pid, "process.exit.code": 0, "selfopt_trace.spawn_ns": 900_000})
            main.complete("Popen.wait", "wait", spawn_start + 900_000, reaped, owner, {"selfopt_trace.wait.on": [sub]})
            if batch > 1:
                main.closed(owner, reaped + 20_000)
            cpu.append((pid, spawn_start + 100_000, child_end))
            total += proc.count
            ends.append(reaped + 20_000)
            pid += 1
        if tasks:
            main.complete("futures.wait", "wait", t, max(ends), phase, {"selfopt_trace.wait.on": tasks})
        index += batch
        t = max(ends) + rng.randint(100_000, MS)
        main.closed(phase, t)
    main.closed(root, t + 5 * MS, {"process.exit.code": 0, "selfopt_trace.overhead_ns": 2 * MS})
    main.closed(helper_span, t + 4 * MS, {"process.pid": 998, "process.exit.code": 0, "selfopt_trace.spawn_ns": 900_000})
    helper.closed(helper.root, t + 3 * MS, {"process.exit.code": 0})
    helper.write()
    cpu += [(1000, t0, t + 5 * MS), (998, helper_start, t + 3 * MS)]
    write_cpu_samples(run_dir, cpu, rng)
    server.closed(server_root, t + 50 * MS, {"process.exit.code": 0})
    main.write()
    server.write()
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": run_id, "command": ["python", "-m", "codeflash.main"], "cwd": "/src", "start_ns": t0,
        "end_ns": t + 6 * MS, "exit_code": 0, "pid": 1000, "service": "synthetic"}), encoding="utf-8")
    return total + main.count + server.count


def write_cpu_samples(run_dir: Path, processes: list[tuple[int, int, int]], rng: random.Random) -> None:
    """CPU samples every 20 ms of each process's main thread, in the sampler's file format."""
    from selfopt_trace.watchers import cpu_sampler

    path = run_dir / cpu_sampler.SAMPLES_PATH
    path.parent.mkdir(exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.write(cpu_sampler.HEADER)
        for pid, start, end in processes:
            used = 0
            for t in range(start, end, 20 * MS):
                used += rng.choice((0, 5 * MS, 20 * MS, 20 * MS))
                out.write(f"{cpu_sampler.CPU}\t{t}\t{pid}\t{pid}\t{start}\t{used}\t0\t0\t\t\t.\n")


JOIN_SQL = """SELECT count(*) FROM spans AS c JOIN spans AS p ON p.span_id = c.parent_span_id
               WHERE c.run_id = $run_id AND p.run_id = $run_id"""


def median_time(function, repeat: int) -> float:
    function()  # warm: the first run reads the database file into memory
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        function()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# Run in a process of the tree under test (its directory first on sys.path): the median time of a
# query on the 1M-span run.
TIME_QUERY = """
import statistics, sys, time
from pathlib import Path
from selfopt_trace import queries
from selfopt_trace.store import Store
db, name, repeat = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with Store(db, read_only=True) as store:
    query = queries.get_query(name)
    queries.run_query(store, query, {"run_id": "big"})
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        queries.run_query(store, query, {"run_id": "big"})
        times.append(time.perf_counter() - t0)
print(statistics.median(times))
"""


def compare_trees(db: Path, name: str, baseline: Path, rounds: int, repeat: int) -> None:
    """Query `name` timed in processes of this tree and of `baseline`'s, alternating."""
    here = str(Path(__file__).resolve().parent.parent)
    trees = {"this tree": here, f"{baseline}": str(baseline.resolve())}
    medians: dict[str, list[float]] = {tree: [] for tree in trees}
    for round_ in range(rounds):
        for tree, path in (trees.items() if round_ % 2 == 0 else reversed(trees.items())):
            done = subprocess.run([sys.executable, "-c", TIME_QUERY, str(db), name, str(repeat)],
                                  env={**os.environ, "PYTHONPATH": path}, cwd=path, check=True,
                                  capture_output=True, text=True)
            medians[tree].append(float(done.stdout))
    print(f"\nquery {name} [1M], medians of {repeat} in each process, {rounds} processes a tree:")
    for tree, values in medians.items():
        print(f"  {tree:30} {statistics.median(values):7.3f} s   ({', '.join(f'{v:.3f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--report-spans", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another tree, its --query timed beside this one's")
    parser.add_argument("--query", default="breakdown")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the store and the runs (~400 MB) for more timing")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="bench-queries-"))
    try:
        failed = measure(work_dir, args)
    finally:
        if args.keep:
            print(f"\nkept: {work_dir / 'bench.duckdb'} (runs big, report, report-b)")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    sys.exit(1 if failed else 0)


def measure(work_dir: Path, args: argparse.Namespace) -> bool:
    """The runs generated and loaded under `work_dir`, then timed; whether a target was missed."""
    with Store(work_dir / "bench.duckdb") as store:
        for run_id, spans, seed in (("big", args.spans, 1), ("report", args.report_spans, 2),
                                    ("report-b", args.report_spans, 3)):
            t0 = time.perf_counter()
            written = generate_run(work_dir / run_id, run_id, spans, seed)
            t1 = time.perf_counter()
            loaded = store.load_run(work_dir / run_id)
            if loaded.warnings or loaded.skipped_lines or not loaded.cpu_samples:  # what a real run has, all of it
                raise SystemExit(f"run {run_id} did not load whole: {loaded}")
            print(f"run {run_id}: {written} spans generated in {t1 - t0:.1f} s, loaded in {time.perf_counter() - t1:.1f} s "
                  f"({loaded.cpu_samples} CPU sample rows)")
        print()
        results = []
        for run_id in ("big", "report"):
            for label, sql in (("count(*)", "SELECT count(*) FROM spans WHERE run_id = $run_id"),
                               ("parent join", JOIN_SQL)):
                baseline = median_time(lambda: store.sql(sql, {"run_id": run_id}), args.repeat)
                results.append((f"baseline {label} [{run_id}]", baseline, None))
        base_big = results[1][1]  # the parent join on the 1M-span run
        for name, query in queries.load_queries().items():
            seconds = median_time(lambda: queries.run_query(store, query, {"run_id": "big"}), args.repeat)
            results.append((f"query {name} [1M]", seconds, 1.0))
        seconds = median_time(lambda: report.render_report(store, "report"), args.repeat)
        results.append(("report [100k]", seconds, 5.0))
        seconds = median_time(lambda: compare.compare(store, ["report"], ["report-b"]), args.repeat)
        results.append(("compare [100k vs 100k]", seconds, 1.0))
        print(f"{'what':40} {'median s':>9} {'x join':>8} {'target s':>9}")
        failed = False
        for what, seconds, target in results:
            ratio = seconds / base_big if base_big else float("nan")
            verdict = "" if target is None else ("ok" if seconds <= target else "SLOW")
            failed |= verdict == "SLOW"
            print(f"{what:40} {seconds:9.3f} {ratio:8.1f} {target or '':>9} {verdict}")
    if args.baseline:  # the store closed: each tree's process opens it
        compare_trees(work_dir / "bench.duckdb", args.query, args.baseline, args.rounds, max(args.repeat, 5))
    return failed


if __name__ == "__main__":
    main()
