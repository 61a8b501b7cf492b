"""What the OpenTelemetry bridge (the agent's hooks/otel_.py) adds to each OTel span a program makes.

The same program, untraced and traced (the agent on, the bridge recording every OTel span in the
span file), alternating round by round in this one run: it makes --spans spans in a loop, each
`with tracer.start_as_current_span("work", attributes={...}) as span: span.set_attribute(...)`
under one outer span (the common use: a span current while a block runs, two attributes), and
times the loop with process_time. Two set-ups:

- `sdk`: the program configured its own SDK TracerProvider with a BatchSpanProcessor and an exporter
  that drops what it gets (the SDK's whole cost of a span, no I/O);
- `api`: the API only, no provider: untraced, the API's no-op spans; traced, the bridge records them;
- `simple` (with `--setups`): the SDK with a SimpleSpanProcessor instead (no worker thread: its
  instruction counts move least from run to run).

It prints, per set-up, the medians of the untraced and traced loops in microseconds per span, the
difference (the bridge's cost a span, the budget: 2 us), the minor page faults a span in the loop
(kernel time: callgrind counts none of it), and checks the traced runs recorded every span. On this shared 2-core VM the times move 20-50 % from minute to minute; `--instructions` also
counts instructions with valgrind (callgrind), which the machine's load cannot move: each program
run for N and 3N spans, the difference over 2N spans, untraced and traced, in all the process's
threads and in its main thread alone (the program's own: the agent's flusher thread formats
what the program's spans left it). The agent's flusher
wakes every 100 ms, and under callgrind (~50x slower) each wake-up's fixed cost lands on fewer
spans, more so on a slower minute: `--steady` counts 500 and 2,500 spans with those wake-ups off
(a copy of the bootstrap with tracer.FLUSH_INTERVAL_NS raised: flushes come from the record count
and the exit) and PYTHONHASHSEED=0: counts of the same code then differ by ~1,000-2,000
instructions a span. `--rounds 0`: the counts only.

    python benchmarks/bench_otel_bridge.py [--spans 50000] [--rounds 7] [--instructions [--steady]]
                                           [--setups sdk,api] [--bootstrap DIR] [--baseline DIR]

`--load-spans N` measures instead what the loader pays for the SDK spans' M records (span-format.md):
N spans of the benchmark's shape in one span file, written as M records of 1,000 spans and as the X
records they stand for, each loaded by `Store.load_run` `--rounds` times, alternating.

`--bootstrap` traces with another bootstrap directory (another checkout's selfopt_trace/bootstrap);
`--baseline DIR` traces with that one too, in the same run (the code before a change: its counts
beside the code's, its rounds alternating with the code's and the untraced ones). Give both as
copies at paths of the same length (`git archive REV selfopt_trace/bootstrap | tar -x -C /tmp/x/old`,
and `.../new`): the same code traced from a worktree's longer path took 0.086 page faults a span
more with the API alone (~0.1 us), run after run.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from selfopt_trace.bootstrap.selfopt_trace_agent import spanblock  # noqa: E402  (M records: the SDK spans)

BOOTSTRAP = ROOT / "selfopt_trace" / "bootstrap"

PROGRAM = r"""
import json, resource, sys, time
from opentelemetry import trace
setup, count = sys.argv[1], int(sys.argv[2])
if setup in ("sdk", "simple"):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    # a queue for every span (the warm-up's too): none dropped, whatever the worker thread's pace
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=count + 2010) if setup == "sdk"
                                else SimpleSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
tracer = trace.get_tracer("bench", "1.0")
attributes = {"item.kind": "widget", "item.size": 3}
for _ in range(2000):  # warm-up: the first spans pay for imports and caches
    with tracer.start_as_current_span("warm", attributes=attributes) as span:
        span.set_attribute("item.index", 1)
with tracer.start_as_current_span("outer"):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.process_time()
    for index in range(count):
        with tracer.start_as_current_span("work", attributes=attributes) as span:
            span.set_attribute("item.index", index)
    elapsed = time.process_time() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"us": elapsed / count * 1e6, "faults": faults / count}))
if setup != "api":
    provider.shutdown()
