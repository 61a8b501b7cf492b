"""docker/compose.yaml for the compose CLI, and `selfopt-trace load` of the collector's file-exporter output."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from selfopt_trace.collector_ingest import load_files
from selfopt_trace.store import Store

ROOT = Path(__file__).resolve().parents[2]
TRACE = "5b8efff798038103d269b633813fc60c"


# ---------------------------------------------------------------- compose file
# otel-config.yaml and collectors/configs/ are validated and run by the real binaries in tests/otel/,
# docker/compose.yaml is started there with the local images (tests/otel/test_compose.py).

def test_compose_file_is_valid_for_docker_compose():
    cli = next(([c] if c == "docker-compose" else ["docker", "compose"] for c in ("docker-compose", "docker")
                if shutil.which(c) and subprocess.run([*([c] if c == "docker-compose" else ["docker", "compose"]), "version"],
                                                      capture_output=True).returncode == 0), None)
    if cli is None:
        pytest.skip("no docker compose CLI on this machine (apt-get install docker-compose; scripts/docker-test-setup.sh does)")
    result = subprocess.run([*cli, "-f", str(ROOT / "docker" / "compose.yaml"), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- load

def export_line(*span_ids: str, start: int = 1_700_000_000_000_000_000, run_id: str | None = None) -> str:
    """One file-exporter line (OTLP/JSON as the collector writes it: hex ids, numeric enums)."""
    resource = [{"key": "service.name", "value": {"stringValue": "docflash"}},
                {"key": "process.pid", "value": {"intValue": "4242"}}]
    if run_id:
        resource.append({"key": "selfopt_trace.run_id", "value": {"stringValue": run_id}})
    spans = [{
        "traceId": TRACE, "spanId": span_id, "parentSpanId": span_ids[0] if i else "", "name": f"span {i}",
        "kind": 3 if i else 1, "startTimeUnixNano": str(start + i * 1000), "endTimeUnixNano": str(start + 10_000),
        "attributes": [{"key": "http.request.method", "value": {"stringValue": "GET"}},
                       {"key": "http.response.status_code", "value": {"intValue": "200"}},
                       {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"boolValue": True}]}}}]
        if i else [], "status": {"code": 2 if i == 1 else 0},
    } for i, span_id in enumerate(span_ids)]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": resource},
                                          "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]})


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "traces.duckdb") as opened:
        yield opened


def span_count(store) -> int:
    return store.sql("SELECT count(*) FROM spans")[1][0][0]


def test_load_maps_otlp_json_to_spans(store, tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text(export_line("00f067aa0ba902b7", "00f067aa0ba902b8") + "\n")
    [result] = load_files(store, [path])
    assert (result.status, result.spans_added, result.bad_lines, result.torn_line) == ("loaded", 2, 0, False)
    _, rows = store.sql("SELECT run_id, span_id, parent_span_id, kind, category, status, duration_ns, service_name, pid, "
                        "attributes->>'http.response.status_code', attributes->'tags' FROM spans ORDER BY start_ns")
    assert rows[0][:9] == (f"collector-{TRACE}", "00f067aa0ba902b7", None, "INTERNAL", "other", "UNSET", 10_000, "docflash", 4242)
    assert rows[1][3:7] == ("CLIENT", "http", "ERROR", 9_000)
    assert rows[1][9] == "200" and json.loads(rows[1][10]) == ["a", True]
    _, runs = store.sql("SELECT run_id, span_count, service_name FROM runs")
    assert runs == [(f"collector-{TRACE}", 2, "docflash")]


def test_load_skips_loaded_files_resumes_grown_ones_and_waits_for_a_torn_line(store, tmp_path):
    path = tmp_path / "traces.jsonl"
    first = export_line("0000000000000001", "0000000000000002")
    torn = export_line("0000000000000003")
    path.write_text(first + "\n" + torn[:40])
    assert load_files(store, [path])[0].torn_line and span_count(store) == 2
    assert load_files(store, [path])[0].status == "already loaded"
    path.write_text(first + "\n" + torn + "\n" + "not json\n")
    [grown] = load_files(store, [path])
    assert (grown.status, grown.spans_added, grown.bad_lines, grown.torn_line) == ("appended", 1, 1, False)
    assert span_count(store) == 3

    # Rotation moves and compresses the file: it is still the file already loaded.
    rotated_gz = tmp_path / "traces-2026-01-01T00-00-00.000.jsonl.gz"
    rotated_gz.write_bytes(gzip.compress(path.read_bytes()))
    rotated_zst = tmp_path / "traces-2026-01-02T00-00-00.000.jsonl.zst"
    rotated_zst.write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
    assert [r.status for r in load_files(store, [rotated_gz, rotated_zst])] == ["already loaded"] * 2
    assert span_count(store) == 3


def test_load_compressed_and_spans_already_stored_once(store, tmp_path):
    line = export_line("00000000000000a1", "00000000000000a2", run_id="run-7")
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress((line + "\n").encode()))
    other = export_line("00000000000000a2", "00000000000000a3", start=1_700_000_000_000_100_000, run_id="run-7")
    zst = tmp_path / "b.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress((other + "\n").encode()))
    results = load_files(store, [gz, zst])
    assert [r.spans_added for r in results] == [2, 1]  # a2 is in both: stored once
    assert store.sql("SELECT DISTINCT run_id FROM spans")[1] == [("run-7",)]
    assert store.sql("SELECT span_count FROM runs")[1] == [(3,)]


def test_load_reads_protobuf_json_from_the_otel_sdk(store, tmp_path):
    from google.protobuf.json_format import MessageToJson
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("outer"):
        with provider.get_tracer("t").start_as_current_span("call", kind=SpanKind.CLIENT, attributes={"url.full": "http://x"}):
            pass
    message = json.loads(MessageToJson(encode_spans(exporter.get_finished_spans())))
    path = tmp_path / "sdk.jsonl"
    path.write_text(json.dumps(message) + "\n")
    assert load_files(store, [path])[0].spans_added == 2
    _, rows = store.sql("SELECT name, kind, category, length(trace_id), length(span_id) FROM spans ORDER BY name")
    assert rows == [("call", "CLIENT", "http", 32, 16), ("outer", "INTERNAL", "other", 32, 16)]
    outer_id = store.sql("SELECT span_id FROM spans WHERE name = 'outer'")[1][0][0]
    assert store.sql("SELECT parent_span_id FROM spans WHERE name = 'call'")[1][0][0] == outer_id


def test_load_command_folders_and_run_directories(tmp_path, traced):
    folder = tmp_path / "collector"
    folder.mkdir()
    (folder / "traces.jsonl").write_text(export_line("00000000000000b1") + "\n")
    (folder / "README.md").write_text("not a trace file\n")
    completed = traced.python("print('x')")
    assert completed.returncode == 0
    db = tmp_path / "t.duckdb"
    cli = [sys.executable, "-m", "selfopt_trace", "load", "--db", str(db)]
    first = subprocess.run([*cli, str(folder), str(traced.run_dir)], capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert f"{folder / 'traces.jsonl'}: loaded, 1 spans added" in first.stdout and "run run loaded" in first.stdout
    again = subprocess.run([*cli, str(folder)], capture_output=True, text=True, cwd=ROOT)
    assert again.stdout == f"{folder / 'traces.jsonl'}: already loaded, 0 spans added\n"
    missing = subprocess.run([*cli, str(tmp_path / "nope")], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "not found" in missing.stderr
