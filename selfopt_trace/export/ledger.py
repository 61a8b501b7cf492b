"""What was sent where: the table `exports` (store/schema.sql), one row per live export or `push` of a run.

A run counts as sent to an endpoint when a row for it says `complete` (every span accepted). A live
export that fell short also leaves diagnostics (table `diagnostics`, code `export.*`), so the
summary counts them and `selfopt-trace sql` finds them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

def record_send(store: Any, run_id: str, via: str, endpoint: str, protocol: str, total: int | None, sent: int,
                complete: bool, error: str | None) -> None:
    store.sql("INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
              [run_id, time.time_ns(), via, endpoint, protocol, total, sent, complete, error])


def record_live_export(store: Any, run_id: str, run_dir: Path) -> None:
    """After loading a run: its export.json (written by the live export) as a row of `exports`, and
    as diagnostics when it fell short or converted values. The export counted what it read by CMD's
    exit; the store holds the whole run: its total (`spans_total`, with the run's own span) goes into
    the row and export.json, and the export is complete only if it saw as many spans as the store
    holds (a process that outlived CMD flushes spans after the export's last read). The export's
    note among the run's stored notes says it as it is now."""
    from ..watchers.live_export import RECORD, describe, read_record
    from .run_span import stored_run_span

    record = read_record(run_dir)
    if record is None:
        return None
    before = describe(record, run_id)
    _, rows = store.sql("SELECT count(*) FROM spans WHERE run_id = ?", [run_id])
    total = int(rows[0][0]) + (stored_run_span(store, run_id) is not None)
    seen = record.get("spans_seen")
    record["spans_total"] = total
    if record.get("complete") and (not isinstance(seen, int) or seen < total):
        record["complete"] = False
        record["error"] = record.get("error") or (
            f"{total - seen if isinstance(seen, int) else 'some'} spans were written after the export's last read "
            "(a process that outlived CMD)")
    try:
        (Path(run_dir) / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError:
        pass  # the row below says it all the same
    record_send(store, run_id, "live", str(record.get("endpoint")), str(record.get("protocol")), total,
                int(record.get("spans_sent") or 0), bool(record.get("complete")), record.get("error"))
    diagnostics = []
    after = describe(record, run_id)
    if not record.get("complete"):
        diagnostics.append(("export.incomplete", after))
    converted = record.get("converted_values") or {}
    if converted:
        listing = ", ".join(f"{count} {what}" for what, count in sorted(converted.items()))
        diagnostics.append(("export.converted", f"attribute values OTLP cannot carry were converted: {listing}"))
    for code, message in diagnostics:
        store.sql("INSERT INTO diagnostics (run_id, source_file, time_ns, code, message) VALUES (?, ?, ?, ?, ?)",
                  [run_id, "export.json", time.time_ns(), code, message])
    if after != before:  # the run's notes (run.json's, the export's among them) say it as it is now
        _, [(notes,)] = store.sql("SELECT coalesce(notes, []) FROM runs WHERE run_id = ?", [run_id])
        store.sql("UPDATE runs SET notes = ? WHERE run_id = ?", [[after if n == before else n for n in notes], run_id])
