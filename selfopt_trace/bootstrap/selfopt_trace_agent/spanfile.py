"""The span file format, version 2: the one definition shared by the writer and the loader.

See docs/span-format.md. Records are tab-separated lines of 12 fields ending in ".". Encoding
avoids the `json` module on purpose: importing it costs ~2 ms, more than a whole traced start-up
should; plain strings (almost all of them) are written directly, others go through json lazily.
"""

from __future__ import annotations

FORMAT_NAME = "selfopt-trace/spans"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)  # what readers read: version 1 is version 2 without M records (spanblock.py)
FIELDS = (
    "rec", "span_id", "parent_span_id", "trace_id", "name", "kind", "category",
    "start_ns", "end_ns", "status", "attributes", "terminator",
)
HEADER, START, END, COMPLETE, TICK, DIAGNOSTIC = "H", "S", "E", "X", "T", "D"
TERMINATOR = "."
SUFFIX = ".spans"


def clean(text: str) -> str:
    """A field value without the separators of the format."""
    if "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
    return text


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    """A JSON string. Never imports anything: it runs while a flush holds the buffer's lock."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) > 0xFFFF:  # JSON spells astral code points as a surrogate pair
            code = ord(char) - 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)))
        else:
            out.append("\\u%04x" % ord(char))
    return '"' + "".join(out) + '"'


def _value(value: object) -> str:
    kind = type(value)
    if kind is str:
        return _string(value)  # type: ignore[arg-type]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else "null"
    if value is None:
        return "null"
    if kind is list or kind is tuple:
        return "[" + ",".join([_value(item) for item in value]) + "]"  # type: ignore[union-attr]
    if kind is dict:
        return encode(value)  # type: ignore[arg-type]
    # A subclass (an IntEnum, a str Enum) as the value it is, as the OTel SDK exports it: its str() is
    # "Level.HIGH" before Python 3.11
    if isinstance(value, int):
        return int.__repr__(value)  # type: ignore[arg-type]
    if isinstance(value, float):
        return _value(float(value))
    if isinstance(value, str):
        return _string(str.__str__(value))
    return _string(str(value))


# Text that is not UTF-8 (an argv or a path in Latin-1: os.fsdecode's surrogates) is written escaped,
# losslessly: a byte that is not UTF-8 as `\xHH`, a backslash as `\\`; this attribute lists the keys
# (of the same object) whose text was so written. `unescape` gives the original back.
ESCAPED = "selfopt_trace.escaped"


def needs_escape(value: object) -> bool:
    """A string (or a list of them) holding a surrogate: bytes that are not UTF-8."""
    if type(value) is str:
        if value.isascii():
            return False
        try:
            value.encode("utf-8")  # type: ignore[union-attr]
        except UnicodeEncodeError as exc:
            from .config import raise_if_programs  # (here: tracer imports this module)

            raise_if_programs(exc)
            return True
        return False
    return (type(value) is list or type(value) is tuple) and any(needs_escape(item) for item in value)  # type: ignore[union-attr]


def escape(value):
    """`value` (a string or a list of them) with its surrogates as `\\xHH` (`\\uHHHH` for one that
    stands for no byte) and its backslashes doubled: UTF-8 text that `unescape` turns back."""
    if type(value) is not str:
        return [escape(item) if type(item) is str else item for item in value]
    out = []
    for char in value:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append("\\x%02x" % (code - 0xDC00))
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\u%04x" % code)
        else:
            out.append(char)
    return "".join(out)


def unescape(text: str) -> str:
    """The text `escape` was given (bytes that are not UTF-8 as surrogates: os.fsencode gives them)."""
    out = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            following = text[i + 1]
            if following == "x":
                out.append(chr(0xDC00 + int(text[i + 2:i + 4], 16)))
                i += 4
                continue
            if following == "u":
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(following)
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


_plain_keys: set = set()  # attribute keys known to need no escaping


def encode(attributes: dict | None) -> str:
    """A JSON object, without importing json for the common case (plain keys, str/int values)."""
    if not attributes:
        return "{}"
    if len(attributes) == 1:  # one plain string (a function's or a module's name): no list, no join
        for key, value in attributes.items():
            if key in _plain_keys and type(value) is str and value.isprintable() and '"' not in value and "\\" not in value:
                return f'{{"{key}":"{value}"}}'
    parts = []
    escaped = None
    for key, value in attributes.items():
        if key not in _plain_keys:
            if type(key) is not str or _string(key) != '"' + key + '"':
                parts.append(_string(str(key)) + ":" + _value(value))
                continue
            _plain_keys.add(key)
        kind = type(value)
        if kind is str and value.isprintable() and '"' not in value and "\\" not in value:
            parts.append(f'"{key}":"{value}"')
        elif kind is int:
            parts.append(f'"{key}":{value}')
        else:
            if needs_escape(value):
                value = escape(value)
                escaped = (escaped or []) + [key]
            parts.append(f'"{key}":{_value(value)}')
    if escaped:
        parts.append(f'"{ESCAPED}":{_value(escaped)}')
    return "{" + ",".join(parts) + "}"


def header_line(start_ns: int, run_id: str, pid: int, resource: dict) -> str:
    body = encode({"format": FORMAT_NAME, "version": FORMAT_VERSION, "run_id": run_id, "pid": pid, "resource": resource})
    return "H\t\t\t\t\t\t\t%d\t\t\t%s\t.\n" % (start_ns, body)


# f-strings, not %: formatting a record is the largest part of a span's cost, and an f-string
# does it with ~10 % fewer instructions per span.
def start_line(span_id: str, parent_id: str, trace_id: str, name: str, kind: str, category: str, start_ns: int, attributes: str) -> str:
    return f"S\t{span_id}\t{parent_id}\t{trace_id}\t{name}\t{kind}\t{category}\t{start_ns}\t\t\t{attributes}\t.\n"


def end_line(span_id: str, end_ns: int, status: str, attributes: str, parent_id: str = "") -> str:
    return f"E\t{span_id}\t{parent_id}\t\t\t\t\t\t{end_ns}\t{status}\t{attributes}\t.\n"


def complete_line(span_id: str, parent_id: str, trace_id: str, name: str, kind: str, category: str, start_ns: int, end_ns: int, status: str, attributes: str) -> str:
    """An X record (the tracer's flush writes the same f-string inline: the hot path)."""
    return (f"X\t{span_id}\t{parent_id}\t{trace_id}\t{name}\t{kind}\t{category}\t{start_ns}\t{end_ns}\t{status}\t"
            f"{attributes}\t.\n")


def tick_line(now_ns: int) -> str:
    return "T\t\t\t\t\t\t\t\t%d\t\t{}\t.\n" % now_ns


def diagnostic_line(now_ns: int, code: str, message: str) -> str:
    return "D\t\t\t\t%s\t\t\t%d\t\t\t%s\t.\n" % (clean(code), now_ns, encode({"message": message}))
