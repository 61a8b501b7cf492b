"""Does the live export keep up with a traced tree that makes 50,000 spans/s? Against writing the files alone.

The traced tree: CMD starts --processes children that together record --rate spans per second for
--seconds (each span through the agent's own tracer, with two attributes, as hooks record them),
paced in 1 ms steps. Each round runs it under `selfopt-trace run --no-load` twice, alternating:

- files alone: `--export never` (the agent writes its span files, nothing follows them);
- live export: `--export always` to the real Collector over gRPC (collectors/build.sh's otelcol, OTLP
  receiver -> batch -> debug exporter at basic verbosity, every batch line counted).

Per mode it prints the medians of: CMD's wall time (run.json's start/end: is CMD slowed?), the whole
`run` (CMD plus the exit budget and writing), the spans CMD made, the CPU time of `run` and the whole
tree, and for the export: spans sent (export.json), whether all were sent within the 1 s exit budget,
the collector's count, and the export's rate over CMD's lifetime. "Keeps up" means every span sent
with the budget not exceeded. On a machine busy with other work the export thread (niced, so that
CMD goes first) can fall behind, so one more figure says what it needs whatever the load: its
capacity, the live pipeline alone (export/ and watchers/ code: follower -> encoder -> the SDK's gRPC
exporter -> the Collector) over the span files of a files-alone round, in a fresh process, as spans
per CPU-second of that process. And what the export costs in `run` itself: the CPU of a live round
less that of the files-alone round before it, per span sent (the SDK's import and the exporter's
start-up included).

    python benchmarks/bench_live_export.py [--rate 50000] [--seconds 5] [--processes 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_push import local_collector, received_spans  # noqa: E402

WORKER = """
import sys, time
from selfopt_trace_agent import tracer
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
start_span, end_span = tracer.start_span, tracer.end_span
started = time.perf_counter()
made = 0
while (elapsed := time.perf_counter() - started) < seconds:
    due = int(elapsed * rate)
    while made < due:
        span = start_span("work", "other", attributes={"work.n": made, "code.function": "work"})
        end_span(span)
        made += 1
    time.sleep(0.001)
print(made)
"""

TREE = """
import subprocess, sys
worker, rate, seconds, processes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
children = [subprocess.Popen([sys.executable, worker, rate, seconds], stdout=subprocess.PIPE, text=True)
            for _ in range(processes)]
print(sum(int(child.communicate()[0]) for child in children))
"""


def run_once(work: Path, name: str, options: list[str], args: argparse.Namespace) -> dict:
    run_id = f"{name}-{time.monotonic_ns()}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "selfopt_trace", "run", "--run-id", run_id, "--no-load", "-q",
                           "--out", str(work / "runs"), *options, "--", sys.executable, str(work / "tree.py"),
                           str(work / "worker.py"), str(args.rate / args.processes), str(args.seconds),
                           str(args.processes)], capture_output=True, text=True, cwd=work)
    whole = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # `run` and every process of the tree, waited for
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"{name}: run failed: {done.stderr}")
    run_dir = work / "runs" / run_id
    meta = json.loads((run_dir / "run.json").read_text())
    result = {"cmd_s": (meta["end_ns"] - meta["start_ns"]) / 1e9, "run_s": whole, "made": int(done.stdout.split()[0]),
              "cpu_s": cpu, "run_dir": run_dir}
    export = run_dir / "export.json"
    if export.exists():
        record = json.loads(export.read_text())
        result.update(sent=record["spans_sent"], seen=record["spans_seen"], complete=record["complete"],
                      over_budget=record["exit_budget_exceeded"])
    return result


CAPACITY = """
import gc, sys, time
from selfopt_trace.export.otlp_sdk import Sender
from selfopt_trace.export.otlp_settings import resolve
from selfopt_trace.watchers.span_follower import SpanFollower
sender = Sender(resolve({}, endpoint=sys.argv[2], protocol="grpc"))
follower = SpanFollower(sys.argv[1], "capacity")
gc.disable()  # as the live export does
started = time.process_time()
while True:
    ended = follower.poll(columns=True)
    if not ended:
        break
    sender.send(ended)
