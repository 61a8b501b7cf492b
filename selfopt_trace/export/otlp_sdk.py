"""Spans to an OTLP receiver through the OpenTelemetry SDK's exporters (gRPC or HTTP/protobuf).

Importing this module costs ~0.5 s (the SDK, protobuf, grpc or requests): only `push` and a live
export that found a collector import it, never `run` with nothing to export, never a traced process.

Each span keeps its own ids: trace id, span id and parent are the recorded ones (so sending a run
twice sends the same spans, which a backend that keys spans by id stores once), as are the times,
kind, status and attributes. What OTLP has no field for travels as attributes, as in the OTLP/JSON
file export (export/otlp_json.py): the category (`selfopt_trace.category`), an unfinished span
(`selfopt_trace.incomplete`) and the run (`selfopt_trace.run_id` on the resource). A process is one
resource, with the attributes its span file recorded.

The SDK's exporters do the sending (transport, TLS, headers, compression, retries with backoff), but
not the encoding: `Sender` writes each request's protobuf bytes itself from the spans' stored fields
(otlp_wire.SpanEncoder) and hands the bytes to the exporter, which sends them as they are (its
gRPC stub with a pass-through serializer, its HTTP client with the bytes as the body). The SDK's
`ReadableSpan` and its encoder `encode_spans`, or the generated message, would cost 4-5 times the
CPU: at 50,000 spans/s the SDK's encoder alone would need most of a core. SDK spans still go
through the same exporters, encoded by otlp_wire.Encoder (tests/otel/sdk_reference.py makes them
from stored spans: the reference the tests compare the bytes with).

Values OTLP cannot carry are converted and counted (otlp_wire.Cleaner: truncated, escaped, NaN as
text, ...), never allowed to fail a batch.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from typing import Any, Callable, Iterable

# gRPC's C core logs to stderr on its own; `run` writes nothing on CMD's stderr, and an exporter's
# failures are reported as notes instead (read before grpc is first imported).
os.environ["GRPC_VERBOSITY"] = "NONE"

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402

from . import SpanColumns, SpanRecord  # noqa: E402
from .otlp_settings import GRPC, OtlpSettings  # noqa: E402
from .otlp_wire import MAX_STRING, Cleaner, EncodedBatch, Encoder, SpanEncoder  # noqa: E402, F401

MAX_BATCH_SPANS = 8192
# Receivers refuse large requests (the Collector's gRPC receiver: 4 MiB by default); a batch is
# closed well before that, at this many encoded bytes.
MAX_BATCH_BYTES = 2 << 20

class _RecentErrors(logging.Handler):
    """The exporters' log messages (they log their failures): kept for the notes, never printed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: deque[str] = deque(maxlen=10)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage()[:300])
        except Exception:  # a message that cannot be formatted is not worth a crash
            pass


RECENT_ERRORS = _RecentErrors()
_sdk_log = logging.getLogger("opentelemetry")
_sdk_log.addHandler(RECENT_ERRORS)
_sdk_log.propagate = False  # Python's last-resort handler would print them on stderr


# The exporters' closing words after retries, and our own stop: they say nothing about the cause.
_UNINFORMATIVE = ("due to timeout, max retries or shutdown", "hutdown in progress", "already shutdown")


def _reason() -> str | None:
    """The latest exporter message that says why (a retried TLS or connection error says it before the
    closing 'max retries' line), else the latest."""
    messages = list(RECENT_ERRORS.messages)
    telling = [message for message in messages if not any(words in message for words in _UNINFORMATIVE)]
    return (telling or messages or [None])[-1]


# ---------------------------------------------------------------- exporters


ENCODER = Encoder()
_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _encode(spans: Any) -> Any:
    """What the exporters call their `encode_spans`: a batch encoded already passes through as it is
    (its Serialize methods give its bytes); SDK spans are encoded by `ENCODER`."""
    return spans if isinstance(spans, EncodedBatch) else ENCODER.encode(spans)


def _serialize(request: Any) -> bytes:
    """The gRPC stub's request serializer: the bytes of an encoded batch, or of a generated message."""
    return request.payload if isinstance(request, EncodedBatch) else request.SerializeToString()


def make_exporter(settings: OtlpSettings) -> SpanExporter:
    """The SDK's exporter for `settings.protocol`, configured with everything resolved (nothing left
    for it to read from the environment on its own), taking `EncodedBatch`es (or SDK spans)."""
    if settings.protocol == GRPC:
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc import trace_exporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        trace_exporter.encode_spans = _encode  # the name its _translate_data calls

        class GrpcExporter(OTLPSpanExporter):
            """The SDK's gRPC exporter (channel, TLS, metadata, compression, retries, reconnection) with
            a stub that sends a request's bytes as they are."""

            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self._client = self._raw_stub()

            def _initialize_channel_and_stub(self) -> None:  # also how it reconnects after UNAVAILABLE
                super()._initialize_channel_and_stub()
                self._client = self._raw_stub()

            def _raw_stub(self) -> Any:
                stub = type("RawTraceServiceStub", (), {})()
                stub.Export = self._channel.unary_unary(_EXPORT_METHOD, request_serializer=_serialize,
                                                        response_deserializer=ExportTraceServiceResponse.FromString)
                return stub

        credentials = None
        if settings.tls:
            credentials = grpc.ssl_channel_credentials(
                _read(settings.certificate), _read(settings.client_key), _read(settings.client_certificate))
        return GrpcExporter(
            endpoint=settings.endpoint, insecure=not settings.tls, credentials=credentials,
            headers=tuple(settings.headers.items()), timeout=settings.timeout_s,
            compression=grpc.Compression.Gzip if settings.compression == "gzip" else grpc.Compression.NoCompression)
    from opentelemetry.exporter.otlp.proto.http import Compression, trace_exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    trace_exporter.encode_spans = _encode  # the name its export() calls, then SerializePartialToString()

    return HttpExporter(
        endpoint=settings.endpoint, certificate_file=settings.certificate, client_key_file=settings.client_key,
        client_certificate_file=settings.client_certificate, headers=settings.headers, timeout=settings.timeout_s,
        compression=Compression.Gzip if settings.compression == "gzip" else Compression.NoCompression,
        session=_session_keeping_its_ca() if settings.certificate else None)


