"""Speed of `selfopt-trace collector` (the OTLP receiver) with 4 concurrent senders, beside the load path.

Starts `python -m selfopt_trace collector --port 0 --no-grpc --db <new database>` and --senders sender
processes. Each sender makes --spans / --senders spans with the OTel SDK (a TracerProvider whose
processor only keeps the ended spans: five attributes a span, an HTTP-client-like mix, one trace per
100 spans, parents inside each trace), then, on the signal, sends them in batches of --batch spans
(the BatchSpanProcessor's default, 512) with the SDK's own OTLP/HTTP exporter (`OTLPSpanExporter`,
protobuf, one request after the other, each answered once it is synced to the receiver's spool).
Two figures: every span sent over the time from the first request to the last answer
(acknowledged), and over the time from the first request to the receiver's exit once SIGTERM'd
right after the last answer (in the store: its drain converts and loads what the spool still holds);
with the CPU a span of the receiver and its conversion worker (from /proc and the children's
rusage, the drain included) and of the senders, and a check that the store holds every span.

Two ways of sending, each --repeat times, alternating, the median printed:
- `sdk`: `exporter.export(spans)`, the SDK encoding each batch as it sends it (what a program pays);
- `encoded`: the same exporter's `export` sending each batch's request bytes, encoded by the SDK's
  `encode_spans` before the clock starts (handed over as export/otlp_wire.EncodedBatch, as `push`
  hands its own): the senders' encoding, 4 processes sharing the 2 cores with the receiver, out of
  the way.

The load path: bench_load's generator writes the same number of spans as span files, and
`Store.load_run` loads them in a fresh process (median of --repeat); the ratio is the receiver's
spans/s over the load's.

    python benchmarks/bench_receiver.py [--spans 200000] [--senders 4] [--batch 512] [--repeat 3] [--modes sdk,encoded]

`--stages` measures instead the receiver's work a span without HTTP, stage by stage, in CPU time
(which the neighbours' load moves less than wall time): the requests of 4 x 50,000 spans (as the
senders make them) parsed and checked (a request thread's work), converted (the worker's), loaded
into a new store one generation of 50,000 at a time, in one DuckDB thread as the receiver does, and
the store closed (its checkpoint). With `--compare DIR` (a checkout of other code: `git worktree
add` or `git archive | tar -x`), the same requests through that code too, alternating round by
round, medians of --repeat:

    python benchmarks/bench_receiver.py --stages [--compare DIR] [--repeat 3] [--instructions]

`--instructions` also counts each code's instructions a span of the conversion (the worker's
stage, the largest: every generation converted in one process under callgrind, less a process
converting none, its start-up), which the machine's load cannot move.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

URLS = ["http://127.0.0.1:8000/ai/optimize", "http://127.0.0.1:8000/ai/testgen", "https://pypi.org/simple/numpy/",
        "http://127.0.0.1:8000/cfapi/cli-get-user?user=42"]


def make_spans(count: int, seed: int) -> list:
    """`count` ended SDK spans (ReadableSpans), made by the SDK."""
    import random

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import SpanKind, set_span_in_context

    kept: list = []

    class Keep(SpanProcessor):
        def on_end(self, span) -> None:
            kept.append(span)

    rng = random.Random(seed)
    provider = TracerProvider(resource=Resource.create({"service.name": f"sender-{seed}", "process.pid": 1000 + seed}))
    provider.add_span_processor(Keep())
    tracer = provider.get_tracer("bench.sender", "1.0")
    root = None
    for number in range(count):
        if number % 100 == 0:
            if root is not None:
                root.end()
            root = tracer.start_span("request", kind=SpanKind.SERVER, attributes={"http.route": "/work"})
        url = rng.choice(URLS)
        span = tracer.start_span("POST", context=set_span_in_context(root), kind=SpanKind.CLIENT, attributes={
            "http.request.method": "POST", "url.full": url, "server.port": 8000 + number % 3,
            "http.response.status_code": rng.choice((200, 200, 200, 500)), "http.response.body.size": rng.randrange(50_000)})
        span.end()
    root.end()
    provider.shutdown()
    return kept[:count]


def sender(port: int, count: int, batch: int, seed: int, mode: str) -> None:
    """A sender process: make the spans, say so, wait for the go, send them all, report the times."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http import trace_exporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from selfopt_trace.export.otlp_wire import EncodedBatch

    spans = make_spans(count, seed)
    batches = [spans[i:i + batch] for i in range(0, len(spans), batch)]
    if mode == "encoded":  # the request bytes made now; export() then sends them as they are (as push does)
        batches = [EncodedBatch(encode_spans(b).SerializePartialToString(), len(b)) for b in batches]
        trace_exporter.encode_spans = lambda encoded: encoded
    exporter = trace_exporter.OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=60)
    print("ready", flush=True)
    sys.stdin.readline()
    started, cpu = time.time(), time.process_time()
    failed = 0
    for spans_batch in batches:
        failed += exporter.export(spans_batch) != SpanExportResult.SUCCESS
    print(json.dumps({"start": started, "end": time.time(), "spans": len(spans), "failed": failed,
                      "cpu_s": time.process_time() - cpu}), flush=True)
    exporter.shutdown()


