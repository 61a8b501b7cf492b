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
from itertools import count
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from .errors import SelfoptTraceError
from .export import run_span

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


class CollectorFileError(SelfoptTraceError):
    """A collector file that cannot be read at all (missing, not OTLP/JSON lines, bad compression)."""


@dataclass(frozen=True)
class FileLoad:
    path: Path
    status: str  # "loaded", "appended" (more of a file loaded before), "already loaded", "empty"
    spans_added: int
    bad_lines: int  # whole lines that are not OTLP/JSON: skipped
    torn_line: bool  # a last line without its newline: left for the next load


COLLECTOR_SUFFIXES = (".json", ".jsonl", ".gz", ".zst")


def sort_paths(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(run directories, collector files) named by `load`'s arguments; CollectorFileError for an
    argument that is neither (a typo, a folder of something else, a span file), before anything is read."""
    run_dirs: list[Path] = []
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            if (path / "spans").is_dir() or (path / "run.json").exists():
                run_dirs.append(path)
                continue
            found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(COLLECTOR_SUFFIXES))
            if found:
                files += found
                continue
            runs = sorted(p.name for p in path.iterdir() if (p / "spans").is_dir())
            if runs:
                raise CollectorFileError(f"{path} is a folder of {len(runs)} run directories, not a run: "
                                         f"name them (e.g. `selfopt-trace load {path}/*`)")
            raise CollectorFileError(f"{path}: not a run directory (no run.json, no spans/) and no collector "
                                     f"output in it ({', '.join('*' + s for s in COLLECTOR_SUFFIXES)})")
        elif path.is_file():
            if path.name.endswith(".spans") or path.name == "run.json":
                raise CollectorFileError(f"{path} is part of a run directory: load the run directory "
                                         f"{path.parent.parent if path.name.endswith('.spans') else path.parent}")
            with path.open("rb") as stream:
                head = stream.read(4096)
            if head and not (head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd" or head.lstrip()[:1] == b"{"):
                raise CollectorFileError(f"{path}: not collector output (OTLP/JSON lines, .gz or .zst)")
            files.append(path)
        elif path.exists() or path.is_symlink():
            raise CollectorFileError(f"{path}: not a regular file or a directory")
        else:
            raise CollectorFileError(f"{path}: not found (no such file or directory)")
    return run_dirs, files


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


class Rows:
    """Spans to insert, as lines of tab-separated fields (`SPAN_FIELDS`, `PROCESS_FIELDS`, each
    line ending in "."), each process's columns once. `add` turns what selfopt-trace's exports
    carry in attributes back into columns and gives a foreign span its scope, as `finish_row` does.
    Text fields lose their tabs and line breaks (spaces instead), as the agent's span files do;
    attributes are JSON, which has none. The receiver's spool files hold these lines too."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.processes: list[str] = []
        self._numbers: dict[int, tuple[int, Any]] = {}  # id(ProcessFields or resource dict): (number, it, kept alive)

    def process(self, fields: ProcessFields) -> int:
        found = self._numbers.get(id(fields))
        if found is None:
            number = next(_PROCESS_NUMBERS)
            self.processes.append(process_line(number, fields))
            found = self._numbers[id(fields)] = (number, fields)
        return found[0]

    def add(self, trace_id: str, span_id: str, parent_span_id: str | None, name: str, kind: str, start: int,
            end: int, status: str, attributes: dict, process: ProcessFields, process_number: int,
            scope_extra: dict | None) -> None:
        category = attributes.pop(CATEGORY, None)
        incomplete = attributes.pop(INCOMPLETE, False) is True
        if scope_extra is not None:
            for key, value in scope_extra.items():
                attributes.setdefault(key, value)
        category = _text(str(category)) if category is not None else _category(name, attributes)
        if not name.isprintable():
            name = _text(name)
        self.spans.append(f"{process.run_id or 'collector-' + trace_id}\t{trace_id}\t{span_id}\t{parent_span_id or ''}\t"
                          f"{name}\t{kind}\t{category}\t{start}\t{end}\t{status}\t{'true' if incomplete else 'false'}\t"
                          f"{_json(attributes)}\t{process_number}\t.\n")

    def add_encoded(self, trace_id: str, span_id: str, parent_span_id: str | None, name: str, kind: str, start: int,
                    end: int, status: str, encoded: tuple, process: ProcessFields, process_number: int,
                    scope_extra: dict | None) -> None:
        """`add` with the attributes as JSON pieces (`"key":value` each) and a dict of them: the
        receiver's usual path (receiver/decode.py), the same line as `add` makes."""
        pieces, attributes = encoded
        category = incomplete = None
        if CATEGORY in attributes or INCOMPLETE in attributes:
            category = attributes.pop(CATEGORY, None)
            incomplete = attributes.pop(INCOMPLETE, False)
            pieces = [_json(key) + ":" + _json(value) for key, value in attributes.items()]
        if scope_extra:
            for key, value in scope_extra.items():
                if key not in attributes:
                    attributes[key] = value
                    pieces.append(scope_piece(key, value))
        category = _text(str(category)) if category is not None else _category(name, attributes)
        if not name.isprintable():
            name = _text(name)
        self.spans.append(f"{process.run_id or 'collector-' + trace_id}\t{trace_id}\t{span_id}\t{parent_span_id or ''}\t"
                          f"{name}\t{kind}\t{category}\t{start}\t{end}\t{status}\t{'true' if incomplete is True else 'false'}\t"
                          f"{{{','.join(pieces)}}}\t{process_number}\t.\n")

    def add_row(self, row: dict) -> None:
        """A row as `finish_row` makes it (its own fields already in their columns)."""
        key = id(row["resource_attributes"])  # the rows of one resource share its dict: one process each
        found = self._numbers.get(key)
        if found is None:
            process = ProcessFields({}, row["source_file"])
            process.run_id, process.service_name, process.pid = row["run_id"], row["service_name"], row["pid"]
            process.resource = row["resource_attributes"]
            number = next(_PROCESS_NUMBERS)
            self.processes.append(process_line(number, process))
            found = self._numbers[key] = (number, process)
        attributes = dict(row["attributes"])
        if row["incomplete"]:
            attributes[INCOMPLETE] = True
        attributes[CATEGORY] = row["category"]
        self.add(row["trace_id"], row["span_id"], row["parent_span_id"], row["name"], row["kind"], row["start_ns"],
                 row["end_ns"], row["status"], attributes, found[1], found[0], None)

    def extend(self, other: Rows) -> None:
        self.spans += other.spans
        self.processes += other.processes

    def __len__(self) -> int:
        return len(self.spans)


@lru_cache(maxsize=256)
def scope_piece(key: str, value: str) -> str:
    """A scope attribute's `"key":value` (the same on every span of the scope: encoded once)."""
    return _json(key) + ":" + _json(value)


def process_line(number: int, process: ProcessFields) -> str:
    return (f"{number}\t{_text(process.service_name or '')}\t{'' if process.pid is None else process.pid}\t"
            f"{_json(process.resource)}\t{_text(process.source_file or '')}\t.\n")


def _text(text: str) -> str:
    """A field without the separators: tabs, line breaks (and NULs) become spaces."""
    if text.isprintable():
        return text
    return text.translate(_UNPRINTABLE)


_UNPRINTABLE = {ord(c): " " for c in "\t\n\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_PROCESS_NUMBERS = count(1)  # unique in this process: Rows of many requests go into one insert
SPAN_FIELDS = ("run_id", "trace_id", "span_id", "parent_span_id", "name", "kind", "category", "start_ns", "end_ns",
               "status", "incomplete", "attributes", "process_no", "terminator")
PROCESS_FIELDS = ("process_no", "service_name", "pid", "resource_attributes", "source_file", "terminator")
_TYPES = {"start_ns": "BIGINT", "end_ns": "BIGINT", "incomplete": "BOOLEAN", "process_no": "BIGINT", "pid": "INTEGER"}
_READ = ("header = false, delim = '\\t', quote = '', escape = '', new_line = '\\n', auto_detect = false, "
         "strict_mode = false, null_padding = true, ignore_errors = true")


def _read_csv(parameter: str, fields: tuple, not_null: str) -> str:
    columns = "{%s}" % ", ".join(f"'{name}': '{_TYPES.get(name, 'VARCHAR')}'" for name in fields)
    return f"read_csv(${parameter}, columns = {columns}, {_READ}" + (f", force_not_null = [{not_null}])" if not_null else ")")


# The spans of a pair of files not stored yet (an export sent again, a file loaded twice). A line
# cut short (a crash while it was written: never acknowledged) has no terminator and is left out. A
# span twice in the files is there twice: _DUPLICATES_SQL keeps its first line.
_NEW_SQL = f"""
CREATE OR REPLACE TEMP TABLE _collector_new AS
WITH p AS (SELECT process_no, service_name, pid, resource_attributes::JSON AS resource_attributes, source_file
           FROM {_read_csv("processes", PROCESS_FIELDS, "")} WHERE terminator = '.')
SELECT s.run_id, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.category, s.start_ns, s.end_ns,
       s.end_ns - s.start_ns AS duration_ns, s.status, s.incomplete, p.service_name, p.pid, s.attributes::JSON AS attributes,
       p.resource_attributes, p.source_file
FROM {_read_csv("spans", SPAN_FIELDS, "'name'")} AS s JOIN p ON p.process_no = s.process_no
WHERE s.terminator = '.'
  AND NOT EXISTS (SELECT 1 FROM spans x WHERE x.trace_id = s.trace_id AND x.span_id = s.span_id)
"""
# Rare (a request sent twice within one load), so looked for first by the span ids alone (distinct
# span ids: no span twice), which costs a third of `DISTINCT ON` the whole rows (~0.75 us a span).
_DUPLICATES_SQL = """
DELETE FROM _collector_new WHERE rowid NOT IN (SELECT min(rowid) FROM _collector_new GROUP BY trace_id, span_id)"""


# The run's own span, which selfopt-trace's exports add (export/run_span.py), back to what `run` wrote:
# the `runs` row (one per run even when sent twice in a load), and its children's parent back to the
# run's incoming one (or none), in this load and in those before it.
_IS_RUN_SPAN = f"category = '{run_span.CATEGORY}' AND name = '{run_span.NAME}'"
_RUN_SPANS_SQL = (
    f"""
CREATE OR REPLACE TEMP TABLE _collector_runs AS
SELECT DISTINCT ON (run_id) * FROM _collector_new WHERE {_IS_RUN_SPAN}""",
    f"DELETE FROM _collector_new WHERE {_IS_RUN_SPAN}",
    f"""
INSERT INTO runs (run_id, group_id, command, cwd, start_ns, end_ns, exit_code, pid, run_trace_id, run_span_id,
                  run_parent_span_id, loaded_at, span_count)
SELECT run_id, attributes->>'{run_span.GROUP}', attributes->>'{run_span.COMMAND}', attributes->>'{run_span.CWD}',
       start_ns, end_ns, TRY_CAST(attributes->>'{run_span.EXIT_CODE}' AS INTEGER),
       TRY_CAST(attributes->>'{run_span.PID}' AS INTEGER), trace_id, span_id, parent_span_id, now(), 0
FROM _collector_runs
ON CONFLICT (run_id) DO UPDATE SET
    group_id = excluded.group_id, command = excluded.command, cwd = excluded.cwd, start_ns = excluded.start_ns,
    end_ns = excluded.end_ns, exit_code = excluded.exit_code, pid = excluded.pid, run_trace_id = excluded.run_trace_id,
    run_span_id = excluded.run_span_id, run_parent_span_id = excluded.run_parent_span_id""",
    """
UPDATE spans SET parent_span_id = r.parent_span_id FROM _collector_runs AS r
WHERE spans.run_id = r.run_id AND spans.parent_span_id = r.span_id""",
    "DROP TABLE _collector_runs",
)
_UNHANG_SQL = """
UPDATE _collector_new SET parent_span_id = r.run_parent_span_id FROM runs AS r
WHERE r.run_id = _collector_new.run_id AND r.run_span_id IS NOT NULL AND _collector_new.parent_span_id = r.run_span_id"""


def insert_rows(store: Any, rows: list[dict]) -> int:
    """`insert` of rows as `span_rows` makes them."""
    batch = Rows()
    for row in rows:
        batch.add_row(row)
    return insert(store, batch)


def insert(store: Any, rows: Rows) -> int:
    """`insert_files` of `rows`, through temporary files."""
    if not rows.spans:
        return 0
    with tempfile.TemporaryDirectory(prefix="selfopt-trace-insert-") as folder:
        spans, processes = Path(folder) / "spans.tsv", Path(folder) / "processes.tsv"
        spans.write_text("".join(rows.spans), encoding="utf-8")
        processes.write_text("".join(rows.processes), encoding="utf-8")
        return insert_files(store, [spans], [processes])


def insert_files(store: Any, spans: list[Path], processes: list[Path]) -> int:
    """Insert the spans of files of `Rows` lines not in the store yet, in the caller's transaction (one
    statement for all), and add or extend their runs; returns how many were new. `load`'s write and
    `selfopt-trace collector`'s (receiver/). The process numbers of `spans` are those of `processes`."""
    store.sql(_NEW_SQL, {"spans": [str(path) for path in spans], "processes": [str(path) for path in processes]})
    _, [(added, span_ids, process_spans, run_spans, hung)] = store.sql(
        "SELECT count(*), count(DISTINCT span_id), count(*) FILTER (WHERE name = 'process'), "
        f"count(*) FILTER (WHERE {_IS_RUN_SPAN}), count(*) FILTER (WHERE parent_span_id IN "
        "(SELECT run_span_id FROM runs WHERE run_span_id IS NOT NULL)) FROM _collector_new")
    if span_ids < added:  # a span id twice: maybe a span twice
        store.sql(_DUPLICATES_SQL)
        _, [(added,)] = store.sql("SELECT count(*) FROM _collector_new")
    if run_spans:
        for statement in _RUN_SPANS_SQL:
            store.sql(statement)
        _, [(added,)] = store.sql("SELECT count(*) FROM _collector_new")
    if hung or run_spans:
        store.sql(_UNHANG_SQL)
    store.sql("INSERT INTO spans SELECT * FROM _collector_new")
    # A run whose own span came knows its times from it: its spans do not widen them.
    store.sql("""
        INSERT INTO runs (run_id, start_ns, end_ns, service_name, loaded_at, span_count, process_count)
        SELECT run_id, min(start_ns), max(end_ns), arg_min(service_name, start_ns), now(), count(*),
               count(DISTINCT pid)
        FROM _collector_new GROUP BY run_id
        ON CONFLICT (run_id) DO UPDATE SET
            start_ns = CASE WHEN runs.run_span_id IS NULL THEN least(runs.start_ns, excluded.start_ns) ELSE runs.start_ns END,
            end_ns = CASE WHEN runs.run_span_id IS NULL THEN greatest(runs.end_ns, excluded.end_ns) ELSE runs.end_ns END,
            service_name = coalesce(runs.service_name, excluded.service_name),
            process_count = coalesce(runs.process_count, excluded.process_count),
            loaded_at = excluded.loaded_at, span_count = runs.span_count + excluded.span_count""")
    if process_spans:  # a run's exit status is its root process's, as the span-file loader gives it without run.json
        store.sql("""
            UPDATE runs SET exit_code = (
                SELECT TRY_CAST(c.attributes->>'process.exit.code' AS INTEGER) FROM spans c
                WHERE c.run_id = runs.run_id AND c.name = 'process' AND c.category = 'process'
                  AND NOT EXISTS (SELECT 1 FROM spans p WHERE p.run_id = runs.run_id AND p.span_id = c.parent_span_id)
                ORDER BY c.start_ns LIMIT 1)
            WHERE exit_code IS NULL AND run_id IN (SELECT DISTINCT run_id FROM _collector_new WHERE name = 'process')""")
    store.sql("DROP TABLE _collector_new")
    return int(added)


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
        self.run_id = None if run_id is None else _text(str(run_id))
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
