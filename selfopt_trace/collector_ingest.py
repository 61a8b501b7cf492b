"""`selfopt-trace load FILES...`: OpenTelemetry Collector file-exporter output into the store.

The collector's `file` exporter writes OTLP/JSON, one `{"resourceSpans": [...]}` export per line,
rotating the file (and maybe compressing the rotated ones: .gz, .zst). A file is recognised by its
first line (its SHA-256), wherever rotation moved it and whatever compression it got: the table
`collector_files` remembers how many bytes of it were loaded, so loading again adds only what was
appended since, and a file loaded in full is skipped. A last line without its newline is being
written (or was torn by a crash): it is left for the next load. A span already in the store (same
trace and span id, e.g. from a run directory) is not added twice.

Spans go into `spans` under the run id of their resource's `selfopt_trace.run_id`, else
`collector-<trace id>`, one run per trace; `runs` gets a row per run.

What selfopt-trace's own exports carry in attributes because OTLP has no field for it goes back to
its column (`span_rows`): the category, an incomplete span, the run id and the span file
(`selfopt_trace.source_file`, which tells processes apart), so a run that went out over OTLP comes
back as the rows its span files gave. A span of another OTel SDK gets what the agent's OTel bridge
records for the same span (bootstrap/.../hooks/otel_.py): its scope as `otel.scope.name`/`version`,
an error description as `otel.status_description`, its first exception event's attributes, and a
category from its name and attributes. `selfopt-trace collector` (receiver/) makes the same rows of
OTLP/protobuf.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import SelfoptTraceError

FILES_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS collector_files (
    first_line_sha256 VARCHAR PRIMARY KEY,  -- a file is its first line, wherever rotation moved it
    path              VARCHAR,              -- where it was last loaded from
    loaded_bytes      BIGINT,               -- of the decompressed content, up to the last whole line
    spans             BIGINT,               -- spans added from it, over every load
    loaded_at         TIMESTAMPTZ
)"""

CATEGORY = "selfopt_trace.category"
INCOMPLETE = "selfopt_trace.incomplete"
RUN_ID = "selfopt_trace.run_id"
SOURCE_FILE = "selfopt_trace.source_file"  # the span file a process's spans came from: which process they are
OWN_SCOPE = "selfopt-trace"  # the instrumentation scope of selfopt-trace's exports
EXCEPTION_KEYS = ("exception.type", "exception.message", "exception.stacktrace")

_KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUSES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_COLUMNS = ("run_id", "trace_id", "span_id", "parent_span_id", "name", "kind", "category", "start_ns", "end_ns",
            "duration_ns", "status", "incomplete", "service_name", "pid", "attributes", "resource_attributes",
            "source_file")
_JSON_TYPES = {"start_ns": "BIGINT", "end_ns": "BIGINT", "duration_ns": "BIGINT", "incomplete": "BOOLEAN",
               "pid": "INTEGER", "attributes": "JSON", "resource_attributes": "JSON"}


class CollectorFileError(SelfoptTraceError):
    """A collector file that cannot be read at all (missing, not OTLP/JSON lines, bad compression)."""


@dataclass(frozen=True)
class FileLoad:
    path: Path
    status: str  # "loaded", "appended" (more of a file loaded before), "already loaded", "empty"
    spans_added: int
    bad_lines: int  # whole lines that are not OTLP/JSON: skipped
    torn_line: bool  # a last line without its newline: left for the next load


def load_files(store: Any, paths: list[Path]) -> list[FileLoad]:
    """Load each collector file into `store` (a selfopt_trace.store.Store), one transaction per file."""
    store.sql(FILES_TABLE_SQL)
    return [_load_file(store, Path(path)) for path in paths]


