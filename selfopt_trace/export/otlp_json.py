"""OTLP/JSON lines: what the OpenTelemetry Collector's file exporter writes, and reading them back.

Each line is one `ExportTraceServiceRequest` in the OTLP/JSON encoding (ids in hex, 64-bit
integers as strings, enums as numbers): `{"resourceSpans": [...]}`, one resource per traced
process, at most `SPANS_PER_LINE` spans per line. What OTLP has no field for travels as
attributes and comes back out when read: the span category (`selfopt_trace.category`), an
incomplete span (`selfopt_trace.incomplete`) and the run id (resource `selfopt_trace.run_id`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .. import __version__
from ..collector_ingest import CATEGORY, INCOMPLETE, RUN_ID, SOURCE_FILE, read_content, span_rows
from . import SpanRecord

SPANS_PER_LINE = 5000
KINDS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUSES = {"UNSET": 0, "OK": 1, "ERROR": 2}
SCOPE = {"name": "selfopt-trace", "version": __version__}


def to_otlp_json_lines(spans: list[SpanRecord]) -> Iterator[str]:
    """The spans as OTLP/JSON lines, grouped by process (resource)."""
    by_process: dict[tuple, list[SpanRecord]] = {}
    for span in spans:
        by_process.setdefault((span.run_id, *span.process_key()), []).append(span)
    for group in by_process.values():
        resource = dict(group[0].resource_attributes)
        if group[0].run_id is not None:
            resource[RUN_ID] = group[0].run_id
        if group[0].source_file is not None:
            resource[SOURCE_FILE] = group[0].source_file
        encoded_resource = {"attributes": key_values(resource)}
        for first in range(0, len(group), SPANS_PER_LINE):
            request = {"resourceSpans": [{
                "resource": encoded_resource,
                "scopeSpans": [{"scope": SCOPE, "spans": [otlp_span(s) for s in group[first:first + SPANS_PER_LINE]]}],
            }]}
            yield json.dumps(request, separators=(",", ":")) + "\n"


def otlp_span(span: SpanRecord) -> dict[str, Any]:
    attributes = dict(span.attributes)
    attributes[CATEGORY] = span.category
    if span.incomplete:
        attributes[INCOMPLETE] = True
    encoded: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": KINDS.get(span.kind, 1),
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": key_values(attributes),
        "status": {"code": STATUSES.get(span.status, 0)},
    }
    if span.parent_span_id:
        encoded["parentSpanId"] = span.parent_span_id
    return encoded


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(key), "value": any_value(value)} for key, value in attributes.items()]


def any_value(value: Any) -> dict[str, Any]:
    """A Python value as an OTLP AnyValue (None: the empty value)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def read_otlp_json_lines(path: Path | str, warnings: list[str] | None = None) -> Iterator[SpanRecord]:
    """The spans of an OTLP/JSON lines file (plain, .gz or .zst: recognised by content).

    A line that is not OTLP/JSON (a torn last line, for instance) is skipped, with a message added
    to `warnings` when given. The span category is ours when the file came from us, else guessed
    from the span's name and attributes.
    """
    path = Path(path)
    for number, line in enumerate(read_content(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows = list(span_rows(json.loads(line), path.name))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            if warnings is not None:
                warnings.append(f"{path}:{number}: not an OTLP/JSON export line ({type(exc).__name__}: {exc}); skipped")
            continue
        for row in rows:
            yield _record(row)


def _record(row: dict[str, Any]) -> SpanRecord:
    run_id = row["run_id"]
    return SpanRecord(
        run_id=None if run_id == f"collector-{row['trace_id']}" else run_id, trace_id=row["trace_id"],
        span_id=row["span_id"], parent_span_id=row["parent_span_id"], name=row["name"], kind=row["kind"],
        category=row["category"], start_ns=row["start_ns"], end_ns=row["end_ns"], status=row["status"],
        incomplete=row["incomplete"], service_name=row["service_name"], pid=row["pid"],
        attributes=row["attributes"], resource_attributes=row["resource_attributes"], source_file=row["source_file"])
