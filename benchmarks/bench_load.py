"""Speed and memory of `Store.load_run` on a large synthetic run, beside a DuckDB read_json baseline.

Generates a realistic run (default 1M spans across 200 span files, sized unevenly like real process
trees) with the agent's own line functions: per process a header, the process span (S/E), start-up,
nested imports and serialization/parse spans (X), phases, HTTP client calls with the status code on
the E record, subprocess spans with the child's pid and exit code, ticks from the flusher, the odd
diagnostic and exception; a few processes are killed mid-way (incomplete spans, a torn last line).

The baseline is the same spans as OTLP-style JSON lines (one complete span per line with OTLP/JSON
field names, attributes as key/value lists and the process's resource inline), loaded by DuckDB's
read_json into a table with explicit columns: no S/E join, no checks, nothing to merge.

Each measurement runs in a fresh child process, so its peak RSS (getrusage) is the load's own. It
prints the median of --repeat runs: spans/s, seconds for the load and for the close that follows
(DuckDB's checkpoint), peak RSS, and the ratio of our spans/s to the baseline's.

    python benchmarks/bench_load.py [--spans 1000000] [--files 200] [--repeat 3] [--baseline-spans N]

A --baseline-spans smaller than --spans generates a smaller baseline and scales its time linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile  # noqa: E402

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
MODULES = [f"pkg{i}.sub{j % 7}.mod{j}" for i in range(60) for j in range(50)]
URLS = ["http://127.0.0.1:8000/ai/optimize", "http://127.0.0.1:8000/ai/testgen", "https://pypi.org/simple/numpy/",
        "http://127.0.0.1:8000/cfapi/cli-get-user?user=42"]
OTLP_KINDS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
OTLP_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}


class Process:
    """One traced process: its span file lines and, for the baseline, its spans as OTLP JSON lines."""

    def __init__(self, rng: random.Random, pid: int, trace_id: str, start: int, otlp: bool) -> None:
        self.rng, self.pid, self.trace_id, self.now = rng, pid, trace_id, start
        self.resource = {"service.name": "bench", "service.version": "1.0", "process.pid": pid,
                         "process.executable.name": "python3.11", "host.name": "bench-host"}
        self.lines = [spanfile.header_line(start, "bench", pid, self.resource)]
        self.otlp: list[str] | None = [] if otlp else None
        self.spans = 0

    def span_id(self) -> str:
        return f"{self.rng.getrandbits(64) or 1:016x}"

    def advance(self, ns: int) -> int:
        self.now += ns
        if self.spans % 100 == 0:
            self.lines.append(spanfile.tick_line(self.now))
        return self.now

    def complete(self, parent: str, name: str, category: str, duration: int, attributes: dict,
                 status: str = "UNSET") -> str:
        span_id, start = self.span_id(), self.advance(self.rng.randrange(2_000, 40_000))
        self.spans += 1
        self.lines.append(spanfile.complete_line(span_id, parent, self.trace_id, name, "INTERNAL", category, start,
                                                 start + duration, status, spanfile.encode(attributes)))
        self._otlp(span_id, parent, name, "INTERNAL", start, start + duration, status, attributes)
        return span_id

    def start(self, parent: str, name: str, category: str, attributes: dict, kind: str = "INTERNAL") -> tuple:
        span_id, start = self.span_id(), self.advance(self.rng.randrange(2_000, 40_000))
        self.spans += 1
        self.lines.append(spanfile.start_line(span_id, parent, self.trace_id, name, kind, category, start,
                                              spanfile.encode(attributes)))
        return span_id, parent, name, kind, start, attributes

    def end(self, started: tuple, duration: int, status: str = "OK", attributes: dict | None = None) -> None:
        span_id, parent, name, kind, start, start_attributes = started
        end = max(self.advance(0), start + duration)
        self.now = end
        self.lines.append(spanfile.end_line(span_id, end, status, spanfile.encode(attributes)))
        self._otlp(span_id, parent, name, kind, start, end, status, {**start_attributes, **(attributes or {})})

    def _otlp(self, span_id: str, parent: str, name: str, kind: str, start: int, end: int, status: str,
              attributes: dict) -> None:
        if self.otlp is not None:
            self.otlp.append(json.dumps({
                "traceId": self.trace_id, "spanId": span_id, "parentSpanId": parent, "name": name,
                "kind": OTLP_KINDS[kind], "startTimeUnixNano": str(start), "endTimeUnixNano": str(end),
                "attributes": _key_values(attributes), "status": {"code": OTLP_STATUS[status]},
                "resource": {"attributes": _key_values(self.resource)},
            }))


def _key_values(attributes: dict) -> list[dict]:
    def value(v: object) -> dict:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, list):
            return {"arrayValue": {"values": [value(item) for item in v]}}
        return {"stringValue": str(v)}
    return [{"key": key, "value": value(v)} for key, v in attributes.items()]


def fill(process: Process, target: int, killed: bool) -> None:
    """A process's spans: about `target` of them, in the mix of a real Python process."""
    rng = process.rng
    root = process.start("", "process", "process", {"process.pid": process.pid,
                                                    "process.command_args": ["python", "-m", "app", "--fast"]})
    process.complete(root[0], "interpreter.startup", "startup", 18 * MS, {})
    open_phase = None
    while process.spans < target - 1:
        roll = rng.random()
        if roll < 0.40:  # an import, sometimes nested in the previous one
            module = rng.choice(MODULES)
            outer = process.complete(root[0], "import " + module, "import", rng.randrange(50_000, 3 * MS),
                                     {"code.namespace": module})
            if rng.random() < 0.3:
                process.complete(outer, "import " + module + ".inner", "import", 40_000,
                                 {"code.namespace": module + ".inner"})
        elif roll < 0.68:
            function = rng.choice(["json.dumps", "json.loads", "pickle.dumps", "ast.parse"])
            process.complete(root[0], function, "serialization" if "dumps" in function else "parse",
                             rng.randrange(5_000, 500_000),
                             {"code.function": function, "size.bytes": rng.randrange(9999)})
        elif roll < 0.88:
            call = process.start(root[0], "GET", "http", {"http.request.method": "GET", "url.full": rng.choice(URLS),
                                                          "server.address": "127.0.0.1", "server.port": 8000},
                                 kind="CLIENT")
            code = 500 if rng.random() < 0.02 else 200
            process.end(call, rng.randrange(1, 40) * MS, "ERROR" if code == 500 else "UNSET",
                        {"http.response.status_code": code, **({"error.type": "500"} if code == 500 else {})})
        elif roll < 0.97:
            if open_phase:
                process.end(open_phase, 2 * MS)
            open_phase = process.start(root[0], f"phase {process.spans}", "phase", {"phase.index": process.spans})
        elif roll < 0.99:
            child = process.start(root[0], "subprocess python", "subprocess",
                                  {"process.command_args": ["python", "-c", "pass"],
                                   "process.executable.name": "python"})
            process.end(child, 30 * MS, "UNSET", {"process.pid": rng.randrange(2**15), "process.exit.code": 0})
        else:
            process.complete(root[0], "validate", "other", 20_000,
                             {"exception.type": "ValueError", "exception.message": "bad input"}, "ERROR")
    if killed:  # SIGKILLed: no E records for the open spans, and a torn last line
        process.lines.append(spanfile.complete_line(process.span_id(), root[0], process.trace_id, "torn", "INTERNAL",
                                                    "other", process.now, process.now, "UNSET", "{}")[:30])
        return
    if open_phase:
        process.end(open_phase, MS)
    process.end(root, MS, "UNSET", {"process.exit.code": 0})


