"""Chrome trace event JSON: opens in Perfetto (ui.perfetto.dev) and chrome://tracing.

One track group per traced process. Trace viewers need the slices of one track to nest, which
threads and parallel children break, so each process's spans are laid out on as few lanes as
keep them nested (lane 1 is the process's own). Flow arrows lead from a span that started a
process or sent a request to the process or server span it started.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from . import SpanRecord


def to_chrome_trace(spans: list[SpanRecord]) -> Iterator[str]:
    origin = min((span.start_ns for span in spans), default=0)
    processes: dict[tuple, list[SpanRecord]] = {}
    for span in spans:
        processes.setdefault(span.process_key(), []).append(span)
    events: list[dict[str, Any]] = []
    where: dict[str, tuple[int, int]] = {}  # span id -> (pid, tid) in the output
    for number, (key, members) in enumerate(sorted(processes.items(), key=lambda item: item[1][0].start_ns), 1):
        pid = number  # real pids repeat across hosts and containers
        events.append(_metadata("process_name", pid, 0, f"{_process_label(members)} (pid {key[1]})"))
        events.append(_metadata("process_sort_index", pid, 0, number, "sort_index"))
        lanes = _lanes(members)
        for lane in range(1, max(lanes.values(), default=1) + 1):
            events.append(_metadata("thread_name", pid, lane, "spans" if lane == 1 else f"concurrent {lane - 1}"))
        for span in members:
            tid = lanes[span.span_id]
            where[span.span_id] = (pid, tid)
            events.append({
                "name": span.name, "cat": span.category, "ph": "X", "pid": pid, "tid": tid,
                "ts": _us(span.start_ns - origin), "dur": _us(max(span.end_ns - span.start_ns, 0)),
                "args": {**span.attributes, "span_id": span.span_id, "kind": span.kind, "status": span.status,
                         **({"incomplete": True} if span.incomplete else {})},
            })
    events.extend(_flows(spans, where, origin))
    yield '{"displayTimeUnit": "ms", "traceEvents": [\n'
    for index, event in enumerate(events):
        yield ("," if index else "") + json.dumps(event, separators=(",", ":")) + "\n"
    yield "]}\n"


def _us(ns: int) -> float:
    return round(ns / 1000, 3)


def _metadata(name: str, pid: int, tid: int, value: Any, field: str = "name") -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": {field: value}}


def _process_label(members: list[SpanRecord]) -> str:
    for span in members:
        if span.name == "process" and span.category == "process":
            return str(span.attributes.get("process.command") or span.service_name or "process")
    return members[0].service_name or "process"


def _lanes(spans: list[SpanRecord]) -> dict[str, int]:
    """Each span's lane (1...): on a lane, a span starts after the last one ended or lies inside it."""
    open_ends: list[list[int]] = []  # per lane, the ends of the spans still open there (a stack)
    lanes = {}
    for span in sorted(spans, key=lambda s: (s.start_ns, -s.end_ns)):
        for lane, stack in enumerate(open_ends):
            while stack and stack[-1] <= span.start_ns:
                stack.pop()
            if not stack or span.end_ns <= stack[-1]:
                stack.append(span.end_ns)
                lanes[span.span_id] = lane + 1
                break
        else:
            open_ends.append([span.end_ns])
            lanes[span.span_id] = len(open_ends)
    return lanes


def _flows(spans: list[SpanRecord], where: dict[str, tuple[int, int]], origin: int) -> Iterator[dict[str, Any]]:
    """An arrow from a CLIENT span to each process or server span started under it in another process."""
    by_id = {span.span_id: span for span in spans}
    for number, span in enumerate(spans, 1):
        parent = by_id.get(span.parent_span_id or "")
        if parent is None or parent.kind != "CLIENT" or where[parent.span_id][0] == where[span.span_id][0]:
            continue
        source_pid, source_tid = where[parent.span_id]
        target_pid, target_tid = where[span.span_id]
        yield {"name": parent.name, "cat": "flow", "ph": "s", "id": number, "pid": source_pid, "tid": source_tid,
               "ts": _us(parent.start_ns - origin)}
        yield {"name": parent.name, "cat": "flow", "ph": "f", "bp": "e", "id": number, "pid": target_pid,
               "tid": target_tid, "ts": _us(span.start_ns - origin)}
