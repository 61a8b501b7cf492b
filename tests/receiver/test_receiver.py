"""`selfopt-trace collector`: OTLP/HTTP (protobuf, JSON, gzip) and OTLP/gRPC into the store; every
bad input refused or stored safely while the receiver goes on serving; SIGTERM drains."""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from selfopt_trace.receiver.convert import convert, record, records
from selfopt_trace.collector_ingest import ProcessFields, scope_attributes
from selfopt_trace.receiver.decode import MAX_STRING, Decoded, _add_span, _Values, rows_of, spooled
from selfopt_trace.receiver.server import Receiver, Settings
from tests.receiver.conftest import TRACE, post, received, request, stored


@pytest.fixture
def sdk_encoding(monkeypatch):
    """The SDK exporters' own encoding (export/otlp_sdk.make_exporter, used by other tests in this
    process, replaces it module-wide with one that takes our pre-encoded batches)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_exporter
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_exporter

    monkeypatch.setattr(http_exporter, "encode_spans", encode_spans)
    monkeypatch.setattr(grpc_exporter, "encode_spans", encode_spans)


def sdk_spans(provider_exporter) -> None:
    """Two spans made by the OTel SDK in this process, sent with `provider_exporter` (its own exporter)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-app", "process.pid": 77}))
    provider.add_span_processor(SimpleSpanProcessor(provider_exporter))
    tracer = provider.get_tracer("my.lib", "2.0")
    with tracer.start_as_current_span("outer") as outer:
        outer.set_attribute("n", 3)
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={"url.full": "http://x/y"}) as call:
            call.record_exception(ValueError("bad"))
            call.set_status(Status(StatusCode.ERROR, "it failed"))
    provider.shutdown()


def check_sdk_rows(rows: list[dict]) -> None:
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"outer", "GET"}
    outer, call = by_name["outer"], by_name["GET"]
    assert call["parent_span_id"] == outer["span_id"] and outer["parent_span_id"] is None
    assert call["trace_id"] == outer["trace_id"] and len(outer["trace_id"]) == 32
    assert (outer["kind"], outer["category"], outer["status"]) == ("INTERNAL", "other", "UNSET")
    assert (call["kind"], call["category"], call["status"]) == ("CLIENT", "http", "ERROR")
    assert outer["attributes"] == {"n": 3, "otel.scope.name": "my.lib", "otel.scope.version": "2.0"}
    assert call["attributes"]["otel.status_description"] == "it failed"
    assert call["attributes"]["exception.type"] == "ValueError" and call["attributes"]["exception.message"] == "bad"
    assert (outer["service_name"], outer["pid"], outer["run_id"]) == ("sdk-app", 77, f"collector-{outer['trace_id']}")
    assert outer["duration_ns"] == outer["end_ns"] - outer["start_ns"] > 0


def test_the_sdks_http_exporter_protobuf_and_gzip(receiver: Receiver, sdk_encoding) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    for compression in (Compression.NoCompression, Compression.Gzip):
        sdk_spans(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.http_port}/v1/traces", compression=compression))
    rows = received(receiver)
    assert len(rows) == 4
    first_trace = rows[0]["trace_id"]
    check_sdk_rows([row for row in rows if row["trace_id"] == first_trace])
    check_sdk_rows([row for row in rows if row["trace_id"] != first_trace])
    runs = received(receiver, "SELECT run_id, span_count, service_name FROM runs ORDER BY run_id")
    assert sorted(run["run_id"] for run in runs) == sorted(f"collector-{row['trace_id']}" for row in rows
                                                           if row["name"] == "outer")


def test_the_sdks_grpc_exporter(receiver: Receiver, sdk_encoding) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    sdk_spans(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.grpc_port}", insecure=True))
    check_sdk_rows(received(receiver))


