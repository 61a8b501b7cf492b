"""The real Collector and Jaeger v2 as processes: each shipped configuration carries spans where it says,
and a `selfopt-trace run` of a multi-process workload arrives whole in Jaeger and in the collector's files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from selfopt_trace.collector_ingest import load_files
from selfopt_trace.store import Store
from tests.cli.conftest import clean_environ
from tests.otel.conftest import CONFIGS, ROOT, Collector, Jaeger
from tests.otel.jaeger_check import exported_spans, otlp_value, stored_spans

WORKLOAD = Path(__file__).resolve().parent / "workload"


def send_span(endpoint: str, protocol: str, service: str, name: str) -> tuple[str, str]:
    """One CLIENT span with an attribute and an error status, through the OTel SDK; (trace id, span id)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        exporter = GrpcExporter(endpoint=endpoint, insecure=True, timeout=10)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
        exporter = HttpExporter(endpoint=f"{endpoint}/v1/traces", timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("tests.otel").start_as_current_span(name, kind=SpanKind.CLIENT,
                                                                 attributes={"tests.n": 7}) as span:
        span.set_status(Status(StatusCode.ERROR, "boom"))
        context = span.get_span_context()
    provider.shutdown()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)


def exported_span_ids(folder: Path) -> set[str]:
    """Span ids in the whole lines of the file exporter's output under `folder`."""
    ids = set()
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            for resource in json.loads(line)["resourceSpans"]:
                for scope in resource["scopeSpans"]:
                    ids.update(span["spanId"] for span in scope["spans"])
    return ids


# ---------------------------------------------------------------- each configuration

@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_file_only_writes_what_load_reads(start_collector, protocol: str, tmp_path: Path) -> None:
    folder = tmp_path / "repo" / "profiles" / "cross-boundary" / "collector"  # the default, relative path
    folder.mkdir(parents=True)  # the file exporter does not create it
    collector = start_collector(CONFIGS / "otelcol-file.yaml", cwd=tmp_path / "repo")
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    trace_id, span_id = send_span(endpoint, protocol, "file-test", f"sent over {protocol}")
    wait_for(lambda: span_id in exported_span_ids(folder), "span in the collector's file")
    with Store(tmp_path / "t.duckdb") as store:
        [loaded] = load_files(store, [folder / "traces.jsonl"])
        assert loaded.spans_added == 1
        _, rows = store.sql("SELECT run_id, trace_id, span_id, name, kind, status, service_name, attributes->>'tests.n' "
                            "FROM spans")
    assert rows == [(f"collector-{trace_id}", trace_id, span_id, f"sent over {protocol}", "CLIENT", "ERROR", "file-test", "7")]


def test_forward_sends_to_the_remote_endpoint(start_collector, jaeger: Jaeger) -> None:
    collector = start_collector(CONFIGS / "otelcol-forward.yaml",
                                {"SELFOPT_TRACE_FORWARD_ENDPOINT": jaeger.otlp_http_endpoint})
    trace_id, span_id = send_span(collector.grpc_endpoint, "grpc", "forward-test", "forwarded")
    [span] = jaeger.trace(trace_id)["data"][0]["spans"]
    assert (span["spanID"], span["operationName"]) == (span_id, "forwarded")
    assert jaeger.services() == ["forward-test"]


def test_to_jaeger_over_grpc(start_collector, jaeger: Jaeger) -> None:
    collector = start_collector(CONFIGS / "otelcol-jaeger.yaml",
                                {"SELFOPT_TRACE_JAEGER_OTLP_GRPC_ENDPOINT": jaeger.otlp_grpc_endpoint})
    trace_id, span_id = send_span(collector.http_endpoint, "http", "jaeger-test", "to jaeger")
    [trace] = jaeger.trace(trace_id)["data"]
    [span] = trace["spans"]
    tags = {tag["key"]: tag["value"] for tag in span["tags"]}
    assert span["spanID"] == span_id and tags["tests.n"] == 7 and tags["span.kind"] == "client"
    assert tags["otel.status_code"] == "ERROR" and tags["error"] is True
    assert trace["processes"][span["processID"]]["serviceName"] == "jaeger-test"


def test_debug_exporter_logs_the_spans(start_collector, tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "otelcol-file.yaml").read_text())
    config["exporters"] = {"debug": {"verbosity": "detailed"}}
    config["service"]["pipelines"]["traces"]["exporters"] = ["debug"]
    path = tmp_path / "debug.yaml"
    path.write_text(yaml.safe_dump(config))
    collector = start_collector(path)
    send_span(collector.grpc_endpoint, "grpc", "debug-test", "shown by debug")
    wait_for(lambda: "shown by debug" in collector.output(), "span name in the collector's log")


# ---------------------------------------------------------------- a selfopt-trace run, end to end