def generate(out: Path, spans: int, files: int, otlp: bool, seed: int = 7) -> int:
    """Write the run (and the baseline's JSON lines, if asked); returns the spans written."""
    rng = random.Random(seed)
    (out / "spans").mkdir(parents=True)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    targets = [max(3, int(spans * w / sum(weights))) for w in weights]
    trace_id = f"{rng.getrandbits(128):032x}"
    written = last_ns = 0
    with open(out / "otlp.jsonl", "w", encoding="utf-8") if otlp else open("/dev/null", "w") as otlp_file:
        for index, target in enumerate(targets):
            process = Process(rng, 10_000 + index, trace_id, T0 + index * MS, otlp)
            fill(process, target, killed=index % 50 == 49)
            if index % 20 == 0:
                process.lines.insert(1, spanfile.diagnostic_line(process.now, "hook.failed", "urllib3: no module"))
            (out / "spans" / f"{process.pid}-{rng.getrandbits(32):08x}.spans").write_text("".join(process.lines))
            if process.otlp is not None:
                otlp_file.write("\n".join(process.otlp) + "\n")
            written += process.spans
            last_ns = max(last_ns, process.now)
    (out / "run.json").write_text(json.dumps({  # as `run` writes it: with its own span's ids, whose children the roots are
        "run_id": "bench", "command": ["python", "-m", "app"], "exit_code": 0, "pid": 10_000, "start_ns": T0 - MS,
        "end_ns": last_ns + MS, "trace_id": trace_id, "span_id": f"{rng.getrandbits(64) | 1:016x}",
        "parent_span_id": None}))
    return written


