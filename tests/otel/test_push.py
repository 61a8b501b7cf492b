"""`selfopt-trace push RUN`: a stored run into a real Jaeger v2, every field as stored, once however often."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

from tests.otel.conftest import Jaeger, free_port
from tests.otel.jaeger_check import assert_client_server_links, assert_jaeger_has_the_run, exported_spans
from tests.otel.test_live_export import WORKLOAD, endpoint_of, selfopt


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory) -> Path:
    """A home whose database holds run `stored`: the three-process workload, run with no export."""
    home = tmp_path_factory.mktemp("push") / "home"
    done = selfopt(home, "run", "--run-id", "stored", "-q", "--export", "never", "--",
                   sys.executable, str(WORKLOAD / "main.py"))
    assert done.returncode == 0, done.stderr
    return home


def export_rows(home: Path) -> list[tuple]:
    """The run's rows of table `exports` (made by the first export)."""
    with duckdb.connect(str(home / "traces.duckdb"), read_only=True) as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'exports'").fetchone()[0]:
            return []
        return con.execute("SELECT via, endpoint, protocol, spans_total, spans_sent, complete, error FROM exports "
                           "WHERE run_id = 'stored' ORDER BY sent_at_ns").fetchall()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_push_round_trip_keeps_every_field_and_twice_is_once(stored_run: Path, jaeger: Jaeger, protocol: str) -> None:
    before = export_rows(stored_run)
    original = exported_spans(stored_run / "traces.duckdb", "stored")
    for _ in range(2):
        done = selfopt(stored_run, "push", "stor", "--protocol", protocol, "--endpoint", endpoint_of(jaeger, protocol))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"sent {len(original)} spans of run stored to ") and f"(OTLP {protocol})" in done.stdout
    trace = assert_jaeger_has_the_run(jaeger, original, "stored")  # each span once: same ids, same content
    assert_client_server_links(trace, original, servers=4)
    assert sorted(jaeger.services()) == ["main.py", "selfopt-trace", "server.py", "worker.py"]
    endpoint = endpoint_of(jaeger, protocol) + ("/v1/traces" if protocol == "http/protobuf" else "")
    assert export_rows(stored_run)[len(before):] == [("push", endpoint, protocol, len(original), len(original), True, None)] * 2


def test_push_to_nothing_fails_with_one_line_and_is_not_marked_sent(stored_run: Path) -> None:
    before = export_rows(stored_run)
    url = f"http://127.0.0.1:{free_port()}"
    done = selfopt(stored_run, "push", "--endpoint", url, "--header", "authorization=Bearer secret")
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"selfopt-trace: error: could not send run stored to {url}/v1/traces (OTLP http/protobuf): ")
    assert "nothing accepts connections" in line and "0 of" in line and "secret" not in line
    [(via, _, _, total, sent, complete, error)] = export_rows(stored_run)[len(before):]
    assert (via, sent, complete) == ("push", 0, False) and total > 20 and error


@pytest.mark.parametrize("options, message", [
    (["--protocol", "thrift"], "unsupported OTLP protocol 'thrift'"),
    (["--header", "no value"], "expected KEY=VALUE"),
    (["--endpoint", "collector:4318"], "expected http://HOST:PORT"),
])
def test_bad_push_settings_are_usage_errors(stored_run: Path, options: list[str], message: str) -> None:
    done = selfopt(stored_run, "push", *options)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_push_of_an_unknown_run_lists_the_runs(stored_run: Path) -> None:
    done = selfopt(stored_run, "push", "nosuchrun")
    assert done.returncode == 2 and "run not found: nosuchrun" in done.stderr and "stored" in done.stderr


def test_a_large_run_is_pushed_by_several_worker_processes(stored_run: Path, jaeger: Jaeger) -> None:
    from selfopt_trace.export.otlp_settings import resolve
    from selfopt_trace.export.push import push_run

    original = exported_spans(stored_run / "traces.duckdb", "stored")
    result = push_run(stored_run / "traces.duckdb", "stored", resolve({}, endpoint=jaeger.otlp_http_endpoint),
                      workers=3)  # what a run over PARALLEL_FROM spans gets: each worker a share of the rows
    assert (result.sent, result.total, result.error) == (len(original), len(original), None)
    assert_jaeger_has_the_run(jaeger, original, "stored")
