"""The span file's M record (format version 2): complete spans as one marshal block.

A flush writes the OpenTelemetry SDK spans that ended since the last one (hooks/otel_.py) as ONE
record: their raw fields, ROW_FIELDS columns of them (a field all the spans share written once), in
one `marshal.dumps` (C: no JSON made in the traced process), as hex in the record's attributes
field. Readers (the loader, the span follower) turn a block back into the X records it stands for,
the very lines the writer would have made (`x_line`), so everything after them reads text as
before; they read the first agents' blocks too, one flat list of ROW_FIELDS values a span.
docs/span-format.md, "The M record".

Marshal format 4: every Python the agent runs in (3.8-3.13) writes it and the loader's reads it, for
the only types a block holds (int, str, float, bool, tuple, list, dict). Hex, not base64: no module
to import in the traced process (binascii is a shared library), for twice the bytes.
"""

from __future__ import annotations

from _operator import sub  # the C module: operator.py only re-exports it
from itertools import repeat
from marshal import dumps, loads

from . import spanfile

BLOCK = "M"
MARSHAL_VERSION = 4
# span_id (int), parent_id (int, or its text: "" for none), trace_id (int, or its text), name, kind
# (SpanKind's value, or its name), category ("": the reader's, from the kind and attributes), start_ns,
# end_ns, status (StatusCode's value, or its name), scope, attributes
ROW_FIELDS = 11
KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")  # SpanKind's values 0..4
STATUSES = ("UNSET", "OK", "ERROR")  # StatusCode's values 0..2
# An M record holds at most this many spans (~30 KB of text for the benchmark's): a flush of thousands
# made one block of ~1 MB, copied 4 times on its way to the file, and allocations that large come
# from fresh pages (the C allocator maps them and gives them back), ~900 page faults a flush.
BLOCK_SPANS = 256
_HEAD = BLOCK + "\t" * 10  # the record letter and the 9 empty fields before the block
# The columns a block writes once where every span has the same value: parent, trace, name, kind,
# category, status, scope (not the ids, times and attributes: the span's own). A span's hex in the
# file ~224 -> ~155 characters for the benchmark's (~115 with the times as offsets: columns()), and
# marshal's and hex's work and the write with them.
_SHARED = (1, 2, 3, 4, 5, 8, 9)
_INT = {int}
_MARK = b"\n" + BLOCK.encode() + b"\t"  # the start of an M line inside a chunk of lines


def block_line(values: list) -> str:
    """The M record of spans' `values`, ROW_FIELDS a span, flat (ValueError: a value marshal cannot
    write, a subclass of str or int)."""
    return f"{_HEAD}{dumps(columns(values), MARSHAL_VERSION).hex()}\t.\n"


def columns(values: list) -> tuple:
    """Spans' `values` (ROW_FIELDS a span, flat) as the tuple of their ROW_FIELDS columns: each a list
    of the spans' values, or, for a field of _SHARED whose value is the same int or str (or the
    same scope dict) in every span, a 1-tuple of it. The same value by ==, which for an exact int or
    str (or a dict of str) is the same text in the X record; `count` is C, identity first. Where
    every start and end is an exact int, the starts are (the first, [each one minus the first]) and
    the ends each span's duration: small ints, 5 bytes each in the block where an epoch's ns take 15
    (and no entry in marshal's table of shared objects). All in C: no Python loop a span."""
    found = [values[index::ROW_FIELDS] for index in range(ROW_FIELDS)]
    n = len(found[0])
    for index in _SHARED:
        column = found[index]
        if not column:
            break
        first = column[0]
        kind = type(first)
        try:
            shared = (kind is int or kind is str or kind is dict and index == 9) and column.count(first) == n
        except Exception as exc:  # a program's value whose == raised: the column as it is
            from . import tracer  # (here, not above: the loader reads blocks with this module)

            tracer.raise_if_programs(exc)
            shared = False
        if shared:
            found[index] = (first,)
    starts, ends = found[6], found[7]
    if starts and set(map(type, starts)) == _INT and set(map(type, ends)) == _INT:
        first = starts[0]
        found[6] = (first, list(map(sub, starts, repeat(first))))
        found[7] = list(map(sub, ends, starts))
    return tuple(found)


