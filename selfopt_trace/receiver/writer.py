"""The receiver's writing: a request is acknowledged once its bytes are on disk, synced; its spans
reach the store a moment later, many requests in one transaction.

Every request handler checks its request (decode.check) and hands its bytes, protobuf, to
`Writer.submit` and waits. One thread appends the bytes of every request waiting to the spool's
current file (`<database>.spool/<generation>.otlp`, a record each: convert.py), syncs it (fsync) and
only then lets those requests be answered: an acknowledged span survives a crash of the receiver or
the machine. A second thread has each finished generation (closed after `load_spans` spans or
`load_interval_s`, 1 s: a burst makes several, one converted while the one before is loaded)
converted into the lines `collector_ingest.insert_files` loads (`<generation>.spans.tsv`,
`.processes.tsv`) by the conversion worker, a process of its own (convert.py); a third loads them into the store in one transaction (DuckDB reads the files itself,
without the interpreter lock; a span already stored is not stored twice, so a batch an exporter
sends again after a lost answer changes nothing) and deletes the generation's files once committed.
Generations left by a receiver that was killed are converted and loaded when the next one starts; a
record cut short by the crash was never acknowledged and is skipped.

DuckDB admits one writing process: the loader opens the store when it has something to load and
closes it after `idle_close_s` without, so `selfopt-trace sql`, `runs`, a `run` loading its spans
can use the database meanwhile. While another process holds it, the receiver goes on acknowledging
(the spool grows) and loads once the store is free. Only a spool over `max_spool_bytes` makes
requests wait and then fail as busy (HTTP 503 / gRPC UNAVAILABLE: OTLP clients retry those).
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..collector_ingest import insert_files
from ..errors import SelfoptTraceError, StoreLockedError
from .convert import ConversionError, Converter, record


class Busy(Exception):
    """The spool is full (the store held elsewhere for long): the client should retry later."""


class SpoolInUse(SelfoptTraceError):
    """Another receiver writes to the same store."""


class Pending:
    """One request's bytes, waiting to be written: `wait()` returns once they are synced to disk."""

    __slots__ = ("payload", "spans", "done", "error", "busy")

    def __init__(self, payload: bytes, spans: int) -> None:
        self.payload = payload
        self.spans = spans
        self.done = threading.Event()
        self.error: str | None = None
        self.busy = False

    def wait(self, timeout: float | None = None) -> None:
        """Returns once written; raises Busy, or RuntimeError with the disk's error."""
        if not self.done.wait(timeout):
            raise Busy("the write did not finish in time")
        if self.busy:
            raise Busy(self.error or "the spool is full")
        if self.error is not None:
            raise RuntimeError(self.error)


@dataclass
class WriterStats:
    requests: int = 0  # acknowledged
    spans_received: int = 0  # acknowledged: in the spool, synced
    spans_added: int = 0  # loaded into the store, new to it
    loads: int = 0  # transactions
    syncs: int = 0
    failures: int = 0
    notes: list[str] = field(default_factory=list)


_STOP = object()
_RAW, _SPANS, _PROCESSES = ".otlp", ".spans.tsv", ".processes.tsv"


