"""Exports of a stored run: OTLP/JSON lines, Jaeger JSON, Chrome trace events; and sending to a collector.

    spans = fetch_spans(store, run_id)
    write_export(spans, "otlp-json", path)      # or "jaeger-json", "chrome"

Renderers take the spans (`SpanRecord`, the store's columns) and return text; only `fetch_spans`
talks to the store. `otlp_json.read_otlp_json_lines` reads OTLP/JSON lines back into `SpanRecord`s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import SelfoptTraceError

FORMATS = ("otlp-json", "jaeger-json", "chrome")


class ExportError(SelfoptTraceError):
    """An export that cannot be made (unknown format, unwritable file)."""


@dataclass
class SpanRecord:
    """One span as the store holds it (table `spans`), attributes as dicts."""

    run_id: str | None
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    category: str
    start_ns: int
    end_ns: int
    status: str
    incomplete: bool
    service_name: str | None
    pid: int | None
    attributes: dict[str, Any] = field(default_factory=dict)
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    source_file: str | None = None

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def process_key(self) -> tuple:
        """What tells processes apart: the span file (one per process from the agent), pid and host."""
        return (self.source_file, self.pid, self.resource_attributes.get("host.name"))


@dataclass
class SpanColumns:
    """Spans of one process, field by field: each list holds one item per span, in the same order.

    How the live export's follower hands over the complete spans of a chunk of span-file lines and
    `push` a page of stored rows: the OTLP encoder (otlp_wire.SpanEncoder.add_columns) works on whole
    columns with no Python code per field, which a SpanRecord per span would cost. Ids are hex text;
    `records()` makes SpanRecords of them."""

    run_id: str | None
    resource_attributes: dict[str, Any]
    service_name: str | None
    pid: int | None
    source_file: str | None
    trace_ids: Sequence[str]
    span_ids: Sequence[str]
    parent_span_ids: Sequence[str | None]
    names: Sequence[str]
    kinds: Sequence[str]
    categories: Sequence[str]
    starts: Sequence[int]
    ends: Sequence[int]
    statuses: Sequence[str]
    attributes: Sequence[dict[str, Any]]
    incomplete: Sequence[bool] | None = None  # None: none is

    def __len__(self) -> int:
        return len(self.span_ids)

    def records(self) -> list[SpanRecord]:
        count = len(self.span_ids)
        return list(map(SpanRecord, repeat(self.run_id, count), self.trace_ids, self.span_ids,
                        [parent or None for parent in self.parent_span_ids], self.names, self.kinds, self.categories,
                        self.starts, self.ends, self.statuses,
                        self.incomplete if self.incomplete is not None else repeat(False, count),
                        repeat(self.service_name, count), repeat(self.pid, count), self.attributes,
                        repeat(self.resource_attributes, count), repeat(self.source_file, count)))


_COLUMNS = ("run_id", "trace_id", "span_id", "parent_span_id", "name", "kind", "category", "start_ns", "end_ns", "status",
            "incomplete", "service_name", "pid", "attributes", "resource_attributes", "source_file")


def fetch_spans(store: Any, run_id: str) -> list[SpanRecord]:
    """Every span of a run, in start order."""
    _, rows = store.sql(f"SELECT {', '.join(_COLUMNS)} FROM spans WHERE run_id = $run_id ORDER BY start_ns, span_id",
                        {"run_id": run_id})
    resources: dict[str, dict] = {}  # one parsed resource per distinct text: thousands of spans share one
    spans = []
    for row in rows:
        values = dict(zip(_COLUMNS, row))
        values["attributes"] = json.loads(values["attributes"]) if values["attributes"] else {}
        text = values["resource_attributes"] or "{}"
        if text not in resources:
            resources[text] = json.loads(text)
        values["resource_attributes"] = resources[text]
        spans.append(SpanRecord(**values))
    return spans


def renderer(fmt: str) -> Callable[[list[SpanRecord]], Iterator[str]]:
    """The function that turns spans into the text of `fmt`, in pieces."""
    if fmt == "otlp-json":
        from .otlp_json import to_otlp_json_lines

        return to_otlp_json_lines
    if fmt == "jaeger-json":
        from .jaeger_json import to_jaeger_json

        return to_jaeger_json
    if fmt == "chrome":
        from .chrome import to_chrome_trace

        return to_chrome_trace
    raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")


def write_export(spans: list[SpanRecord], fmt: str, path: Path | str) -> int:
    """Write `spans` as `fmt` to `path` ("-": stdout); returns the bytes written."""
    render = renderer(fmt)
    if str(path) == "-":
        import sys

        return _write(sys.stdout, render(spans))
    try:
        with open(path, "w", encoding="utf-8") as handle:
            return _write(handle, render(spans))
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write(handle, pieces: Iterable[str]) -> int:
    written = 0
    for piece in pieces:
        handle.write(piece)
        written += len(piece.encode("utf-8"))
    return written