def test_otlp_json_with_hex_ids_and_gzip(receiver: Receiver) -> None:
    span = {"traceId": TRACE.hex(), "spanId": "00f067aa0ba902b7", "name": "json span", "kind": 3,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000001000",
            "attributes": [{"key": "http.request.method", "value": {"stringValue": "GET"}},
                           {"key": "count", "value": {"intValue": "12"}}],
            "status": {"code": 2}}
    body = json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "js"}}]}, "scopeSpans": [{"spans": [span]}]}]}).encode()
    status, headers, answer = post(receiver, gzip.compress(body), "application/json; charset=utf-8",
                                   {"Content-Encoding": "gzip"})
    assert status == 200 and headers["Content-Type"] == "application/json" and json.loads(answer) == {}
    [row] = received(receiver)
    assert (row["span_id"], row["kind"], row["category"], row["status"], row["service_name"]) == \
        ("00f067aa0ba902b7", "CLIENT", "http", "ERROR", "js")
    assert row["attributes"] == {"http.request.method": "GET", "count": 12}


def test_a_batch_sent_again_is_stored_once(receiver: Receiver) -> None:
    body = request({"name": "a"}, {"name": "b"}).SerializeToString()
    for _ in range(3):
        status, headers, answer = post(receiver, body)
        assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
        assert ExportTraceServiceResponse.FromString(answer) == ExportTraceServiceResponse()
    assert len(received(receiver)) == 2
    assert received(receiver, "SELECT span_count FROM runs") == [{"span_count": 2}]


# ---------------------------------------------------------------- bad input

def reason_of(answer: bytes) -> str:
    return status_pb2.Status.FromString(answer).message


def test_truncated_protobuf_is_400_with_a_reason_and_nothing_stored(receiver: Receiver) -> None:
    good = request({"name": "kept"}).SerializeToString()
    assert post(receiver, good)[0] == 200
    body = request({"name": "x" * 100, "attributes": {"k": "v" * 100}}).SerializeToString()
    status, _, answer = post(receiver, body[:len(body) // 2])
    assert status == 400 and "ExportTraceServiceRequest" in reason_of(answer)
    assert [row["name"] for row in received(receiver)] == ["kept"]


def test_wrong_content_type_and_encoding_are_415(receiver: Receiver) -> None:
    body = request({"name": "a"}).SerializeToString()
    status, _, answer = post(receiver, body, "text/plain")
    assert status == 415 and b"unsupported content type 'text/plain'" in answer
    status, _, answer = post(receiver, body, headers={"Content-Encoding": "br"})
    assert status == 415 and "unsupported content encoding 'br'" in reason_of(answer)
    status, _, answer = post(receiver, b"{not json", "application/json")
    assert status == 400 and json.loads(answer)["message"].startswith("not an OTLP ExportTraceServiceRequest (JSON)")
    status, _, answer = post(receiver, json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "zz", "spanId": "00"}]}]}]}).encode(), "application/json")
    assert status == 400 and "is not hex" in json.loads(answer)["message"]
    assert post(receiver, body, path="/v1/metrics")[0] == 404
    assert received(receiver) == []


def test_invalid_ids_reject_those_spans_only(receiver: Receiver) -> None:
    body = request({"name": "good"}, {"name": "short trace", "trace_id": TRACE[:15]},
                   {"name": "zero trace", "trace_id": bytes(16)}, {"name": "long span", "span_id": bytes(range(1, 10))},
                   {"name": "zero span", "span_id": bytes(8)}, {"name": "bad parent", "parent_span_id": b"\x01\x02"},
                   {"name": "zero parent", "parent_span_id": bytes(8)},
                   {"name": "far future", "end": (1 << 64) - 1}).SerializeToString()
    status, _, answer = post(receiver, body)
    assert status == 200
    response = ExportTraceServiceResponse.FromString(answer)
    assert response.partial_success.rejected_spans == 6
    assert response.partial_success.error_message == "span 'short trace': trace_id of 15 bytes"
    rows = received(receiver)
    assert [(row["name"], row["parent_span_id"]) for row in rows] == [("good", None), ("zero parent", None)]


def test_huge_values_nan_and_infinities_are_stored_safely(receiver: Receiver) -> None:
    attributes = {"huge": "é" * (MAX_STRING + 100), "nan": math.nan, "inf": math.inf, "ninf": -math.inf,
                  "blob": b"\x00\xff", "list": [1.5, math.nan, "x"], "big": (1 << 63) - 1, "neg": -5}
    status, _, answer = post(receiver, request({"name": "n" * (MAX_STRING * 2), "attributes": attributes})
                             .SerializeToString())
    assert status == 200 and ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 0
    [row] = received(receiver)
    assert row["name"] == "n" * MAX_STRING
    stored_attributes = row["attributes"]
    assert stored_attributes["huge"] == "é" * MAX_STRING
    assert (stored_attributes["nan"], stored_attributes["inf"], stored_attributes["ninf"]) == ("NaN", "Infinity", "-Infinity")
    assert stored_attributes["blob"] == base64.b64encode(b"\x00\xff").decode()
    assert stored_attributes["list"] == [1.5, "NaN", "x"]
    assert (stored_attributes["big"], stored_attributes["neg"]) == ((1 << 63) - 1, -5)


