"""OTLP trace requests in the protobuf wire format, written directly: from our spans' fields, and from SDK spans.

Two encoders, the same bytes:
- `SpanEncoder`, the one `push` and the live export send with: a span's stored fields (hex ids, times,
  kind, status, the attributes dict) go straight into the request's bytes, grouped by process, with
  what repeats from span to span (a name with its kind, category and status; a string attribute; an
  integer attribute's key) encoded once. No SDK span, no generated message: the request is handed to
  the exporter's channel as bytes (export/otlp_sdk.py).
- `Encoder`, for SDK `ReadableSpan`s: the request the SDK's `encode_spans` builds, ~4x faster, parsed
  back into the generated `ExportTraceServiceRequest`. tests/export/test_send.py compares it with the
  SDK's, byte for byte; tests/otel/test_wire.py compares `SpanEncoder` with both.

Values OTLP (or the backends behind it) cannot carry are converted by `Cleaner` (the Sender's, and
tests/otel/sdk_reference.py's Converter), never sent as they are and never allowed to fail a batch:
strings over `MAX_STRING` characters are truncated, strings that are not valid UTF-8 (lone
surrogates) get their bad code points escaped, NaN and infinities become the strings "NaN", "Infinity", "-Infinity" (JSON-based
backends, Jaeger's query API included, cannot represent them), integers beyond 64 bits become
strings, null values are left out. `Cleaner.counts` says how many of each, for the run's diagnostics.

Field numbers (trace.proto): ExportTraceServiceRequest.resource_spans=1; ResourceSpans resource=1,
scope_spans=2, schema_url=3; ScopeSpans scope=1, spans=2, schema_url=3; InstrumentationScope name=1,
version=2, attributes=3; Span trace_id=1, span_id=2, trace_state=3, parent_span_id=4, name=5, kind=6,
start_time_unix_nano=7 (fixed64), end_time_unix_nano=8 (fixed64), attributes=9, status=15, flags=16
(fixed32); Status message=2, code=3; KeyValue key=1, value=2; AnyValue string=1, bool=2, int=3,
double=4, array=5, kvlist=6, bytes=7; ArrayValue and KeyValueList values=1.
"""

from __future__ import annotations

import math
import struct
from itertools import repeat
from typing import Any, Iterator, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from .. import __version__
from .otlp_json import CATEGORY, INCOMPLETE, RUN_ID, SOURCE_FILE

_KINDS = {SpanKind.INTERNAL: b"\x30\x01", SpanKind.SERVER: b"\x30\x02", SpanKind.CLIENT: b"\x30\x03",
          SpanKind.PRODUCER: b"\x30\x04", SpanKind.CONSUMER: b"\x30\x05"}  # field 6, the enum's number
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags: the parent's remoteness is known / is remote
_FLAGS = {False: b"\x85\x01" + struct.pack("<I", _HAS_IS_REMOTE),
          True: b"\x85\x01" + struct.pack("<I", _HAS_IS_REMOTE | _IS_REMOTE)}
_TIMES = struct.Struct("<BQBQ")  # start (field 7) and end (field 8), fixed64 each
_DOUBLE = struct.Struct("<d")
_SMALL = [bytes((n,)) for n in range(128)]
_LOW = [bytes((n | 0x80,)) for n in range(128)]  # a varint's byte that more follow
_CACHE_LIMIT = 32768  # encoded attributes and names kept for reuse (some MB); cleared when full
MAX_STRING = 64 * 1024  # characters of one attribute value; far above what the agent records


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue's bytes, as the SDK's _encode_value makes it (None: the empty value)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode("utf-8"))
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # int64: two's complement, 10 bytes if negative
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, (list, tuple)):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, dict):
        return _field(b"\x32", b"".join(_key_value(b"\x0a", str(key), item) for key, item in value.items()))
    if value is None:
        return b""
    raise TypeError(f"invalid attribute value of type {type(value).__name__}")  # a cleaned value is never one


