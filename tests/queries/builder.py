"""Runs written by hand (times in ms from T0), loaded through the real Store, for exact query tests.

Span files are written with the documented format's helpers (tests/store/spanfiles.py); each
process gets its own file, as the agent does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.store.spanfiles import T0, TRACE, complete, end, header, sid, start, write_run

MS = 1_000_000


def at(ms: float) -> int:
    return T0 + round(ms * MS)


@dataclass
class Span:
    """A span as written, for the reference computation (times in ms)."""

    id: str
    parent: str
    name: str
    category: str
    kind: str
    start: float
    end: float
    file: str
    trace: str = TRACE
    attributes: dict[str, Any] = field(default_factory=dict)


class RunBuilder:
    def __init__(self, run_id: str = "run-1", first_id: int = 1):
        self.run_id = run_id
        self.files: dict[str, list[str]] = {}
        self.spans: list[Span] = []
        self._next = first_id

    def _file(self, pid: int, image: str = "") -> str:
        """The span file of a process (`image` tells apart the images of one pid across an exec)."""
        name = f"{pid}{image}-{self.run_id}.spans"
        if name not in self.files:
            self.files[name] = [header(pid)]
        return name

    def span(self, pid: int, name: str, category: str, start_ms: float, end_ms: float, parent: str = "",
             kind: str = "INTERNAL", attributes: dict[str, Any] | None = None, trace: str = TRACE,
             image: str = "", status: str = "UNSET") -> str:
        span_id = sid(self._next)
        self._next += 1
        file = self._file(pid, image)
        line = complete(span_id, parent, name, category, at(start_ms), at(end_ms), status, attributes, kind)
        self.files[file].append(line.replace(TRACE, trace) if trace != TRACE else line)
        self.spans.append(Span(span_id, parent, name, category, kind, start_ms, end_ms, file, trace, attributes or {}))
        return span_id

    def process(self, pid: int, start_ms: float, end_ms: float, parent: str = "", command: str = "main.py",
                trace: str = TRACE, image: str = "", end_attributes: dict[str, Any] | None = None,
                killed: bool = False) -> str:
        """A process span, written as the agent writes it (S at start, E at exit; `killed`: no E, the
        loader closes it at the last time known for its file)."""
        span_id = sid(self._next)
        self._next += 1
        file = self._file(pid, image)
        attributes = {"process.pid": pid, "process.command": command}
        first = start(span_id, parent, "process", "process", at(start_ms), attributes)
        self.files[file].append(first.replace(TRACE, trace) if trace != TRACE else first)
        if not killed:
            self.files[file].append(end(span_id, at(end_ms), "UNSET", {"process.exit.code": 0, **(end_attributes or {})}))
        self.spans.append(Span(span_id, parent, "process", "process", "INTERNAL", start_ms, end_ms, file, trace,
                               {**attributes, **(end_attributes or {})}))
        return span_id

    def load(self, store: Any, tmp_path: Path, run_start_ms: float | None = 0.0, **run_json_fields: Any) -> str:
        """Write the run directory (`write`) and load it."""
        store.load_run(self.write(tmp_path, run_start_ms, **run_json_fields))
        return self.run_id

    def write(self, tmp_path: Path, run_start_ms: float | None = 0.0, **run_json_fields: Any) -> Path:
        """Write the run directory (with run.json when run_start_ms is given). Unless told (`end_ns`),
        `run` saw CMD exit when the last top-level span of the run's trace ended."""
        ids = {s.id for s in self.spans}
        run_end = max((s.end for s in self.spans if s.trace == TRACE and s.parent not in ids), default=None)
        run_json = None if run_start_ms is None else {"run_id": self.run_id, "start_ns": at(run_start_ms),
                                                      "command": "python main.py", **run_json_fields}
        if run_json is not None and run_end is not None:
            run_json.setdefault("end_ns", at(run_end))
        return write_run(tmp_path / self.run_id, {name: "".join(lines) for name, lines in self.files.items()}, run_json)
