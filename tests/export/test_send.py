"""Sending spans over OTLP with the SDK's exporters: the settings, the encoding, what is converted, and
the wire against a real HTTP receiver on 127.0.0.1 (retries, headers, compression)."""

from __future__ import annotations

import gzip
import http.server
import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from selfopt_trace.export import SpanRecord, fetch_spans
from selfopt_trace.export.otlp_sdk import MAX_STRING, Sender
from selfopt_trace.export.otlp_settings import OtlpSettingsError, resolve
from selfopt_trace.export.otlp_wire import Encoder
from tests.otel.sdk_reference import Converter


def record(n: int, **changes: Any) -> SpanRecord:
    values: dict[str, Any] = dict(
        run_id="r", trace_id="ab" * 16, span_id=f"{n:016x}", parent_span_id=None if n == 1 else f"{1:016x}",
        name=f"span {n}", kind="INTERNAL", category="other", start_ns=1_000 + n, end_ns=2_000 + n, status="UNSET",
        incomplete=False, service_name="svc", pid=7, attributes={"n": n}, resource_attributes=RESOURCE,
        source_file="7-x.spans")
    values.update(changes)
    return SpanRecord(**values)


RESOURCE = {"service.name": "svc", "process.pid": 7, "process.command_args": ["python", "-c", "pass"]}


# ---------------------------------------------------------------- settings

def test_settings_follow_the_specification() -> None:
    assert resolve({}).endpoint == "http://localhost:4318/v1/traces"
    assert resolve({}, protocol="grpc").endpoint == "http://localhost:4317"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
           "OTEL_EXPORTER_OTLP_HEADERS": "x-team=perf,Authorization=Bearer%20abc",
           "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip"}
    settings = resolve(env)
    assert (settings.protocol, settings.endpoint, settings.timeout_s, settings.compression) == \
        ("http/protobuf", "http://c:4318/v1/traces", 2.5, "gzip")  # the signal's variable wins; timeouts in ms
    assert settings.headers == {"x-team": "perf", "authorization": "Bearer abc"}
    assert "abc" not in repr(settings)  # secrets never printed
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://other:9999/custom"
    assert resolve(env).endpoint == "http://other:9999/custom"  # the signal's endpoint is used as it is
    assert resolve(env, endpoint="http://flag:1").endpoint == "http://flag:1/v1/traces"
    assert resolve(env, endpoint="http://flag:1/v1/traces").endpoint == "http://flag:1/v1/traces"
    assert resolve({}, headers=["X-Key=a=b"]).headers == {"x-key": "a=b"}
    grpc = resolve({"OTEL_EXPORTER_OTLP_INSECURE": "true"}, endpoint="collector:4317", protocol="grpc")
    assert (grpc.host_port, grpc.tls) == (("collector", 4317), False)
    assert resolve({}, endpoint="https://user:secret@c/x?token=t").display() == "https://c/x/v1/traces"


@pytest.mark.parametrize("kwargs, message", [
    (dict(protocol="http/json"), "unsupported OTLP protocol 'http/json'"),
    (dict(protocol="thrift"), "unsupported OTLP protocol"),
    (dict(endpoint="localhost:4318"), "expected http://HOST:PORT"),
    (dict(endpoint="ftp://c:21"), "the scheme must be http or https"),
    (dict(endpoint="http://c:99999"), "its port is not a number"),
    (dict(endpoint="http://"), "it names no host"),
    (dict(endpoint="http://u:secret@c:x"), "invalid OTLP endpoint 'http://***@c:x'"),
    (dict(headers=["novalue"]), "expected KEY=VALUE"),
    (dict(headers=["bad key=v"]), "expected KEY=VALUE"),
    (dict(headers=["k=line\nbreak"]), "control characters"),
])
def test_bad_settings_are_errors_that_name_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(OtlpSettingsError, match=message.replace("(", r"\(").replace("*", r"\*")) as error:
        resolve({}, **kwargs)
    assert "secret" not in str(error.value)


