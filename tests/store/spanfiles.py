"""Run directories written by hand, field by field, as docs/span-format.md describes them.

Deliberately independent of the agent's writer (spanfile.py): these tests hold the loader to the
documented format, not to whatever the writer happens to produce.
"""

from __future__ import annotations

import json
import marshal
from pathlib import Path
from typing import Any

TRACE = "0af7651916cd43dd8448eb211c80319c"
T0 = 1_700_000_000_000_000_000  # a Unix epoch time in nanoseconds


def sid(n: int) -> str:
    """A 16-hex-digit span id."""
    return f"{n:016x}"


def line(rec: str, span_id: str = "", parent: str = "", trace: str = "", name: str = "", kind: str = "",
         category: str = "", start: int | str = "", end: int | str = "", status: str = "",
         attributes: dict[str, Any] | str = "{}", terminator: str = ".") -> str:
    text = attributes if isinstance(attributes, str) else json.dumps(attributes)
    fields = [rec, span_id, parent, trace, name, kind, category, str(start), str(end), status, text, terminator]
    return "\t".join(fields) + "\n"


def header(pid: int, *, version: int = 1, service: str = "svc", start: int = T0,
           resource: dict[str, Any] | None = None, format_name: str = "selfopt-trace/spans") -> str:
    resource = resource if resource is not None else {"service.name": service, "process.pid": pid}
    body = {"format": format_name, "version": version, "run_id": "run-1", "pid": pid, "resource": resource}
    return line("H", start=start, attributes=body)


def start(span_id: str, parent: str, name: str, category: str, at: int,
          attributes: dict[str, Any] | None = None, kind: str = "INTERNAL") -> str:
    return line("S", span_id, parent, TRACE, name, kind, category, start=at, attributes=attributes or {})


def end(span_id: str, at: int, status: str = "OK", attributes: dict[str, Any] | None = None,
        parent: str = "") -> str:
    return line("E", span_id, parent, end=at, status=status, attributes=attributes or {})


def complete(span_id: str, parent: str, name: str, category: str, start_at: int, end_at: int,
             status: str = "UNSET", attributes: dict[str, Any] | None = None, kind: str = "INTERNAL") -> str:
    return line("X", span_id, parent, TRACE, name, kind, category, start_at, end_at, status, attributes or {})


def block(*spans: tuple) -> str:
    """An M record: complete spans, each (span id as an int, parent, trace, name, kind, category, start,
    end, status, scope attributes, attributes), as the hex of one marshal block (format 4) of their
    values in one list."""
    return line("M", attributes=marshal.dumps([value for span in spans for value in span], 4).hex())


def tick(at: int) -> str:
    return line("T", end=at)


def diagnostic(at: int, code: str, message: str) -> str:
    return line("D", name=code, start=at, attributes={"message": message})


def write_run(run_dir: Path, files: dict[str, str | bytes], run_json: dict[str, Any] | None = None) -> Path:
    """A run directory: `files` maps span file names to their content; run.json only if given."""
    spans = run_dir / "spans"
    spans.mkdir(parents=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (spans / name).write_bytes(data)
    if run_json is not None:
        (run_dir / "run.json").write_text(json.dumps(run_json), encoding="utf-8")
    return run_dir