def _session_keeping_its_ca() -> Any:
    """A requests session whose own CA file wins over $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE.

    The exporter sets the session's `verify` to OTEL_EXPORTER_OTLP_CERTIFICATE, but requests lets
    those variables replace it on every request (psf/requests#3829): where they are set (many
    distributions set them) the certificate would be ignored and the collector refused."""
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if isinstance(self.verify, str) and verify in (None, True):
                settings["verify"] = self.verify
            return settings

    return Session()


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as handle:
        return handle.read()


class Sender:
    """Encodes spans and sends them in batches through one exporter; counts what was accepted.

    `pipelined`: a thread of its own sends each batch while the next is encoded (the exporter waits
    for the receiver's answer with the GIL released); `finish()` waits for the last. `push` sends so;
    the live export sends from its thread, batch after batch."""

    def __init__(self, settings: OtlpSettings, pipelined: bool = False) -> None:
        self.settings = settings
        self.exporter = make_exporter(settings)
        self.cleaner = Cleaner()  # its counts: the values converted
        self.encoder = SpanEncoder(self.cleaner)
        self.sent = 0
        self._refused = 0
        self.first_error: str | None = None
        self.last_error: str | None = None
        self._queue: queue.Queue | None = None
        if pipelined:
            self._queue = queue.Queue(1)  # one batch waiting, one being sent, one being encoded
            self._sending = threading.Thread(target=self._send_queued, name="selfopt-trace-otlp-send", daemon=True)
            self._sending.start()

    @property
    def refused(self) -> int:
        """Spans refused by the receiver, or left out by the encoder (`encoder.unsendable`)."""
        return self._refused + self.encoder.unsendable

    def send(self, spans: Iterable[SpanRecord | SpanColumns], keep_going: Callable[[], bool] | None = None) -> int:
        """Send `spans` (SpanRecords, SpanColumns or both); returns how many were accepted.
        `keep_going()` is asked before each batch."""
        encoder = self.encoder
        accepted = 0
        unsendable = encoder.unsendable
        for item in spans:
            if type(item) is SpanColumns:
                start, total = 0, len(item)
                while start < total:
                    start = encoder.add_columns(item, start, MAX_BATCH_SPANS, MAX_BATCH_BYTES)
                    if start < total:  # the request is full
                        if keep_going is not None and not keep_going():
                            encoder.take()  # dropped
                            return accepted
                        accepted += self._dispatch(encoder.take())
            else:
                encoder.add(encoder.resource(item.resource_attributes, item.run_id, item.source_file), item.trace_id, item.span_id,
                            item.parent_span_id, item.name, item.kind, item.category, item.start_ns, item.end_ns,
                            item.status, item.incomplete, item.attributes)
            if encoder.count >= MAX_BATCH_SPANS or encoder.size >= MAX_BATCH_BYTES:
                if keep_going is not None and not keep_going():
                    encoder.take()  # dropped
                    return accepted
                accepted += self._dispatch(encoder.take())
            if encoder.unsendable != unsendable:
                unsendable = encoder.unsendable
                self._error(f"{unsendable} spans cannot be sent: ids not hex, or times out of range")
        if encoder.count:
            batch = encoder.take()
            if keep_going is None or keep_going():
                accepted += self._dispatch(batch)
        return accepted

    def _dispatch(self, batch: EncodedBatch) -> int:
        if self._queue is None:
            return self.export(batch)
        self._queue.put(batch)
        return 0  # counted once sent

    def _send_queued(self) -> None:
        assert self._queue is not None
        while (batch := self._queue.get()) is not None:
            self.export(batch)

    def finish(self) -> None:
        """Pipelined: wait until every batch handed over is sent (or refused); later ones are sent at once."""
        if self._queue is not None:
            self._queue.put(None)
            self._sending.join()
            self._queue = None

    def export(self, batch: EncodedBatch) -> int:
        """Send one encoded request; returns its spans if accepted, else 0 (counted as refused)."""
        try:
            result = self.exporter.export(batch)
        except Exception as exc:  # the exporter's own bug or a closed channel: a refused batch, never a crash
            result = SpanExportResult.FAILURE
            self._error(f"{type(exc).__name__}: {exc}")
        if result is SpanExportResult.SUCCESS:
            self.sent += batch.count
            return batch.count
        self._refused += batch.count
        self._error(_reason() or self.last_error or "the receiver did not accept the spans")
        return 0

    def problem(self) -> str | None:
        """What went wrong last: a refused batch, else what the exporter logged (a retry in progress)."""
        if self.last_error is not None:
            return self.last_error
        return _reason() if self.sent == 0 else None

    def _error(self, message: str) -> None:
        self.first_error = self.first_error or message
        self.last_error = message

    def shutdown(self) -> None:
        """Close the connection; an export in progress (and its retries) gives up."""
        try:
            self.exporter.shutdown()
        except Exception:
            pass
        if self._queue is not None:  # the batches still waiting are refused at once (the exporter is shut)
            self.finish()
