"""The SDK-shaped reference for the OTLP request bytes: stored spans as the OpenTelemetry SDK's
`ReadableSpan`s (what an SDK would have recorded), whose encoding the tests compare with
otlp_wire.SpanEncoder's bytes, byte for byte."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from selfopt_trace import __version__
from selfopt_trace.export import SpanRecord
from selfopt_trace.export.otlp_json import CATEGORY, INCOMPLETE, RUN_ID, SOURCE_FILE
from selfopt_trace.export.otlp_wire import Cleaner

_KINDS = {"INTERNAL": SpanKind.INTERNAL, "SERVER": SpanKind.SERVER, "CLIENT": SpanKind.CLIENT,
          "PRODUCER": SpanKind.PRODUCER, "CONSUMER": SpanKind.CONSUMER}
_STATUSES = {"UNSET": Status(StatusCode.UNSET), "OK": Status(StatusCode.OK), "ERROR": Status(StatusCode.ERROR)}
_UNSET = _STATUSES["UNSET"]
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SCOPE = InstrumentationScope("selfopt-trace", __version__)


class _ProcessResource(Resource):
    """A traced process's resource exactly as recorded, hashed once.

    `Resource()` would drop map values; and the encoder hashes the resource of every span it
    encodes, which for a plain Resource is a sorted json.dumps each time."""

    def __init__(self, attributes: dict[str, Any]) -> None:
        # Not Resource.__init__: it would filter the attributes.
        self._attributes = attributes
        self._schema_url = ""
        self._hash = hash(tuple(sorted(map(repr, attributes.items()))))

    def __hash__(self) -> int:
        return self._hash


class Converter(Cleaner):
    """Spans of ours -> SDK ReadableSpans, one resource per process; counts the values it had to convert.

    Not what `Sender` sends (it encodes the fields directly): the SDK-shaped reference the tests
    compare its encoding with."""

    def __init__(self) -> None:
        super().__init__()
        self._resources: dict[tuple[int, str | None], tuple[dict, Resource]] = {}
        self._parents: dict[tuple[int, int, bool], SpanContext] = {}  # a parent is shared by its children
        self.size = 0  # an estimate of the encoded bytes of the spans converted so far

    def span(self, record: SpanRecord) -> ReadableSpan:
        return self.make(int(record.trace_id, 16), int(record.span_id, 16),
                         int(record.parent_span_id, 16) if record.parent_span_id else None, record.name,
                         record.kind, record.category, record.start_ns, record.end_ns, record.status,
                         record.incomplete, dict(record.attributes),
                         self.resource(record.resource_attributes, record.run_id, record.source_file))

    def make(self, trace_id: int, span_id: int, parent_id: int | None, name: str, kind: str, category: str,
             start_ns: int, end_ns: int, status: str, incomplete: bool, attributes: dict[str, Any],
             resource: Resource) -> ReadableSpan:
        """The span from its fields; `attributes` becomes the span's (it is changed: pass a dict of your own)."""
        attributes[CATEGORY] = category
        if incomplete:
            attributes[INCOMPLETE] = True
        self.size += 120 + self.clean(attributes)
        parent = None
        if parent_id is not None:
            # A process span's parent is in the process that started it, a server span's in its
            # client: contexts that came from elsewhere, as an SDK would mark them.
            key = (trace_id, parent_id, kind == "SERVER" or category == "process")
            parent = self._parents.get(key)
            if parent is None:
                if len(self._parents) >= 4096:
                    self._parents.clear()
                parent = self._parents[key] = SpanContext(*key, _SAMPLED)
        # Positional: name, context, parent, resource, attributes, events, links, kind,
        # instrumentation_info, status, start_time, end_time, instrumentation_scope (a third cheaper
        # than by keyword, for every span).
        return ReadableSpan(self.utf8(name) if name else name, SpanContext(trace_id, span_id, False, _SAMPLED), parent, resource,
                            attributes, (), (),
                            _KINDS.get(kind, SpanKind.INTERNAL), None, _STATUSES.get(status, _UNSET), start_ns, end_ns,
                            _SCOPE)

    def resource(self, attributes: dict[str, Any], run_id: str | None, source_file: str | None = None) -> Resource:
        """The resource of a process with these attributes, in run `run_id` (one object per process)."""
        # Spans of one process share their resource dict: keyed by its identity (kept alive here,
        # so the identity cannot be reused) and the run.
        key = (id(attributes), run_id, source_file)
        cached = self._resources.get(key)
        if cached is None:
            sent = dict(attributes)
            if run_id is not None:
                sent[RUN_ID] = run_id
            if source_file is not None:
                sent[SOURCE_FILE] = source_file
            self.clean(sent)
            cached = self._resources[key] = (attributes, _ProcessResource(sent))
        return cached[1]
