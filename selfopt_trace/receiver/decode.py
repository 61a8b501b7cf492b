"""OTLP trace requests -> rows of `spans`, with the messages of the published opentelemetry-proto package.

A request is parsed by the generated `ExportTraceServiceRequest` (protobuf, or OTLP/JSON through
protobuf's JSON parser once its hex ids are turned into protobuf's base64) and checked span by span
(`check`: what the answer's partial_success says) before it is spooled; later, in the converter
(convert.py), the spooled bytes are parsed again (`spooled`: the same message from the same
descriptors, only the spans' attributes left as their bytes until first seen) and each span becomes
the row `collector_ingest.finish_row` makes (`rows_of`: the same as `load` makes of the same span
written to a file, and for selfopt-trace's own exports the row its span file gave).

What a request may hold and the store may not, handled span by span (the rest of the request is
stored): ids of the wrong length or all zeros, and times beyond 2^63 ns, reject the span (counted in
the response's partial_success, with the first reason); strings longer than `MAX_STRING`
characters are cut there; NaN and infinite doubles become the strings "NaN", "Infinity",
"-Infinity" (JSON cannot hold them; selfopt-trace's own exports send them so); bytes values are
kept as base64 text, as OTLP/JSON writes them. A request that does not parse, or decompresses to
more than the size limit, is refused whole.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from json.encoder import encode_basestring
from dataclasses import dataclass, field
from functools import cache
from operator import attrgetter, itemgetter
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ..collector_ingest import (CATEGORY, INCOMPLETE, ProcessFields, Rows, exception_attributes, scope_attributes,
                                scope_piece)

MAX_STRING = 64 * 1024  # characters of one string value or span name kept (export/otlp_wire.py sends no more)
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_KINDS = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")  # OTLP's enum: 0 is UNSPECIFIED
_STATUSES = ("UNSET", "OK", "ERROR")
_MAX_TIME = (1 << 63) - 1
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


class RequestError(Exception):
    """A request refused whole: `status` is the HTTP status (400, 413, 415), the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Checked:
    """What of one request is stored, and what was refused in it."""

    spans: int = 0  # spans that will be stored
    rejected: int = 0  # spans refused (bad ids, times out of range)
    reason: str = ""  # why the first of them was

    def refuse(self, span, problem: str) -> None:
        self.rejected += 1
        if not self.reason:
            self.reason = f"span {span.name[:80]!r}: {problem}"


@dataclass
class Decoded(Checked):
    """The rows of one request, and what was refused or changed in it."""

    rows: Rows = field(default_factory=Rows)
    converted: int = 0  # values cut or converted


def media_type(content_type: str | None) -> str:
    """`application/x-protobuf` or `application/json` (parameters such as charset ignored); else 415."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if kind == JSON:
        return JSON
    raise RequestError(415, f"unsupported content type {content_type!r}: OTLP/HTTP takes {PROTOBUF} or {JSON}")


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The request body without its Content-Encoding (gzip, deflate, identity), at most `limit` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate", "x-gzip"):
        raise RequestError(415, f"unsupported content encoding {encoding!r}: gzip, deflate or none")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, recognised
    try:
        data = inflater.decompress(body, limit + 1)
        if len(data) > limit or inflater.unconsumed_tail:
            raise RequestError(413, f"the request decompresses to more than {limit} bytes")
        if not inflater.eof:
            raise RequestError(400, f"truncated {encoding} body")
    except zlib.error as exc:
        raise RequestError(400, f"the body is not valid {encoding}: {exc}") from exc
    return data


def parse(body: bytes, kind: str) -> ExportTraceServiceRequest:
    """The request message from its bytes; RequestError(400) with protobuf's reason when it does not parse."""
    if kind == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise RequestError(400, f"not an OTLP ExportTraceServiceRequest (protobuf): {exc or 'truncated or malformed'}") from exc
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        _hex_ids_to_base64(data)
        return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except RequestError:
        raise
    except (ValueError, TypeError, AttributeError, RecursionError, json_format.ParseError) as exc:
        raise RequestError(400, f"not an OTLP ExportTraceServiceRequest (JSON): {exc}") from exc