def read_content(path: Path) -> bytes:
    """The file's bytes, decompressed by its magic number (gzip, zstd) whatever its name."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CollectorFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if raw[:2] == b"\x1f\x8b":
            return _gunzip_partial(raw)
        if raw[:4] == b"\x28\xb5\x2f\xfd":
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            chunks = []
            try:
                while chunk := reader.read(1 << 20):
                    chunks.append(chunk)
            except zstandard.ZstdError:
                pass  # a frame cut short (being written): keep what decoded
            return b"".join(chunks)
    except (OSError, EOFError) as exc:
        raise CollectorFileError(f"cannot decompress {path}: {exc}") from exc
    return raw


def _gunzip_partial(raw: bytes) -> bytes:
    """gzip content, up to where a file still being written ends."""
    import zlib

    out = zlib.decompressobj(zlib.MAX_WBITS | 16)
    data, rest = [out.decompress(raw)], out.unused_data
    while rest[:2] == b"\x1f\x8b":  # concatenated members (one per flush)
        out = zlib.decompressobj(zlib.MAX_WBITS | 16)
        data.append(out.decompress(rest))
        rest = out.unused_data
    return b"".join(data)


def _load_file(store: Any, path: Path) -> FileLoad:
    content = read_content(path)
    complete_end = content.rfind(b"\n") + 1
    torn = complete_end < len(content)
    if complete_end == 0:
        return FileLoad(path, "empty", 0, 0, torn)
    key = hashlib.sha256(content[:content.find(b"\n")]).hexdigest()
    _, rows = store.sql("SELECT loaded_bytes FROM collector_files WHERE first_line_sha256 = ?", [key])
    loaded = rows[0][0] if rows else 0
    if loaded >= complete_end:
        return FileLoad(path, "already loaded", 0, 0, torn)
    spans, bad = [], 0
    for line in content[loaded:complete_end].splitlines():
        if not line.strip():
            continue
        try:
            spans.extend(span_rows(json.loads(line), path.name))
        except (ValueError, TypeError, AttributeError, KeyError):
            bad += 1
    store.sql("BEGIN")
    try:
        added = insert_rows(store, spans)
        store.sql("""INSERT INTO collector_files VALUES (?, ?, ?, ?, now())
                     ON CONFLICT (first_line_sha256) DO UPDATE SET path = excluded.path,
                       loaded_bytes = excluded.loaded_bytes, spans = collector_files.spans + excluded.spans,
                       loaded_at = excluded.loaded_at""", [key, str(path), complete_end, added])
        store.sql("COMMIT")
    except BaseException:
        store.sql("ROLLBACK")
        raise
    return FileLoad(path, "appended" if loaded else "loaded", added, bad, torn)


def insert_rows(store: Any, rows: list[dict]) -> int:
    """Insert the rows not in the store yet, in the caller's transaction (through a temporary JSON
    file: one statement for all), and add or extend their runs; returns how many were new.
    Also `selfopt-trace collector`'s write (receiver/)."""
    if not rows:
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        handle.flush()
        columns = ", ".join(f"'{name}': '{_JSON_TYPES.get(name, 'VARCHAR')}'" for name in _COLUMNS)
        store.sql(f"""
            CREATE OR REPLACE TEMP TABLE _collector_new AS
            SELECT DISTINCT ON (trace_id, span_id) * FROM read_json($path, format = 'newline_delimited',
                columns = {{{columns}}}) AS new
            WHERE NOT EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = new.trace_id AND s.span_id = new.span_id)
            """, {"path": handle.name})
        store.sql("INSERT INTO spans SELECT * FROM _collector_new")
        _, count = store.sql("SELECT count(*) FROM _collector_new")
        store.sql("""
            INSERT INTO runs (run_id, start_ns, end_ns, service_name, loaded_at, span_count, process_count)
            SELECT run_id, min(start_ns), max(end_ns), arg_min(service_name, start_ns), now(), count(*),
                   count(DISTINCT pid)
            FROM _collector_new GROUP BY run_id
            ON CONFLICT (run_id) DO UPDATE SET
                start_ns = least(runs.start_ns, excluded.start_ns), end_ns = greatest(runs.end_ns, excluded.end_ns),
                loaded_at = excluded.loaded_at, span_count = runs.span_count + excluded.span_count""")
        # A run's exit status is its root process's, as the span-file loader gives it without run.json.
        store.sql("""
            UPDATE runs SET exit_code = (
                SELECT TRY_CAST(c.attributes->>'process.exit.code' AS INTEGER) FROM spans c
                WHERE c.run_id = runs.run_id AND c.name = 'process' AND c.category = 'process'
                  AND NOT EXISTS (SELECT 1 FROM spans p WHERE p.run_id = runs.run_id AND p.span_id = c.parent_span_id)
                ORDER BY c.start_ns LIMIT 1)
            WHERE exit_code IS NULL AND run_id IN (SELECT DISTINCT run_id FROM _collector_new)""")
        return int(count[0][0])


# ---------------------------------------------------------------- OTLP/JSON -> rows of `spans`

def span_rows(export: dict, source_file: str) -> Iterator[dict]:
    """The rows of one OTLP/JSON export request (`{"resourceSpans": [...]}`); `source_file` for the
    spans of a resource that names no span file of its own."""
    for resource_spans in export.get("resourceSpans") or ():
        resource = attributes_of((resource_spans.get("resource") or {}).get("attributes"))
        process = ProcessFields(resource, source_file)
        for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or ():
            scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
            extra = scope_attributes(scope.get("name") or "", scope.get("version") or "")
            for span in scope_spans.get("spans") or ():
                yield _row(span, process, extra)