def test_ten_megabytes_of_garbage_and_oversized_requests(tmp_path: Path) -> None:
    receiver = Receiver(Settings(db_path=tmp_path / "r.duckdb", port=0, grpc_port=None, idle_close_s=0.2,
                                 max_bytes=12 << 20))
    receiver.start()
    try:
        assert post(receiver, request({"name": "before"}).SerializeToString())[0] == 200
        garbage = os.urandom(10 << 20)
        status, _, answer = post(receiver, garbage)
        assert status == 400 and "ExportTraceServiceRequest" in reason_of(answer)
        status, _, answer = post(receiver, garbage, "application/json")
        assert status == 400
        status, headers, answer = post(receiver, os.urandom(13 << 20))
        assert status == 413 and "more than the limit" in reason_of(answer) and headers["Connection"] == "close"
        bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in ~64 KiB
        status, _, answer = post(receiver, bomb, headers={"Content-Encoding": "gzip"})
        assert status == 413 and "decompresses to more than" in reason_of(answer)
        status, _, answer = post(receiver, gzip.compress(b"x" * 1000)[:-20], headers={"Content-Encoding": "gzip"})
        assert status == 400
        assert post(receiver, request({"name": "after", "span_id": b"\x00" * 7 + b"\x09"}).SerializeToString())[0] == 200
    finally:
        receiver.drain(5)
    assert [row["name"] for row in stored(tmp_path / "r.duckdb")] == ["before", "after"]


def test_a_client_stalling_mid_body_does_not_stop_the_others(receiver: Receiver, monkeypatch) -> None:
    from selfopt_trace.receiver import server

    monkeypatch.setattr(server, "STALL_TIMEOUT_S", 1.0)
    stalled = socket.create_connection(("127.0.0.1", receiver.http_port))
    body = request({"name": "stalled"}).SerializeToString()
    stalled.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
    started = time.monotonic()
    for number in range(5):  # served while the stalled one waits
        assert post(receiver, request({"name": f"other {number}", "span_id": bytes([0] * 7 + [number + 1])})
                    .SerializeToString(), timeout=5)[0] == 200
    assert time.monotonic() - started < 1.0
    stalled.settimeout(10)
    assert stalled.recv(100) == b""  # dropped, unanswered, after the stall timeout
    stalled.close()
    assert sorted(row["name"] for row in received(receiver)) == [f"other {n}" for n in range(5)]