BASELINE_SQL = """
CREATE TABLE otlp_spans AS
SELECT traceId AS trace_id, spanId AS span_id, nullif(parentSpanId, '') AS parent_span_id, name, kind,
       startTimeUnixNano::BIGINT AS start_ns, endTimeUnixNano::BIGINT AS end_ns,
       endTimeUnixNano::BIGINT - startTimeUnixNano::BIGINT AS duration_ns, status.code AS status,
       attributes, resource
FROM read_json($path, format = 'newline_delimited', columns = {
    traceId: 'VARCHAR', spanId: 'VARCHAR', parentSpanId: 'VARCHAR', name: 'VARCHAR', kind: 'INTEGER',
    startTimeUnixNano: 'VARCHAR', endTimeUnixNano: 'VARCHAR', attributes: 'JSON',
    status: 'STRUCT(code INTEGER)', resource: 'JSON'})
"""


def measure(kind: str, source: str, db: str) -> dict:
    """One load in this (fresh) process: seconds (and CPU seconds) to load, seconds to close, peak RSS."""
    if kind == "load":
        from selfopt_trace.store import Store

        store = Store(db)
        cpu_before = _cpu_s()
        started = time.perf_counter()
        loaded = store.load_run(source).spans
        close = store.close
    else:
        import duckdb

        con = duckdb.connect(db)
        cpu_before = _cpu_s()
        started = time.perf_counter()
        con.execute(BASELINE_SQL, {"path": source})
        loaded = con.execute("SELECT count(*) FROM otlp_spans").fetchone()[0]
        close = con.close
    load_s = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    close_started = time.perf_counter()
    close()
    return {"spans": loaded, "load_s": load_s, "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
            "close_s": time.perf_counter() - close_started,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_of(kind: str, source: Path, work: Path, repeat: int) -> dict:
    runs = []
    for attempt in range(repeat):
        db = work / f"{kind}-{attempt}.duckdb"
        output = subprocess.run([sys.executable, __file__, "--measure", kind, str(source), str(db)],
                                check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(output))
        db.unlink()
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-spans", type=int, default=None, help="default: as many as --spans")
    parser.add_argument("--measure", nargs=3, metavar=("KIND", "SOURCE", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    baseline_spans = args.baseline_spans or args.spans
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        spans = generate(work / "bench", args.spans, args.files, otlp=baseline_spans == args.spans)
        if baseline_spans != args.spans:
            generate(work / "baseline", baseline_spans, max(1, args.files * baseline_spans // args.spans), otlp=True)
        source = work / ("bench" if baseline_spans == args.spans else "baseline") / "otlp.jsonl"
        sizes = sum(path.stat().st_size for path in (work / "bench" / "spans").iterdir())
        print(f"generated {spans:,} spans in {args.files} span files ({sizes / 1e6:.0f} MB) and OTLP JSON lines "
              f"({source.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s")

        load_before = os.getloadavg()[0]
        ours = median_of("load", work / "bench", work, args.repeat)
        base = median_of("baseline", source, work, args.repeat)

    scale = ours["spans"] / base["spans"]
    base_rate = base["spans"] / base["load_s"]
    rate = ours["spans"] / ours["load_s"]
    print(f"median of {args.repeat}, each in a fresh process; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (other processes on this {os.cpu_count()}-core machine)")
    print(f"Store.load_run      {ours['spans']:>9,} spans  load {ours['load_s']:6.2f} s ({ours['cpu_s']:5.2f} CPU s)  "
          f"{rate:>9,.0f} spans/s  close {ours['close_s']:5.2f} s  peak RSS {ours['rss_mb']:6.0f} MB")
    print(f"read_json baseline  {base['spans']:>9,} spans  load {base['load_s']:6.2f} s ({base['cpu_s']:5.2f} CPU s)  "
          f"{base_rate:>9,.0f} spans/s  close {base['close_s']:5.2f} s  peak RSS {base['rss_mb']:6.0f} MB"
          + (f"  (x{scale:.1f}: {base['load_s'] * scale:.2f} s)" if args.baseline_spans else ""))
    print(f"ratio: load_run is {rate / base_rate:.2f}x the baseline's spans/s")


if __name__ == "__main__":
    main()
