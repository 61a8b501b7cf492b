"""In-process cost of one recorded span: selfopt-trace's agent vs the OpenTelemetry SDK, same run.

Each side records N spans (start + end, one attribute, nested under a parent; neither made
current, as instrumentation that times a call does) in a function's loop, and we take the
median over rounds of the per-span time, flushing/exporting included: the agent writes its
span file; the SDK uses a BatchSpanProcessor with an exporter that drops spans (its cheapest
realistic setup). Each side runs in fresh interpreters (the agent set up as in a traced
process), the two sides alternating --repeat times so that a busy minute hits both.

    python benchmarks/bench_span.py [--spans 50000] [--rounds 7] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parent.parent / "selfopt_trace" / "bootstrap"

AGENT = """
import json, sys, time
from selfopt_trace_agent import tracer
n, rounds = int(sys.argv[1]), int(sys.argv[2])
attrs = {"code.function": "work"}

def record(n):
    start_span, end_span = tracer.start_span, tracer.end_span
    for _ in range(n):
        span = start_span("work", "other", attributes=attrs)
        end_span(span)
    tracer.flush()

per_span = []
for _ in range(rounds):
    t0 = time.perf_counter_ns()
    record(n)
    per_span.append((time.perf_counter_ns() - t0) / n)
print(json.dumps(per_span))
"""

OTEL = """
import json, sys, time
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

class Drop(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

provider = TracerProvider()
processor = BatchSpanProcessor(Drop())
provider.add_span_processor(processor)
tracer = provider.get_tracer("bench")
n, rounds = int(sys.argv[1]), int(sys.argv[2])
attrs = {"code.function": "work"}

def record(n):
    start_span = tracer.start_span
    with tracer.start_as_current_span("parent"):
        for _ in range(n):
            start_span("work", attributes=attrs).end()
    processor.force_flush()

per_span = []
for _ in range(rounds):
    t0 = time.perf_counter_ns()
    record(n)
    per_span.append((time.perf_counter_ns() - t0) / n)
print(json.dumps(per_span))
"""


def measure(code: str, env: dict, spans: int, rounds: int) -> list:
    """Per-span ns of each round, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code, str(spans), str(rounds)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="interpreters per side, alternating")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k != "PYTHONPATH"}
    agent: list = []
    otel: list = []
    with tempfile.TemporaryDirectory() as tmp:
        traced = dict(base, SELFOPT_TRACE_DIR=str(Path(tmp) / "run"), PYTHONPATH=str(BOOTSTRAP))
        for _ in range(args.repeat):
            agent += measure(AGENT, traced, args.spans, args.rounds)
            otel += measure(OTEL, base, args.spans, args.rounds)
        size = sum(p.stat().st_size for p in (Path(tmp) / "run" / "spans").glob("*.spans"))
    agent_ns, otel_ns = statistics.median(agent), statistics.median(otel)
    spans = args.spans * args.rounds * args.repeat
    print(f"spans per round: {args.spans}, rounds: {args.rounds} x {args.repeat} interpreters per side "
          "(median per span, export included)")
    print(f"selfopt-trace agent      {agent_ns / 1000:6.2f} us/span   ({size / spans:.0f} bytes/span on disk)")
    print(f"OpenTelemetry SDK        {otel_ns / 1000:6.2f} us/span")
    print(f"ratio agent / SDK        {agent_ns / otel_ns:6.3f}")


if __name__ == "__main__":
    main()