def test_a_token_is_checked_on_both_protocols(tmp_path: Path) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    receiver = Receiver(Settings(db_path=tmp_path / "r.duckdb", port=0, grpc_port=0, token="s3cret", idle_close_s=0.2))
    receiver.start()
    try:
        body = request({"name": "a"}).SerializeToString()
        status, headers, _ = post(receiver, body)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert post(receiver, body, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert post(receiver, body, headers={"Authorization": "Bearer s3cret"})[0] == 200
        with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Export(request({"name": "b", "span_id": b"\x00" * 7 + b"\x02"}), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.Export(request({"name": "b", "span_id": b"\x00" * 7 + b"\x02"}), timeout=10,
                        metadata=[("authorization", "Bearer s3cret")])
    finally:
        receiver.drain(5)
    assert [row["name"] for row in stored(tmp_path / "r.duckdb")] == ["a", "b"]


def test_grpc_refuses_bad_ids_per_span_and_oversized_messages(tmp_path: Path) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    receiver = Receiver(Settings(db_path=tmp_path / "r.duckdb", port=0, grpc_port=0, max_bytes=1 << 20, idle_close_s=0.2))
    receiver.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            answer = stub.Export(request({"name": "ok"}, {"name": "bad", "trace_id": b"\x01"}), timeout=10)
            assert answer.partial_success.rejected_spans == 1
            with pytest.raises(grpc.RpcError) as refused:
                stub.Export(request({"name": "big", "attributes": {"x": "y" * (2 << 20)}}), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        receiver.drain(5)
    assert [row["name"] for row in stored(tmp_path / "r.duckdb")] == ["ok"]


def test_a_store_held_by_another_process_acknowledges_and_loads_once_free(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    duckdb.connect(str(db)).close()
    receiver = Receiver(Settings(db_path=db, port=0, grpc_port=None, idle_close_s=0.2))
    receiver.start()
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(db)!r}); "
                               "print('held', flush=True); sys.stdin.readline()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert post(receiver, request({"name": "while held"}).SerializeToString())[0] == 200  # synced to the spool
        assert not receiver.flush(1.0)  # not in the store yet
        assert list(receiver.writer.spool.glob("*.otlp"))
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(30)
        assert receiver.flush(30)
    finally:
        if holder.poll() is None:
            holder.kill()
        receiver.drain(5)
    assert [row["name"] for row in stored(db)] == ["while held"]
    assert not list(receiver.writer.spool.glob("0*"))


def test_a_full_spool_is_503(tmp_path: Path) -> None:
    receiver = Receiver(Settings(db_path=tmp_path / "r.duckdb", port=0, grpc_port=None, idle_close_s=0.2))
    receiver.writer.max_spool_bytes = 0
    receiver.start()
    try:
        assert post(receiver, request({"name": "first"}).SerializeToString())[0] == 200
        receiver.writer._spooled_bytes = 10  # as if the store had been held elsewhere for long
        status, headers, answer = post(receiver, request({"name": "second"}).SerializeToString())
        assert status == 503 and headers["Retry-After"] == "1" and "held by another process" in reason_of(answer)
    finally:
        receiver.drain(5)


def test_spans_a_killed_receiver_acknowledged_are_loaded_by_the_next(cli) -> None:
    process, http_port, _ = start_collector(cli)
    [worker] = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    for number in range(3):
        assert post(_Port(http_port), request({"name": f"acked {number}", "span_id": bytes([0] * 7 + [number + 1])})
                    .SerializeToString())[0] == 200
    process.kill()  # no drain: what was acknowledged is in the spool only, maybe
    process.wait(30)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{worker}").exists() and b"Z" not in Path(f"/proc/{worker}/stat").read_bytes().split(b")")[1][:3]:
        assert time.monotonic() < deadline, "the conversion worker outlived its receiver"
        time.sleep(0.05)
    spool = cli.db.with_name(cli.db.name + ".spool")
    # a request cut short by the kill (never acknowledged), in the last generation or in one of its own
    with open(max(spool.glob("*.otlp"), default=spool / "000000000999.otlp"), "ab") as torn:
        torn.write(record(request({"name": "torn"}).SerializeToString())[:-3])
    process, _, _ = start_collector(cli)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "left by an earlier receiver: loading them" in out
    assert sorted(name for (name,) in cli.query("SELECT name FROM spans")) == [f"acked {n}" for n in range(3)]


# ---------------------------------------------------------------- the command

def start_collector(cli, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, int, int]:
    process = cli.popen("collector", "--port", "0", "--grpc-port", "0", *args, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, **({"env": env} if env else {}))
    line = process.stdout.readline()
    assert line.startswith("selfopt-trace collector: OTLP/HTTP on http://127.0.0.1:"), (line, process.stderr.read())
    http_port = int(line.split("127.0.0.1:")[1].split("/")[0])
    grpc_port = int(line.split("OTLP/gRPC on 127.0.0.1:")[1].split(",")[0])
    return process, http_port, grpc_port


class _Port:
    def __init__(self, port: int) -> None:
        self.http_port = port


def test_sigterm_drains_every_request_in_progress(cli) -> None:
    process, http_port, _ = start_collector(cli)
    results: list = []

    def sender(number: int) -> None:  # each thread sends until the collector stops answering
        for batch in range(1000):
            spans = [{"name": f"s{number}-{batch}-{i}", "span_id": (number << 40 | batch << 16 | i + 1).to_bytes(8, "big"),
                      "attributes": {"i": i}} for i in range(200)]
            try:
                status, _, _ = post(_Port(http_port), request(*spans).SerializeToString(), timeout=30)
            except OSError:
                return
            results.append((status, len(spans)))
            if status != 200:
                return

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    while len(results) < 20:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    for thread in threads:
        thread.join(60)
    assert process.returncode == 0, err
    acknowledged = sum(count for status, count in results if status == 200)
    [(count,)] = cli.query("SELECT count(*) FROM spans")
    assert count == acknowledged > 0  # every acknowledged span stored; nothing half-written
    assert f"{count} spans received in" in out and f"{count} new to the store" in out


def test_listening_elsewhere_needs_a_token(cli, tmp_path: Path) -> None:
    refused = cli("collector", "--host", "0.0.0.0", "--port", "0", "--grpc-port", "0")
    assert refused.returncode == 2 and "not a loopback address" in refused.stderr.decode()
    token = tmp_path / "token"
    token.write_text("abc123\n")
    process = cli.popen("collector", "--host", "0.0.0.0", "--port", "0", "--no-grpc", "--token-file", str(token),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert "bearer token required" in line and "OTLP/gRPC" not in line, process.stderr.read()
    port = int(line.split(":")[3].split("/")[0])
    body = request({"name": "a"}).SerializeToString()
    assert post(_Port(port), body)[0] == 401
    assert post(_Port(port), body, headers={"Authorization": "Bearer abc123"})[0] == 200
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "1 spans received in 1 requests, 1 new to the store, 1 requests refused" in out


def test_a_conversion_worker_that_dies_is_replaced_then_done_without(receiver: Receiver) -> None:
    converter = receiver.writer.converter
    for number in range(3):
        worker = converter._worker
        if worker is not None:
            worker.kill()  # as the kernel's OOM killer would
            worker.wait(30)
        assert post(receiver, request({"name": f"after {number} deaths", "span_id": bytes([0] * 7 + [number + 1])})
                    .SerializeToString())[0] == 200
        assert receiver.flush(30)
    assert converter._worker is None  # the second death: converted in the receiver's process since
    assert converter.notes == ["the conversion worker died twice: converting in the receiver's own process"]
    assert [row["name"] for row in received(receiver)] == [f"after {n} deaths" for n in range(3)]


def test_the_spools_records_and_a_torn_one(tmp_path: Path) -> None:
    raw = tmp_path / "1.otlp"
    whole = [request({"name": "one"}).SerializeToString(), b"", request({"name": "two"}).SerializeToString()]
    raw.write_bytes(b"".join(record(payload) for payload in whole) + record(b"never acknowledged")[:-1])
    assert list(records(raw)) == whole
    # an attribute's bytes damaged (the request parses; its KeyValue, read when first seen, does not)
    damaged = spooled(request({"name": "bad attribute", "attributes": {"k": "v"}}).SerializeToString())
    damaged.resource_spans[0].scope_spans[0].spans[0].attributes[0] = b"\xff\xff"
    raw.write_bytes(record(b"\xff\xff not a request") + record(damaged.SerializeToString()) + record(whole[0]))
    done = convert(raw, tmp_path / "spans.tsv", tmp_path / "processes.tsv")
    assert (done.records, done.damaged, done.spans) == (3, 2, 1)
    assert (tmp_path / "spans.tsv").read_text().count("\tone\t") == 1


def test_one_receiver_per_store(receiver: Receiver) -> None:
    from selfopt_trace.receiver.writer import SpoolInUse

    second = Receiver(Settings(db_path=receiver.settings.db_path, port=0, grpc_port=None))
    with pytest.raises(SpoolInUse, match="another `selfopt-trace collector` writes to"):
        second.start()
    assert post(receiver, request({"name": "still served"}).SerializeToString())[0] == 200


def test_the_usual_spans_fast_path_makes_the_general_paths_rows() -> None:
    """rows_of's fast path (the usual span, its attributes' pieces cached) and `_add_span` (every
    other span) give the same line for each span, whichever way a span goes: each span here is
    converted both ways, twice (pieces not seen yet, then cached)."""
    usual = {"http.request.method": "POST", "url.full": "http://x/y", "server.port": 8000}
    spans = [
        {"name": "GET", "kind": 3, "attributes": usual},
        {"name": "plain"},
        {"name": "process", "attributes": {"process.pid": 7}},
        {"name": "interpreter.startup"},
        {"name": "import json"},
        {"name": "importer", "attributes": {"python.import.module": "json", "url.full": "u"}},
        {"name": "docker", "attributes": {"container.id": "c1"}},
        {"name": "child", "attributes": {"process.command_args": ["ls", "-l"]}, "parent_span_id": (1).to_bytes(8, "big")},
        {"name": "zero parent", "parent_span_id": bytes(8)},
        {"name": "own", "attributes": {"selfopt_trace.category": "task", "selfopt_trace.incomplete": True}},
        {"name": "own inf", "attributes": {"selfopt_trace.category": "task", "inf": math.inf}},
        {"name": "scope key", "attributes": {"otel.scope.name": "mine", "n": 1}},
        {"name": "tab\tname", "attributes": {"é\"\n": "é\t\"x"}},
        {"name": "n" * (MAX_STRING + 5)},
        {"name": "nan", "attributes": {"d": math.nan, "blob": b"\x01"}},
        {"name": "bad kind", "kind": 9},
        {"name": "zero span", "span_id": bytes(8)},
        {"name": "short trace", "trace_id": TRACE[:5]},
        {"name": "far", "end": 1 << 63},
    ]
    message = request(*spans)
    message.resource_spans[0].scope_spans[0].scope.version = "1.2"
    duplicate = message.resource_spans[0].scope_spans[0].spans.add()
    duplicate.CopyFrom(message.resource_spans[0].scope_spans[0].spans[0])
    duplicate.span_id = (99).to_bytes(8, "big")
    duplicate.attributes.add(key="url.full").value.string_value = "again"
    failed = message.resource_spans[0].scope_spans[0].spans.add()
    failed.CopyFrom(duplicate)
    del failed.attributes[-1]
    failed.span_id = (98).to_bytes(8, "big")
    failed.status.code, failed.status.message = 2, "broke"
    failed.events.add(name="exception").attributes.add(key="exception.type").value.string_value = "ValueError"
    own = request({"name": "own scope", "attributes": {"selfopt_trace.category": "task"}}, {"name": "own plain"},
                  resource={"selfopt_trace.run_id": "run-1", "service.name": "svc"}, scope="selfopt-trace")
    for each in (spooled(message.SerializeToString()), spooled(own.SerializeToString())) * 2:
        fast = rows_of(each)
        general = Decoded()
        resource_spans = each.resource_spans[0]
        values = _Values()
        fields = ProcessFields(values.attributes(resource_spans.resource.attributes), None)
        number = int(fast.rows.processes[0].split("\t")[0])  # the general path given the same number
        scope = resource_spans.scope_spans[0].scope
        for span in resource_spans.scope_spans[0].spans:
            _add_span(general, span, values, fields, number, scope_attributes(scope.name, scope.version))
        assert fast.rows.spans == general.rows.spans
        assert (fast.spans, fast.rejected, fast.reason, fast.converted) == (
            general.spans, general.rejected, general.reason, values.converted)
    checked = rows_of(spooled(message.SerializeToString()))
    assert fast.spans == 2 and (checked.spans, checked.rejected) == (len(spans) + 2 - 3, 3) and checked.converted == 3


def test_a_span_twice_in_one_load_is_stored_once_and_a_span_id_of_two_traces_twice(tmp_path: Path) -> None:
    """insert_files looks for duplicates by span id alone, then removes those of the same trace only
    (the first line kept)."""
    from selfopt_trace.collector_ingest import Rows, insert
    from selfopt_trace.store import Store

    rows = Rows()
    process = ProcessFields({"service.name": "svc"}, None)
    number = rows.process(process)
    for trace, name in (("a" * 32, "first"), ("a" * 32, "again"), ("b" * 32, "other trace")):
        rows.add(trace, "1" * 16, None, name, "INTERNAL", 1, 2, "UNSET", {}, process, number, None)
    with Store(tmp_path / "store.duckdb") as store:
        assert insert(store, rows) == 2
        assert store.sql("SELECT trace_id, name FROM spans ORDER BY trace_id")[1] == [("a" * 32, "first"),
                                                                                      ("b" * 32, "other trace")]
        assert store.sql("SELECT span_count FROM runs ORDER BY run_id")[1] == [(1,), (1,)]
        assert insert(store, rows) == 0  # all stored already
