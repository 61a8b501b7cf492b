"""Watchers: what follows a run from the `run` process while CMD lives (traced processes pay nothing).

`run` is a small supervisor: prepare, start CMD, start the watchers, wait for CMD, stop the watchers,
load, summarize. A watcher (the span-file follower and live exporter, the CPU sampler, a profiler)
gets the run when CMD has started and is stopped when CMD has exited. Each lives in its own module
here and follows one rule: its own failure never changes CMD's exit status or output, so `start`
and `stop` catch their own errors and report them as notes (printed with the summary) instead.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..bootstrap.selfopt_trace_agent import container


@dataclass
class WatchedRun:
    """What a watcher is told when CMD has started."""

    run_id: str
    run_dir: Path
    pid: int  # CMD's process id
    start_ns: int  # when `run` spawned CMD (the trace's clock: time.time_ns())
    environ: dict[str, str] = field(default_factory=dict)  # CMD's environment
    returncode: int | None = None  # CMD's exit status (Popen's: -N for signal N), set before stop()
    # The run's own span (export/run_span.py): its trace, its id, an incoming TRACEPARENT's span.
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None


class Watcher(Protocol):
    name: str

    def start(self, run: WatchedRun) -> None:
        """CMD has just started: begin following it (in a thread of your own); return at once."""

    def stop(self) -> list[str]:
        """CMD has exited: finish within the watcher's exit budget; the notes for the summary."""


def start_all(watchers: list[Watcher], run: WatchedRun) -> list[str]:
    """Start every watcher; one that fails to start is a note, never an error of the run."""
    notes = []
    for watcher in watchers:
        try:
            watcher.start(run)
        except Exception as exc:
            notes.append(f"{watcher.name}: could not start: {exc}")
    return notes


def stop_all(watchers: list[Watcher]) -> list[str]:
    """Stop every watcher, in reverse order of starting; failures become notes."""
    notes = []
    for watcher in reversed(watchers):
        try:
            notes.extend(watcher.stop())
        except Exception as exc:
            notes.append(f"{watcher.name}: {exc}")
    return notes


def span_file_header(path: str | Path) -> tuple[int, int, str] | None:
    """(pid, header time, container id or "") from a span file's first line (docs/span-format.md),
    or None when it is not (yet) readable."""
    try:
        with open(path, "rb") as stream:
            line = stream.readline(1 << 20)
        fields = line.decode("utf-8").split("\t")
        if fields[0] != "H" or not line.endswith(b"\n"):
            return None
        header = json.loads(fields[10])
        return int(header["pid"]), int(fields[7]), str(header["resource"].get("container.id", ""))
    except (OSError, ValueError, IndexError, KeyError, TypeError, AttributeError):
        return None


def pid_is_ours(container_id: str) -> bool:
    """Whether a span file's pid names a process here: not one of another container's (its pids are
    its own namespace's: its first process is pid 1, which here is init)."""
    return container_id == _own_container_id()


@functools.cache
def _own_container_id() -> str:
    return container.passed_on().partition("\t")[2]
