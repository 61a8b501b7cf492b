"""Live export: the run's spans go to an OTLP collector while CMD runs, from the `run` process.

A thread of `run` follows the span files (span_follower.py) and sends each span once it has ended,
so a long-running traced service shows up in Jaeger about a second after each request. Traced
processes do nothing more than write their files: their start-up and their output are untouched.

- `auto` (the default) sends when something accepts TCP connections at the endpoint: one connect
  attempt, in the thread, after CMD has started (nothing listening on a local port: refused at
  once). Only then is the OpenTelemetry SDK imported (~0.5 s, in the thread, while CMD runs).
  `always` sends whatever answers; `never` makes no watcher at all.
- A collector that is down, slow or refusing never slows CMD: the thread alone waits (the SDK
  exporters retry 429/503 and UNAVAILABLE with backoff). When CMD exits, `stop()` gives the
  thread `EXIT_BUDGET_S` to read the files to their end, send the spans still open (marked
  incomplete) and what was left; then it closes the exporter, which cuts retries short.
- The run's own span goes last, when CMD has exited; the top-level spans are sent under it from the
  start (export/run_span.py), so the collector gets one tree.
- What was sent is written to `<run_dir>/export.json` (`RECORD`) and said in a note: "sent N spans
  to URL", or how many were not sent and why, with the `selfopt-trace push RUN` that sends the
  whole run later (the files keep every span; a backend that keys spans by id keeps one copy of
  those sent twice). The counts include the run's own span. Where the files were not read to their
  end (nothing listens any more, the budget ran out) the run's total is not known here: the note
  says so, and once the run is loaded export/ledger.py puts the store's total in (`spans_total`),
  and takes back `complete` where the store holds spans written after the last read (a process
  that outlived CMD and flushed at its exit).
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..export import otlp_settings
from ..export.otlp_settings import OtlpSettings
from ..export.run_span import RunSpan
from . import WatchedRun

MODES = ("auto", "always", "never")
EXIT_BUDGET_S = 1.0
POLL_S = 0.1  # the agent flushes every 100 ms
NICENESS = 10  # the thread's: on a busy machine, CMD's processes get the CPU first
RECORD = "export.json"


class LiveExport:
    """The live OTLP export of one run (a Watcher)."""

    name = "OTLP export"

    def __init__(self, settings: OtlpSettings, mode: str = "auto") -> None:
        self.settings = settings
        self.mode = mode
        self.run: WatchedRun | None = None
        self.sender: Any = None  # export.otlp_sdk.Sender, once a collector answered
        self.follower: Any = None
        self.state = "starting"  # then: "absent" (auto, nothing listening), "sending", "done", "failed"
        self.error: str | None = None
        self.abandoned = False
        self.unreachable_at_exit = False  # stop() gave up at once: nothing listens (any more)
        self.has_run_span = False  # the run's own span is one of the run's spans (counted as seen)
        self.incomplete_sent = 0
        self.exit_wait_s = 0.0  # how long CMD's end waited for the export: EXIT_BUDGET_S at most
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, run: WatchedRun) -> None:
        self.run = run
        self._thread = threading.Thread(target=self._main, name="selfopt-trace-live-export", daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        if self._thread is None or self.run is None:
            return []
        started = time.monotonic()
        deadline = started + EXIT_BUDGET_S
        self._stop.set()
        if self.state != "absent" and not otlp_settings.listening(self.settings):
            deadline = time.monotonic()  # nothing listens (any more): waiting would send nothing
            self.unreachable_at_exit = True
            if self.mode == "auto" and self.sender is None:
                self.state = "absent"  # CMD ended before the thread's own probe: nothing was ever there
            self.error = self.error or f"nothing listens at {self.settings.display()} (any more)"
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self.abandoned = True  # the thread stops at its next batch; its counts stay as they are now
            if self.sender is not None:
                self.sender.shutdown()
        self.exit_wait_s = time.monotonic() - started
        if self.state == "absent":
            return []
        record = self.record()
        try:
            (self.run.run_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            return [describe(record, self.run.run_id), f"{self.name}: cannot write {RECORD}: {exc.strerror or exc}"]
        return [describe(record, self.run.run_id)]

    def record(self) -> dict[str, Any]:
        """What export.json says: where, how much, what went wrong. `spans_seen` counts the spans read
        from the files and the run's own span (which `spans_sent` counts too); `read_to_end` false: the
        files were not read to their end, so the run's total is not known yet."""
        sender, follower = self.sender, self.follower
        return {
            "endpoint": self.settings.display(),
            "protocol": self.settings.protocol,
            "mode": self.mode,
            "spans_seen": follower.spans_seen + self.has_run_span if follower is not None else None,
            "read_to_end": self.state == "done",
            "spans_sent": sender.sent if sender is not None else 0,
            "spans_refused": sender.refused if sender is not None else 0,
            "incomplete_sent": self.incomplete_sent,
            "complete": bool(self.state == "done" and sender.refused == 0),  # done: read to the end, all sent
            "error": self.error or (sender.problem() if sender is not None else None),
            # cut short by nothing listening is not the budget running out
            "exit_budget_exceeded": self.abandoned and not self.unreachable_at_exit,
            "exit_wait_s": round(self.exit_wait_s, 3),
            "converted_values": dict(sender.cleaner.counts) if sender is not None else {},
            "damaged_lines": follower.damaged_lines if follower is not None else 0,
        }

    def _main(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)  # Linux: this thread only
        except (AttributeError, OSError):
            pass
        try:
            if self.mode == "auto" and not otlp_settings.listening(self.settings):
                self.state = "absent"
                return
            from ..export.otlp_sdk import Sender  # the SDK, only now that spans will be sent
            from .span_follower import SpanFollower

            assert self.run is not None
            self.follower = SpanFollower(self.run.run_dir, self.run.run_id)
            self.sender = Sender(self.settings)
            self.state = "sending"
            keep_going = lambda: not self.abandoned  # noqa: E731
            run_span = self._run_span()  # its ids, to hang the top-level spans under it as they go
            self.has_run_span = run_span is not None
            # Spans and records hold no reference cycles; the cyclic collector would rescan each poll's
            # tens of thousands of them, a third of the export's CPU. The run process makes little else.
            gc.disable()
            while not self.abandoned:
                stopping = self._stop.is_set()  # read before the poll: polls then read to the end
                self.sender.send(self._adopted(self.follower.poll(columns=True), run_span), keep_going)
                while stopping and not self.follower.caught_up and not self.abandoned:  # a backlog bigger than one read
                    self.sender.send(self._adopted(self.follower.poll(columns=True), run_span), keep_going)
                if stopping and not self.abandoned:
                    run = self.run
                    still_open = self._adopted(self.follower.still_open(run.pid, run.parent_span_id, run.returncode),
                                               run_span)
                    if self.sender.send(still_open, keep_going) == len(still_open):
                        self.incomplete_sent = sum(span.incomplete for span in still_open)
                    final = self._run_span(final=True)
                    if final is not None:
                        self.sender.send([final.record()], keep_going)
                    self.state = "done"
                    return
                self._stop.wait(POLL_S)
        except Exception as exc:  # never an error of the run: a note
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            gc.enable()

    def _run_span(self, final: bool = False) -> RunSpan | None:
        """The run's own span (export/run_span.py), None without its ids. Final: as run.json has it
        now that CMD has exited (written before the watchers stop), else ending now."""
        run = self.run
        assert run is not None
        if final:
            try:
                written = RunSpan.of_run_json(json.loads((run.run_dir / "run.json").read_text(encoding="utf-8")))
            except (OSError, ValueError, AttributeError):
                written = None
            if written is not None and written.span_id == run.span_id:
                return written
        return RunSpan.of_fields(run.run_id, run.trace_id, run.span_id, run.parent_span_id, run.start_ns,
                                 time.time_ns() if final else run.start_ns, exit_code=run.returncode, pid=run.pid)

    @staticmethod
    def _adopted(spans: list, run_span: RunSpan | None) -> list:
        if run_span is not None:
            run_span.adopt(spans)
        return spans


