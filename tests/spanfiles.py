"""A small, independent reader of span files for tests (the product's loader is DuckDB SQL).

Deliberately written from docs/span-format.md rather than by importing the writer, so the
tests check the documented format.
"""

from __future__ import annotations

import json
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
        attributes = json.loads(attrs)
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
