"""`selfopt-trace collector`: an OTLP receiver (HTTP and gRPC) writing into the store.

OTLP/HTTP: `POST /v1/traces`, `application/x-protobuf` or `application/json`, gzip or deflate or
plain; the answer is an `ExportTraceServiceResponse` in the request's encoding (partial_success
when spans were refused), sent only once the request is synced to disk (writer.py). Refusals, each with a
reason in the body (a `google.rpc.Status` for protobuf, `{"code", "message"}` for JSON, text
otherwise): 400 a body that does not parse, 401 a missing or wrong bearer token, 404 another path,
405 another method, 411 no Content-Length, 413 a body over the limit (before or after
decompression; one up to `DISCARD_FACTOR` times the limit is read first, so that the client gets
to read the answer, a larger one is answered at once and the connection closed), 415 another
content type or encoding, 503 a full spool (the store held by another process for long; clients
retry). Every connection has its own thread, so the others go on. A client that
sends nothing of its body for `STALL_TIMEOUT_S`, or not all of it within `BODY_TIMEOUT_S`, is
dropped, unanswered: nothing of it was stored.

OTLP/gRPC: the `TraceService/Export` of opentelemetry-proto's generated service, the same checks
(INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED, UNAVAILABLE). It earns its place: gRPC is
what many SDKs send by default (.NET's, Python's `opentelemetry-instrument`, Go programs built with
otlptracegrpc), and it costs nothing to install: grpcio is already a dependency (export/otlp_sdk.py).

`drain()` (SIGTERM, SIGINT): stop accepting, let the requests in progress finish (each is written
and answered), close idle keep-alive connections, load what the spool holds, close the store.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .decode import JSON, PROTOBUF, Checked, RequestError, check, decompress, media_type, parse
from .writer import Busy, Writer

PATH = "/v1/traces"
BODY_TIMEOUT_S = 30.0  # to receive a whole body
STALL_TIMEOUT_S = 10.0  # without a byte of the body
IDLE_TIMEOUT_S = 60.0  # a keep-alive connection with no request
WRITE_TIMEOUT_S = 60.0  # a request waiting for its commit
DEFAULT_MAX_BYTES = 20 << 20  # the OpenTelemetry Collector's default limit for one request (20 MiB)
DISCARD_FACTOR = 4  # a body over the limit, up to this many times it, is read (and dropped) before the 413


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    db_path: Path
    host: str = "127.0.0.1"
    port: int = 4318
    grpc_port: int | None = 4317  # None: no gRPC
    token: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    idle_close_s: float = 1.0
    lock_patience_s: float = 10.0  # at the end: how long to wait for a store held elsewhere before leaving the spool


class Receiver:
    """Both servers and the writer; `start()` binds (ports 0: free ones), `drain()` ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.writer = Writer(settings.db_path, settings.idle_close_s, settings.lock_patience_s)
        self.http: _HttpServer | None = None
        self.grpc = None
        self.http_port = 0
        self.grpc_port = 0
        self.refused = 0  # requests refused whole
        self.rejected_spans = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        settings = self.settings
        self.writer.start()
        try:
            self.http = _HttpServer((settings.host, settings.port), self)
        except OSError as exc:  # named as the gRPC server's failure is
            where = f"[{settings.host}]" if ":" in settings.host else settings.host
            raise OSError(f"cannot listen on {where}:{settings.port} (HTTP): {exc.strerror or exc}") from exc
        self.http_port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.2}, name="otlp-http",
                         daemon=True).start()
        if settings.grpc_port is not None:
            self.grpc, self.grpc_port = _start_grpc(self, settings.host, settings.grpc_port)

    def drain(self, grace_s: float = 30.0) -> None:
        """Stop accepting; finish and answer what is in progress; load everything; close the store."""
        if self.grpc is not None:
            stopped = self.grpc.stop(grace_s)
        if self.http is not None:
            self.http.shutdown()  # no new connections
            self.http.close_idle()
            self.http.server_close()  # joins the connections' threads: requests in progress finish
        if self.grpc is not None:
            stopped.wait(grace_s)
        self.writer.stop()

    # ---- what both protocols do with a request

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every span acknowledged so far is in the store."""
        return self.writer.flush(timeout)

    def check_token(self, authorization: str | None) -> bool:
        token = self.settings.token
        if token is None:
            return True
        expected = "Bearer " + token
        return authorization is not None and hmac.compare_digest(authorization.encode(), expected.encode())

    def receive(self, body: bytes, kind: str) -> Checked:
        """Parse, check and spool one request (RequestError: refused whole; Busy; RuntimeError: spool failure)."""
        try:
            request = parse(body, kind)
        except RequestError:
            with self._lock:
                self.refused += 1
            raise
        return self.store(request, body if kind == PROTOBUF else None)

    def store(self, request, body: bytes | None = None) -> Checked:
        """Spool a parsed request (`body`: its bytes, when it came as protobuf) once its spans are checked."""
        checked = check(request)
        if checked.spans:
            self.writer.submit(request.SerializeToString() if body is None else body, checked.spans).wait(WRITE_TIMEOUT_S)
        if checked.rejected:
            with self._lock:
                self.rejected_spans += checked.rejected
        return checked

    def refuse(self) -> None:
        with self._lock:
            self.refused += 1


def response_bytes(decoded: Checked, kind: str) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = ExportTraceServiceResponse()
    if decoded.rejected:
        response.partial_success.rejected_spans = decoded.rejected
        response.partial_success.error_message = decoded.reason
    if kind == PROTOBUF:
        return response.SerializeToString()
    if decoded.rejected:
        return json.dumps({"partialSuccess": {"rejectedSpans": str(decoded.rejected),
                                              "errorMessage": decoded.reason}}).encode()
    return b"{}"


def status_bytes(code: int, reason: str, kind: str | None) -> tuple[bytes, str]:
    """A refusal's body: google.rpc.Status (code: gRPC's) in the request's encoding, else text."""
    if kind == PROTOBUF:
        from google.rpc import status_pb2

        return status_pb2.Status(code=code, message=reason).SerializeToString(), PROTOBUF
    if kind == JSON:
        return json.dumps({"code": code, "message": reason}).encode(), JSON
    return (reason + "\n").encode(), "text/plain; charset=utf-8"