sender.send(follower.still_open())
print(sender.sent, time.process_time() - started)
"""


def capacity(run_dir: Path, endpoint: str) -> tuple[int, float]:
    """(spans sent, CPU seconds) of the live pipeline over a finished run's files."""
    done = subprocess.run([sys.executable, "-c", CAPACITY, str(run_dir), endpoint], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    sent, seconds = done.stdout.split()
    return int(sent), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50_000, help="spans per second, all processes together")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-live-") as scratch:
        work = Path(scratch)
        (work / "worker.py").write_text(WORKER)
        (work / "tree.py").write_text(TREE)
        with local_collector(work) as (ports, log):
            live = ["--export", "always", "--otlp-protocol", "grpc", "--otlp-endpoint", f"http://127.0.0.1:{ports['grpc']}"]
            results: dict[str, list[dict]] = {"files": [], "live": []}
            for round_index in range(args.rounds):
                results["files"].append(run_once(work, "files", ["--export", "never"], args))
                before = received_spans(log)
                sent, cpu = capacity(results["files"][-1].pop("run_dir"), live[-1])
                results["files"][-1]["capacity"] = sent / cpu
                deadline = time.monotonic() + 10  # the batch processor forwards within 200 ms
                while received_spans(log) - before < sent and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert received_spans(log) - before == sent, "the collector did not receive every span"
                before = received_spans(log)
                results["live"].append(run_once(work, "live", live, args))
                time.sleep(0.5)  # the batch processor forwards within 200 ms
                results["live"][-1]["collector"] = received_spans(log) - before
                results["live"][-1].pop("run_dir")
                print(f"round {round_index + 1}: files {results['files'][-1]}\n         live  {results['live'][-1]}")

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print(f"\n{args.rate:,.0f} spans/s asked of {args.processes} processes for {args.seconds} s, median of {args.rounds}:")
    for mode in ("files", "live"):
        print(f"  {mode:5}: CMD {median(mode, 'cmd_s'):.2f} s, run {median(mode, 'run_s'):.2f} s, "
              f"CPU {median(mode, 'cpu_s'):.2f} s, {median(mode, 'made'):,.0f} spans made "
              f"({median(mode, 'made') / median(mode, 'cmd_s'):,.0f}/s)")
    live = results["live"]
    kept_up = sum(r["complete"] and not r["over_budget"] and r["collector"] == r["sent"] for r in live)
    print(f"  export: {median('live', 'sent'):,.0f} spans sent ({median('live', 'sent') / median('live', 'cmd_s'):,.0f}/s "
          f"over CMD's life), kept up (all sent within the exit budget, all received) in {kept_up} of {len(live)} rounds")
    print(f"  ratio live / files: CMD {median('live', 'cmd_s') / median('files', 'cmd_s'):.3f}, "
          f"run {median('live', 'run_s') / median('files', 'run_s'):.3f}, CPU {median('live', 'cpu_s') / median('files', 'cpu_s'):.3f}")
    added = statistics.median((live["cpu_s"] - files["cpu_s"]) / live["sent"]
                              for files, live in zip(results["files"], results["live"]))
    print(f"  the export's CPU in run (a live round's CPU less the files-alone round's before it): {added * 1e6:.1f} us "
          f"per span sent, SDK import included")
    spans_per_cpu_s = median("files", "capacity")
    print(f"  the export's capacity, the pipeline alone over the same files: {spans_per_cpu_s:,.0f} spans per CPU-second "
          f"({1e6 / spans_per_cpu_s:.1f} us a span): {args.rate / spans_per_cpu_s:.2f} of a core at {args.rate:,.0f} spans/s")


if __name__ == "__main__":
    main()