def category(kind: str, attributes) -> str:
    """An OTel span's category: `http` for a CLIENT or SERVER span with HTTP attributes, else `other`."""
    if (kind == "CLIENT" or kind == "SERVER") and attributes:
        for key in attributes:
            if key.startswith(("http.", "url.")):
                return "http"
    return "other"


def x_line(row: list | tuple) -> str:
    """The X record a row stands for: its ids in hex, its kind's and status's names, its category, its
    name without the format's separators, its attributes the scope's with the span's over them. (The
    writer leaves these to the reader; the rows of format version 2's first agents held text for the
    ids, kind, category and status: read as they are.)"""
    span_id, parent_id, trace_id, name, kind, category_, start_ns, end_ns, status, scope, attributes = row
    if type(parent_id) is int:
        parent_id = f"{parent_id:016x}"
    if type(trace_id) is int:
        trace_id = f"{trace_id:032x}"
    if type(kind) is int:
        kind = KINDS[kind]
    if type(status) is int:
        status = STATUSES[status]
    if not category_:
        category_ = category(kind, attributes)
    if type(name) is not str or not name.isprintable():  # isprintable: one C pass, False for a tab or line break
        name = spanfile.clean(str(name))
    return (f"X\t{span_id:016x}\t{parent_id}\t{trace_id}\t{name}\t{kind}\t{category_}\t{start_ns}\t{end_ns}\t"
            f"{status}\t{spanfile.encode({**scope, **attributes})}\t.\n")


def rows(block: str) -> list:
    """The spans of an M record's block (its attributes field), ROW_FIELDS values each (a list or
    a tuple); ValueError saying why if it holds none."""
    try:
        found = loads(bytes.fromhex(block))
    except (EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"a marshal block that does not read ({exc})") from None
    if type(found) is tuple:  # its columns (block_line)
        if len(found) == ROW_FIELDS and type(found[0]) is list:
            n = len(found[0])
            found = list(found)
            times = found[6]
            if type(times) is tuple and len(times) == 2:  # the first start and the offsets; the durations
                try:
                    first, offsets = times
                    found[6] = starts = [first + offset for offset in offsets]
                    found[7] = [start + duration for start, duration in zip(starts, found[7])]
                except TypeError:
                    raise ValueError("a marshal block with damaged times") from None
            found = [[column[0]] * n if type(column) is tuple and len(column) == 1 else column for column in found]
            if all(type(column) is list and len(column) == n for column in found):
                return list(zip(*found))
        raise ValueError(f"a marshal block that is not {ROW_FIELDS} columns of one length")
    if type(found) is not list or len(found) % ROW_FIELDS:  # the first agents' blocks: flat rows
        raise ValueError(f"a marshal block that is not a list of {ROW_FIELDS} values a span")
    return [found[start:start + ROW_FIELDS] for start in range(0, len(found), ROW_FIELDS)]


def x_lines(line: str) -> str:
    """An M line (its newline left out) as the X records it stands for; ValueError if it is damaged."""
    fields = line.split("\t")
    if len(fields) != len(spanfile.FIELDS) or fields[-1] != spanfile.TERMINATOR or fields[0] != BLOCK:
        raise ValueError(f"{len(fields)} fields, not {len(spanfile.FIELDS)} ending in {spanfile.TERMINATOR!r}")
    found = rows(fields[10])
    try:
        return "".join([x_line(row) for row in found])
    except (TypeError, ValueError, AttributeError, IndexError) as exc:  # a row of the wrong types
        raise ValueError(f"a marshal block with a damaged span ({exc})") from None


def has_blocks(data: bytes) -> bool:
    """`data`, whole lines of a span file, holds an M record."""
    return data.startswith(_MARK[1:]) or _MARK in data


def expand(data: bytes) -> bytes:
    """Whole lines of a span file with each M record replaced by its X records; a damaged one (or one
    that is not UTF-8) is left as it is, for the reader to count as damaged as it counts any line."""
    if not has_blocks(data):
        return data
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        if line.startswith(_MARK[1:]):
            try:
                lines[index] = x_lines(line.decode("utf-8")).encode("utf-8", "replace")[:-1]  # as the flush encodes
            except (ValueError, UnicodeError):
                pass
    return b"\n".join(lines)
