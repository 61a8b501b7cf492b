"""Jaeger JSON: the format of Jaeger's query API, which the Jaeger UI's "Upload" (JSON file) accepts.

`{"data": [trace, ...]}`, one trace per trace id, each with its spans (times in microseconds,
the parent as a CHILD_OF reference, attributes as typed tags) and its processes (one per traced
process: service name and resource attributes as tags).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from . import SpanRecord

_KIND_TAGS = {"CLIENT": "client", "SERVER": "server", "PRODUCER": "producer", "CONSUMER": "consumer", "INTERNAL": "internal"}


def to_jaeger_json(spans: list[SpanRecord]) -> Iterator[str]:
    traces: dict[str, list[SpanRecord]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    yield '{"data": ['
    for index, (trace_id, trace_spans) in enumerate(traces.items()):
        yield (", " if index else "") + json.dumps(_trace(trace_id, trace_spans), separators=(",", ":"))
    yield "]}\n"


def _trace(trace_id: str, spans: list[SpanRecord]) -> dict[str, Any]:
    process_ids: dict[tuple, str] = {}
    processes: dict[str, Any] = {}
    encoded = []
    for span in spans:
        key = span.process_key()
        if key not in process_ids:
            process_ids[key] = process_id = f"p{len(process_ids) + 1}"
            processes[process_id] = {"serviceName": span.service_name or "unknown",
                                     "tags": tags(span.resource_attributes)}
        span_tags = dict(span.attributes)
        span_tags["span.kind"] = _KIND_TAGS.get(span.kind, "internal")
        span_tags["selfopt_trace.category"] = span.category
        if span.status != "UNSET":
            span_tags["otel.status_code"] = span.status
        if span.status == "ERROR":
            span_tags["error"] = True
        if span.incomplete:
            span_tags["selfopt_trace.incomplete"] = True
        encoded.append({
            "traceID": trace_id,
            "spanID": span.span_id,
            "operationName": span.name,
            "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_span_id}]
            if span.parent_span_id else [],
            "startTime": span.start_ns // 1000,
            "duration": max(span.end_ns - span.start_ns, 0) // 1000,
            "tags": tags(span_tags),
            "logs": [],
            "processID": process_ids[key],
            "warnings": None,
            "flags": 1,
        })
    return {"traceID": trace_id, "spans": encoded, "processes": processes, "warnings": None}


def tags(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    """Typed Jaeger tags; lists and maps become their JSON text."""
    out = []
    for key, value in attributes.items():
        if isinstance(value, bool):
            out.append({"key": key, "type": "bool", "value": value})
        elif isinstance(value, int):
            out.append({"key": key, "type": "int64", "value": value})
        elif isinstance(value, float):
            out.append({"key": key, "type": "float64", "value": value})
        elif isinstance(value, str):
            out.append({"key": key, "type": "string", "value": value})
        elif value is not None:
            out.append({"key": key, "type": "string", "value": json.dumps(value)})
    return out