def _key_value(tag: bytes, key: str, value: Any) -> bytes:
    return _field(tag, _field(b"\x0a", key.encode("utf-8")) + _field(b"\x12", _any_value(value)))


class Encoder:
    """Builds requests; keeps what repeats between spans (attributes, names, resources) encoded."""

    def __init__(self) -> None:
        self._attributes: dict[tuple, bytes] = {}  # (key, str or bool value): encoded KeyValue
        self._keys: dict[str, bytes] = {}  # key: its encoded field
        self._names: dict[str, bytes] = {}
        self._trace_ids: dict[int, bytes] = {}
        self._statuses: dict[tuple, bytes] = {}
        self._resources: dict[Resource, bytes] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        """The request the SDK's `encode_spans` builds for `spans`: spans grouped by resource, then by
        scope, each in order of first appearance."""
        groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
        span_bytes = self._span
        for span in spans:
            scopes = groups.get(span.resource)
            if scopes is None:
                scopes = groups[span.resource] = {}
            scope = span.instrumentation_scope or None
            members = scopes.get(scope)
            if members is None:
                members = scopes[scope] = []
            members.append(span_bytes(span))
        request = []
        for resource, scopes in groups.items():
            parts = [self._resource(resource)]
            for scope, members in scopes.items():
                parts.append(_field(b"\x12", self._scope(scope) + b"".join(members)
                                    + (_field(b"\x1a", scope.schema_url.encode()) if scope and scope.schema_url else b"")))
            if resource.schema_url:
                parts.append(_field(b"\x1a", resource.schema_url.encode("utf-8")))
            request.append(_field(b"\x0a", b"".join(parts)))
        return ExportTraceServiceRequest.FromString(b"".join(request))

    def _span(self, span: ReadableSpan) -> bytes:
        context = span._context  # the properties only return these: one call less per field, per span
        trace_id = self._trace_ids.get(context.trace_id)  # a run is mostly one trace
        if trace_id is None:
            trace_id = self._remember(self._trace_ids, context.trace_id, b"\x0a\x10" + context.trace_id.to_bytes(16, "big"))
        parts = [trace_id, b"\x12\x08" + context.span_id.to_bytes(8, "big")]
        if context.trace_state:
            parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode()))
        parent = span._parent
        if parent is not None:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        name = self._names.get(span._name)
        if name is None:
            name = self._remember(self._names, span._name,  # protobuf leaves an empty name out
                                  _field(b"\x2a", span._name.encode("utf-8")) if span._name else b"")
        parts.append(name)
        parts.append(_KINDS[span._kind])
        parts.append(_TIMES.pack(0x39, span._start_time, 0x41, span._end_time))
        if span._attributes:
            cache, keys = self._attributes, self._keys
            for key, value in span._attributes.items():
                kind = type(value)
                if kind is str or kind is bool:  # names, URLs, flags: they repeat
                    encoded = cache.get((key, value))
                    if encoded is None:
                        encoded = self._remember(cache, (key, value), _key_value(b"\x4a", key, value))
                elif kind is int and value >= 0:  # sizes, counts, pids: rarely twice the same
                    key_field = keys.get(key)
                    if key_field is None:
                        key_field = self._remember(keys, key, _field(b"\x0a", key.encode("utf-8")))
                    encoded = _field(b"\x4a", key_field + _field(b"\x12", b"\x18" + _varint(value)))
                else:
                    encoded = _key_value(b"\x4a", key, value)
                parts.append(encoded)
        status = span._status
        encoded_status = self._statuses.get((status.status_code, status.description))
        if encoded_status is None:
            code = status.status_code.value
            encoded_status = self._remember(self._statuses, (status.status_code, status.description), _field(
                b"\x7a", (_field(b"\x12", status.description.encode("utf-8")) if status.description else b"")
                + (b"\x18" + _SMALL[code] if code else b"")))
        parts.append(encoded_status)
        parts.append(_FLAGS[parent is not None and parent.is_remote])
        return _field(b"\x12", b"".join(parts))

    def _resource(self, resource: Resource) -> bytes:
        encoded = self._resources.get(resource)
        if encoded is None:
            encoded = self._remember(self._resources, resource, _field(b"\x0a", b"".join(
                _key_value(b"\x0a", key, value) for key, value in (resource.attributes or {}).items())))
        return encoded

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        encoded = self._scopes.get(scope)
        if encoded is None:
            body = b""
            if scope is not None:
                body = ((_field(b"\x0a", scope.name.encode("utf-8")) if scope.name else b"")
                        + (_field(b"\x12", scope.version.encode("utf-8")) if scope.version else b"")
                        + b"".join(_key_value(b"\x1a", key, value) for key, value in (scope.attributes or {}).items()))
            encoded = self._remember(self._scopes, scope, _field(b"\x0a", body))
        return encoded

    @staticmethod
    def _remember(cache: dict, key: Any, encoded: bytes) -> bytes:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = encoded
        return encoded


