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

    python benchmarks/bench_receiver.py [--spans 200000] [--senders 4] [--batch 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_load import generate, median_of  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sender", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        port, count, batch, seed, mode = args.sender
        sender(int(port), int(count), int(batch), int(seed), mode)
        return

    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        work = Path(tmp)
        load_before = os.getloadavg()[0]
        rounds: dict[str, list[dict]] = {"sdk": [], "encoded": []}
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
