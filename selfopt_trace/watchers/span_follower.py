"""Follow a run's span files while the agent appends to them: the spans, as they end.

`<run_dir>/spans/*.spans` (docs/span-format.md) grow by whole flushes, every 100 ms in a busy process;
new files appear as processes start. `SpanFollower.poll()` reads what was appended since the last
call and returns the spans that ended in it, already merged as the loader merges them
(store/loader.py), so a span sent live is the span `push` sends after loading:
- `X` is a complete span (an `M` record is read as the X records it stands for); `S` opens one,
  its `E` closes it (the E's attributes over the S's, the E's parent when it names one); a later `E`
  of the same span with a later end replaces the earlier one (the loader keeps the last); an `E`
  after an `X` changes nothing (the loader ignores it).
- A file's first record must be a header of the version we read, else the file is skipped, as the
  loader skips it. A line that is not 12 fields ending in `.`, not UTF-8, or has bad numbers or
  attributes is skipped and counted. A last line without its newline is kept until it is complete.
  (One difference: DuckDB's JSON parser refuses an escaped lone surrogate, Python's accepts it, so a
  line with text that was not UTF-8 is sent here, converted, while the loader skips it as damaged.)
- `still_open()` gives the spans started and not ended, closed at the last time known in their file
  and marked incomplete: what the loader makes of them once CMD has exited.
- A process span without `process.exit.code` gets its exit code as the loader gives it: from the
  span that started it (a subprocess span of the parent process naming its pid, which ends after
  it), or from its own `interpreter.finalize` span (the status the C twin saw at its exit: a process
  a shell reaped), and for CMD's own process from CMD's exit status. So it is held until then (at
  the latest until `still_open()`): sent once, as `push` would send it.
- A spawning span of a child that exited where no hook saw it (`selfopt_trace.child.exited_unseen`:
  reaped in C, by gevent's or uvloop's loop) ends, as the loader ends it, at the child's last record:
  the end of the process spans of its pid that started after it, ended before it (read first: the
  child ends before its parent ends the span). A child killed before its process span's end (an
  incomplete one, given by `still_open()`) ends, as the loader ends it, where its spawning span
  reaped it.
The record letters and fields come from the agent's spanfile module: the one definition of the format.

Speed (the live export must keep up with 50,000 spans/s, docs/benchmarks.md): a chunk of whole lines is
split into fields with one `split` for the whole chunk, its X records (nearly all of them) checked and
converted column by column (the attributes of all in one JSON parse, the times with one `map(int)`) and
handed over as one SpanColumns, which the encoder writes with no SpanRecord in between; the other
records, and any chunk with a damaged line, are read line by line.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bootstrap.selfopt_trace_agent import spanblock, spanfile
from ..export import SpanColumns, SpanRecord

READ_LIMIT = 8 << 20  # bytes read from one file per poll: a huge backlog is read over several polls
ENDED_KEPT = 1024  # started-then-ended spans remembered per file, for a later E of the same span
EXITS_KEPT = 4096  # ended spans that name a child's pid and exit code, for its process span (and pids' lives)
EXIT_CODE, PID = "process.exit.code", "process.pid"
EXITED_UNSEEN = "selfopt_trace.child.exited_unseen"  # hooks/spawn.py
RUNNING_AT_EXIT = "selfopt_trace.child.running_at_exit"
SPAWN_NS = "selfopt_trace.spawn_ns"  # on a spawning span, which ends at the child's reap
FINALIZE = "finalize"  # the category of a process's interpreter.finalize span (process.py, importtime.c)

_FIELD_COUNT = len(spanfile.FIELDS)
_H, _S, _E, _X, _T, _D = (spanfile.HEADER, spanfile.START, spanfile.END, spanfile.COMPLETE, spanfile.TICK,
                          spanfile.DIAGNOSTIC)
_RECORDS = frozenset((_H, _S, _E, _X, _T, _D))


@dataclass
class _Followed:
    """One span file and what has been read of it."""

    path: Path
    name: str = ""  # the file's name: the spans' source_file
    offset: int = 0
    partial: bytes = b""
    header: bool = False
    refused: str | None = None  # why the file is skipped (no header, another format or version)
    resource: dict[str, Any] = field(default_factory=dict)
    service: str | None = None
    pid: int | None = None
    last_ns: int = 0
    # span id -> its S record's fields: (parent, trace, name, kind, category, start, attributes)
    open: dict[str, tuple] = field(default_factory=dict)
    ended: OrderedDict[str, tuple] = field(default_factory=OrderedDict)  # S fields + (end,) of ended S spans


class SpanFollower:
    """Reads the span files of one run directory incrementally (one thread at a time)."""

    def __init__(self, run_dir: Path, run_id: str) -> None:
        self.spans_dir = Path(run_dir) / "spans"
        self.run_id = run_id
        self.files: dict[str, _Followed] = {}
        self.spans_seen = 0  # spans started (S) or complete (X) so far: each span counted once
        self.damaged_lines = 0
        self.caught_up = True  # the last poll read every file to its end
        # span id -> (process.pid, exit code, the reap: the span's end where it is one, else None)
        self._exits: OrderedDict[str, tuple[Any, Any, int | None]] = OrderedDict()
        # parent span id -> {span id: its process span without exit code} (a later end replaces an earlier)
        self._held: dict[str, dict[str, SpanRecord]] = {}
        self._own_exits: OrderedDict[str, Any] = OrderedDict()  # process span id -> the status its finalize span gave
        self._lives: OrderedDict[int, list[tuple[int, int]]] = OrderedDict()  # pid -> its process spans' (start, end)

    def poll(self, columns: bool = False) -> list[Any]:
        """The spans that ended in what was appended since the last poll: SpanRecords; with `columns`,
        the complete spans of each chunk of a file as one SpanColumns (what the encoder takes fastest)
        and the others as SpanRecords."""
        ended: list[Any] = []
        special: list[SpanRecord] = []  # process spans and spans naming an exit code: through _settle
        self.caught_up = True
        try:
            names = sorted(entry.name for entry in os.scandir(self.spans_dir)
                           if entry.name.endswith(spanfile.SUFFIX))
        except OSError:
            return ended
        for name in names:
            followed = self.files.get(name)
            if followed is None:
                followed = self.files[name] = _Followed(self.spans_dir / name, name)
            if followed.refused is None:
                self._read(followed, ended, special)
        if not columns:
            ended = [span for item in ended for span in (item.records() if type(item) is SpanColumns else (item,))]
        return ended + self._settle(special) if special else ended

    def still_open(self, cmd_pid: int | None = None, root_parent: str | None = None,
                   returncode: int | None = None) -> list[SpanRecord]:
        """Everything not returned yet: the spans started and not ended (closed at the last time known
        in their file, incomplete), and the process spans held for an exit code. CMD's own process
        span (pid `cmd_pid`, parent `root_parent`: TRACEPARENT's span, or none) gets `returncode`."""
        spans = []
        for followed in self.files.values():
            for span_id, (parent, trace, name, kind, category, start, attributes) in followed.open.items():
                spans.append(self._record(followed, span_id, parent, trace, name, kind, category, start,
                                          max(followed.last_ns, start), "UNSET", attributes, incomplete=True))
        spans = self._settle(spans) + [span for held in self._held.values() for span in held.values()]
        self._held.clear()
        if returncode is not None:
            for span in spans:
                if (_is_process(span) and EXIT_CODE not in span.attributes and span.pid == cmd_pid
                        and (span.parent_span_id or None) == (root_parent or None)):
                    span.attributes = {**span.attributes, EXIT_CODE: returncode}
        return spans

    def _settle(self, ended: list[SpanRecord]) -> list[SpanRecord]:
        """Give process spans their exit code as the loader does; hold those that wait for one. End the
        span of a child that exited unseen at the child's last record."""
        for span in ended:
            if _is_process(span) and span.pid is not None:
                self._lives.setdefault(span.pid, []).append((span.start_ns, span.end_ns))
                self._lives.move_to_end(span.pid)
                if len(self._lives) > EXITS_KEPT:
                    self._lives.popitem(last=False)
        ready = []
        for span in ended:
            attributes = span.attributes
            if attributes.get(EXITED_UNSEEN) is True:
                lives = self._lives.get(_int(attributes.get(PID)) or -1, ())
                ends = [end for start, end in lives if start >= span.start_ns]
                if ends and max(ends) < span.end_ns:
                    span.end_ns = max(ends)
            if EXIT_CODE in attributes and PID in attributes:
                reaped = SPAWN_NS in attributes and EXITED_UNSEEN not in attributes and RUNNING_AT_EXIT not in attributes
                self._exits[span.span_id] = (attributes[PID], attributes[EXIT_CODE], span.end_ns if reaped else None)
                if len(self._exits) > EXITS_KEPT:
                    self._exits.popitem(last=False)
                for child in self._held.pop(span.span_id, {}).values():
                    ready.append(self._with_exit(child) or child)
            if span.category == FINALIZE and EXIT_CODE in attributes:  # its process's own status, at exit()
                process = self._release(span.parent_span_id or "")
                if process is None:  # not read yet (a chunk's E records come after its X records)
                    self._own_exits[span.parent_span_id or ""] = attributes[EXIT_CODE]
                    if len(self._own_exits) > EXITS_KEPT:
                        self._own_exits.popitem(last=False)
                else:
                    process.attributes = {**process.attributes, EXIT_CODE: attributes[EXIT_CODE]}
                    ready.append(process)
            if _is_process(span) and EXIT_CODE not in attributes:
                exited = self._with_exit(span)
                if exited is None and span.span_id in self._own_exits:
                    span.attributes = {**attributes, EXIT_CODE: self._own_exits.pop(span.span_id)}
                    exited = span
                if exited is None:
                    self._held.setdefault(span.parent_span_id or "", {})[span.span_id] = span
                    continue
                span = exited
            ready.append(span)
        return ready

    def _release(self, span_id: str) -> SpanRecord | None:
        """The held process span of id `span_id`, no longer held; None if it is not."""
        for parent, held in self._held.items():
            if span_id in held:
                span = held.pop(span_id)
                if not held:
                    del self._held[parent]
                return span
        return None

    def _with_exit(self, span: SpanRecord) -> SpanRecord | None:
        """`span` with the exit code its parent span saw for its pid, or None if none is known; an
        incomplete one (a killed child) ends where that span reaped it, as the loader ends it."""
        exit = self._exits.get(span.parent_span_id or "")
        if exit is None or _int(exit[0]) != span.pid or span.pid is None:
            return None
        span.attributes = {**span.attributes, EXIT_CODE: exit[1]}
        if span.incomplete and exit[2] is not None and exit[2] > span.end_ns:
            span.end_ns = exit[2]
        return span

    def refused_files(self) -> dict[str, str]:
        return {name: followed.refused for name, followed in self.files.items() if followed.refused}

    def _read(self, followed: _Followed, ended: list[Any], special: list[SpanRecord]) -> None:
        try:
            with open(followed.path, "rb") as handle:
                handle.seek(followed.offset)
                data = handle.read(READ_LIMIT)
        except OSError:
            return  # deleted under us (a warm-up run's directory) or unreadable: nothing to follow
        if not data:
            return
        if len(data) == READ_LIMIT:
            self.caught_up = False
        followed.offset += len(data)
        buffer = followed.partial + data
        complete = buffer.rfind(b"\n") + 1
        followed.partial = buffer[complete:]  # a line still being written (or torn): completed by a later read
        chunk = spanblock.expand(buffer[:complete])  # an M record: the X records it stands for
        if not followed.header:  # the first line: the header, or the reason to refuse the file
            first = chunk.find(b"\n") + 1
            self._lines(followed, chunk[:first], special)
            chunk = chunk[first:]
            if followed.refused is not None:
                return
        if chunk and not (followed.header and self._columns(followed, chunk, ended, special)):
            self._lines(followed, chunk, special)

    def _columns(self, followed: _Followed, chunk: bytes, ended: list[Any], special: list[SpanRecord]) -> bool:
        """Read a chunk of whole lines after the header as columns: its complete spans (X, nearly every
        line) made with no Python code per field, the rest line by line. False, having changed nothing,
        when a line is damaged: then `_lines` reads the chunk, checking every line."""
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            return False
        # Every field of every line in one list, 12 per line: one split for the whole chunk. A line with
        # more or fewer fields moves the next lines' fields: their terminators and record letters
        # are then out of place.
        flat = text[:-1].replace("\n", "\t").split("\t")
        lines = len(flat) // _FIELD_COUNT
        if len(flat) % _FIELD_COUNT or flat[11::_FIELD_COUNT].count(spanfile.TERMINATOR) != lines:
            return False
        records = flat[0::_FIELD_COUNT]
        others = [index for index, record in enumerate(records) if record != _X] if records.count(_X) != lines else []
        if others:
            if not _RECORDS.issuperset(records[index] for index in others):
                return False
            complete: list[str] = []
            start = 0
            for index in others:
                complete += flat[start * _FIELD_COUNT:index * _FIELD_COUNT]
                start = index + 1
            complete += flat[start * _FIELD_COUNT:]
        else:
            complete = flat
        if complete:
            span_ids, parents, traces, names, kinds, categories, starts, ends, statuses, texts = (
                complete[column::_FIELD_COUNT] for column in range(1, 11))
            if "" in span_ids or "" in starts or "" in ends:
                return False
            try:
                starts, ends = list(map(int, starts)), list(map(int, ends))
            except ValueError:
                return False
            if "" in texts:
                texts = [text or "{}" for text in texts]
            joined = ",".join(texts)
            try:
                attributes = json.loads("[" + joined + "]")
            except ValueError:
                return False
            if set(map(type, attributes)) != {dict}:
                return False
            # Nothing changed above; from here on, the lines are read.
            if "" in statuses:
                statuses = [status or "UNSET" for status in statuses]
            followed.last_ns = max(followed.last_ns, max(starts), max(ends))
            self.spans_seen += len(span_ids)
            spans = SpanColumns(self.run_id, followed.resource, followed.service, followed.pid, followed.name, traces,
                                span_ids, parents, names, kinds, categories, starts, ends, statuses, attributes)
            if "process" in names or EXIT_CODE in joined:  # spans _settle must see: this chunk as SpanRecords
                for span in spans.records():
                    (special if span.name == "process" or EXIT_CODE in span.attributes else ended).append(span)
            else:
                ended.append(spans)
        if others:
            rows = [flat[index * _FIELD_COUNT:(index + 1) * _FIELD_COUNT] for index in others]
            self._record_lines(followed, rows, special)
        return True

    def _lines(self, followed: _Followed, chunk: bytes, ended: list[SpanRecord]) -> None:
        """Read a chunk of whole lines one by one, skipping and counting the damaged ones."""
        try:
            lines = chunk.decode("utf-8").split("\n")
        except UnicodeDecodeError:  # a line that is not UTF-8 (the loader skips it too): decode apart
            lines = []
            for raw in chunk.split(b"\n"):
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    self.damaged_lines += 1
        lines.pop()  # after the last newline: nothing
        split = [line.split("\t") for line in lines]
        good = [fields for fields in split if len(fields) == _FIELD_COUNT and fields[11] == spanfile.TERMINATOR]
        self.damaged_lines += len(split) - len(good)
        self._record_lines(followed, good, ended)

    def _record_lines(self, followed: _Followed, rows: list[list[str]], ended: list[SpanRecord]) -> None:
        """Lines split into their fields: their attributes parsed as one JSON array (one call, not one per
        line; line by line only when that fails), then each line read in order."""
        texts = [fields[10] or "{}" for fields in rows]
        try:
            parsed = json.loads("[" + ",".join(texts) + "]")
        except ValueError:
            parsed = [self._json(text) for text in texts]
        for fields, attributes in zip(rows, parsed):
            self._record_line(followed, fields, attributes, ended)
            if followed.refused is not None:
                return

    @staticmethod
    def _json(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return None

    def _record_line(self, followed: _Followed, fields: list[str], attributes: Any, ended: list[SpanRecord]) -> None:
        if type(attributes) is not dict:
            self.damaged_lines += 1
            return
        rec, span_id, parent, trace, name, kind, category, start_text, end_text, status = fields[:10]
        try:
            start = int(start_text) if start_text else 0
            end = int(end_text) if end_text else 0
        except ValueError:
            self.damaged_lines += 1
            return
        if not followed.header:
            if rec != _H:
                followed.refused = "no header record"
                return
            self._header(followed, attributes)
        if start > followed.last_ns or end > followed.last_ns:
            followed.last_ns = max(followed.last_ns, start, end)
        if rec == _X:
            if span_id and start_text and end_text:
                self.spans_seen += 1
                ended.append(SpanRecord(self.run_id, trace, span_id, parent or None, name, kind, category, start, end,
                                        status or "UNSET", False, followed.service, followed.pid, attributes,
                                        followed.resource, followed.name))
            else:
                self.damaged_lines += 1
        elif rec == _S:
            if span_id and start_text:
                self.spans_seen += 1
                followed.open[span_id] = (parent, trace, name, kind, category, start, attributes)
            else:
                self.damaged_lines += 1
        elif rec == _E:
            if not span_id or not end_text:
                self.damaged_lines += 1
                return
            self._end(followed, span_id, parent, end, status or "UNSET", attributes, ended)
        elif rec not in (_H, _T, _D):
            self.damaged_lines += 1

    def _header(self, followed: _Followed, header: dict[str, Any]) -> None:
        if header.get("format") != spanfile.FORMAT_NAME:
            followed.refused = f"not a span file (format {header.get('format')!r})"
        elif header.get("version") not in spanfile.READ_VERSIONS:
            followed.refused = f"span file version {header.get('version')} is not supported"
        followed.header = True
        resource = header.get("resource")
        followed.resource = resource if isinstance(resource, dict) else {}
        service = followed.resource.get("service.name")
        followed.service = None if service is None else str(service)
        pid = header.get("pid", followed.resource.get("process.pid"))
        followed.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    def _end(self, followed: _Followed, span_id: str, parent: str, end: int, status: str,
             attributes: dict[str, Any], ended: list[SpanRecord]) -> None:
        started = followed.open.pop(span_id, None)
        if started is None:
            earlier = followed.ended.get(span_id)
            if earlier is None or end <= earlier[-1]:
                return  # after an X, or an earlier end than the one sent: the loader keeps the span as sent
            started = earlier[:-1]
        followed.ended[span_id] = (*started, end)
        if len(followed.ended) > ENDED_KEPT:
            followed.ended.popitem(last=False)
        s_parent, trace, name, kind, category, start, s_attributes = started
        merged = merge_patch(s_attributes, attributes) if attributes else s_attributes
        ended.append(self._record(followed, span_id, parent or s_parent, trace, name, kind, category, start, end,
                                  status, merged))

    def _record(self, followed: _Followed, span_id: str, parent: str, trace: str, name: str, kind: str,
                category: str, start: int, end: int, status: str, attributes: dict[str, Any],
                incomplete: bool = False) -> SpanRecord:
        return SpanRecord(self.run_id, trace, span_id, parent or None, name, kind, category, start, end, status,
                          incomplete, followed.service, followed.pid, attributes, followed.resource, followed.name)


def _is_process(span: SpanRecord) -> bool:
    return span.name == "process" and span.category == "process"


def _int(value: Any) -> int | None:
    """The loader's TRY_CAST(... AS INTEGER) of a JSON value."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch (DuckDB's json_merge_patch, which the loader uses): a new dict."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged
