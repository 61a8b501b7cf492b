"""What was sent where: the table `exports` (store/schema.sql), one row per live export or `push` of a run.

A run counts as sent to an endpoint when a row for it says `complete` (every span accepted). A live
export that fell short also leaves diagnostics (table `diagnostics`, code `export.*`), so the
summary counts them and `selfopt-trace sql` finds them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

def record_send(store: Any, run_id: str, via: str, endpoint: str, protocol: str, total: int | None, sent: int,
                complete: bool, error: str | None) -> None:
    store.sql("INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
              [run_id, time.time_ns(), via, endpoint, protocol, total, sent, complete, error])


def record_live_export(store: Any, run_id: str, run_dir: Path) -> None:
    """After loading a run: its export.json (written by the live export) as a row of `exports`, and
    as diagnostics when it fell short or converted values."""
    from ..watchers.live_export import describe, read_record

    record = read_record(run_dir)
    if record is None:
        return
    record_send(store, run_id, "live", str(record.get("endpoint")), str(record.get("protocol")),
                record.get("spans_seen"), int(record.get("spans_sent") or 0), bool(record.get("complete")),
                record.get("error"))
    diagnostics = []
    if not record.get("complete"):
        diagnostics.append(("export.incomplete", describe(record, run_id)))
    converted = record.get("converted_values") or {}
    if converted:
        listing = ", ".join(f"{count} {what}" for what, count in sorted(converted.items()))
        diagnostics.append(("export.converted", f"attribute values OTLP cannot carry were converted: {listing}"))
    for code, message in diagnostics:
        store.sql("INSERT INTO diagnostics (run_id, source_file, time_ns, code, message) VALUES (?, ?, ?, ?, ?)",
                  [run_id, "export.json", time.time_ns(), code, message])
