"""The run's own span: the one root of its trace in a collector, in Jaeger and in the export files.

The store keeps what the processes recorded: CMD's top-level processes (one for a Python CMD, one per
Python child of a shell or `make`) have no parent there, or an incoming TRACEPARENT's span, and that
is how the queries find the run's top level. A backend draws a trace as one tree only when it has one
root, so what leaves the store (the live export, `push`, `export --format otlp-json|jaeger-json`)
gets the run's span, made of what `run` recorded (run.json, then the store's `runs` row: its ids,
times, command and exit status), and the spans of the run's trace without a parent there are hung
under it. `selfopt-trace collector` takes it back apart (collector_ingest.py): the run span becomes
the `runs` row again and its children lose the parent the export gave them, the rows the span files
gave.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Sequence

from ..bootstrap.selfopt_trace_agent import config as agent_config
from . import SpanColumns, SpanRecord

CATEGORY = "run"
NAME = "selfopt-trace run"
SERVICE = "selfopt-trace"
# What the span says of the run, as the `runs` columns it comes from and goes back to.
COMMAND = "process.command_line"
CWD = "process.working_directory"
EXIT_CODE = "process.exit.code"
PID = "selfopt_trace.command.pid"  # CMD's process: `run` itself records no span of its own
GROUP = "selfopt_trace.group_id"
_RUNS_SQL = ("SELECT run_id, run_trace_id, run_span_id, run_parent_span_id, start_ns, end_ns, command, cwd, exit_code, "
             "pid, group_id FROM runs WHERE run_id = $run_id")


@dataclass(frozen=True)
class RunSpan:
    run_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None  # an incoming TRACEPARENT's span
    start_ns: int  # CMD spawned
    end_ns: int  # CMD exited
    command: str | None = None  # redacted, as run.json has it
    cwd: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    group_id: str | None = None

    @classmethod
    def of_run_json(cls, data: dict[str, Any]) -> RunSpan | None:
        """The span of a run.json as `run` writes it; None without its ids or times (an older run)."""
        command = data.get("command")
        return cls.of_fields(data.get("run_id"), data.get("trace_id"), data.get("span_id"),
                             data.get("parent_span_id"), data.get("start_ns"), data.get("end_ns"),
                             shlex.join(map(str, command)) if isinstance(command, list) else command,
                             data.get("cwd"), data.get("exit_code"), data.get("pid"), data.get("group_id"))

    @classmethod
    def of_fields(cls, run_id: Any, trace_id: Any, span_id: Any, parent_span_id: Any, start_ns: Any, end_ns: Any,
                  command: Any = None, cwd: Any = None, exit_code: Any = None, pid: Any = None,
                  group_id: Any = None) -> RunSpan | None:
        if not (isinstance(run_id, str) and _hex(trace_id, 32) and _hex(span_id, 16)
                and _integer(start_ns) and _integer(end_ns)):
            return None
        return cls(run_id, trace_id, span_id, parent_span_id if _hex(parent_span_id, 16) else None, start_ns,
                   max(start_ns, end_ns), _text(command), _text(cwd), _integer(exit_code), _integer(pid),
                   _text(group_id))

    def record(self) -> SpanRecord:
        attributes: dict[str, Any] = {}
        for key, value in ((COMMAND, self.command), (CWD, self.cwd), (EXIT_CODE, self.exit_code), (PID, self.pid),
                           (GROUP, self.group_id)):
            if value is not None:
                attributes[key] = value
        return SpanRecord(self.run_id, self.trace_id, self.span_id, self.parent_span_id, NAME, "INTERNAL", CATEGORY,
                          self.start_ns, self.end_ns, "ERROR" if self.exit_code else "UNSET", False, SERVICE, None,
                          attributes, {"service.name": SERVICE})

    def adopt(self, spans: Sequence[SpanRecord | SpanColumns]) -> None:
        """Hang the run's top-level spans under this span, in place: those of its trace whose parent is
        none (or the incoming one, which is now this span's)."""
        tops = ("", None, self.parent_span_id)
        for each in spans:
            if isinstance(each, SpanColumns):
                parents = each.parent_span_ids
                if any(top in parents for top in tops):  # in C; most pages hold no top-level span
                    trace = self.trace_id
                    each.parent_span_ids = [self.span_id if parent in tops and trace_id == trace else parent
                                            for trace_id, parent in zip(each.trace_ids, parents)]
            elif each.parent_span_id in tops and each.trace_id == self.trace_id:
                each.parent_span_id = self.span_id


def stored_run_span(store: Any, run_id: str) -> RunSpan | None:
    """The span of a stored run; None for a run that `run` did not record (a collector's, an older one)."""
    _, rows = store.sql(_RUNS_SQL, {"run_id": run_id})
    return RunSpan.of_fields(*rows[0]) if rows else None


def with_run_span(store: Any, run_id: str, spans: list[SpanRecord]) -> list[SpanRecord]:
    """`spans` (the run's, `fetch_spans`) led by the run's own span, its top-level spans under it."""
    run_span = stored_run_span(store, run_id)
    if run_span is None:
        return spans
    run_span.adopt(spans)
    return [run_span.record(), *spans]


def _hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and agent_config.hex_id(value, length) == value


def _integer(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