"""


def one(program: Path, setup: str, spans: int, traced: Path | None, work: Path, number: int,
        which: str) -> tuple[float, float]:
    """One timed run, untraced or traced with the bootstrap directory `traced`: its us and minor page
    faults a span (kernel time that instruction counts do not see)."""
    run_dir = work / f"run-{setup}-{number}-{which}"
    env = _environment(traced, run_dir)
    done = subprocess.run([sys.executable, str(program), setup, str(spans)], env=env, capture_output=True, text=True,
                          timeout=600, check=True)
    if traced is not None:
        lines = sum(spanblock.expand(path.read_bytes()).count(b"\twork\t") for path in (run_dir / "spans").iterdir())
        assert lines >= spans, f"{lines} work spans recorded of {spans}"
    measured = json.loads(done.stdout.splitlines()[-1])
    return measured["us"], measured["faults"]


def instructions(program: Path, setup: str, spans: int, traced: Path | None, work: Path) -> tuple[int, int]:
    """Instructions of a whole run of the program (callgrind's count): all its threads', and its
    main thread's alone (the program's: the agent's flusher and the SDK's worker are other threads)."""
    label = f"{setup}-{spans}-" + ("untraced" if traced is None else str(traced).strip(os.sep).replace(os.sep, "-"))
    env = _environment(traced, work / f"count-{label}")
    env["PYTHONHASHSEED"] = "0"
    out = work / f"callgrind-{label}"
    done = subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
                           sys.executable, str(program), setup, str(spans)], env=env, capture_output=True, text=True,
                          timeout=1800, check=True)
    main_thread = Path(f"{out}-01").read_text()  # callgrind numbers the threads in their order of birth
    return (int(re.search(r"Collected : (\d+)", done.stderr).group(1)),
            int(re.search(r"^totals: (\d+)", main_thread, re.MULTILINE).group(1)))


def _environment(traced: Path | None, run_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k != "TRACEPARENT"}
    if traced is not None:
        env.update(SELFOPT_TRACE_DIR=str(run_dir), SELFOPT_TRACE_RUN_ID=run_dir.name,
                   SELFOPT_TRACE_BOOTSTRAP=str(traced),
                   PYTHONPATH=os.pathsep.join([str(traced), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def steady_bootstrap(bootstrap: Path, work: Path, name: str) -> Path:
    """A copy of `bootstrap` whose flushes never come from the clock (see --steady)."""
    copy = work / name
    shutil.copytree(bootstrap, copy)
    tracer = copy / "selfopt_trace_agent" / "tracer.py"
    text = tracer.read_text()
    assert "\nFLUSH_INTERVAL_NS = " in text
    tracer.write_text(re.sub(r"\nFLUSH_INTERVAL_NS = [^\n]*", "\nFLUSH_INTERVAL_NS = 10**15", text, count=1))
    return copy


def compiled(bootstrap: Path) -> Path:
    """`bootstrap` with its modules' bytecode written: otherwise the first counted run of a tree
    without it (a `git archive` copy) compiles what it imports and the second does not, and the
    difference of the two counts carries that (all the bootstrap's modules: ~380 M instructions)."""
    compileall.compile_dir(bootstrap, quiet=1)
    return bootstrap


def load_cost(spans: int, rounds: int) -> None:
    """Seconds `Store.load_run` takes for `spans` SDK spans as M records and as X records (see --load-spans)."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile
    from selfopt_trace.store import Store

    scope = {"otel.scope.name": "bench", "otel.scope.version": "1.0"}
    trace_id, start = 0xC3231B836A4BB2A3D0D57783EABD0E59, 1_796_349_872_911_168_849
    values: list = []
    for index in range(spans):  # as the agent writes them: ids, kind (INTERNAL) and status (UNSET) as ints
        values += [0x2B4E889DD6AF1F01 + index, 0x2B4E889DD6AF1F00, trace_id, "work", 0, "", start + index,
                   start + index + 1000, 0, scope, {"item.kind": "widget", "item.size": 3, "item.index": index}]
    width = spanblock.ROW_FIELDS * 1000
    blocks = "".join(spanblock.block_line(values[first:first + width]) for first in range(0, len(values), width))
    forms = {"M": blocks, "X": spanblock.expand(blocks.encode()).decode()}
    header = spanfile.header_line(start, "load", 1, {"service.name": "bench"})
    seconds: dict[str, list[float]] = {form: [] for form in forms}
    with tempfile.TemporaryDirectory(prefix="bench-otel-load-") as tmp:
        for number in range(rounds):
            for form, body in forms.items():
                run_dir = Path(tmp) / f"{form}-{number}"
                (run_dir / "spans").mkdir(parents=True)
                (run_dir / "spans" / "1-aaaaaaaa.spans").write_text(header + body)
                with Store(Path(tmp) / f"{form}-{number}.duckdb") as store:
                    started = time.perf_counter()
                    loaded = store.load_run(run_dir)
                    seconds[form].append(time.perf_counter() - started)
                assert loaded.spans == spans and not loaded.warnings, loaded
    print(f"{spans:,} SDK spans in one file, loaded {rounds} times each, alternating; load average {os.getloadavg()[0]:.1f}")
    for form, body in forms.items():
        median = statistics.median(seconds[form])
        print(f"  as {form} records: {median:.2f} s ({median / spans * 1e6:.1f} us a span; "
              f"{', '.join(f'{value:.2f}' for value in seconds[form])}), {len(body.encode()) / spans:.0f} bytes a span")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--instructions", action="store_true", help="also count instructions with valgrind")
    parser.add_argument("--steady", action="store_true", help="count 500 and 2,500 spans, no flushes by the clock")
    parser.add_argument("--setups", default="sdk,api", help="of sdk,api,simple")
    parser.add_argument("--bootstrap", type=Path, default=BOOTSTRAP, help="the agent's bootstrap directory")
    parser.add_argument("--baseline", type=Path, help="another bootstrap directory (the code before), measured beside it")
    parser.add_argument("--load-spans", type=int, help="measure the loader on this many SDK spans instead")
    args = parser.parse_args()
    if args.load_spans:
        load_cost(args.load_spans, args.rounds)
        return
    # what traces: "traced" the code measured, "baseline" the code before (with --baseline)
    bootstraps = {"traced": args.bootstrap.resolve()}
    if args.baseline is not None:
        bootstraps["baseline"] = args.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-otel-bridge-") as tmp:
        work = Path(tmp)
        program = work / "program.py"
        program.write_text(PROGRAM)
        load_before = os.getloadavg()[0]
        results = {setup: {"untraced": [], **{which: [] for which in bootstraps}} for setup in args.setups.split(",")}
        faults = {setup: {which: [] for which in results[setup]} for setup in results}
        counted: dict[str, dict[str, list[float]]] = {}
        if args.instructions:
            counting: dict[str, Path | None] = {"untraced": None, **bootstraps}
            low, high = 1000, 3000
            if args.steady:
                counting.update({which: steady_bootstrap(path, work, f"steady-{which}") for which, path in bootstraps.items()})
                low, high = 500, 2500
            counting = {which: path and compiled(path) for which, path in counting.items()}
            for setup in results:
                counted[setup] = {}
                for which, bootstrap in counting.items():
                    many, few = (instructions(program, setup, n, bootstrap, work) for n in (high, low))
                    counted[setup][which] = [(m - f) / (high - low) for m, f in zip(many, few)]
        for number in range(args.rounds):
            for setup, times in results.items():
                for which, bootstrap in {"untraced": None, **bootstraps}.items():
                    us, faulted = one(program, setup, args.spans, bootstrap, work, number, which)
                    times[which].append(us)
                    faults[setup][which].append(faulted)
    print(f"{args.spans:,} spans a run, {args.rounds} rounds alternating untraced/traced; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)")
    for setup, times in results.items():
        for which in bootstraps:
            label = "traced" if which == "traced" else "traced by the baseline"
            if times["untraced"]:  # (--rounds 0: counts only)
                untraced, traced = statistics.median(times["untraced"]), statistics.median(times[which])
                paired = statistics.median(t - u for u, t in zip(times["untraced"], times[which]))
                print(f"  {setup}: untraced {untraced:6.2f} us a span, {label} {traced:6.2f} us: the bridge adds "
                      f"{traced - untraced:+.2f} us (paired rounds: {paired:+.2f} us; "
                      f"rounds untraced {', '.join(f'{u:.2f}' for u in times['untraced'])}; "
                      f"{label} {', '.join(f'{t:.2f}' for t in times[which])})")
                print(f"  {setup}: minor page faults a span, medians: untraced "
                      f"{statistics.median(faults[setup]['untraced']):.3f}, {label} "
                      f"{statistics.median(faults[setup][which]):.3f}")
            if setup in counted:
                for index, threads in enumerate(("all threads", "main thread")):
                    untraced_count, traced_count = counted[setup]["untraced"][index], counted[setup][which][index]
                    print(f"  {setup}: instructions a span, {threads}: untraced {untraced_count:,.0f}, {label} "
                          f"{traced_count:,.0f}: the bridge adds {traced_count - untraced_count:+,.0f}")

if __name__ == "__main__":
    main()