# gRPC status codes for the HTTP ones (google.rpc.Code)
_RPC = {400: 3, 401: 16, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 500: 13, 503: 14}


# ---------------------------------------------------------------- OTLP/HTTP

class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the connections' threads: nothing half-answered
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple, receiver: Receiver) -> None:
        self.receiver = receiver
        self.handlers: set = set()
        self.handlers_lock = threading.Lock()
        self.draining = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def close_idle(self) -> None:
        """Drain: connections waiting for their next request are closed; busy ones close after it."""
        self.draining = True
        with self.handlers_lock:
            handlers = list(self.handlers)
        for handler in handlers:
            if not handler.busy:
                try:
                    handler.connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer
    timeout = IDLE_TIMEOUT_S
    busy = False

    def setup(self) -> None:
        super().setup()
        with self.server.handlers_lock:
            self.server.handlers.add(self)

    def finish(self) -> None:
        with self.server.handlers_lock:
            self.server.handlers.discard(self)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass

    def handle_one_request(self) -> None:
        self.busy = False
        try:
            super().handle_one_request()
        except (socket.timeout, ConnectionError):
            self.close_connection = True
        if self.server.draining:
            self.close_connection = True

    def parse_request(self) -> bool:
        self.busy = True  # a request line came: it is answered even while draining
        return super().parse_request()

    def do_GET(self) -> None:  # noqa: N802
        self._refuse(405 if self.path.split("?")[0] == PATH else 404, "OTLP/HTTP takes POST /v1/traces", None)

    do_PUT = do_DELETE = do_PATCH = do_GET

    def do_POST(self) -> None:  # noqa: N802
        receiver = self.server.receiver
        kind = None
        try:
            if self.path.split("?")[0] != PATH:
                raise RequestError(404, f"no such path {self.path[:200]!r}: OTLP/HTTP traces go to {PATH}")
            if not receiver.check_token(self.headers.get("Authorization")):
                raise RequestError(401, "a bearer token is required (Authorization: Bearer TOKEN)")
            kind = media_type(self.headers.get("Content-Type"))
            if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
                raise RequestError(411, "chunked bodies are not taken: send a Content-Length")
            length = self.headers.get("Content-Length")
            if length is None or not length.strip().isdigit():
                raise RequestError(411, "a Content-Length is required")
            size = int(length)
            limit = receiver.settings.max_bytes
            if size > limit:
                if size <= DISCARD_FACTOR * limit:  # read and dropped, so the client reads the answer
                    self._read_body(size, keep=False)
                raise RequestError(413, f"the request has {size} bytes, more than the limit of {limit}")
            body = self._read_body(size)
            if body is None:  # stalled or gone: nothing to answer
                self.close_connection = True
                receiver.refuse()
                return
            body = decompress(body, self.headers.get("Content-Encoding"), limit)
            decoded = receiver.receive(body, kind)
        except RequestError as exc:
            if exc.status in (413, 401, 404, 411):  # the body (maybe huge) was not read: close after answering
                self.close_connection = True
            receiver.refuse()
            self._refuse(exc.status, exc.reason, kind)
            return
        except Busy as exc:
            self._refuse(503, f"busy: {exc}", kind, [("Retry-After", "1")])
            return
        except Exception as exc:  # the store failed: the spans were not written
            self._refuse(500, f"could not store the spans: {exc}", kind)
            return
        self._send(200, response_bytes(decoded, kind), kind)

    def _read_body(self, size: int, keep: bool = True) -> bytes | None:
        deadline = time.monotonic() + BODY_TIMEOUT_S
        chunks, left = [], size
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.connection.settimeout(min(remaining, STALL_TIMEOUT_S))
            try:
                chunk = self.rfile.read1(min(left, 1 << 20))
            except OSError:  # socket.timeout included: a stream that timed out cannot be read again
                return None
            if not chunk:
                return None
            if keep:
                chunks.append(chunk)
            left -= len(chunk)
        self.connection.settimeout(self.timeout)
        return b"".join(chunks)

    def _refuse(self, status: int, reason: str, kind: str | None, headers: list = ()) -> None:
        body, content_type = status_bytes(_RPC.get(status, 2), reason, kind)
        if status == 401:
            headers = [*headers, ("WWW-Authenticate", 'Bearer realm="selfopt-trace"')]
        self._send(status, body, content_type, headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: list = ()) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            if self.close_connection or self.server.draining:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


# ---------------------------------------------------------------- OTLP/gRPC

def _start_grpc(receiver: Receiver, host: str, port: int):
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 (the service's name)
            metadata = dict(context.invocation_metadata())
            if not receiver.check_token(metadata.get("authorization")):
                receiver.refuse()
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required (authorization: Bearer TOKEN)")
            try:
                checked = receiver.store(request)
            except Busy as exc:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"busy: {exc}")
            except Exception as exc:
                context.abort(grpc.StatusCode.INTERNAL, f"could not store the spans: {exc}")
            response = ExportTraceServiceResponse()
            if checked.rejected:
                response.partial_success.rejected_spans = checked.rejected
                response.partial_success.error_message = checked.reason
            return response

    limit = receiver.settings.max_bytes
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc"),
                         options=[("grpc.max_receive_message_length", limit),
                                  ("grpc.max_send_message_length", 1 << 20),
                                  ("grpc.so_reuseport", 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address} (gRPC): {exc}") from exc
    if not bound:
        raise OSError(f"cannot listen on {address} (gRPC): the port is taken or the address is not this machine's")
    server.start()
    return server, bound