def test_bad_variables_are_errors_too() -> None:
    for env, message in [({"OTEL_EXPORTER_OTLP_HEADERS": "a=1,broken"}, "malformed header"),
                         ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "milliseconds"),
                         ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "gzip or none"),
                         ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent.pem"}, "no such file"),
                         ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL")]:
        with pytest.raises(OtlpSettingsError, match=message):
            resolve(env)


# ---------------------------------------------------------------- encoding and conversion

def test_the_encoding_is_the_sdks_byte_for_byte(traced_store) -> None:
    converter = Converter()
    spans = [converter.span(span) for span in fetch_spans(traced_store, "q1")]
    other = {**RESOURCE, "process.pid": 8}
    spans += [converter.span(record(n, kind=kind, status=status, incomplete=n % 2 == 0, resource_attributes=other,
                                    attributes={"s": "x", "i": -5, "f": 0.25, "b": False, "l": [1, "a", 2.5],
                                                "m": {"k": [True]}, "e": []}))
              for n, (kind, status) in enumerate([("SERVER", "ERROR"), ("CLIENT", "OK"), ("PRODUCER", "UNSET"),
                                                  ("CONSUMER", "ERROR"), ("INTERNAL", "OK")], 1)]
    # Values the Converter never hands over, straight into a span: the encoder takes them as the SDK does.
    odd = converter.span(record(9))
    odd._attributes = {"none": None, "bytes": b"\x00\xff", "neg": -(1 << 63), "big": (1 << 63) - 1, "nan": math.nan,
                       "empty": "", "zero": 0, "false": False, "nested": [[1, {"a": None}], []], "é": "ü"}
    spans.append(odd)
    assert len(spans) > 30
    encoder = Encoder()
    for _ in range(2):  # the second time from its caches
        ours, sdks = encoder.encode(spans), encode_spans(spans)
        assert ours.SerializeToString(deterministic=True) == sdks.SerializeToString(deterministic=True)
    assert len(ours.resource_spans) == 5  # one per process: three in q1, two here


def test_values_otlp_cannot_carry_are_converted_and_counted() -> None:
    converter = Converter()
    attributes = {"huge": "é" * (MAX_STRING + 10), "bad": "caf\udce9", "nan": math.nan, "inf": -math.inf,
                  "big": 1 << 70, "none": None, "list": [1, None, math.inf, "\udcff"], "nested": {"x": math.nan},
                  "fine": "ok", "\udcffkey": 1}
    span = converter.span(record(1, attributes=attributes, incomplete=True, category="http"))
    sent = dict(span.attributes)
    assert sent["huge"] == "é" * MAX_STRING
    assert sent["bad"] == "caf\\udce9" and sent["list"] == [1, "Infinity", "\\udcff"]
    assert (sent["nan"], sent["inf"], sent["big"], sent["nested"]) == ("NaN", "-Infinity", str(1 << 70), {"x": "NaN"})
    assert "none" not in sent and sent["fine"] == "ok" and sent["\\udcffkey"] == 1
    assert sent["selfopt_trace.category"] == "http" and sent["selfopt_trace.incomplete"] is True
    assert converter.counts == {"truncated strings": 1, "strings that were not UTF-8": 3, "NaN or infinite numbers": 4,
                                "integers beyond 64 bits": 1, "null values": 2}
    Encoder().encode([span]).SerializeToString()  # protobuf takes every value now
    assert attributes["nan"] is math.nan  # the record itself is untouched
    resource = dict(span.resource.attributes)
    assert resource == {**RESOURCE, "selfopt_trace.run_id": "r", "selfopt_trace.source_file": "7-x.spans"}


# ---------------------------------------------------------------- the wire: a real HTTP receiver