# ---------------------------------------------------------------- values OTLP cannot carry

_INT64 = (-(1 << 63), (1 << 63) - 1)
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
_DROP = object()


class Cleaner:
    """Makes attribute values sendable; counts what it had to convert (`counts`, `converted`)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.converted = 0  # the sum of `counts`

    def clean(self, attributes: dict[str, Any]) -> int:
        """Make every value sendable, in place and in order; returns the approximate encoded size."""
        size = 0
        changes: dict[str, tuple[str, Any]] = {}
        for key, value in attributes.items():
            kind = type(value)
            if key.isascii():  # the common cases, checked without a call
                if kind is str:
                    if len(value) <= MAX_STRING and value.isascii():
                        size += len(key) + len(value) + 8
                        continue
                elif kind is bool or (kind is int and _INT64[0] <= value <= _INT64[1]):
                    size += len(key) + 16
                    continue
            cleaned = self.value(value)
            changes[key] = (self.utf8(key), cleaned)
            size += len(key) + _size(cleaned) + 8
        if changes:
            items = list(attributes.items())
            attributes.clear()
            for key, value in items:
                if key in changes:
                    key, value = changes[key]
                    if value is _DROP:
                        continue
                attributes[key] = value
        return size

    def value(self, value: Any) -> Any:
        """`value` made sendable (`_DROP`: leave it out)."""
        kind = type(value)
        if kind is str:
            if len(value) > MAX_STRING:
                self._count("truncated strings")
                value = value[:MAX_STRING]
            return self.utf8(value)
        if kind is bool:
            return value
        if kind is int:
            if _INT64[0] <= value <= _INT64[1]:
                return value
            self._count("integers beyond 64 bits")
            return str(value)
        if kind is float:
            if math.isfinite(value):
                return value
            self._count("NaN or infinite numbers")
            return _NON_FINITE.get(value, "NaN")
        if value is None:
            self._count("null values")
            return _DROP
        if kind is list or kind is tuple:
            items = [self.value(item) for item in value]
            return [item for item in items if item is not _DROP]
        if kind is dict:
            cleaned = dict(value)
            self.clean(cleaned)
            return cleaned
        self._count("values of other types")
        return self.utf8(str(value))

    def utf8(self, text: str) -> str:
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:  # lone surrogates (bytes that were not UTF-8, decoded with surrogateescape)
            self._count("strings that were not UTF-8")
            return text.encode("utf-8", "backslashreplace").decode("utf-8")

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        self.converted += 1


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_size(item) + 2 for item in value)
    if isinstance(value, dict):
        return sum(len(key) + _size(item) + 4 for key, item in value.items())
    return 8


# ---------------------------------------------------------------- our spans, straight to bytes

_KIND_FIELDS = {"INTERNAL": b"\x30\x01", "SERVER": b"\x30\x02", "CLIENT": b"\x30\x03", "PRODUCER": b"\x30\x04",
                "CONSUMER": b"\x30\x05"}  # anything else: INTERNAL, as the SDK reference makes it
_STATUS_FIELDS = {"UNSET": b"\x7a\x00", "OK": b"\x7a\x02\x18\x01", "ERROR": b"\x7a\x02\x18\x02"}
_SPAN_PREFIXES = [b"\x12" + _varint(n) for n in range(4096)]  # a span's tag and length, for the usual lengths
_INT64_MAX = _INT64[1]


class EncodedBatch:
    """One request's bytes and its span count, as the exporters take it (see otlp_sdk.make_exporter):
    `len()` is the span count they report, the Serialize methods give the bytes."""

    __slots__ = ("payload", "count")

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload = payload
        self.count = count

    def __len__(self) -> int:
        return self.count

    def SerializeToString(self, **_: Any) -> bytes:  # noqa: N802 (the protobuf message's name)
        return self.payload

    SerializePartialToString = SerializeToString


class SpanEncoder:
    """Builds one request at a time from spans' stored fields, grouped by process; `take()` returns it.
    Exactly the bytes `Encoder` makes of the SDK reference's span for the same fields
    (tests/otel/sdk_reference.py).

    A span's bytes are its tag and length, the three id fields (one `bytes.fromhex` of the ids' text
    with the tags between), name and kind, the times (one struct), its attributes, then the category
    attribute, status and flags: name, kind and what follows the attributes are looked up by name,
    kind, category and status. Spans come one at a time (`add`, `add_records`) or as columns
    (`add_columns`: no SpanRecord, no call per span but its attributes', the cheapest)."""

    def __init__(self, cleaner: Cleaner | None = None) -> None:
        self.cleaner = cleaner or Cleaner()
        self._strings: dict[tuple, bytes] = {}  # (key, str or bool value): encoded KeyValue (span field 9)
        self._ints: dict[str, list[bytes]] = {}  # key: its KeyValue's bytes before the varint, by varint length
        self._doubles: dict[str, bytes] = {}  # key: its KeyValue's bytes before the double
        # (name, kind, category, status, has a parent, incomplete): the bytes before the times (name, kind)
        # and after the attributes (the category attribute, status, flags)
        self._heads: dict[tuple, tuple[bytes, bytes]] = {}
        self._span_heads: dict[tuple, tuple[bytes, bytes, int]] = {}  # (name, kind, category, status): add_columns's
        self._resources: dict[tuple, tuple[dict, bytes]] = {}  # (id(attributes), run id, source file): encoded Resource field
        self._scope = _field(b"\x0a", _field(b"\x0a", b"selfopt-trace") + _field(b"\x12", __version__.encode()))
        self._groups: dict[bytes, list[bytes]] = {}  # encoded resource: the pieces of its spans
        self.count = 0  # spans in the request being built
        self.size = 0  # its bytes, about
        self.unsendable = 0  # spans left out: ids not hex, times out of range

    def resource(self, attributes: dict[str, Any], run_id: str | None, source_file: str | None = None) -> bytes:
        """The encoded Resource of a process with these attributes in run `run_id`, from span file
        `source_file` (made once per attributes dict: spans of one process share theirs, kept alive
        here so its id is not reused)."""
        key = (id(attributes), run_id, source_file)
        cached = self._resources.get(key)
        if cached is None:
            sent = dict(attributes)
            if run_id is not None:
                sent[RUN_ID] = run_id
            if source_file is not None:
                sent[SOURCE_FILE] = source_file
            self.cleaner.clean(sent)
            if len(self._resources) >= 4096:
                self._resources.clear()
            cached = self._resources[key] = (attributes, _field(b"\x0a", b"".join(
                _key_value(b"\x0a", key, value) for key, value in sent.items())))
        return cached[1]

    def add_records(self, records: Iterator[Any], max_spans: int, max_bytes: int) -> bool:
        """Add SpanRecords from `records` until the request holds `max_spans` spans or `max_bytes`
        bytes; True when `records` ran out."""
        for record in records:
            self.add(self.resource(record.resource_attributes, record.run_id, record.source_file), record.trace_id, record.span_id,
                     record.parent_span_id, record.name, record.kind, record.category, record.start_ns, record.end_ns,
                     record.status, record.incomplete, record.attributes)
            if self.count >= max_spans or self.size >= max_bytes:
                return False
        return True

    def add(self, resource: bytes, trace_id: str, span_id: str, parent_id: str | None, name: str, kind: str,
            category: str, start_ns: int, end_ns: int, status: str, incomplete: bool,
            attributes: dict[str, Any]) -> bool:
        """Add one span (ids as hex text) of the process whose encoded resource is `resource`; False
        when it cannot be sent (counted in `unsendable`)."""
        try:  # the three id fields from one hex text
            ids = bytes.fromhex(f"0a10{trace_id}1208{span_id}2208{parent_id}" if parent_id else f"0a10{trace_id}1208{span_id}")
        except ValueError:
            ids = b""
        if len(ids) != (38 if parent_id else 28) or len(trace_id) != 32 or len(span_id) != 16:
            ids = _ids(trace_id, span_id, parent_id)  # None: not hex
        try:
            times = _TIMES.pack(0x39, start_ns, 0x41, end_ns)
            if not (start_ns and end_ns):  # protobuf leaves a zero out
                times = (b"\x39" + times[1:9] if start_ns else b"") + (times[9:] if end_ns else b"")
        except struct.error:  # before 1970 or after 2554, or not a number
            ids = None
        if ids is None:
            self.unsendable += 1
            return False
        key = (name, kind, category, status, bool(parent_id), incomplete)
        head, tail = self._heads.get(key) or self._head_tail(*key)
        encoded = self._attributes(attributes)
        if encoded is None:  # the record has attributes of our names: ours win, in the record's place
            attributes = dict(attributes)
            attributes[CATEGORY] = category
            if incomplete:
                attributes[INCOMPLETE] = True
            encoded = self._attributes(attributes, False)
            tail = _tail(status, bool(parent_id) and (kind == "SERVER" or category == "process"))
        body = b"".join((ids, head, times, encoded, tail))
        n = len(body)
        members = self._groups.get(resource)
        if members is None:
            members = self._groups[resource] = []
        members.append(_SPAN_PREFIXES[n] if n < 4096 else b"\x12" + _varint(n))
        members.append(body)
        self.count += 1
        self.size += n + 3
        return True

    def add_columns(self, columns: Any, start: int, max_spans: int, max_bytes: int) -> int:
        """Add spans `start`, `start + 1`, ... of `columns` (export.SpanColumns) while the request holds
        fewer than `max_spans` spans and `max_bytes` bytes; returns the index after the last span added.

        The common span (ids of the usual lengths, a parent, both times, complete, no attribute of our
        names) is written here, with no call but its attributes'; any other through `add`."""
        stop = min(len(columns), start + max_spans - self.count)
        if stop <= start or self.size >= max_bytes:
            return start
        whole = start == 0 and stop == len(columns)
        resource = self.resource(columns.resource_attributes, columns.run_id, columns.source_file)
        members = self._groups.get(resource)
        if members is None:
            members = self._groups[resource] = []
        fromhex, pack, heads, attributes_of, prefixes = bytes.fromhex, _TIMES.pack, self._span_heads, self._attributes, _SPAN_PREFIXES
        room = max_bytes - self.size
        size = count = 0
        index = start
        incomplete = repeat(False) if columns.incomplete is None else columns.incomplete[start:stop]
        for trace_id, span_id, parent_id, name, kind, category, start_ns, end_ns, status, unfinished, attributes in zip(
                *((column if whole else column[start:stop]) for column in (
                    columns.trace_ids, columns.span_ids, columns.parent_span_ids, columns.names, columns.kinds,
                    columns.categories, columns.starts, columns.ends, columns.statuses)),
                incomplete, columns.attributes if whole else columns.attributes[start:stop]):
            index += 1
            if parent_id and start_ns and end_ns and not unfinished:
                try:
                    ids = fromhex(f"0a10{trace_id}1208{span_id}2208{parent_id}")
                    times = pack(0x39, start_ns, 0x41, end_ns)
                except (ValueError, TypeError, struct.error):
                    ids = b""
                if len(ids) == 38 and len(trace_id) == 32 and len(span_id) == 16:
                    head = heads.get((name, kind, category, status))
                    if head is None:
                        head = self._span_head(name, kind, category, status)
                    encoded = attributes_of(attributes)
                    if encoded is not None:
                        n = head[2] + len(encoded)
                        prefix = prefixes[n] if n < 4096 else b"\x12" + _varint(n)
                        members += (prefix, ids, head[0], times, encoded, head[1])
                        size += n + len(prefix)
                        count += 1
                        if size >= room:
                            break
                        continue
            size_before, count_before = self.size, self.count  # anything else: one at a time
            self.add(resource, trace_id, span_id, parent_id, name, kind, category, start_ns, end_ns, status,
                     unfinished, attributes)
            size += self.size - size_before
            count += self.count - count_before
            self.size, self.count = size_before, count_before
            if size >= room:
                break
        self.count += count
        self.size += size
        return index

    def _span_head(self, name: str, kind: str, category: str, status: str) -> tuple[bytes, bytes, int]:
        """add_columns's (head, tail, body length less the attributes') of a complete span with a parent."""
        head, tail = self._heads.get((name, kind, category, status, True, False)) or self._head_tail(
            name, kind, category, status, True, False)
        found = (head, tail, 38 + len(head) + 18 + len(tail))
        if (name, kind, category, status, True, False) in self._heads:  # nothing converted: it may be kept
            self._remember(self._span_heads, (name, kind, category, status), found)
        return found

    def _attributes(self, attributes: dict[str, Any], refuse_ours: bool = True) -> bytes | None:
        """The span's attributes, encoded (what they hold converted where needed); None (when
        `refuse_ours`) if they hold the category or incomplete attribute, which ours replace."""
        if not attributes:
            return b""
        if refuse_ours and (CATEGORY in attributes or INCOMPLETE in attributes):
            return None
        strings = self._strings
        out = b""  # concatenated: cheaper than a list and a join for a span's few attributes
        for key, value in attributes.items():
            kind = type(value)
            if kind is str or kind is bool:
                encoded = strings.get((key, value))
                if encoded is None:
                    encoded = self._string(key, value)
                out += encoded
            elif kind is int and 0 <= value <= _INT64_MAX:
                prefixes = self._ints.get(key)
                if prefixes is None:
                    prefixes = self._int_prefixes(key)
                if value < 128:
                    out += prefixes[1] + _SMALL[value]
                elif value < 16384:
                    out += prefixes[2] + _LOW[value & 0x7F] + _SMALL[value >> 7]
                else:
                    value = _varint(value)
                    out += prefixes[len(value)] + value
            elif kind is float and value - value == 0.0:  # finite (inf - inf and NaN - NaN are NaN)
                prefix = self._doubles.get(key)
                if prefix is None:
                    prefix = self._double_prefix(key)
                out += prefix + _DOUBLE.pack(value)
            else:
                encoded = self._other(key, value)
                if encoded is not None:
                    out += encoded
        return out

    def take(self) -> EncodedBatch:
        """The request built so far; the next starts empty."""
        scope = self._scope
        pieces = []
        for resource, members in self._groups.items():
            scope_spans = len(scope) + sum(map(len, members))
            scope_field = _varint(scope_spans)
            pieces += (b"\x0a", _varint(len(resource) + 1 + len(scope_field) + scope_spans), resource, b"\x12",
                       scope_field, scope)
            pieces += members
        batch = EncodedBatch(b"".join(pieces), self.count)
        self._groups = {}
        self.count = self.size = 0
        return batch

    # The rarer paths, each once per distinct value where the value needed no conversion.

    def _head_tail(self, name: str, kind: str, category: str, status: str, has_parent: bool,
                   incomplete: bool) -> tuple[bytes, bytes]:
        converted = self.cleaner.converted
        head = (_field(b"\x2a", self.cleaner.utf8(name).encode("utf-8")) if name else b"")  # protobuf leaves "" out
        head += _KIND_FIELDS.get(kind, b"\x30\x01")
        # (a category of None: left out, counted)
        tail = (self._string(CATEGORY, category) if type(category) is str else self._other(CATEGORY, category)) or b""
        if incomplete:
            tail += self._string(INCOMPLETE, True)
        # A process span's parent is in the process that started it, a server span's in its client:
        # contexts that came from elsewhere, as an SDK would mark them.
        tail += _tail(status, has_parent and (kind == "SERVER" or category == "process"))
        if self.cleaner.converted == converted:
            self._remember(self._heads, (name, kind, category, status, has_parent, incomplete), (head, tail))
        return head, tail

    def _string(self, key: str, value: str | bool) -> bytes:
        if type(value) is str and len(key) + len(value) < 122 and key.isascii() and value.isascii():
            # The usual miss (a value not seen lately): short ASCII, every length one byte.
            encoded = b"\x0a" + _SMALL[len(key)] + key.encode() + b"\x12" + _SMALL[len(value) + 2] + b"\x0a" \
                + _SMALL[len(value)] + value.encode()
            encoded = b"\x4a" + _SMALL[len(encoded)] + encoded
        else:
            converted = self.cleaner.converted
            encoded = _key_value(b"\x4a", self.cleaner.utf8(key), self.cleaner.value(value))
            if self.cleaner.converted != converted:
                return encoded
        self._remember(self._strings, (key, value), encoded)
        return encoded

    def _int_prefixes(self, key: str) -> list[bytes]:
        converted = self.cleaner.converted
        key_field = _field(b"\x0a", self.cleaner.utf8(key).encode("utf-8"))
        prefixes = [b""] + [b"\x4a" + _varint(len(key_field) + 3 + n) + key_field + b"\x12" + _SMALL[1 + n] + b"\x18"
                            for n in range(1, 11)]
        if self.cleaner.converted == converted:
            self._remember(self._ints, key, prefixes)
        return prefixes

    def _double_prefix(self, key: str) -> bytes:
        converted = self.cleaner.converted
        key_field = _field(b"\x0a", self.cleaner.utf8(key).encode("utf-8"))
        prefix = b"\x4a" + _varint(len(key_field) + 11) + key_field + b"\x12\x09\x21"
        if self.cleaner.converted == converted:
            self._remember(self._doubles, key, prefix)
        return prefix

    def _other(self, key: str, value: Any) -> bytes | None:
        """Negative and huge integers, NaN, lists, maps, None, anything else: cleaned, then encoded."""
        cleaned = self.cleaner.value(value)
        if cleaned is _DROP:
            return None
        return _key_value(b"\x4a", self.cleaner.utf8(key), cleaned)

    @staticmethod
    def _remember(cache: dict, key: Any, encoded: Any) -> None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = encoded


def _tail(status: str, remote: bool) -> bytes:
    """Status and flags (unknown statuses: UNSET, as the SDK reference makes them)."""
    return _STATUS_FIELDS.get(status, b"\x7a\x00") + _FLAGS[remote]


def _ids(trace_id: Any, span_id: Any, parent_id: Any) -> bytes | None:
    """The id fields from hex of unusual lengths, as the SDK's spans would carry them (int(x, 16)):
    shorter ids padded; None for ids that are not hex or too long."""
    try:
        ids = b"\x0a\x10" + int(trace_id, 16).to_bytes(16, "big") + b"\x12\x08" + int(span_id, 16).to_bytes(8, "big")
        if parent_id:
            ids += b"\x22\x08" + int(parent_id, 16).to_bytes(8, "big")
    except (ValueError, TypeError, OverflowError):
        return None
    return ids