class Writer:
    def __init__(self, db_path: Path, idle_close_s: float = 1.0, lock_patience_s: float = 10.0,
                 load_spans: int = 50_000, load_interval_s: float = 1.0, max_spool_bytes: int = 1 << 30) -> None:
        self.db_path = Path(db_path)
        self.spool = self.db_path.with_name(self.db_path.name + ".spool")
        self.idle_close_s = idle_close_s
        self.lock_patience_s = lock_patience_s
        self.load_spans = load_spans
        self.load_interval_s = load_interval_s
        self.max_spool_bytes = max_spool_bytes
        self.stats = WriterStats()
        self._queue: queue.Queue = queue.Queue()
        self._conversions: queue.Queue = queue.Queue()  # finished generations (numbers), then _STOP
        self._loads: queue.Queue = queue.Queue()  # converted generations, then _STOP
        self.converter = Converter()
        self._store = None
        self._lock_file = None
        self._generation = 0
        self._file = None  # the current generation's raw file
        self._current_spans = 0
        self._current_since = 0.0
        self._spooled_bytes = 0  # written and not loaded yet
        self._bytes_lock = threading.Lock()
        self._loaded = threading.Condition()
        self._finished = 0  # generations closed
        self._done = 0  # generations loaded (or given up)
        self._stopping = False
        self._appender = threading.Thread(target=self._append_main, name="selfopt-trace-spool", daemon=True)
        self._convert_thread = threading.Thread(target=self._convert_main, name="selfopt-trace-convert", daemon=True)
        self._loader = threading.Thread(target=self._load_main, name="selfopt-trace-load", daemon=True)

    def start(self) -> None:
        """Take the spool (SpoolInUse if another receiver has it), queue what a killed one left, start."""
        self.spool.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.spool / ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise SpoolInUse(f"another `selfopt-trace collector` writes to {self.db_path} (its spool {self.spool} is locked)") from exc
        left = sorted({int(path.name.split(".")[0]) for suffix in (_RAW, _SPANS) for path in self.spool.glob("*" + suffix)})
        for generation in left:
            self._spooled_bytes += self._size(generation)
            self._finished += 1
            self._conversions.put(generation)
        if left:
            self.stats.notes.append(f"{len(left)} spool generation(s) left by an earlier receiver: loading them")
        self._generation = left[-1] if left else 0
        self.converter.start()
        self._appender.start()
        self._convert_thread.start()
        self._loader.start()

    def submit(self, payload: bytes, spans: int) -> Pending:
        """Queue a request's bytes (an ExportTraceServiceRequest of `spans` spans to store) for the spool."""
        pending = Pending(payload, spans)
        if not spans:
            pending.done.set()
            return pending
        if self._spooled_bytes > self.max_spool_bytes:
            pending.busy, pending.error = True, (f"{self._spooled_bytes >> 20} MiB wait in the spool: the store "
                                                 f"{self.db_path} is held by another process")
            pending.done.set()
            return pending
        self._queue.put(pending)
        return pending

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything acknowledged so far is in the store (True), or `timeout`."""
        marker = Pending(b"", 0)
        self._queue.put(("flush", marker))
        if not marker.done.wait(timeout):
            return False
        deadline = time.monotonic() + timeout
        with self._loaded:
            while self._done < self._finished:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._loaded.wait(remaining):
                    return False
        return True

    def stop(self) -> None:
        """Write and load everything submitted so far, then close the store (what cannot be loaded
        within `lock_patience_s`, the store being held elsewhere, stays in the spool for the next start)."""
        self._queue.put(_STOP)
        self._appender.join()
        self._convert_thread.join()
        self._loader.join()
        self.converter.close()
        self.stats.notes.extend(self.converter.notes)
        if self._lock_file is not None:
            self._lock_file.close()

    # ---- appending

    def _append_main(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.load_interval_s)
            except queue.Empty:
                if self._current_spans:
                    self._finish_generation()
                continue
            batch: list[Pending] = []
            flushes: list[Pending] = []
            stop = False
            item = first
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, tuple):
                    flushes.append(item[1])
                else:
                    batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._append(batch)
            if flushes or stop:
                if self._current_spans:
                    self._finish_generation()
                for marker in flushes:
                    marker.done.set()
            if stop:
                self._conversions.put(_STOP)
                return
            if self._current_spans >= self.load_spans or (
                    self._current_spans and time.monotonic() - self._current_since >= self.load_interval_s):
                self._finish_generation()

    def _append(self, batch: list[Pending]) -> None:
        try:
            if self._file is None:
                self._generation += 1
                self._current_since = time.monotonic()
                self._file = open(self._path(self._generation, _RAW), "ab")
            data = b"".join([record(pending.payload) for pending in batch])
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            written = len(data)
        except OSError as exc:  # a full or failing disk: these requests are told, nothing is acknowledged
            for pending in batch:
                pending.error = f"could not write to the spool {self.spool}: {exc.strerror or exc}"
                pending.done.set()
            self.stats.failures += 1
            self._close_file()  # a new generation next time; what this one holds (maybe torn) is loaded as it is
            self._mark_finished()
            return
        with self._bytes_lock:
            self._spooled_bytes += written
        self.stats.syncs += 1
        for pending in batch:
            self._current_spans += pending.spans
            self.stats.requests += 1
            self.stats.spans_received += pending.spans
            pending.done.set()

    def _finish_generation(self) -> None:
        self._close_file()
        self._mark_finished()

    def _mark_finished(self) -> None:
        with self._loaded:
            self._finished += 1
        self._conversions.put(self._generation)
        self._current_spans = 0

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None

    def _path(self, generation: int, suffix: str) -> Path:
        return self.spool / f"{generation:012d}{suffix}"

    def _size(self, generation: int) -> int:
        """The bytes a generation counts for in the spool: its raw file (its converted files, for one a
        receiver before the raw files left)."""
        raw = self._path(generation, _RAW)
        if raw.exists():
            return raw.stat().st_size
        return sum(path.stat().st_size for path in (self._path(generation, s) for s in (_SPANS, _PROCESSES))
                   if path.exists())

    # ---- converting

    def _convert_main(self) -> None:
        while True:
            generation = self._conversions.get()
            if generation is _STOP:
                self._loads.put(_STOP)
                return
            raw = self._path(generation, _RAW)
            # (no raw file: converted by a receiver before the raw files, loaded as it is)
            if raw.exists() and not self._convert(generation, raw):
                with self._loaded:  # given up, as a load that cannot happen at the end
                    self._done += 1
                    self._loaded.notify_all()
                continue
            self._loads.put(generation)

    def _convert(self, generation: int, raw: Path) -> bool:
        try:
            done = self.converter.convert(raw, self._path(generation, _SPANS), self._path(generation, _PROCESSES))
        except ConversionError as exc:  # a failing disk: the raw file stays for the next start
            self.stats.failures += 1
            self._note(f"{exc}: it stays in {self.spool}, converted at the next start")
            return False
        if done.damaged:
            self._note(f"{done.damaged} damaged request(s) in {raw} skipped")
        return True

    # ---- loading

    def _load_main(self) -> None:
        stopping = False
        waiting: list[int] = []  # generations not loaded yet (the store busy, or an error)
        while True:
            try:
                item = self._loads.get(timeout=self.idle_close_s if (self._store is not None or waiting) else None)
            except queue.Empty:
                item = None
            if item is _STOP:
                stopping = True
            elif item is not None:
                waiting.append(item)
            if item is None and not waiting:
                self._close()
                continue
            while waiting:
                if not self._load(waiting[0], patient=stopping):
                    break
                waiting.pop(0)
            if stopping:
                if waiting:
                    self.stats.notes.append(
                        f"{len(waiting)} spool generation(s) not loaded (the store {self.db_path} is held by another "
                        f"process): they stay in {self.spool} and are loaded at the next start")
                    with self._loaded:
                        self._done += len(waiting)
                        self._loaded.notify_all()
                self._close()
                return
            if waiting:
                time.sleep(0.2)

    def _load(self, generation: int, patient: bool) -> bool:
        """Load one generation; False when the store is not available (try again later)."""
        spans, processes = self._path(generation, _SPANS), self._path(generation, _PROCESSES)
        size = self._size(generation)
        try:
            store = self._open(self.lock_patience_s if patient else 0.0)
        except StoreLockedError:
            return False
        except SelfoptTraceError as exc:
            self._note(f"cannot open the store {self.db_path}: {exc}")
            return False
        try:
            store.sql("BEGIN")
            try:
                added = insert_files(store, [spans], [processes]) if spans.exists() and processes.exists() else 0
                store.sql("COMMIT")
            except BaseException:
                store.sql("ROLLBACK")
                raise
        except Exception as exc:  # the store's own failure (disk full, ...): keep the files, try later
            self.stats.failures += 1
            self._note(f"could not load {spans} into {self.db_path}: {exc}")
            self._close()
            return False
        for path in (self._path(generation, _RAW), spans, processes):
            path.unlink(missing_ok=True)
        with self._bytes_lock:
            self._spooled_bytes = max(0, self._spooled_bytes - size)
        self.stats.spans_added += added
        self.stats.loads += 1
        with self._loaded:
            self._done += 1
            self._loaded.notify_all()
        return True

    def _note(self, message: str) -> None:
        if message not in self.stats.notes:
            self.stats.notes.append(message)

    def _open(self, patience_s: float):
        if self._store is not None:
            return self._store
        from ..store import Store

        deadline = time.monotonic() + patience_s
        pause = 0.02
        while True:
            try:
                self._store = Store(self.db_path)
                # One DuckDB thread: the loads are small and the request threads need the other core
                # (a load's CPU a span: 6.7-8.9 us with one thread, 8.4-10.3 us with the default two).
                self._store.sql("SET threads = 1")
                return self._store
            except StoreLockedError:
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _close(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            finally:
                self._store = None