class Receiver:
    """OTLP/HTTP protobuf on 127.0.0.1: records requests; answers each with the next of `statuses` (then 200)."""

    def __init__(self, tls: Any = None) -> None:  # tls: an ssl.SSLContext to serve HTTPS with
        self.requests: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, request))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if status in (429, 503):
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://localhost:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def span_ids(self) -> list[str]:
        return [span.span_id.hex() for _, request in self.requests for resource in request.resource_spans
                for scope in resource.scope_spans for span in scope.spans]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


def test_429_and_503_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.statuses = [503, 429]
    sender = Sender(resolve({}, endpoint=receiver.url))
    assert sender.send([record(1), record(2)]) == 2
    assert len(receiver.requests) == 3 and sorted(set(receiver.span_ids())) == [f"{1:016x}", f"{2:016x}"]
    assert (sender.sent, sender.refused) == (2, 0)


def test_a_refused_batch_is_counted_with_the_reason(receiver: Receiver) -> None:
    receiver.statuses = [400]
    sender = Sender(resolve({}, endpoint=receiver.url))
    assert sender.send([record(1)]) == 0
    assert (sender.sent, sender.refused) == (0, 1) and "400" in (sender.problem() or "")


def test_headers_and_compression_reach_the_receiver(receiver: Receiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "x-team=perf,authorization=Bearer%20abc", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
    Sender(resolve(env, endpoint=receiver.url, headers=["X-Run=r1"])).send([record(1)])
    [(headers, request)] = receiver.requests
    assert (headers["x-team"], headers["authorization"], headers["x-run"]) == ("perf", "Bearer abc", "r1")
    assert headers["content-encoding"] == "gzip"
    [span] = request.resource_spans[0].scope_spans[0].spans
    assert span.span_id.hex() == f"{1:016x}" and span.trace_id.hex() == "ab" * 16


def test_big_runs_go_in_batches_under_the_receivers_limits(receiver: Receiver) -> None:
    big = "x" * 60_000  # 50 of these pass the batch byte limit long before the span limit
    sender = Sender(resolve({}, endpoint=receiver.url))
    assert sender.send([record(n, attributes={"big": big}) for n in range(1, 101)]) == 100
    assert len(receiver.requests) >= 3 and len(set(receiver.span_ids())) == 100


# ---------------------------------------------------------------- TLS: the certificate variables

@pytest.fixture
def tls_files(tmp_path):
    """A CA (its PEM file) and a server certificate for localhost, from trustme."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca_file, server


def test_https_with_the_ca_from_otel_exporter_otlp_certificate(tls_files, monkeypatch) -> None:
    import ssl

    import certifi

    # Set on many machines (this one too): requests would let it replace the exporter's own CA file.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    ca_file, server = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    receiver = Receiver(context)
    url = receiver.url
    refused = Sender(resolve({"OTEL_EXPORTER_OTLP_TIMEOUT": "1500"}, endpoint=url))  # the system's CAs do not know this one
    assert refused.send([record(1)]) == 0 and "CERTIFICATE_VERIFY_FAILED" in (refused.problem() or "")
    trusting = Sender(resolve({"OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca_file)}, endpoint=url))
    try:
        assert trusting.send([record(2)]) == 1
        assert receiver.span_ids() == [f"{2:016x}"]
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_grpc_over_tls_with_the_ca_from_the_traces_variable(tls_files) -> None:
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    ca_file, server_cert = tls_files
    received = []

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 (the generated name)
            received.extend(span.span_id.hex() for r in request.resource_spans for s in r.scope_spans for span in s.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    credentials = grpc.ssl_server_credentials([(server_cert.private_key_pem.bytes(),
                                                server_cert.cert_chain_pems[0].bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        env = {"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(ca_file)}
        sender = Sender(resolve(env, endpoint=f"https://localhost:{port}", protocol="grpc"))
        assert sender.send([record(3)]) == 1 and received == [f"{3:016x}"]
    finally:
        server.stop(0)
