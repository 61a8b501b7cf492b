"""A small, independent reader of span files for tests (the product's loader is DuckDB SQL).

Deliberately written from docs/span-format.md rather than by importing the writer, so the
tests check the documented format.
"""

from __future__ import annotations

import json
import marshal
import math
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SpanRecord:
    span_id: str
    parent_span_id: str
    trace_id: str
    name: str
    kind: str
    category: str
    start_ns: int
    end_ns: int | None
    status: str
    attributes: dict
    pid: int
    file: str
    incomplete: bool = False

    @property
    def duration_ms(self) -> float:
        return ((self.end_ns or self.start_ns) - self.start_ns) / 1e6


@dataclass
class RunSpans:
    spans: list[SpanRecord] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)

    def named(self, name: str) -> list[SpanRecord]:
        return [s for s in self.spans if s.name == name]

    def by_id(self) -> dict[str, SpanRecord]:
        return {s.span_id: s for s in self.spans}

    def processes(self) -> list[SpanRecord]:
        return [s for s in self.spans if s.name == "process"]

    def children(self, span: SpanRecord) -> list[SpanRecord]:
        return [s for s in self.spans if s.parent_span_id == span.span_id]

    def parent(self, span: SpanRecord) -> SpanRecord | None:
        return self.by_id().get(span.parent_span_id)

    def trace_ids(self) -> set[str]:
        return {s.trace_id for s in self.spans}

    def process_of(self, last_arg: str) -> SpanRecord:
        """The one process whose command line ends with `last_arg` (or has it as its script's name)."""
        found = [p for p in self.processes()
                 if p.attributes.get("process.command_args", [""])[-1].endswith(last_arg)]
        assert len(found) == 1, f"{len(found)} processes match {last_arg!r}: {[p.attributes.get('process.command_args') for p in self.processes()]}"
        return found[0]


def read_run(run_dir: Path) -> RunSpans:
    out = RunSpans()
    for path in sorted((run_dir / "spans").glob("*.spans")):
        _read_file(path, out)
    return out


def _read_file(path: Path, out: RunSpans) -> None:
    starts: dict[str, SpanRecord] = {}
    ends: dict[str, tuple] = {}
    last_ns = 0
    pid = 0
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        assert len(fields) == 12 and fields[11] == ".", f"malformed line in {path}: {line!r}"
        rec, span_id, parent, trace, name, kind, category, start, end, status, attrs, _ = fields
        attributes = json.loads(attrs) if rec != "M" else {}
        for value in (start, end):
            if value:
                last_ns = max(last_ns, int(value))
        if rec == "H":
            out.headers.append(attributes)
            pid = attributes["pid"]
        elif rec in ("S", "X"):
            starts[span_id] = SpanRecord(span_id, parent, trace, name, kind, category, int(start),
                                         int(end) if end else None, status, attributes, pid, path.name)
        elif rec == "E":
            previous = ends.get(span_id)
            if previous is None or int(end) >= previous[0]:
                ends[span_id] = (int(end), status, attributes, parent)
        elif rec == "D":
            out.diagnostics.append({"code": name, **attributes, "file": path.name})
        elif rec == "M":
            for span in _block(attrs, pid, path.name):
                starts[span.span_id] = span
                last_ns = max(last_ns, span.end_ns)
    for span_id, span in starts.items():
        if span_id in ends:
            end, status, attributes, parent = ends[span_id]
            span.end_ns, span.status = end, status
            span.attributes = {**span.attributes, **attributes}
            if parent:
                span.parent_span_id = parent
        elif span.end_ns is None:
            span.end_ns, span.incomplete = last_ns, True
        out.spans.append(span)


def _block(text: str, pid: int, file: str) -> list[SpanRecord]:
    """An M record's spans: a hex marshal block, a tuple of 11 columns (each a list of the spans'
    values, or a 1-tuple of the value all of them have; the starts as the first and the offsets from
    it, the ends as durations, where all are ints) or, from the first agents, a list of 11
    values a span (span id as an int, parent and trace as ints or their hex, name, kind as SpanKind's
    value or its name, category or "" for the reader's, start, end, status as StatusCode's value or
    its name, scope attributes, attributes), the name with spaces for tabs and line breaks, the span's
    attributes over the scope's, their values as JSON holds them (a tuple a list, a NaN null, text
    that is not UTF-8 escaped)."""
    spans = []
    values = marshal.loads(bytes.fromhex(text))
    if isinstance(values, tuple):  # columns: back to one list, 11 values a span
        count = len(values[0])
        columns = list(values)
        if isinstance(columns[6], tuple) and len(columns[6]) == 2:  # the first start, offsets; durations
            first, offsets = columns[6]
            columns[6] = [first + offset for offset in offsets]
            columns[7] = [start + duration for start, duration in zip(columns[6], columns[7])]
        columns = [column if isinstance(column, list) else list(column) * count for column in columns]
        values = [value for row in zip(*columns) for value in row]
    for index in range(0, len(values), 11):
        span_id, parent, trace, name, kind, category, start, end, status, scope, own = values[index:index + 11]
        attributes = {key: _json_value(value) for key, value in {**scope, **own}.items()}
        escaped = [key for key, value in attributes.items() if _not_utf8(value)]
        for key in escaped:
            attributes[key] = _escape(attributes[key])
        if escaped:
            attributes["selfopt_trace.escaped"] = escaped
        parent = f"{parent:016x}" if isinstance(parent, int) else parent
        trace = f"{trace:032x}" if isinstance(trace, int) else trace
        name = re.sub(r"[\t\n\r]", " ", name)
        kind = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")[kind] if isinstance(kind, int) else kind
        status = ("UNSET", "OK", "ERROR")[status] if isinstance(status, int) else status
        if not category:  # http for a CLIENT or SERVER span with http.* or url.* attributes
            category = "http" if kind in ("CLIENT", "SERVER") and any(
                key.startswith(("http.", "url.")) for key in attributes) else "other"
        spans.append(SpanRecord(f"{span_id:016x}", parent, trace, name, kind, category, start, end, status, attributes,
                                pid, file))
    return spans


def _json_value(value):
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _not_utf8(value) -> bool:
    if isinstance(value, list):
        return any(map(_not_utf8, value))
    return isinstance(value, str) and any(0xD800 <= ord(char) <= 0xDFFF for char in value)


def _escape(value):
    """docs/span-format.md: a byte that is not UTF-8 as \\xHH, a backslash doubled."""
    if isinstance(value, list):
        return [_escape(item) if isinstance(item, str) else item for item in value]
    return "".join("\\\\" if char == "\\" else "\\x%02x" % (ord(char) - 0xDC00) if 0xDC80 <= ord(char) <= 0xDCFF
                   else char for char in value)