def cpu_s(pid: int) -> float:
    """CPU seconds of a running process and of its running children (the receiver's conversion worker)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += cpu_s(int(child))
    return total


def ended_children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_round(work: Path, spans: int, senders: int, batch: int, mode: str, number: int) -> dict:
    db = work / f"received-{mode}-{number}.duckdb"
    collector = subprocess.Popen([sys.executable, "-m", "selfopt_trace", "collector", "--port", "0", "--no-grpc",
                                  "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work)
    processes: list = []
    try:
        line = collector.stdout.readline()
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        share = spans // senders
        processes = [subprocess.Popen([sys.executable, __file__, "--sender", str(port), str(share), str(batch), str(n),
                                       mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                     for n in range(senders)]
        for process in processes:
            assert process.stdout.readline() == "ready\n"
        ended_before = ended_children_cpu_s()  # (every earlier process waited for)
        cpu_before = cpu_s(collector.pid)
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [json.loads(process.stdout.readline()) for process in processes]
        collector.terminate()  # drains: converts and loads what the spool holds, then ends
        collector.communicate(timeout=120)
        stored_at = time.time()
        cpu = ended_children_cpu_s() - ended_before - cpu_before  # the receiver's and its worker's, drain included
        for process in processes:
            process.wait(60)
    finally:  # a sender that failed: nothing left running
        for process in [*processes, collector]:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    db.unlink()
    sent = sum(r["spans"] for r in results)
    first = min(r["start"] for r in results)
    wall = max(r["end"] for r in results) - first
    return {"sent": sent, "stored": stored, "failed": sum(r["failed"] for r in results), "wall_s": wall,
            "rate": sent / wall, "stored_rate": sent / (stored_at - first), "cpu_us": cpu / sent * 1e6,
            "sender_cpu_us": sum(r["cpu_s"] for r in results) / sent * 1e6}


STAGES = ("parse and check", "convert", "load", "close")


def stages(requests: Path, work: Path) -> None:
    """One round of --stages in this process (the code on sys.path): CPU seconds of each stage, as JSON."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from selfopt_trace.collector_ingest import insert_files
    from selfopt_trace.receiver import convert, decode
    from selfopt_trace.store import Store

    generations = sorted(requests.glob("*.otlp"))
    payloads = [payload for raw in generations for payload in convert.records(raw)]
    cpu = dict.fromkeys(STAGES, 0.0)
    started = time.process_time()
    for payload in payloads:
        decode.check(ExportTraceServiceRequest.FromString(payload))
    cpu["parse and check"] = time.process_time() - started
    spans = 0
    for raw in generations:
        started = time.process_time()
        spans += convert.convert(raw, work / (raw.stem + ".spans.tsv"), work / (raw.stem + ".processes.tsv")).spans
        cpu["convert"] += time.process_time() - started
    store = Store(work / "stages.duckdb")
    store.sql("SET threads = 1")  # as the receiver's writer
    for raw in generations:
        started = time.process_time()
        store.sql("BEGIN")
        insert_files(store, [work / (raw.stem + ".spans.tsv")], [work / (raw.stem + ".processes.tsv")])
        store.sql("COMMIT")
        cpu["load"] += time.process_time() - started
    started = time.process_time()
    store.close()
    cpu["close"] = time.process_time() - started
    print(json.dumps({"spans": spans, "cpu": cpu}))


