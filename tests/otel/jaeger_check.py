"""Compare a stored run with what Jaeger v2 holds of it, field by field, through its HTTP APIs: the UI's
(`/api/traces/{id}`: services per process, parents, tags) and the OTLP one (`/api/v3/traces/{id}`:
exact nanosecond times, kinds, statuses, typed attributes, resources)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from selfopt_trace.export.run_span import stored_run_span
from selfopt_trace.store import Store
from tests.otel.conftest import Jaeger

COLUMNS = ("trace_id", "span_id", "parent_span_id", "name", "kind", "category", "start_ns", "end_ns", "status",
           "incomplete", "service_name", "pid", "attributes", "resource_attributes", "source_file")
KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUSES = {None: "UNSET", 0: "UNSET", 1: "OK", 2: "ERROR"}


def stored_spans(db: Path, run_id: str) -> dict[str, dict[str, Any]]:
    """The run's rows of `spans`, by span id, attributes parsed."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM spans WHERE run_id = ?", [run_id]).fetchall()
    spans = {}
    for row in rows:
        span = dict(zip(COLUMNS, row))
        span["attributes"] = json.loads(span["attributes"] or "{}")
        span["resource_attributes"] = json.loads(span["resource_attributes"] or "{}")
        spans[span["span_id"]] = span
    return spans


def exported_spans(db: Path, run_id: str) -> dict[str, dict[str, Any]]:
    """What an export sends of a stored run (export/run_span.py): its rows, the run's own span at the
    root of its trace, and the top-level spans under it."""
    with Store(db, read_only=True) as store:
        run_span = stored_run_span(store, run_id)
    assert run_span is not None, "the run has no span of its own"
    record = run_span.record()
    spans = {span_id: {**span, "parent_span_id": span["parent_span_id"] or run_span.span_id}
             if span["trace_id"] == run_span.trace_id else span for span_id, span in stored_spans(db, run_id).items()}
    spans[record.span_id] = {column: getattr(record, column) for column in COLUMNS}
    return spans


def otlp_value(value: dict) -> Any:
    """An OTLP/JSON AnyValue as Python."""
    if not value:
        return None
    [(kind, inner)] = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [otlp_value(item) for item in inner.get("values", [])]
    if kind == "kvlistValue":
        return {item["key"]: otlp_value(item.get("value", {})) for item in inner.get("values", [])}
    return inner


def otlp_attributes(items: list | None) -> dict[str, Any]:
    return {item["key"]: otlp_value(item.get("value", {})) for item in items or []}


def sent_attributes(span: dict[str, Any]) -> dict[str, Any]:
    """A stored span's attributes as sent: plus the category, and the incomplete mark."""
    return {**span["attributes"], "selfopt_trace.category": span["category"],
            **({"selfopt_trace.incomplete": True} if span["incomplete"] else {})}


def assert_jaeger_has_the_run(jaeger: Jaeger, original: dict[str, dict[str, Any]], run_id: str,
                              still_running: bool = False) -> dict:
    """Every span exported (`exported_spans`) is in Jaeger once, with every field as stored; returns
    the UI API's trace.

    `still_running`: a process outlived CMD, so the live export closed its open spans at the last time
    known when CMD exited, and the loader, later, at a later one."""
    [trace_id] = {span["trace_id"] for span in original.values()}
    [trace] = jaeger.trace(trace_id, min_spans=len(original))["data"]
    spans = {span["spanID"]: span for span in trace["spans"]}
    assert len(trace["spans"]) == len(spans) and set(spans) == set(original)  # each span once
    services = {key: process["serviceName"] for key, process in trace["processes"].items()}
    for span_id, span in spans.items():
        expected = original[span_id]
        parents = [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"]
        assert parents == ([expected["parent_span_id"]] if expected["parent_span_id"] else []), expected["name"]
        assert services[span["processID"]] == expected["service_name"]
        tags = {tag["key"]: tag["value"] for tag in span["tags"]}
        assert tags["span.kind"] == expected["kind"].lower()
        assert tags.get("otel.status_code", "UNSET") == expected["status"]
        assert tags.get("error", False) is (expected["status"] == "ERROR")
        assert tags["selfopt_trace.category"] == expected["category"]
        process_tags = {tag["key"]: tag["value"] for tag in trace["processes"][span["processID"]]["tags"]}
        assert process_tags["selfopt_trace.run_id"] == run_id
        assert process_tags.get("process.pid") == expected["pid"]  # none for the run's own span

    received = {}
    for resource in jaeger.trace_otlp(trace_id, min_spans=len(original))["result"]["resourceSpans"]:
        resource_attributes = otlp_attributes(resource["resource"].get("attributes"))
        for scope in resource["scopeSpans"]:
            assert scope["scope"]["name"] == "selfopt-trace"
            for span in scope.get("spans") or []:  # a span sent twice: Jaeger keeps one, leaving an empty scope
                received[span["spanId"]] = (span, resource_attributes)
    assert set(received) == set(original)
    for span_id, (span, resource_attributes) in received.items():
        expected = original[span_id]
        assert (span["traceId"], span.get("parentSpanId") or None, span["name"]) == \
            (trace_id, expected["parent_span_id"], expected["name"])
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
        assert start == expected["start_ns"]
        assert end == expected["end_ns"] or (still_running and expected["incomplete"] and start <= end <= expected["end_ns"])
        assert KINDS[span["kind"]] == expected["kind"]
        assert STATUSES[span.get("status", {}).get("code")] == expected["status"], expected["name"]
        got, sent = otlp_attributes(span.get("attributes")), sent_attributes(expected)
        assert got == sent, (expected["name"], {k: (got.get(k), sent.get(k)) for k in {*got, *sent} if got.get(k) != sent.get(k)})
        assert resource_attributes == {**expected["resource_attributes"], "selfopt_trace.run_id": run_id,
                                       **({"selfopt_trace.source_file": expected["source_file"]}
                                          if expected["source_file"] else {})}
    return trace


def assert_client_server_links(trace: dict, original: dict[str, dict[str, Any]], servers: int) -> None:
    """Each SERVER span's parent is a CLIENT span of another process (and service)."""
    services = {span["spanID"]: trace["processes"][span["processID"]]["serviceName"] for span in trace["spans"]}
    server_spans = [span for span in original.values() if span["kind"] == "SERVER"]
    assert len(server_spans) == servers
    for server in server_spans:
        client = original[server["parent_span_id"]]
        assert client["kind"] == "CLIENT" and client["pid"] != server["pid"]
        assert services[client["span_id"]] != services[server["span_id"]]
