"""send_to_collector: OTLP/HTTP JSON to a real receiver on 127.0.0.1, and nothing when none listens."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from selfopt_trace.export import fetch_spans
from selfopt_trace.export.send import send_to_collector, traces_url
from tests.export.test_exports import otlp_request


class Receiver:
    """An OTLP/HTTP receiver: records each POST to /v1/traces and answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any, bytes]] = []
        self.status = 200
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, self.headers, body))  # case-insensitive names
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_run_arrives_as_valid_otlp(traced_store, receiver: Receiver) -> None:
    assert send_to_collector(traced_store, "q1", receiver.url) is True
    spans = fetch_spans(traced_store, "q1")
    paths = {path for path, _, _ in receiver.requests}
    assert paths == {"/v1/traces"}
    assert all(headers["Content-Type"] == "application/json" for _, headers, _ in receiver.requests)
    sent = [span for _, _, body in receiver.requests
            for resource in otlp_request(body.decode()).resource_spans
            for scope in resource.scope_spans for span in scope.spans]
    assert sorted(span.span_id.hex() for span in sent) == sorted(span.span_id for span in spans)


def test_nothing_listening_returns_false_at_once(traced_store) -> None:
    started = time.perf_counter()
    assert send_to_collector(traced_store, "q1", f"http://127.0.0.1:{free_port()}") is False
    assert time.perf_counter() - started < 0.5


def test_a_refusing_collector_returns_false(traced_store, receiver: Receiver) -> None:
    receiver.status = 503
    assert send_to_collector(traced_store, "q1", receiver.url) is False
    assert len(receiver.requests) == 1  # it stopped at the first refused batch


def test_the_standard_environment_variables_choose_the_endpoint_and_headers(traced_store, receiver: Receiver,
                                                                            monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=perf,authorization=Bearer%20abc")
    assert send_to_collector(traced_store, "q1") is True
    _, headers, body = receiver.requests[0]
    assert headers["x-team"] == "perf" and headers["authorization"] == "Bearer abc"
    assert json.loads(body)["resourceSpans"]


def test_the_traces_url(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert traces_url() == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318")
    assert traces_url() == "http://otel:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://otel:9999/custom")
    assert traces_url() == "http://otel:9999/custom"  # the signal-specific variable is used as it is
