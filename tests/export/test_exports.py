"""Exports of a real traced run: OTLP/JSON lines (and back), Jaeger JSON, Chrome trace events."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from selfopt_trace.export import ExportError, SpanRecord, fetch_spans, write_export
from selfopt_trace.export.otlp_json import SPANS_PER_LINE, read_otlp_json_lines

FIELDS = [name for name in SpanRecord.__dataclass_fields__ if name != "source_file"]


def otlp_request(line: str) -> ExportTraceServiceRequest:
    """Parse a line with the OTLP protobuf schema (unknown fields and wrong types fail). OTLP/JSON
    writes ids in hex where protobuf's JSON mapping expects base64: convert them first."""
    data = json.loads(line)
    for resource in data["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.Parse(json.dumps(data), ExportTraceServiceRequest())


def test_otlp_json_lines_read_back_give_the_same_spans(traced_store, tmp_path: Path) -> None:
    spans = fetch_spans(traced_store, "q1")
    path = tmp_path / "spans.jsonl"
    write_export(spans, "otlp-json", path)
    back = {span.span_id: span for span in read_otlp_json_lines(path)}
    assert len(back) == len(spans) > 30  # three processes, every category below
    for span in spans:
        for name in FIELDS:
            assert getattr(back[span.span_id], name) == getattr(span, name), (span.name, name)
    assert {span.category for span in spans} >= {"process", "startup", "import", "subprocess", "http",
                                                  "serialization", "parse"}


def test_otlp_json_lines_follow_the_otlp_schema_one_resource_per_process(traced_store, tmp_path: Path) -> None:
    spans = fetch_spans(traced_store, "q1")
    path = tmp_path / "spans.jsonl"
    write_export(spans, "otlp-json", path)
    lines = path.read_text().splitlines()
    requests = [otlp_request(line) for line in lines]
    resources = [r for request in requests for r in request.resource_spans]
    assert len(resources) == 3  # main.py and its two children
    pids = {next(a.value.int_value for a in r.resource.attributes if a.key == "process.pid") for r in resources}
    assert len(pids) == 3
    exported = [s for r in resources for scope in r.scope_spans for s in scope.spans]
    assert len(exported) == len(spans)
    by_id = {s.span_id: s for s in spans}
    for span in exported:
        original = by_id[span.span_id.hex()]
        assert span.trace_id.hex() == original.trace_id
        assert span.parent_span_id.hex() == (original.parent_span_id or "")
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (original.start_ns, original.end_ns)
        assert span.kind == {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3}[original.kind]
    assert all(r.scope_spans[0].scope.name == "selfopt-trace" for r in resources)


def test_a_big_process_is_split_into_several_lines_and_bad_lines_are_skipped(tmp_path: Path) -> None:
    spans = [SpanRecord("r", "a" * 32, f"{i + 1:016x}", None if i == 0 else f"{1:016x}", f"s{i}", "INTERNAL", "other",
                        1_000 + i, 2_000 + i, "UNSET", False, "svc", 7, {"i": i, "ok": True, "ratio": 0.5,
                                                                          "list": [1, "a"], "none": None},
                        {"service.name": "svc", "process.pid": 7}, "7-x.spans")
             for i in range(SPANS_PER_LINE + 10)]
    path = tmp_path / "big.jsonl"
    write_export(spans, "otlp-json", path)
    assert len(path.read_text().splitlines()) == 2
    with path.open("a") as handle:
        handle.write('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "ab')  # torn last line
    warnings: list[str] = []
    back = list(read_otlp_json_lines(path, warnings))
    assert len(back) == len(spans) and back[3].attributes == spans[3].attributes
    assert len(warnings) == 1 and f"{path}:3: not an OTLP/JSON export line" in warnings[0]


def test_jaeger_json_holds_one_trace_with_its_processes(traced_store, tmp_path: Path) -> None:
    spans = fetch_spans(traced_store, "q1")
    path = tmp_path / "jaeger.json"
    write_export(spans, "jaeger-json", path)
    (trace,) = json.loads(path.read_text())["data"]
    assert trace["traceID"] == spans[0].trace_id and len(trace["spans"]) == len(spans)
    assert len(trace["processes"]) == 3
    assert sorted(p["serviceName"] for p in trace["processes"].values()) == ["child.py", "child.py", "main.py"]
    by_id = {s.span_id: s for s in spans}
    for span in trace["spans"]:
        original = by_id[span["spanID"]]
        assert span["processID"] in trace["processes"]
        assert span["startTime"] == original.start_ns // 1000 and span["duration"] == original.duration_ns // 1000
        refs = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        assert refs == ([original.parent_span_id] if original.parent_span_id else [])
        tags = {t["key"]: t for t in span["tags"]}
        assert tags["selfopt_trace.category"]["value"] == original.category
        assert all(t["type"] in ("string", "bool", "int64", "float64") for t in span["tags"])
    client = next(s for s in trace["spans"] if {"key": "span.kind", "type": "string", "value": "client"} in s["tags"]
                  and s["operationName"] == "GET")
    assert any(t["key"] == "http.response.status_code" and t["type"] == "int64" for t in client["tags"])


def test_chrome_trace_nests_every_lane_and_draws_flows_to_children(traced_store, tmp_path: Path) -> None:
    spans = fetch_spans(traced_store, "q1")
    path = tmp_path / "chrome.json"
    write_export(spans, "chrome", path)
    events = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert len(slices) == len(spans)
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert sorted(n.split(" (pid")[0] for n in names.values()) == ["child.py", "child.py", "main.py"]
    lanes: dict[tuple, list] = {}
    for event in slices:
        lanes.setdefault((event["pid"], event["tid"]), []).append((event["ts"], event["ts"] + event["dur"]))
    # On one lane, slices nest or follow each other, within 1 ns: the microseconds are floats, and
    # interpreter.finalize starts where its process span ends (ts + dur was 3e-8 past its ts: an overlap).
    for intervals in lanes.values():
        stack: list[float] = []
        for start, end in sorted(intervals, key=lambda i: (i[0], -i[1])):
            while stack and stack[-1] <= start + 1e-3:
                stack.pop()
            assert not stack or end <= stack[-1] + 1e-3
            stack.append(end)
    starts = [e for e in events if e["ph"] == "s"]
    finishes = {e["id"]: e for e in events if e["ph"] == "f"}
    assert len(starts) == 2  # the two child processes (the server is a thread of main.py: no arrow)
    assert all(finishes[s["id"]]["pid"] != s["pid"] or finishes[s["id"]]["tid"] != s["tid"] for s in starts)


def test_an_unknown_format_or_an_unwritable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'svg'; formats: otlp-json, jaeger-json, chrome"):
        write_export([], "svg", tmp_path / "x")
    with pytest.raises(ExportError, match="cannot write"):
        write_export([], "chrome", tmp_path / "missing" / "x.json")


def test_the_run_span_is_the_traces_one_root_and_loads_back_to_the_runs_row(traced_store, tmp_path: Path) -> None:
    """The exports' run span (export/run_span.py); loaded back, in any order and twice, the rows the run's files gave."""
    from selfopt_trace.collector_ingest import load_files
    from selfopt_trace.export.run_span import NAME, with_run_span
    from selfopt_trace.store import Store

    stored = fetch_spans(traced_store, "q1")
    spans = with_run_span(traced_store, "q1", fetch_spans(traced_store, "q1"))
    [root] = [span for span in spans if span.parent_span_id is None]
    assert (root.name, root.category, len(spans)) == (NAME, "run", len(stored) + 1)
    [(start_ns, end_ns, exit_code, command)] = traced_store.sql(
        "SELECT start_ns, end_ns, exit_code, command FROM runs WHERE run_id = 'q1'")[1]
    assert (root.start_ns, root.end_ns, root.attributes["process.exit.code"]) == (start_ns, end_ns, exit_code)
    assert root.attributes["process.command_line"] == command and "main.py" in command
    tops = [span for span in stored if span.parent_span_id is None]
    assert len(tops) == 1 and [span.parent_span_id for span in spans if span.span_id == tops[0].span_id] == [root.span_id]

    # the run span after the others, twice in one load (a request sent again), then once more later
    write_export(spans[1:], "otlp-json", tmp_path / "spans.jsonl")
    write_export(spans[:1], "otlp-json", tmp_path / "one.jsonl")
    run_line = (tmp_path / "one.jsonl").read_text()
    with Store(tmp_path / "back.duckdb") as back:
        load_files(back, [tmp_path / "spans.jsonl"])
        assert back.sql("SELECT parent_span_id FROM spans WHERE span_id = ?", [tops[0].span_id])[1] == [(root.span_id,)]
        for times in (2, 3):  # the file again, the line appended: only that line is read
            (tmp_path / "run.jsonl").write_text(run_line * times)
            load_files(back, [tmp_path / "run.jsonl"])
            assert _rows(back, "spans") == _rows(traced_store, "spans")
            # (what the local load found: where, when, the watchers' notes, its damaged lines)
            local = "loaded_at, run_dir, notes, damaged_lines"
            assert _rows(back, "runs", local) == _rows(traced_store, "runs", local)


def _rows(store, table: str, but: str = "") -> list[tuple]:
    return sorted(store.sql(f"SELECT * {f'EXCLUDE ({but})' if but else ''} FROM {table} WHERE run_id = 'q1'")[1],
                  key=repr)