# How the exporters (and our own stop) word a receiver that cannot be reached.
_UNREACHABLE = ("UNAVAILABLE", "onnection", "connect", "nothing listens")


def describe(record: dict[str, Any], run_id: str) -> str:
    """The summary's note about a live export: of the run's total (`spans_total`, the store's, once
    loaded), else of the spans read, said to be a part where the files were not read to their end."""
    target = f"{record['endpoint']} (OTLP {record['protocol']})"
    seen, sent = record.get("spans_seen"), record.get("spans_sent") or 0
    if record.get("complete"):
        return f"sent {sent} spans to {target} while the run ran"
    later = f"send the run later with `selfopt-trace push {run_id}`"
    reason = record.get("error") or ("the exit budget ran out" if record.get("exit_budget_exceeded") else "not all were sent")
    if sent == 0:
        if any(word in str(reason) for word in _UNREACHABLE):
            return f"collector unreachable at {target}: {reason}; {later}"
        return f"nothing sent to {target}: {reason}; {later}"
    total = record.get("spans_total")
    if total is None and record.get("read_to_end", True) is False:  # (an older export.json has no read_to_end)
        return (f"sent {sent} spans to {target}, of {seen} read before it stopped (the run's total is unknown: "
                f"its files were not read to their end): {reason}; {later}")
    return f"sent {sent} of {total if total is not None else seen} spans to {target}: {reason}; {later}"


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """A run's export.json, or None."""
    try:
        record = json.loads((Path(run_dir) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
