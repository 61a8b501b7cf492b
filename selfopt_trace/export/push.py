"""`selfopt-trace push RUN`: send a stored run to an OTLP receiver, every span as it was recorded.

The spans are read from the store in pages (a run can hold millions) and sent through the SDK's
exporter (export/otlp_sdk.py) with their own trace and span ids, so pushing a run twice sends the
same spans twice: a backend that keys spans by id keeps one of each. The run's own span goes first,
and its top-level spans under it (export/run_span.py). Whether anything listens is
asked first with one TCP connect, before the SDK is imported; a receiver that refuses the first
batch ends the push (one clear error), later refusals are counted.

Speed (1M spans in well under 30 s on 2 cores, docs/benchmarks.md): each page's attributes are parsed
as one JSON text (one parse per page, not per span), spans go straight from rows to the request's
bytes (otlp_wire.SpanEncoder), and a large run is split between worker processes, each with its own
reader and exporter.
"""

from __future__ import annotations

import gc
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import SpanColumns
from .otlp_settings import OtlpSettings, listening
from .run_span import RunSpan, stored_run_span

PAGE_ROWS = 50_000
PARALLEL_FROM = 200_000  # spans; below, one process (a worker's start-up, ~0.5 s, would not pay)
MAX_WORKERS = 4
# One worker's share of the run (every parts-th row), a page at a time: the rows in one range of
# rowids, which DuckDB reads from the row groups of that range alone (ORDER BY rowid LIMIT would scan
# and sort the rest of the table for every page). The resource comes as a key into the run's few
# distinct resources. Ids stay hex text: DuckDB's cast of hex to integers is ten times slower than
# Python's int(text, 16).
_PAGE_SQL = """
SELECT trace_id, span_id, parent_span_id, name, kind, category, start_ns, end_ns, status, coalesce(incomplete, false),
       hash(resource_attributes, source_file), coalesce(attributes::VARCHAR, '{}')
FROM spans
WHERE run_id = $run_id AND rowid >= $first AND rowid < $first + $rows AND rowid % $parts = $part
"""
_RESOURCES_SQL = ("SELECT DISTINCT hash(resource_attributes, source_file), coalesce(resource_attributes::VARCHAR, '{}'), "
                  "source_file FROM spans WHERE run_id = $run_id")


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


@dataclass
class _Part:
    """What one worker sent of its share."""

    sent: int = 0
    refused: int = 0
    unsendable: int = 0  # rows whose ids are not hex, or times out of range
    first_error: str | None = None
    last_error: str | None = None
    converted: dict[str, int] = field(default_factory=dict)


def push_run(db_path: Path, run_id: str, settings: OtlpSettings, workers: int | None = None) -> PushResult:
    """Send every span of `run_id` in the database at `db_path` (opened read-only)."""
    from ..store import Store

    started = time.perf_counter()
    with Store(db_path, read_only=True) as store:
        _, rows = store.sql("SELECT count(*) FROM spans WHERE run_id = $run_id", {"run_id": run_id})
        run_span = stored_run_span(store, run_id)
    result = PushResult(run_id, settings.display(), settings.protocol, int(rows[0][0]) + (run_span is not None))
    if not listening(settings, timeout_s=min(settings.timeout_s, 2.0)):
        result.error = f"nothing accepts connections at {settings.display()}"
        return result
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS) if result.total >= PARALLEL_FROM else 1
    if workers == 1:
        parts = [push_part(db_path, run_id, settings, 0, 1, run_span)]
    else:  # spawned, not forked: DuckDB's and gRPC's threads do not survive a fork
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(push_part, *zip(*[(db_path, run_id, settings, part, workers, run_span)
                                                      for part in range(workers)])))
    for part in parts:
        result.sent += part.sent
        result.refused += part.refused + part.unsendable
        for what, count in part.converted.items():
            result.converted[what] = result.converted.get(what, 0) + count
    errors = [part.first_error for part in parts if part.first_error]
    if any(part.unsendable for part in parts):
        errors.append(f"{sum(part.unsendable for part in parts)} spans cannot be sent: ids not hex, or times out of range")
    if result.refused:
        result.error = errors[0] if result.sent == 0 and errors else next(
            (part.last_error for part in parts if part.last_error), errors[0] if errors else "spans refused")
    result.seconds = time.perf_counter() - started
    return result