def _hex_ids_to_base64(data: dict) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping reads bytes as base64."""
    for resource_spans in _items(data, "resourceSpans"):
        for scope_spans in _items(resource_spans, "scopeSpans"):
            for span in _items(scope_spans, "spans"):
                for key in ("traceId", "spanId", "parentSpanId"):
                    value = span.get(key)
                    if isinstance(value, str) and value:
                        try:
                            span[key] = base64.b64encode(bytes.fromhex(value)).decode()
                        except ValueError:
                            raise RequestError(400, f"span {key} {value[:40]!r} is not hex") from None
                for link in _items(span, "links"):
                    for key in ("traceId", "spanId"):
                        value = link.get(key)
                        if isinstance(value, str) and value:
                            try:
                                link[key] = base64.b64encode(bytes.fromhex(value)).decode()
                            except ValueError:
                                raise RequestError(400, f"link {key} {value[:40]!r} is not hex") from None


def _items(parent: Any, key: str) -> list:
    if not isinstance(parent, dict):
        raise ValueError(f"{key}: expected inside an object")
    items = parent.get(key) or []
    if not isinstance(items, list):
        raise ValueError(f"{key} is not a list")
    return items


class _Values:
    """AnyValue -> Python, counting what had to change."""

    def __init__(self) -> None:
        self.converted = 0

    def attributes(self, key_values) -> dict:
        out = {}
        for item in key_values:
            key = item.key
            if len(key) > MAX_STRING:
                key = key[:MAX_STRING]
                self.converted += 1
            value = item.value
            kind = value.WhichOneof("value")  # the common kinds here, without a call more
            if kind == "string_value":
                text = value.string_value
                out[key] = text if len(text) <= MAX_STRING else self.value(value)
            elif kind == "int_value":
                out[key] = value.int_value
            else:
                out[key] = self.value(value)
        return out

    def value(self, value) -> Any:
        kind = value.WhichOneof("value")
        if kind == "string_value":
            text = value.string_value
            if len(text) > MAX_STRING:
                self.converted += 1
                return text[:MAX_STRING]
            return text
        if kind == "int_value":
            return value.int_value
        if kind == "bool_value":
            return value.bool_value
        if kind == "double_value":
            number = value.double_value
            if math.isfinite(number):
                return number
            self.converted += 1
            return "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")
        if kind == "array_value":
            return [self.value(item) for item in value.array_value.values]
        if kind == "kvlist_value":
            return self.attributes(value.kvlist_value.values)
        if kind == "bytes_value":
            return base64.b64encode(value.bytes_value).decode()
        return None


def span_problem(span) -> str | None:
    """Why a span cannot be stored (ids of the wrong length or all zeros, times beyond 2^63 ns), or None."""
    trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        return f"trace_id of {len(trace_id)} bytes" if len(trace_id) != 16 else "trace_id all zeros"
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        return f"span_id of {len(span_id)} bytes" if len(span_id) != 8 else "span_id all zeros"
    if parent_id and len(parent_id) != 8:
        return f"parent_span_id of {len(parent_id)} bytes"
    if span.start_time_unix_nano > _MAX_TIME or span.end_time_unix_nano > _MAX_TIME:
        return "a time beyond 2^63 ns"
    return None


def check(request: ExportTraceServiceRequest) -> Checked:
    """How many spans of the request `rows_of` will store, and why the others are refused: what the
    receiver answers before it converts anything (a span's ids and times, ~0.5 us; its row, ~7 us)."""
    checked = Checked()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                problem = span_problem(span)
                if problem is None:
                    checked.spans += 1
                else:
                    checked.refuse(span, problem)
    return checked


def spooled(payload: bytes) -> Message:
    """A spooled request (checked when it came) parsed for `rows_of`: a span's attributes left as
    their `KeyValue`s' bytes, what `rows_of` looks their pieces up by (parsing each into a
    `KeyValue` and serializing it again cost ~1.7 us a span of five). DecodeError as `FromString`."""
    return _bytes_attributes_view().FromString(payload)


@cache  # made at the first use: only the conversion worker needs it
def _bytes_attributes_view() -> type[Message]:
    """`ExportTraceServiceRequest` from opentelemetry-proto's own descriptors, in a pool of its own,
    with `Span.attributes` read as `repeated bytes`: protobuf's wire format gives an embedded
    message and a bytes field the same encoding, so it is the same request; only the attributes
    are not parsed (each is, with the published `KeyValue`, the first time its bytes are seen)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if module is trace_pb2:
            span = next(message for message in proto.message_type if message.name == "Span")
            attributes = next(each for each in span.field if each.name == "attributes")
            attributes.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            attributes.ClearField("type_name")
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(ExportTraceServiceRequest.DESCRIPTOR.full_name))


# What the fast path reads of a span, in one call
_FIELDS = attrgetter("trace_id", "span_id", "parent_span_id", "start_time_unix_nano", "end_time_unix_nano", "name",
                     "kind", "status.code", "attributes", "events")


def rows_of(request: Message) -> Decoded:
    """The rows of every span of the request (`spooled`: its attributes as bytes) that can be stored.

    The usual span (ids and times in range, a printable name, attributes seen before with no key
    twice, no status description or events to add) takes the fast path: its line made from the
    cached pieces of its attributes, with few Python steps a span (the conversion worker's whole
    cost: docs/benchmarks.md, "OTLP receiver"). Any other span takes `_add_span`, the general path;
    the two give the same line.
    """
    decoded = Decoded()
    values = _Values()
    rows = decoded.rows
    lines = rows.spans
    cache_get = _PIECES.get
    for resource_spans in request.resource_spans:
        process = ProcessFields(values.attributes(resource_spans.resource.attributes), None)
        process_number = rows.process(process)
        run_id = process.run_id
        tail = f"\t{process_number}\t.\n"
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            extra = scope_attributes(scope.name, scope.version)
            foreign = extra is not None
            # the scope's pieces close every span's attributes: after a comma, or alone
            scope_json = ",".join([scope_piece(key, value) for key, value in extra.items()]) if extra else ""
            after_pieces = f",{scope_json}}}{tail}" if scope_json else "}" + tail
            alone = f"{scope_json}}}{tail}"
            last_trace = None
            for span in scope_spans.spans:
                trace_id, span_id, parent_id, start, end, name, kind, code, raws, events = _FIELDS(span)
                if (len(trace_id) != 16 or len(span_id) != 8 or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN
                        or (parent_id and len(parent_id) != 8) or start > _MAX_TIME or end > _MAX_TIME
                        or len(name) > MAX_STRING or not name.isprintable() or code > 2 or kind > 5
                        or (foreign and (events or (code == 2 and span.status.message)))):
                    _add_span(decoded, span, values, process, process_number, extra)
                    continue
                converted = values.converted
                pieces = [cache_get(raw) or _piece(raw, values) for raw in raws]  # (new values: made now)
                rank, scope_keys = _SIGNATURES.get(keys := tuple(map(_KEY, pieces))) or _signature(keys)
                if not rank or (scope_keys and extra and not scope_keys.isdisjoint(extra)):
                    values.converted = converted  # counted again there
                    _add_span(decoded, span, values, process, process_number, extra)
                    continue
                if trace_id != last_trace:  # (the spans of a trace come together)
                    last_trace, last_hex = trace_id, trace_id.hex()
                    head = f"{run_id or 'collector-' + last_hex}\t{last_hex}\t"
                if name == "process":
                    category = "process"
                elif name == "interpreter.startup":
                    category = "startup"
                elif name.startswith("import "):
                    category = "import"
                else:
                    category = _RANK_CATEGORIES[rank]
                attributes = ",".join(map(_JSON, pieces))
                lines.append(f"{head}{span_id.hex()}\t{parent_id.hex() if parent_id and parent_id != _ZERO_SPAN else ''}\t"
                             f"{name}\t{_KINDS[kind]}\t{category}\t{start}\t{end}\t{_STATUSES[code]}\tfalse\t"
                             f"{{{attributes}{after_pieces if attributes else alone}")
    decoded.spans = len(lines)  # a line for every span stored, either path
    decoded.converted = values.converted
    return decoded


def _add_span(decoded: Decoded, span, values: _Values, process: ProcessFields, process_number: int,
              extra: dict | None) -> None:
    """One span's row, the general way (rows_of's fast path takes the usual span)."""
    problem = span_problem(span)
    if problem is not None:
        decoded.refuse(span, problem)
        return
    decoded.spans += 1
    rows = decoded.rows
    trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id
    name = span.name
    if len(name) > MAX_STRING:
        name = name[:MAX_STRING]
        values.converted += 1
    status = span.status
    code = status.code if 0 <= status.code <= 2 else 0
    kind = _KINDS[span.kind] if 0 <= span.kind <= 5 else "INTERNAL"
    raws = span.attributes  # (`spooled`: each KeyValue's bytes)
    if not (extra is not None and ((code == 2 and status.message) or span.events)):
        encoded = encoded_attributes(raws, values)
        if encoded is not None:  # its attributes' JSON from cached pieces
            rows.add_encoded(trace_id.hex(), span_id.hex(),
                             parent_id.hex() if parent_id and parent_id != _ZERO_SPAN else None,
                             name, kind, span.start_time_unix_nano, span.end_time_unix_nano,
                             _STATUSES[code], encoded, process, process_number, extra)
            return
    attributes = values.attributes(map(KeyValue.FromString, raws))
    if extra is not None:
        if code == 2 and status.message:
            attributes.setdefault("otel.status_description", status.message[:MAX_STRING])
        for event in span.events:
            if event.name == "exception":
                exception_attributes(attributes, values.attributes(event.attributes))
                break
    rows.add(trace_id.hex(), span_id.hex(), parent_id.hex() if parent_id and parent_id != _ZERO_SPAN else None,
             name, kind, span.start_time_unix_nano, span.end_time_unix_nano, _STATUSES[code], attributes, process,
             process_number, extra)


# A KeyValue's bytes: (key, value, its `"key":value` JSON). Attributes repeat from span to span (a
# method, a URL, a status code): reading one out of protobuf's objects costs ~1 us, looking its
# bytes up (`spooled` leaves them as they came) ~0.1. Values that had to be converted are never
# kept (they are counted each time).
_PIECES: dict = {}
_PIECES_LIMIT = 100_000
_KEY, _JSON = itemgetter(0), itemgetter(2)

# A key's rank: the span category it gives (collector_ingest._category's order: the lowest wins);
# 0 for selfopt-trace's own keys that go back to their columns (the general path).
_OTHER = 9
_RANK_CATEGORIES = {1: "import", 2: "http", 3: "container", 4: "subprocess", _OTHER: "other"}


# A span's attribute keys, in order (spans of one instrumentation share them): (the lowest rank of
# its keys, 0 for a key twice: the general path; the scope's keys among them, or None).
_SIGNATURES: dict = {}


def _signature(keys: tuple) -> tuple:
    rank = min(map(_rank, keys), default=_OTHER) if len(set(keys)) == len(keys) else 0
    found = (rank, frozenset(keys) & {"otel.scope.name", "otel.scope.version"} or None)
    if len(_SIGNATURES) >= 10_000:
        _SIGNATURES.clear()
    _SIGNATURES[keys] = found
    return found


def _rank(key: str) -> int:
    if key == CATEGORY or key == INCOMPLETE:
        return 0
    if key == "python.import.module":
        return 1
    if key.startswith(("http.", "url.")):
        return 2
    if key.startswith("container."):
        return 3
    if key == "process.command_args":
        return 4
    return _OTHER
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_string = encode_basestring  # the C function _json uses for a str


def encoded_attributes(raws, values: _Values) -> tuple | None:
    """(JSON pieces, {key: value}) of a span's attributes (their KeyValues' bytes); None when a key
    repeats (the dict path keeps the last, as it always did)."""
    pieces, found = [], {}
    cache = _PIECES
    for raw in raws:
        piece = cache.get(raw) or _piece(raw, values)
        key = piece[0]
        if key in found:
            return None
        found[key] = piece[1]
        pieces.append(piece[2])
    return pieces, found


def _piece(raw: bytes, values: _Values) -> tuple:
    """The piece of a KeyValue's bytes, kept in the cache unless its value had to be converted."""
    converted = values.converted
    item = KeyValue.FromString(raw)
    key = item.key
    if len(key) > MAX_STRING:
        key = key[:MAX_STRING]
        values.converted += 1
    value = values.value(item.value)
    kind = type(value)
    # A string's or an integer's JSON without the encoder's Python steps (what it would write)
    text = _string(value) if kind is str else str(value) if kind is int else _json(value)
    piece = (key, value, _string(key) + ":" + text)
    if values.converted == converted:
        if len(_PIECES) >= _PIECES_LIMIT:
            _PIECES.clear()
        _PIECES[raw] = piece
    return piece