def compare_stages(spans: int, senders: int, batch: int, repeat: int, other: Path | None,
                   instructions: bool) -> None:
    """--stages: the same requests through this code (and `other`'s), alternating, medians of CPU us a span."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from selfopt_trace.receiver.convert import record

    codes = {"this code": ROOT, **({f"{other}": other} if other else {})}
    with tempfile.TemporaryDirectory(prefix="bench-receiver-stages-") as tmp:
        work = Path(tmp)
        requests = work / "requests"
        requests.mkdir()
        share = spans // senders
        for number in range(senders):  # a generation a sender, as a burst of 4 x 50,000 makes them
            made = make_spans(share, number)
            (requests / f"{number:04d}.otlp").write_bytes(b"".join(
                record(encode_spans(made[i:i + batch]).SerializePartialToString()) for i in range(0, share, batch)))
        load_before = os.getloadavg()[0]
        results: dict[str, list[dict]] = {name: [] for name in codes}
        counted: dict[str, float] = {}
        for number in range(repeat):
            for name, code in codes.items():
                round_dir = work / f"round-{number}-{len(results[name])}-{abs(hash(name))}"
                round_dir.mkdir()
                done = subprocess.run([sys.executable, __file__, "--stages-round", str(requests), str(round_dir)],
                                      env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True,
                                      check=True, timeout=1800)
                results[name].append(json.loads(done.stdout.splitlines()[-1]))
        if instructions:  # the conversion under callgrind, less one of no requests (start-up, imports)
            empty = work / "empty"
            empty.mkdir()
            for name, code in codes.items():
                counts = [_instructions(code, folder, work / f"count-{abs(hash(name))}-{folder.name}")
                          for folder in (requests, empty)]
                counted[name] = (counts[0] - counts[1]) / spans
    print(f"--stages: {spans:,} spans ({senders} generations of {share:,}, requests of {batch}), CPU us a span, "
          f"median of {repeat} rounds alternating; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} "
          f"after ({os.cpu_count()} cores)")
    for name, rounds in results.items():
        per_span = {stage: statistics.median(r["cpu"][stage] / r["spans"] * 1e6 for r in rounds) for stage in STAGES}
        totals = [sum(r["cpu"].values()) / r["spans"] * 1e6 for r in rounds]
        print(f"  {name}: " + ", ".join(f"{stage} {value:.2f}" for stage, value in per_span.items())
              + f"; all {statistics.median(totals):.2f} us (rounds {', '.join('%.2f' % t for t in totals)}); "
              f"spans stored {rounds[0]['spans']:,}")
        if name in counted:
            print(f"      instructions a span, the conversion (callgrind): {counted[name]:,.0f}")


def convert_round(requests: Path, work: Path) -> None:
    """Every generation of `requests` converted in this process, one after the other (--instructions)."""
    from selfopt_trace.receiver import convert

    for raw in sorted(requests.glob("*.otlp")):
        convert.convert(raw, work / (raw.stem + ".spans.tsv"), work / (raw.stem + ".processes.tsv"))


def _instructions(code: Path, requests: Path, work: Path) -> int:
    """Instructions of converting `requests` in one process (callgrind's count) with `code`."""
    work.mkdir()
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
                           "--convert-round", str(requests), str(work)], env={**os.environ, "PYTHONPATH": str(code)},
                          capture_output=True, text=True, check=True, timeout=7200)
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="sdk,encoded", help="ways of sending, of sdk,encoded")
    parser.add_argument("--stages", action="store_true", help="the receiver's stages a span, without HTTP")
    parser.add_argument("--compare", type=Path, help="with --stages: also this checkout's code")
    parser.add_argument("--instructions", action="store_true", help="with --stages: also count the conversion's instructions (valgrind)")
    parser.add_argument("--sender", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--stages-round", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--convert-round", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages_round:
        stages(*args.stages_round)
        return
    if args.convert_round:
        convert_round(*args.convert_round)
        return
    if args.stages:
        compare_stages(args.spans, args.senders, args.batch, args.repeat, args.compare, args.instructions)
        return
    if args.sender:
        port, count, batch, seed, mode = args.sender
        sender(int(port), int(count), int(batch), int(seed), mode)
        return

    sys.path.insert(0, str(ROOT))  # (not for --stages-round: there PYTHONPATH says which code)
    from benchmarks.bench_load import generate, median_of

    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        work = Path(tmp)
        load_before = os.getloadavg()[0]
        rounds: dict[str, list[dict]] = {mode: [] for mode in args.modes.split(",")}
        for number in range(args.repeat):
            for mode in rounds:
                rounds[mode].append(one_round(work, args.spans, args.senders, args.batch, mode, number))
        generate(work / "files", args.spans, 40, otlp=False)
        load = median_of("load", work / "files", work, args.repeat)
    load_rate = load["spans"] / load["load_s"]
    print(f"{args.senders} senders x {args.spans // args.senders:,} spans, batches of {args.batch}, OTLP/HTTP protobuf, "
          f"median of {args.repeat}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"({os.cpu_count()} cores)")
    for mode, results in rounds.items():
        rate = statistics.median(r["rate"] for r in results)
        stored_rate = statistics.median(r["stored_rate"] for r in results)
        cpu = statistics.median(r["cpu_us"] for r in results)
        sender_cpu = statistics.median(r["sender_cpu_us"] for r in results)
        stored_all = all(r["stored"] == r["sent"] and r["failed"] == 0 for r in results)
        print(f"  senders {mode:8} acknowledged {rate:>7,.0f} spans/s (rounds {', '.join('%.0f' % r['rate'] for r in results)}); "
              f"in the store {stored_rate:>7,.0f} spans/s (rounds {', '.join('%.0f' % r['stored_rate'] for r in results)}); "
              f"{'every span stored' if stored_all else 'SPANS MISSING: ' + str(results)}\n"
              f"           CPU a span: receiver and its worker {cpu:4.1f} us ({1e6 / cpu:,.0f} spans per CPU-second), "
              f"the senders {sender_cpu:4.1f} us")
    print(f"  load path, Store.load_run of {load['spans']:,} spans in span files: {load_rate:,.0f} spans/s")
    for mode, results in rounds.items():
        print(f"  ratio receiver ({mode}) / load path: acknowledged {statistics.median(r['rate'] for r in results) / load_rate:.2f}, "
              f"in the store {statistics.median(r['stored_rate'] for r in results) / load_rate:.2f}")


if __name__ == "__main__":
    main()