def field_differences(expected: dict[str, dict], actual: dict[str, dict]) -> list[tuple]:
    """(span name, field, expected, actual) for each field that differs between spans of the same id."""
    return [(span["name"], field, value, actual[span_id][field]) for span_id, span in expected.items()
            for field, value in span.items() if actual[span_id][field] != value]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_run_arrives_whole_in_jaeger_and_in_the_collector_files(start_collector, jaeger: Jaeger, protocol: str,
                                                                    tmp_path: Path) -> None:
    files = tmp_path / "collector"
    files.mkdir()
    collector = start_collector(ROOT / "otel-config.yaml", {
        "SELFOPT_TRACE_JAEGER_OTLP_GRPC_ENDPOINT": jaeger.otlp_grpc_endpoint,
        "SELFOPT_TRACE_COLLECTOR_FILE": str(files / "traces.jsonl")})
    env = clean_environ(SELFOPT_TRACE_HOME=str(tmp_path / "home"))
    cli = [sys.executable, "-m", "selfopt_trace"]
    done = subprocess.run([*cli, "run", "--run-id", "otel-e2e", "--export", "never", "--quiet", "--",
                           sys.executable, str(WORKLOAD / "main.py")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "done", done.stderr
    original = stored_spans(tmp_path / "home" / "traces.duckdb", "otel-e2e")
    assert len(original) > 20
    [trace_id] = {span["trace_id"] for span in original.values()}
    endpoint = "http://" + collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    pushed = subprocess.run([*cli, "push", "otel-e2e", "--endpoint", endpoint, "--protocol", protocol],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert pushed.returncode == 0, pushed.stderr

    # (a) the file exporter's output, loaded, is the run's rows
    wait_for(lambda: exported_span_ids(files) >= set(original), "every span in the collector's files")
    loaded_db = tmp_path / "loaded.duckdb"
    load = subprocess.run([*cli, "load", "--db", str(loaded_db), str(files)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert load.returncode == 0, load.stderr
    loaded = stored_spans(loaded_db, "otel-e2e")
    assert set(loaded) == set(original)
    # what the export carries in attributes (category, run id, span file) is back in its columns
    assert field_differences(original, loaded) == []

    # (b) Jaeger's HTTP API, the UI's: one trace, one tree (the run's own span at its root), parents
    # across processes, a service per process
    original = exported_spans(tmp_path / "home" / "traces.duckdb", "otel-e2e")
    [trace] = jaeger.trace(trace_id, min_spans=len(original))["data"]
    spans = {span["spanID"]: span for span in trace["spans"]}
    assert set(spans) == set(original)
    services = {pid: process["serviceName"] for pid, process in trace["processes"].items()}
    for span_id, span in spans.items():
        expected = original[span_id]
        parents = [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"]
        assert parents == ([expected["parent_span_id"]] if expected["parent_span_id"] else []), expected["name"]
        assert services[span["processID"]] == expected["service_name"]
        assert (span["operationName"], span["startTime"], span["duration"]) == \
            (expected["name"], expected["start_ns"] // 1000, (expected["end_ns"] - expected["start_ns"]) // 1000)
    assert sorted(jaeger.services()) == ["main.py", "selfopt-trace", "server.py", "worker.py"]
    [root] = [span for span in trace["spans"] if not span["references"]]
    assert root["operationName"] == "selfopt-trace run"

    # client -> server: each server span's parent is a client span of another process
    servers = [span for span in original.values() if span["kind"] == "SERVER"]
    assert len(servers) == 4
    for server in servers:
        client = original[server["parent_span_id"]]
        assert client["kind"] == "CLIENT" and client["pid"] != server["pid"]
        assert services[spans[client["span_id"]]["processID"]] != services[spans[server["span_id"]]["processID"]]

    # every field, exactly, through the OTLP view of the same trace (api_v3)
    received = {}
    for resource in jaeger.trace_otlp(trace_id, min_spans=len(original))["result"]["resourceSpans"]:
        resource_attributes = {a["key"]: otlp_value(a["value"]) for a in resource["resource"].get("attributes", [])}
        assert resource_attributes.pop("selfopt_trace.run_id") == "otel-e2e"
        source_file = resource_attributes.pop("selfopt_trace.source_file", None)  # none for the run's own span
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                assert source_file == original[span["spanId"]]["source_file"]
                received[span["spanId"]] = (span, resource_attributes)
    kinds = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}  # OTLP's enums
    statuses = {None: "UNSET", 1: "OK", 2: "ERROR"}
    assert set(received) == set(original)
    for span_id, (span, resource_attributes) in received.items():
        expected = original[span_id]
        attributes = {a["key"]: otlp_value(a["value"]) for a in span.get("attributes", [])}
        assert (span["traceId"], span.get("parentSpanId") or None, span["name"]) == \
            (trace_id, expected["parent_span_id"], expected["name"])
        assert (int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])) == (expected["start_ns"], expected["end_ns"])
        assert kinds[span["kind"]] == expected["kind"]
        assert statuses[span.get("status", {}).get("code")] == expected["status"], expected["name"]
        assert attributes.pop("selfopt_trace.category") == expected["category"]
        assert attributes == expected["attributes"], expected["name"]
        assert resource_attributes == expected["resource_attributes"]
    assert {original[s]["status"] for s in received} >= {"ERROR", "UNSET"}
