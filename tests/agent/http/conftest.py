"""A real loopback HTTP server for the client tests, and helpers to read HTTP spans back.

The server runs in the (untraced) pytest process; it remembers the headers of every request it
got, so tests can check what reached the wire (the traceparent, no extra or missing headers).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.spanfiles import RunSpans, SpanRecord


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # one send per response: no Nagle / delayed-ACK stall between headers and body
    server: LoopbackServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"path": self.path, "headers": self.headers.items(), "body": body})
        path = self.path.partition("?")[0]
        parts = path.strip("/").split("/")
        if parts[0] == "status":
            self._send(int(parts[1]), b'{"status": %d}' % int(parts[1]))
        elif parts[0] == "flaky":  # /flaky/<key>/<failures>: 503 that many times, then 200
            key, failures = parts[1], int(parts[2])
            self.server.hits[key] = self.server.hits.get(key, 0) + 1
            self._send(503 if self.server.hits[key] <= failures else 200, b"{}")
        elif parts[0] == "redirect":
            self._send(302, b"", [("Location", "/echo")])
        elif parts[0] == "bad-length":  # a response whose Content-Length is not a number
            self.send_response(200)
            self.send_header("Content-Length", "abc")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"hello")
            self.close_connection = True
        elif parts[0] == "drip":  # /drip/<bytes>/<ms>: the body one byte at a time, that long apart
            size, pause = int(parts[1]), int(parts[2]) / 1000
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            for _ in range(size):
                time.sleep(pause)
                self.wfile.write(b"x")
                self.wfile.flush()
        elif parts[0] == "secret":
            self._send(200, b'{"token": "s3cr3t-RESPONSE", "ok": true}')
        else:
            self._send(200, json.dumps({"method": self.command, "body_size": len(body)}).encode())

    def _send(self, code: int, body: bytes, headers: list = ()) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list = []
        self.hits: dict = {}

    @property
    def url(self) -> str:
        scheme = "https" if hasattr(self, "ca_path") else "http"
        return "%s://127.0.0.1:%d" % (scheme, self.server_address[1])

    def traceparents(self) -> list:
        return [[v for k, v in request["headers"] if k.lower() == "traceparent"] for request in self.seen]


@pytest.fixture
def server():
    httpd = LoopbackServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tls_server(tmp_path):
    """The same server over TLS, with a certificate from a throwaway CA (its PEM at `.ca_path`)."""
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    httpd = LoopbackServer()
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(httpd.ca_path))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def client_spans(spans: RunSpans) -> list[SpanRecord]:
    return sorted((s for s in spans.spans if s.kind == "CLIENT" and s.category == "http"), key=lambda s: s.start_ns)


def server_spans(spans: RunSpans) -> list[SpanRecord]:
    return sorted((s for s in spans.spans if s.kind == "SERVER" and s.category == "http"), key=lambda s: s.start_ns)


def children_named(spans: RunSpans, span: SpanRecord, name: str) -> list[SpanRecord]:
    return [s for s in spans.children(span) if s.name == name]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until something accepts connections on 127.0.0.1:port (or the process died)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("server exited early: %s" % (process.stderr.read() if process.stderr else ""))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on port %d" % port)


class TracedServer:
    """A server command run traced in the background; stopped with SIGTERM (the agent then flushes)."""

    def __init__(self, traced, args: list, port: int, cwd: Path | None = None, env: dict | None = None):
        self.process = subprocess.Popen(args, env=traced.env(**(env or {})), cwd=cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.port = port
        wait_for_port(port, self.process)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def stop(self) -> tuple:
        # A server span is recorded just after its response went out: give the last one that moment
        # (and the 100 ms flusher its turn) before SIGTERM.
        import time

        time.sleep(0.3)
        self.process.terminate()
        out, err = self.process.communicate(timeout=30)
        return out, err


PYTHON = sys.executable
