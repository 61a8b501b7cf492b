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
        added = _insert(store, spans)
        store.sql("""INSERT INTO collector_files VALUES (?, ?, ?, ?, now())
                     ON CONFLICT (first_line_sha256) DO UPDATE SET path = excluded.path,
                       loaded_bytes = excluded.loaded_bytes, spans = collector_files.spans + excluded.spans,
                       loaded_at = excluded.loaded_at""", [key, str(path), complete_end, added])
        store.sql("COMMIT")
    except BaseException:
        store.sql("ROLLBACK")
        raise
    return FileLoad(path, "appended" if loaded else "loaded", added, bad, torn)


def _insert(store: Any, rows: list[dict]) -> int:
    """Insert the rows not in the store yet (through a temporary JSON file: one statement for all)."""
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
        return int(count[0][0])


# ---------------------------------------------------------------- OTLP/JSON -> rows of `spans`

def span_rows(export: dict, source_file: str) -> Iterator[dict]:
    """The rows of one OTLP/JSON export request (`{"resourceSpans": [...]}`)."""
    for resource_spans in export.get("resourceSpans") or ():
        resource = attributes_of((resource_spans.get("resource") or {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or ():
            for span in scope_spans.get("spans") or ():
                yield _row(span, resource, source_file)


def _row(span: dict, resource: dict, source_file: str) -> dict:
    attributes = attributes_of(span.get("attributes"))
    trace_id = _hex_id(span["traceId"])
    start, end = int(span.get("startTimeUnixNano") or 0), int(span.get("endTimeUnixNano") or 0)
    pid = resource.get("process.pid")
    return {
        "run_id": str(resource.get("selfopt_trace.run_id") or f"collector-{trace_id}"),
        "trace_id": trace_id,
        "span_id": _hex_id(span["spanId"]),
        "parent_span_id": _hex_id(span.get("parentSpanId") or "") or None,
        "name": span.get("name", ""),
        "kind": _enum(span.get("kind", 1), _KINDS, "SPAN_KIND_"),
        "category": _category(span.get("name", ""), attributes),
        "start_ns": start,
        "end_ns": end,
        "duration_ns": end - start,
        "status": _enum((span.get("status") or {}).get("code", 0), _STATUSES, "STATUS_CODE_"),
        "incomplete": False,
        "service_name": resource.get("service.name"),
        "pid": int(pid) if isinstance(pid, (int, str)) and str(pid).isdigit() else None,
        "attributes": attributes,
        "resource_attributes": resource,
        "source_file": source_file,
    }


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
    if "selfopt_trace.category" in attributes:
        return str(attributes["selfopt_trace.category"])
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