def push_part(db_path: Path, run_id: str, settings: OtlpSettings, part: int, parts: int,
              run_span: RunSpan | None = None) -> _Part:
    """Send the spans of `run_id` whose span id hashes to `part` (of `parts`): one worker's share;
    the run's own span (`run_span`, the first share's), and its top-level spans hung under it."""
    from ..store import Store
    from .otlp_sdk import Sender  # only now: ~0.5 s of imports

    outcome = _Part()
    sender = Sender(settings, pipelined=True)
    # Not one span accepted: the receiver is down or refuses; say so rather than retry every batch.
    keep_going = lambda: not (sender.sent == 0 and sender.refused)  # noqa: E731
    # The encoder's objects hold no reference cycles: the cyclic collector would only rescan them.
    gc.disable()
    try:
        with Store(db_path, read_only=True) as store:
            _, rows = store.sql(_RESOURCES_SQL, {"run_id": run_id})
            resources = {key: (json.loads(text), source_file) for key, text, source_file in rows}
            if run_span is not None and part == 0:
                sender.send([run_span.record()], keep_going)
            for columns in read_pages(store, run_id, part, parts):
                page = page_columns(run_id, columns, resources)
                if run_span is not None:
                    run_span.adopt(page)
                sender.send(page, keep_going)
                if not keep_going():
                    break
        sender.finish()
    finally:
        gc.enable()
        sender.shutdown()
    unsendable = sender.encoder.unsendable
    outcome.sent, outcome.refused, outcome.unsendable = sender.sent, sender.refused - unsendable, unsendable
    outcome.converted = dict(sender.cleaner.counts)
    outcome.first_error, outcome.last_error = sender.first_error, sender.last_error
    return outcome


def page_columns(run_id: str, columns: list[Sequence], resources: dict[Any, tuple]) -> list[SpanColumns]:
    """A page (`read_pages`) as SpanColumns, one per run of rows of one process (rows are in load
    order: a process's spans are together); `resources`: (resource attributes, source file) by key."""
    (traces, span_ids, parents, names, kinds, categories, starts, ends, statuses, incomplete, keys,
     attributes) = columns
    spans = []
    start = 0
    for key, run in groupby(keys):
        stop = start + len(list(run))
        unfinished = incomplete[start:stop]
        resource, source_file = resources[key]
        spans.append(SpanColumns(run_id, resource, None, None, source_file, traces[start:stop], span_ids[start:stop],
                                 parents[start:stop], names[start:stop], kinds[start:stop], categories[start:stop],
                                 starts[start:stop], ends[start:stop], statuses[start:stop], attributes[start:stop],
                                 unfinished if True in unfinished else None))
        start = stop
    return spans


def read_pages(store: Any, run_id: str, part: int = 0, parts: int = 1) -> Iterator[list[Sequence]]:
    """One share of the run's spans, a page at a time, as columns (`_PAGE_SQL`'s, the attributes parsed)."""
    _, rows = store.sql("SELECT min(rowid), max(rowid) FROM spans WHERE run_id = $run_id", {"run_id": run_id})
    first, last = rows[0]
    if first is None:
        return
    while first <= last:
        _, rows = store.sql(_PAGE_SQL, {"run_id": run_id, "first": first, "rows": PAGE_ROWS * parts, "part": part,
                                        "parts": parts})
        first += PAGE_ROWS * parts
        if rows:
            columns: list[Sequence] = list(zip(*rows))
            columns[11] = json.loads("[" + ",".join(columns[11]) + "]")
            yield columns