class ProcessFields:
    """The columns that come from a span's resource: run id (None: one run per trace), service,
    pid, source file, and the resource attributes without what travelled for those columns."""

    __slots__ = ("run_id", "service_name", "pid", "source_file", "resource")

    def __init__(self, resource: dict, source_file: str | None) -> None:
        run_id = resource.pop(RUN_ID, None)
        own_file = resource.pop(SOURCE_FILE, None)
        pid = resource.get("process.pid")
        self.run_id = None if run_id is None else str(run_id)
        self.source_file = str(own_file) if own_file is not None else source_file
        self.service_name = resource.get("service.name")
        self.pid = int(pid) if isinstance(pid, (int, str)) and str(pid).isdigit() and int(pid) < 1 << 31 else None
        self.resource = resource


def scope_attributes(name: str, version: str) -> dict | None:
    """What a span of this instrumentation scope records of it (None for selfopt-trace's own)."""
    if name == OWN_SCOPE:
        return None
    extra = {"otel.scope.name": name} if name else {}
    if version:
        extra["otel.scope.version"] = version
    return extra


def finish_row(run_id: str | None, trace_id: str, span_id: str, parent_span_id: str | None, name: str, kind: str,
               start: int, end: int, status: str, attributes: dict, process: ProcessFields,
               scope_extra: dict | None) -> dict:
    """A row of `spans`: our own attributes back to their columns; a foreign span's scope added."""
    category = attributes.pop(CATEGORY, None)
    incomplete = attributes.pop(INCOMPLETE, False)
    if scope_extra is not None:
        for key, value in scope_extra.items():
            attributes.setdefault(key, value)
    return {
        "run_id": run_id or process.run_id or f"collector-{trace_id}",
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id or None,
        "name": name,
        "kind": kind,
        "category": str(category) if category is not None else _category(name, attributes),
        "start_ns": start,
        "end_ns": end,
        "duration_ns": end - start,
        "status": status,
        "incomplete": incomplete is True,
        "service_name": process.service_name,
        "pid": process.pid,
        "attributes": attributes,
        "resource_attributes": process.resource,
        "source_file": process.source_file,
    }


def exception_attributes(attributes: dict, event_attributes: dict) -> None:
    """The first exception event's attributes onto its span (where the span has none of them)."""
    if "exception.type" not in attributes:
        for key in EXCEPTION_KEYS:
            if key in event_attributes:
                attributes[key] = event_attributes[key]


def _row(span: dict, process: ProcessFields, scope_extra: dict | None) -> dict:
    attributes = attributes_of(span.get("attributes"))
    trace_id = _hex_id(span["traceId"])
    start, end = int(span.get("startTimeUnixNano") or 0), int(span.get("endTimeUnixNano") or 0)
    status = span.get("status") or {}
    status_code = _enum(status.get("code", 0), _STATUSES, "STATUS_CODE_")
    if scope_extra is not None:
        if status_code == "ERROR" and status.get("message"):
            attributes.setdefault("otel.status_description", status["message"])
        for event in span.get("events") or ():
            if event.get("name") == "exception":
                exception_attributes(attributes, attributes_of(event.get("attributes")))
                break
    return finish_row(None, trace_id, _hex_id(span["spanId"]), _hex_id(span.get("parentSpanId") or ""),
                      span.get("name", ""), _enum(span.get("kind", 1), _KINDS, "SPAN_KIND_"), start, end, status_code,
                      attributes, process, scope_extra)


def attributes_of(items: list | None) -> dict:
    """OTLP/JSON key-value list -> plain dict."""
    return {item["key"]: _value(item.get("value") or {}) for item in items or ()}


def _value(value: dict) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_value(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return attributes_of((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]  # base64, as OTLP/JSON writes it
    return None


def _hex_id(value: str) -> str:
    """OTLP/JSON ids are hex; some writers use base64 (the protobuf JSON default)."""
    if not value or all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    import base64

    return base64.b64decode(value).hex()


def _enum(value: Any, names: dict, prefix: str) -> str:
    if isinstance(value, str):
        return value.removeprefix(prefix).replace("UNSPECIFIED", "INTERNAL" if prefix == "SPAN_KIND_" else "UNSET")
    return names.get(int(value), names[0])


def _category(name: str, attributes: dict) -> str:
    """Our span categories (docs/span-format.md) from a span of any OTel SDK."""
    if name == "process":
        return "process"
    if name == "interpreter.startup":
        return "startup"
    if name.startswith("import ") or "python.import.module" in attributes:
        return "import"
    if any(key.startswith(("http.", "url.")) for key in attributes):
        return "http"
    if any(key.startswith("container.") for key in attributes):
        return "container"
    if "process.command_args" in attributes:
        return "subprocess"
    return "other"
