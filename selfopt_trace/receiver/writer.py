"""The receiver's one writer: requests' rows into the store, acknowledged once committed.

Every request handler hands its rows to `Writer.submit` and waits. One thread writes: it takes
every request waiting, inserts all their rows in one transaction (collector_ingest.insert_rows: a
span already stored is not stored twice, so a batch an exporter sends again after a lost answer
changes nothing) and commits; only then are those requests answered. DuckDB's COMMIT writes the
transaction to its write-ahead log and syncs it, so an acknowledged span survives a crash of the
receiver or the machine. When a combined write fails, each request is written alone, so one
request's failure is that request's error only.

DuckDB admits one writing process: the writer opens the store when data comes and closes it after
`idle_close_s` without any, so `selfopt-trace sql`, `runs`, a `run` loading its spans can use the
database between bursts. While another process holds it, requests wait up to `lock_patience_s`,
then get "busy" (HTTP 503 / gRPC UNAVAILABLE: OTLP clients retry those).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..collector_ingest import insert_rows
from ..errors import SelfoptTraceError, StoreLockedError


class Busy(Exception):
    """The store is held by another process: the client should retry later."""


class Pending:
    """One request's rows, waiting to be written: `wait()` returns when they are committed (or failed)."""

    __slots__ = ("rows", "done", "error", "busy")

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.done = threading.Event()
        self.error: str | None = None
        self.busy = False

    def wait(self, timeout: float | None = None) -> None:
        """Returns once committed; raises Busy, or RuntimeError with the store's error."""
        if not self.done.wait(timeout):
            raise Busy("the write did not finish in time")
        if self.busy:
            raise Busy(self.error or "the store is busy")
        if self.error is not None:
            raise RuntimeError(self.error)


@dataclass
class WriterStats:
    requests: int = 0
    spans_received: int = 0  # rows handed in
    spans_added: int = 0  # rows new to the store
    commits: int = 0
    failures: int = 0
    opens: int = 0
    notes: list[str] = field(default_factory=list)


_STOP = object()


class Writer:
    def __init__(self, db_path: Path, idle_close_s: float = 1.0, lock_patience_s: float = 5.0,
                 max_rows_per_commit: int = 200_000) -> None:
        self.db_path = Path(db_path)
        self.idle_close_s = idle_close_s
        self.lock_patience_s = lock_patience_s
        self.max_rows = max_rows_per_commit
        self.stats = WriterStats()
        self._queue: queue.Queue = queue.Queue()
        self._store = None
        self._thread = threading.Thread(target=self._main, name="selfopt-trace-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, rows: list[dict]) -> Pending:
        pending = Pending(rows)
        if not rows:
            pending.done.set()
            return pending
        self._queue.put(pending)
        return pending

    def stop(self, timeout: float | None = None) -> None:
        """Write everything submitted so far, then close the store."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _main(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self.idle_close_s if self._store is not None else None)
            except queue.Empty:
                self._close()
                continue
            if first is _STOP:
                break
            batch, rows = [first], len(first.rows)
            while rows < self.max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                rows += len(item.rows)
            self._write(batch)
        self._close()

    def _write(self, batch: list[Pending]) -> None:
        try:
            store = self._open()
        except (Busy, SelfoptTraceError) as exc:
            for pending in batch:
                pending.busy, pending.error = isinstance(exc, Busy), str(exc)
                pending.done.set()
            return
        if self._commit(store, [row for pending in batch for row in pending.rows], len(batch)):
            for pending in batch:
                pending.done.set()
            return
        for pending in batch:  # one at a time: a failure is only its own request's
            if not self._commit(store, pending.rows, 1):
                pending.error = self._last_error
                self.stats.failures += 1
            pending.done.set()

    _last_error = ""

    def _commit(self, store, rows: list[dict], requests: int) -> bool:
        try:
            store.sql("BEGIN")
            try:
                added = insert_rows(store, rows)
                store.sql("COMMIT")
            except BaseException:
                store.sql("ROLLBACK")
                raise
        except Exception as exc:  # the store's own failure (disk full, ...): the requests are told
            self._last_error = f"could not write to {self.db_path}: {exc}"
            return False
        self.stats.requests += requests
        self.stats.spans_received += len(rows)
        self.stats.spans_added += added
        self.stats.commits += 1
        return True

    def _open(self):
        if self._store is not None:
            return self._store
        from ..store import Store

        deadline = time.monotonic() + self.lock_patience_s
        pause = 0.02
        while True:
            try:
                self._store = Store(self.db_path)
                self.stats.opens += 1
                return self._store
            except StoreLockedError as exc:
                if time.monotonic() + pause > deadline:
                    raise Busy(f"the store {self.db_path} is held by another process ({exc})") from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _close(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            finally:
                self._store = None
