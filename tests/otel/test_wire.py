"""The requests `push` and the live export send: otlp_wire.SpanEncoder writes them from the spans' stored
fields, and they must be exactly what the SDK's encoder makes of the same spans as SDK spans
(Converter's ReadableSpans), byte for byte, with the same values converted and counted; and the
exporters must send those bytes as they are, retries included."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from selfopt_trace.export import SpanColumns, SpanRecord, fetch_spans
from selfopt_trace.export.otlp_sdk import Sender
from selfopt_trace.export.otlp_settings import resolve
from selfopt_trace.export.otlp_wire import MAX_STRING, Encoder, SpanEncoder
from tests.otel.sdk_reference import Converter
from tests.queries.conftest import store, traced_db, traced_store  # noqa: F401  (a real traced run)

RESOURCE = {"service.name": "svc", "process.pid": 7, "process.command_args": ["python", "-c", "pass"]}
ODD = {"s": "x", "i": -5, "f": 0.25, "b": False, "l": [1, "a", 2.5], "m": {"k": [True]}, "e": [], "none": None,
       "neg": -(1 << 63), "big": (1 << 63) - 1, "huge int": 1 << 70, "nan": math.nan, "inf": -math.inf, "empty": "",
       "zero": 0, "true": True, "é": "ü", "\udcffkey": 1, "bad": "caf\udce9", "huge": "é" * (MAX_STRING + 10),
       "nested": [[1, {"a": None}], [], {"x": math.nan}], "float int": 3.0, "max varint": (1 << 64) - 1,
       "varints": [127, 128, 16383, 16384, 2097151, 2097152, 1 << 62]}


def record(n: int, **changes: Any) -> SpanRecord:
    values: dict[str, Any] = dict(
        run_id="r", trace_id="ab" * 16, span_id=f"{n:016x}", parent_span_id=None if n == 1 else f"{1:016x}",
        name=f"span {n}", kind="INTERNAL", category="other", start_ns=1_000 + n, end_ns=2_000 + n, status="UNSET",
        incomplete=False, service_name="svc", pid=7, attributes={"n": n}, resource_attributes=RESOURCE,
        source_file="7-x.spans")
    values.update(changes)
    return SpanRecord(**values)


def odd_records() -> list[SpanRecord]:
    other = {**RESOURCE, "process.pid": 8, "bad": "\udcff", "nan": math.nan}
    records = [record(n, kind=kind, status=status, incomplete=n % 2 == 0, resource_attributes=other,
                      category="process" if n == 3 else "other", attributes=dict(ODD, n=n))
               for n, (kind, status) in enumerate([("SERVER", "ERROR"), ("CLIENT", "OK"), ("PRODUCER", "UNSET"),
                                                   ("CONSUMER", "ERROR"), ("INTERNAL", "OK"), ("ODD", "ODD")], 1)]
    records += [
        record(20, name="caf\udce9 ünïcode", category="cat\udcff", attributes={}),  # name and category converted
        record(21, attributes={"selfopt_trace.category": "mine", "selfopt_trace.incomplete": False, "after": 1},
               incomplete=True),  # ours replace the record's, in its place
        record(22, trace_id="AB" * 16, span_id="00000000000000FF", parent_span_id="00000000000000ee"),  # upper case
        record(23, span_id="ff", parent_span_id="1"),  # short ids: padded, as int(x, 16) gives them to the SDK
        record(24, start_ns=0, end_ns=(1 << 64) - 1, attributes={"x": "y" * 200}),
        record(25, kind="SERVER", parent_span_id=None),  # a root server span: not remote
        record(26, name="", start_ns=5, end_ns=0),  # protobuf leaves zeros and empty strings out
        record(27, name=None, kind=None, category=None, status=None),  # NULLs of a stored row
    ]
    return records


def reference(records: list[SpanRecord], converter: Converter | None = None) -> tuple[bytes, dict[str, int]]:
    """The SDK's encoding of Converter's spans for `records`, and the values Converter converted."""
    converter = converter or Converter()
    spans = [converter.span(r) for r in records]
    sdk = encode_spans(spans).SerializeToString()
    assert Encoder().encode(spans).SerializeToString() == sdk  # (tests/export/test_send.py checks this more)
    return sdk, converter.counts


def encode(encoder: SpanEncoder, records: list[SpanRecord]) -> bytes:
    assert encoder.add_records(iter(records), 1 << 30, 1 << 30)
    batch = encoder.take()
    assert len(batch) == len(records) and encoder.count == 0
    return batch.payload


def test_the_request_is_the_sdks_byte_for_byte(traced_store) -> None:  # noqa: F811
    records = fetch_spans(traced_store, "q1") + odd_records()
    assert len(records) > 30
    converter = Converter()
    encoder = SpanEncoder()
    for _ in range(3):  # then from its caches (a process's resource is converted and counted once, as Converter does)
        expected, counts = reference(records, converter)
        assert encode(encoder, records) == expected
        assert encoder.cleaner.counts == counts  # each span's values every time, cached or not
    assert counts["strings that were not UTF-8"] > 6
    assert len(ExportTraceServiceRequest.FromString(expected).resource_spans) == 5  # one per process
    assert encoder.unsendable == 0


def test_spans_one_at_a_time_and_rows_make_the_same_request() -> None:
    records = odd_records()
    expected, _ = reference(records)
    encoder = SpanEncoder()
    for r in records:  # as push adds its rows: the resource encoded once per process
        assert encoder.add(encoder.resource(r.resource_attributes, r.run_id, r.source_file), r.trace_id, r.span_id, r.parent_span_id,
                           r.name, r.kind, r.category, r.start_ns, r.end_ns, r.status, r.incomplete, r.attributes)
    assert encoder.take().payload == expected
    assert all(r.attributes["nan"] is math.nan for r in records[:6])  # the records themselves are untouched


@pytest.mark.parametrize("changes", [dict(span_id="not hex at all!"), dict(trace_id="ab" * 17),
                                     dict(parent_span_id="1" * 17), dict(span_id="1 2"), dict(start_ns=-1),
                                     dict(end_ns=1 << 64), dict(trace_id=None)])
def test_spans_that_cannot_be_sent_are_left_out_and_counted(changes: dict) -> None:
    encoder = SpanEncoder()
    assert encode(encoder, [record(1)]) == reference([record(1)])[0]
    assert encoder.add_records(iter([record(2), record(3, **changes), record(4)]), 100, 1 << 20)
    assert encoder.unsendable == 1 and encoder.count == 2
    assert encoder.take().payload == reference([record(2), record(4)])[0]


def test_a_batch_closes_at_its_span_or_byte_limit() -> None:
    encoder = SpanEncoder()
    records = iter([record(n) for n in range(1, 11)])
    assert not encoder.add_records(records, 4, 1 << 20) and encoder.count == 4
    first = encoder.take()
    assert not encoder.add_records(records, 100, 1) and encoder.count == 1  # one span passes a 1-byte limit
    encoder.take()
    assert encoder.add_records(records, 100, 1 << 20) and encoder.count == 5
    assert first.payload == reference([record(n) for n in range(1, 5)])[0]


def test_grpc_sends_the_bytes_and_retries_unavailable() -> None:
    """The SDK's gRPC exporter with our pass-through stub: UNAVAILABLE makes it reconnect (a new
    channel and stub) and retry, and the retried request is the same bytes."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[bytes] = []
    answers = [grpc.StatusCode.UNAVAILABLE]

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 (the generated name)
            if answers:
                context.abort(answers.pop(0), "not yet")
            received.append(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        sender = Sender(resolve({"OTEL_EXPORTER_OTLP_HEADERS": "x-team=perf"}, endpoint=f"http://127.0.0.1:{port}",
                                protocol="grpc"))
        records = [record(n) for n in range(1, 4)]
        assert sender.send(records) == 3 and (sender.sent, sender.refused) == (3, 0)
        assert received == [reference(records)[0]] and answers == []
        # SDK spans still go through the same exporter (encoded by otlp_wire.Encoder).
        converter = Converter()
        assert sender.exporter.export([converter.span(record(9))]).name == "SUCCESS"
        assert received[-1] == reference([record(9)])[0]
    finally:
        server.stop(0)


# ---------------------------------------------------------------- columns: what the follower and push hand over

def columns_of(records: list[SpanRecord]) -> SpanColumns:
    """The records (of one process) as columns."""
    first = records[0]
    assert all(r.resource_attributes is first.resource_attributes and r.run_id == first.run_id for r in records)
    fields = [[getattr(r, name) for r in records] for name in (
        "trace_id", "span_id", "parent_span_id", "name", "kind", "category", "start_ns", "end_ns", "status",
        "attributes", "incomplete")]
    return SpanColumns(first.run_id, first.resource_attributes, first.service_name, first.pid, first.source_file,
                       *fields[:10], incomplete=fields[10] if any(fields[10]) else None)


def by_process(records: list[SpanRecord]) -> list[list[SpanRecord]]:
    groups: dict[int, list[SpanRecord]] = {}
    for r in records:
        groups.setdefault(id(r.resource_attributes), []).append(r)
    return list(groups.values())


def test_columns_make_the_same_request(traced_store) -> None:  # noqa: F811
    stored = fetch_spans(traced_store, "q1")
    plain = [record(n, attributes={"n": n, "s": "x" * (n % 3), "f": n / 7, "b": n % 2 == 0}) for n in range(2, 300)]
    for records in (stored, odd_records(), plain, [record(1)]):  # the common case, and every unusual one (one by one)
        groups = by_process(records)
        expected, counts = reference([r for group in groups for r in group])
        encoder = SpanEncoder()
        for group in groups:
            columns = columns_of(group)
            assert columns.records() == group
            assert encoder.add_columns(columns, 0, 1 << 20, 1 << 30) == len(group)
        assert encoder.count == len(records)
        assert encoder.take().payload == expected
        assert encoder.cleaner.counts == counts


def test_columns_are_cut_at_the_batch_limits() -> None:
    records = [record(n, attributes={"n": n, "text": "t" * n}) for n in range(2, 402)]
    columns = columns_of(records)
    encoder = SpanEncoder()
    assert encoder.add_columns(columns, 0, 100, 1 << 30) == 100 and encoder.count == 100
    assert encoder.add_columns(columns, 100, 100, 1 << 30) == 100  # full: nothing more
    first = encoder.take()
    assert first.payload == reference(records[:100])[0]
    stop = encoder.add_columns(columns, 100, 1000, 20_000)  # the byte limit: the span that reaches it is the last
    assert 20 < stop - 100 < 100 and 20_000 <= encoder.size < 20_500 and encoder.count == stop - 100
    assert encoder.take().payload == reference(records[100:stop])[0]
    assert encoder.add_columns(columns, stop, 1000, 10) == stop + 1  # an empty request takes one span however big
    assert encoder.add_columns(columns, stop + 1, 1000, 10) == stop + 1  # a full one none


def test_sender_sends_records_and_columns_alike() -> None:
    encoder_records = [record(n) for n in range(1, 50)]
    mixed = [encoder_records[0], columns_of(encoder_records[1:30]), *encoder_records[30:]]
    sent = []

    class Exporter:
        def export(self, batch):
            sent.append(batch.payload)
            return __import__("opentelemetry.sdk.trace.export", fromlist=["x"]).SpanExportResult.SUCCESS

    sender = Sender.__new__(Sender)
    sender.__init__(resolve({}, endpoint="http://127.0.0.1:9"))
    sender.exporter = Exporter()
    assert sender.send(mixed) == 49 and sent == [reference(encoder_records)[0]]
    assert sender.send(mixed, keep_going=lambda: False) == 0 and sender.encoder.count == 0  # dropped, not kept


def test_a_stored_page_makes_the_same_request(tmp_path) -> None:
    """push's read: rows of two processes interleaved, a root, an incomplete span, NULL fields."""
    from selfopt_trace.export.push import _RESOURCES_SQL, page_columns, read_pages
    from selfopt_trace.store import Store

    resource_a, resource_b = json.dumps({"service.name": "a", "process.pid": 1}), json.dumps({"service.name": "b"})
    rows = [(f"{n:016x}", None if n == 1 else f"{1:016x}", f"span {n}", "SERVER" if n % 4 == 0 else "INTERNAL",
             "other" if n % 5 else None, 1_000 + n, 2_000 + n, "OK" if n % 3 else None, n % 7 == 0,
             resource_a if n % 2 else resource_b, json.dumps({"n": n, "s": "x" * n}) if n % 6 else None)
            for n in range(1, 40)]
    with Store(tmp_path / "t.duckdb") as store:
        for span_id, parent, name, kind, category, start, end, status, incomplete, resource, attributes in rows:
            store.sql("INSERT INTO spans (run_id, trace_id, span_id, parent_span_id, name, kind, category, start_ns, "
                      "end_ns, status, incomplete, attributes, resource_attributes) VALUES "
                      "('r', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      ["ab" * 16, span_id, parent, name, kind, category, start, end, status, incomplete, attributes,
                       resource])
        _, found = store.sql(_RESOURCES_SQL, {"run_id": "r"})
        resources = {key: (json.loads(text), source_file) for key, text, source_file in found}
        encoder = SpanEncoder()
        for columns in read_pages(store, "r"):
            for spans in page_columns("r", columns, resources):
                assert encoder.add_columns(spans, 0, 1000, 1 << 30) == len(spans)
        _, stored = store.sql("SELECT span_id FROM spans ORDER BY rowid")
        by_id = {r.span_id: r for r in fetch_spans(store, "r")}
    records = [by_id[span_id] for (span_id,) in stored]
    for r in records:  # the store's resource dicts, shared by process as push shares them
        r.resource_attributes = next(value[0] for value in resources.values() if value[0] == r.resource_attributes)
    assert encoder.take().payload == reference(records)[0]
