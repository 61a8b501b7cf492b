"""Speed of `selfopt-trace push` of a large run to a local OpenTelemetry Collector, beside reading it alone.

Generates a realistic run (bench_load's generator: default 1M spans over 200 span files) and loads it
into a database; starts the real Collector (collectors/build.sh's otelcol) with an OTLP receiver, the
batch processor and the debug exporter at basic verbosity (one log line per batch, none sampled away:
the collector's own work stays small, and the lines say how many spans it received); then, in fresh processes, --repeat
times each:

- baseline: the run's spans read from DuckDB alone, in one process (export/push.py's read_pages: the
  page queries, the rows turned into columns, the attributes parsed), the part of a push that is not OTLP;
- push: `python -m selfopt_trace push bench --protocol P --endpoint ...`, the command as a user runs it
  (interpreter start-up, the SDK's imports, reading, encoding, sending).

It prints the medians, spans/s, the ratio push/baseline, and checks the collector received every span.

    python benchmarks/bench_push.py [--spans 1000000] [--files 200] [--repeat 3] [--protocol grpc]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_load import generate  # noqa: E402

COLLECTOR_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", max_recv_msg_size_mib: 16}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{send_batch_size: 8192, timeout: 200ms}}
exporters:
  debug: {{verbosity: basic, sampling_initial: 1000000, sampling_thereafter: 1}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [debug]}}
  telemetry: {{metrics: {{level: none}}, logs: {{sampling: {{enabled: false}}}}}}  # every batch's line, to count
"""

READ_ONLY = """
import sys, time
from selfopt_trace.export.push import read_pages
from selfopt_trace.store import Store
started = time.perf_counter()
with Store(sys.argv[1], read_only=True) as store:
    count = sum(len(columns[0]) for columns in read_pages(store, "bench"))
print(count, time.perf_counter() - started)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def otelcol_binary() -> Path:
    built = subprocess.run(["bash", str(ROOT / "collectors" / "build.sh")], capture_output=True, text=True, check=True)
    return Path(built.stdout.split()[0])


@contextlib.contextmanager
def local_collector(work: Path) -> Iterator[tuple[dict[str, int], Path]]:
    """The Collector (collectors/build.sh) on free ports with COLLECTOR_CONFIG, up and answering:
    its ports ({"grpc": .., "http": ..}) and its log, which `received_spans` reads."""
    ports = {"grpc": free_port(), "http": free_port()}
    config = work / "otelcol.yaml"
    config.write_text(COLLECTOR_CONFIG.format(**ports))
    log = work / "otelcol.log"
    with log.open("wb") as out:
        collector = subprocess.Popen([str(otelcol_binary()), f"--config={config}"], stdout=out,
                                     stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["grpc"]), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or collector.poll() is not None:
                    raise SystemExit(f"the collector did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield ports, log
    finally:
        collector.terminate()
        collector.wait(timeout=30)


def received_spans(log: Path) -> int:
    """Spans the debug exporter reported (`"spans": N` per batch, at basic verbosity)."""
    return sum(int(n) for n in re.findall(r'"spans": (\d+)', log.read_text(errors="replace")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http/protobuf"])
    args = parser.parse_args()

    from selfopt_trace.store import Store

    with tempfile.TemporaryDirectory(prefix="bench-push-") as scratch:
        work = Path(scratch)
        written = generate(work / "bench", args.spans, args.files, otlp=False)
        db = work / "traces.duckdb"
        with Store(db) as store:
            loaded = store.load_run(work / "bench").spans
        print(f"run: {written} spans written, {loaded} loaded ({args.files} processes)")
        sent = loaded + 1  # and the run's own span (export/run_span.py), the roots' parent

        with local_collector(work) as (ports, log):
            endpoint = f"http://127.0.0.1:{ports['grpc' if args.protocol == 'grpc' else 'http']}"
            reads, pushes = [], []
            for round_index in range(args.repeat):
                done = subprocess.run([sys.executable, "-c", READ_ONLY, str(db)], capture_output=True, text=True,
                                      check=True, cwd=ROOT)
                count, seconds = done.stdout.split()
                assert int(count) == loaded
                reads.append(float(seconds))
                before = received_spans(log)
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "selfopt_trace", "push", "bench", "--db", str(db),
                                       "--protocol", args.protocol, "--endpoint", endpoint],
                                      capture_output=True, text=True, cwd=ROOT)
                pushes.append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise SystemExit(f"push failed: {done.stderr}")
                deadline = time.monotonic() + 30  # the batch processor forwards within 200 ms
                while received_spans(log) - before < sent and time.monotonic() < deadline:
                    time.sleep(0.2)
                got = received_spans(log) - before
                print(f"round {round_index + 1}: read {reads[-1]:.2f} s, push {pushes[-1]:.2f} s "
                      f"({done.stdout.strip()}); the collector received {got} spans")
                assert got == sent, f"the collector received {got} of {sent} spans"
    read, push = statistics.median(reads), statistics.median(pushes)
    print(f"\n{loaded} spans, {args.protocol}, median of {args.repeat}:")
    print(f"  baseline, read from DuckDB alone: {read:.2f} s ({loaded / read:,.0f} spans/s)")
    print(f"  push (whole command):             {push:.2f} s ({loaded / push:,.0f} spans/s)")
    print(f"  ratio push / baseline:            {push / read:.2f}")


if __name__ == "__main__":
    main()
