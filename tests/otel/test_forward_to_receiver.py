"""The real OpenTelemetry Collector forwards to `selfopt-trace collector` with the shipped
configuration (collectors/configs/otelcol-selfopt.yaml): a run pushed to the Collector arrives in
the receiver's store as the rows its span files gave, token and all."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from selfopt_trace.receiver.server import Receiver, Settings
from selfopt_trace.store import Store
from tests.otel.conftest import CONFIGS
from tests.receiver.conftest import RUN, cli, stored, traced_run  # noqa: F401  (fixtures)
from tests.receiver.test_same_rows import COLUMNS, rows


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_run_goes_through_the_collector_into_the_receivers_store(start_collector, traced_run: Path, cli,  # noqa: F811
                                                                   tmp_path: Path, protocol: str) -> None:
    files_db = tmp_path / "files.duckdb"
    with Store(files_db) as store:
        expected = store.load_run(traced_run).spans
    receiver = Receiver(Settings(db_path=tmp_path / "received.duckdb", port=0, grpc_port=None, token="t0ken",
                                 idle_close_s=0.2))
    receiver.start()
    try:
        collector = start_collector(CONFIGS / "otelcol-selfopt.yaml", {
            "SELFOPT_TRACE_COLLECTOR_ENDPOINT": f"http://127.0.0.1:{receiver.http_port}",
            "SELFOPT_TRACE_COLLECTOR_TOKEN": "t0ken"})
        endpoint = "http://" + collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        pushed = cli("push", RUN, "--db", str(files_db), "--endpoint", endpoint, "--protocol", protocol)
        assert pushed.returncode == 0, pushed.stderr
        deadline = time.monotonic() + 60
        while receiver.writer.stats.spans_added < expected:
            assert time.monotonic() < deadline, f"{receiver.writer.stats}\n{collector.output()[-3000:]}"
            time.sleep(0.1)
    finally:
        receiver.drain(30)
    assert receiver.refused == 0  # the Collector sent the token
    from_files, received = rows(files_db), rows(receiver.settings.db_path)
    assert set(received) == set(from_files) and len(received) == expected
    assert [(span["name"], column) for span_id, span in from_files.items() for column in COLUMNS
            if received[span_id][column] != span[column]] == []
    assert stored(receiver.settings.db_path, "SELECT span_count FROM runs") == [{"span_count": expected}]
