"""`selfopt-trace push RUN`: send a stored run to an OTLP receiver, every span as it was recorded.

The spans are read from the store in pages (a run can hold millions) and sent through the SDK's
exporter (export/otlp_sdk.py) with their own trace and span ids, so pushing a run twice sends the
same spans twice: a backend that keys spans by id keeps one of each. Whether anything listens is
asked first with one TCP connect, before the SDK is imported; a receiver that refuses the first
batch ends the push (one clear error), later refusals are counted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import SpanRecord
from .otlp_settings import OtlpSettings, listening

PAGE_ROWS = 50_000
_COLUMNS = ("rowid", "trace_id", "span_id", "parent_span_id", "name", "kind", "category", "start_ns", "end_ns",
            "status", "incomplete", "service_name", "pid", "attributes", "resource_attributes", "source_file")
# Pages by rowid: each is one range scan, where LIMIT/OFFSET would rescan all the pages before it.
_PAGE_SQL = f"""
SELECT {', '.join(_COLUMNS)} FROM spans
WHERE run_id = $run_id AND rowid > $after ORDER BY rowid LIMIT {PAGE_ROWS}
"""


@dataclass
class PushResult:
    run_id: str
    endpoint: str
    protocol: str
    total: int
    sent: int = 0
    refused: int = 0
    seconds: float = 0.0
    error: str | None = None
    converted: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.error is None and self.sent == self.total


def push_run(store: Any, run_id: str, settings: OtlpSettings) -> PushResult:
    """Send every span of `run_id` from `store` (read-only is enough)."""
    started = time.perf_counter()
    _, rows = store.sql("SELECT count(*) FROM spans WHERE run_id = $run_id", {"run_id": run_id})
    result = PushResult(run_id, settings.display(), settings.protocol, int(rows[0][0]))
    if not listening(settings, timeout_s=min(settings.timeout_s, 2.0)):
        result.error = f"nothing accepts connections at {settings.display()}"
        return result
    from .otlp_sdk import Sender  # only now: ~0.5 s of imports

    sender = Sender(settings)
    try:
        for page in pages(store, run_id):
            before = sender.sent
            sender.send(page)
            if sender.sent == before == 0 and sender.refused:
                break  # not one span accepted: the receiver is down or refuses; say so rather than retry every page
    finally:
        sender.shutdown()
    result.sent, result.refused, result.converted = sender.sent, sender.refused, dict(sender.converter.counts)
    if sender.refused:
        result.error = sender.first_error if result.sent == 0 else sender.last_error
    result.seconds = time.perf_counter() - started
    return result


def pages(store: Any, run_id: str) -> Iterator[list[SpanRecord]]:
    """The run's spans, `PAGE_ROWS` at a time, attributes parsed (one parsed resource per process)."""
    resources: dict[str, dict] = {}
    after = -1
    while True:
        _, rows = store.sql(_PAGE_SQL, {"run_id": run_id, "after": after})
        if not rows:
            return
        page = []
        for (rowid, trace_id, span_id, parent, name, kind, category, start, end, status, incomplete, service, pid,
             attributes, resource_text, source_file) in rows:
            resource = resources.get(resource_text)
            if resource is None:
                resource = resources[resource_text] = json.loads(resource_text or "{}")
            page.append(SpanRecord(run_id, trace_id, span_id, parent, name, kind, category, start, end, status,
                                   bool(incomplete), service, pid, json.loads(attributes) if attributes else {},
                                   resource, source_file))
        after = rows[-1][0]
        yield page
