"""The spool's raw requests -> the lines `collector_ingest.insert_files` loads, in a worker process.

A request is acknowledged once its bytes (an `ExportTraceServiceRequest`, protobuf, checked) are
synced to the spool (writer.py); turning its spans into rows (decode.rows_of, ~5 us a span, Python
reading protobuf's objects) happens afterwards, a spool generation at a time, in a process of its
own (`python -m selfopt_trace.receiver.convert`): the request threads and the conversion would
otherwise share one interpreter lock, and the machine's other core would sit idle.

A generation's raw file is a sequence of records, each a 4-byte big-endian length and that many
bytes of request. A record cut short (the receiver killed while it wrote: never acknowledged) ends
the file's reading; a record that does not parse (the disk's damage: it parsed when it came) is
skipped and counted.

The worker reads jobs from stdin (`["raw", "spans", "processes"]`, the three paths, one JSON line
each) and answers each with one JSON line; it ignores SIGINT and SIGTERM (Ctrl-C reaches the whole process group: the receiver
drains, then closes the worker's stdin) and ends at the end of its stdin (also when the receiver was
killed). If the worker cannot be started or dies, the receiver converts in its own process: slower,
nothing lost.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

HEADER = 4  # bytes of a record's length


def record(payload: bytes) -> bytes:
    """`payload` as a record of the raw file."""
    return len(payload).to_bytes(HEADER, "big") + payload


def records(raw: Path) -> Iterator[bytes]:
    """The whole records of a raw file (a torn last one left out)."""
    data = raw.read_bytes()
    offset, end = 0, len(data)
    while offset + HEADER <= end:
        size = int.from_bytes(data[offset:offset + HEADER], "big")
        start = offset + HEADER
        if start + size > end:
            return
        yield data[start:start + size]
        offset = start + size


@dataclass
class Converted:
    spans: int = 0  # rows written
    records: int = 0  # requests read
    damaged: int = 0  # records that did not parse


def convert(raw: Path, spans: Path, processes: Path) -> Converted:
    """Write the rows of every span of `raw`'s requests to `spans` and `processes` (replaced)."""
    from google.protobuf.message import DecodeError

    from .decode import rows_of, spooled

    result = Converted()
    with open(spans, "w", encoding="utf-8") as spans_file, open(processes, "w", encoding="utf-8") as processes_file:
        for payload in records(raw):
            result.records += 1
            try:  # (an attribute is parsed when its bytes are first seen: damage there shows in rows_of)
                rows = rows_of(spooled(payload)).rows
            except (DecodeError, RuntimeError, ValueError):
                result.damaged += 1
                continue
            processes_file.write("".join(rows.processes))
            spans_file.write("".join(rows.spans))
            result.spans += len(rows.spans)
    return result


class ConversionError(Exception):
    """A generation could not be converted (its files could not be read or written): kept for later."""


class Converter:
    """The worker process, seen from the receiver: `convert` hands it a job and waits for its answer."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self._worker: subprocess.Popen | None = None
        self._deaths = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        try:
            self._worker = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True, bufsize=1)
        except OSError as exc:
            self.notes.append(f"cannot start the conversion worker ({exc}): converting in the receiver's own process")

    def convert(self, raw: Path, spans: Path, processes: Path) -> Converted:
        """`convert` in the worker (in this process when there is none); ConversionError when it failed."""
        with self._lock:
            while self._worker is not None:
                try:
                    self._worker.stdin.write(json.dumps([str(raw), str(spans), str(processes)]) + "\n")
                    answer = json.loads(self._worker.stdout.readline())
                except (OSError, ValueError):  # it died (killed, out of memory): no answer
                    self._stop_worker()
                    self._deaths += 1
                    if self._deaths < 2:
                        self.start()
                    else:
                        self.notes.append("the conversion worker died twice: converting in the receiver's own process")
                    continue
                if "error" in answer:
                    raise ConversionError(answer["error"])
                return Converted(**answer)
        try:
            return convert(raw, spans, processes)
        except OSError as exc:
            raise ConversionError(f"cannot convert {raw}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._stop_worker()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            worker.stdin.close()
        except OSError:
            pass
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        worker.stdout.close()


def main() -> None:
    """The worker: jobs from stdin, answers to stdout, until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for line in sys.stdin:
        raw, spans, processes = json.loads(line)
        try:
            answer = convert(Path(raw), Path(spans), Path(processes)).__dict__
        except OSError as exc:
            answer = {"error": f"cannot convert {raw}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
