"""A receiver (`selfopt-trace collector`'s) on free loopback ports, in the test process, and helpers
to send it requests and read back what it stored."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from selfopt_trace.receiver.server import Receiver, Settings
from tests.cli.conftest import Cli, cli  # noqa: F401  (fixture)

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
WORKLOAD = Path(__file__).resolve().parent / "workload.py"
RUN = "same"


@pytest.fixture(scope="session")
def traced_run(tmp_path_factory) -> Path:
    """tests/receiver/workload.py under `selfopt-trace run`, its span files kept (no CPU samples:
    they are no spans, and no OTLP request carries them)."""
    from tests.cli.conftest import clean_environ

    home = tmp_path_factory.mktemp("same-home")
    done = subprocess.run([sys.executable, "-m", "selfopt_trace", "run", "--run-id", RUN, "--no-load", "--quiet",
                           "--no-cpu-sampling", "--export", "never", "--", sys.executable, str(WORKLOAD)],
                          env=clean_environ(SELFOPT_TRACE_HOME=str(home)), cwd=home, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    return home / "runs" / RUN


@pytest.fixture
def receiver(tmp_path: Path):
    started = Receiver(Settings(db_path=tmp_path / "received.duckdb", port=0, grpc_port=0, idle_close_s=0.2))
    started.start()
    yield started
    started.drain(5)


def post(receiver: Receiver, body: bytes, content_type: str = "application/x-protobuf",
         headers: dict | None = None, path: str = "/v1/traces", timeout: float = 60) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": content_type, **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def request(*spans: dict, resource: dict | None = None, scope: str = "test") -> ExportTraceServiceRequest:
    """A request of spans given as dicts of Span fields (defaults: TRACE, increasing ids, times)."""
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    for key, value in (resource or {"service.name": "svc", "process.pid": 4242}).items():
        item = resource_spans.resource.attributes.add(key=key)
        set_value(item.value, value)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    for number, fields in enumerate(spans, 1):
        span = scope_spans.spans.add()
        span.trace_id = fields.get("trace_id", TRACE)
        span.span_id = fields.get("span_id", number.to_bytes(8, "big"))
        if "parent_span_id" in fields:
            span.parent_span_id = fields["parent_span_id"]
        span.name = fields.get("name", f"span {number}")
        span.kind = fields.get("kind", 1)
        span.start_time_unix_nano = fields.get("start", 1_700_000_000_000_000_000 + number)
        span.end_time_unix_nano = fields.get("end", 1_700_000_000_000_100_000 + number)
        for key, value in (fields.get("attributes") or {}).items():
            set_value(span.attributes.add(key=key).value, value)
    return message


def set_value(target, value) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, (list, tuple)):
        for item in value:
            set_value(target.array_value.values.add(), item)
    else:
        target.string_value = value


def received(receiver: Receiver, sql: str = "SELECT * FROM spans ORDER BY start_ns, span_id",
             params: list | None = None) -> list[dict]:
    """Rows of the receiver's database once everything it acknowledged is loaded."""
    assert receiver.flush(30)
    return stored(receiver.settings.db_path, sql, params)


def stored(db: Path, sql: str = "SELECT * FROM spans ORDER BY start_ns, span_id", params: list | None = None,
           timeout: float = 10.0) -> list[dict]:
    """Rows of a database, once no writer holds it (the receiver's closes it after 0.2 s idle)."""
    if not db.exists():  # nothing was ever written
        return []
    deadline = time.monotonic() + timeout
    while True:
        try:
            with duckdb.connect(str(db), read_only=True) as con:
                cursor = con.execute(sql, params or [])
                columns = [c[0] for c in cursor.description]
                rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
            break
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    for row in rows:
        for key in ("attributes", "resource_attributes"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
    return rows
