"""One traced run loaded both ways, from its span files and over OTLP through the receiver: the same
rows, so `breakdown`, `roundtrip`, the other named queries, the report and the exports give the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from selfopt_trace.export import FORMATS, fetch_spans, write_export
from selfopt_trace.queries import load_queries
from selfopt_trace.report import render_report
from selfopt_trace.store import Store
from tests.receiver.conftest import RUN, stored, traced_run  # noqa: F401  (fixture)

COLUMNS = ("run_id", "trace_id", "span_id", "parent_span_id", "name", "kind", "category", "start_ns", "end_ns",
           "duration_ns", "status", "incomplete", "service_name", "pid", "attributes", "resource_attributes",
           "source_file")


def rows(db: Path) -> dict[str, dict]:
    """The run's rows by span id, every column, attributes parsed."""
    return {row["span_id"]: row for row in stored(db, f"SELECT {', '.join(COLUMNS)} FROM spans WHERE run_id = ?", [RUN])}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_run_received_over_otlp_is_the_rows_of_its_span_files(traced_run: Path, receiver, cli, tmp_path: Path,
                                                                 protocol: str) -> None:
    files_db = tmp_path / "files.duckdb"
    with Store(files_db) as store:
        result = store.load_run(traced_run)
    assert result.warnings == [] and result.spans > 40
    endpoint = (f"http://127.0.0.1:{receiver.http_port}" if protocol == "http/protobuf"
                else f"http://127.0.0.1:{receiver.grpc_port}")
    pushed = cli("push", RUN, "--db", str(files_db), "--endpoint", endpoint, "--protocol", protocol)
    assert pushed.returncode == 0, pushed.stderr
    receiver.drain(30)
    received_db = receiver.settings.db_path

    # the rows, every column
    from_files, received = rows(files_db), rows(received_db)
    assert set(received) == set(from_files)
    differences = [(span["name"], column, span[column], received[span_id][column])
                   for span_id, span in from_files.items() for column in COLUMNS
                   if received[span_id][column] != span[column]]
    assert differences == []
    # the trace holds the program's OpenTelemetry spans, merged with the agent's HTTP spans
    names = {span["name"] for span in from_files.values()}
    assert {"phase one", "phase two", "failing step", "GET"} <= names
    assert {span["category"] for span in from_files.values()} >= {"process", "http", "subprocess", "other"}
    [phase] = [span for span in from_files.values() if span["name"] == "phase one"]
    clients = [span for span in from_files.values() if span["kind"] == "CLIENT" and span["category"] == "http"]
    assert len(clients) == 3  # one span a request: the OTel httpx span merged into the agent's
    assert all(client["parent_span_id"] == phase["span_id"] for client in clients)  # inside the OTel span

    # the run's row, from the run's own span (export/run_span.py): all of it but what the local load found
    # (where, when, the watchers' notes, its damaged lines)
    runs = [stored(db, "SELECT * EXCLUDE (loaded_at, run_dir, notes, damaged_lines) FROM runs WHERE run_id = ?", [RUN])
            for db in (files_db, received_db)]
    assert runs[0] == runs[1]
    assert runs[0][0]["run_span_id"] and runs[0][0]["command"] and runs[0][0]["pid"]

    # what is made of the rows
    with Store(files_db, read_only=True) as a, Store(received_db, read_only=True) as b:
        for query in load_queries().values():
            if "run_id" not in {parameter.name for parameter in query.parameters}:
                continue
            assert a.query(query.name, {"run_id": RUN}).rows == b.query(query.name, {"run_id": RUN}).rows, query.name
        for fmt in FORMATS:
            made = []
            for store, name in ((a, "a"), (b, "b")):
                write_export(fetch_spans(store, RUN), fmt, tmp_path / f"{name}.{fmt}")
                made.append((tmp_path / f"{name}.{fmt}").read_bytes())
            assert made[0] == made[1], fmt
        reports = [_without_run_metadata(render_report(store, RUN)) for store in (a, b)]
        assert reports[0] == reports[1]


def _without_run_metadata(html: str) -> str:
    """The report less what comes from run.json (command, directory) and the load's time."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert match is not None
    data = json.loads(match.group(1).replace("<\\/", "</"))
    run = data.get("run") or {}
    for key in ("command", "cwd", "run_dir", "loaded_at", "end_ns"):
        run.pop(key, None)
    return json.dumps(data, sort_keys=True)
