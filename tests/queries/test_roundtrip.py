"""The roundtrip query on runs with known, exact timings (ms): server time is the part of each
client span a server span of it ran in, so the overhead is never negative."""

from __future__ import annotations

from pathlib import Path

from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.queries.builder import RunBuilder
from tests.store.spanfiles import TRACE

OTHER_TRACE = "1" * 32


def get(run: RunBuilder, main: str, path: str, start_ms: float, end_ms: float) -> str:
    return run.span(100, "GET", "http", start_ms, end_ms, main, kind="CLIENT", attributes={
        "http.request.method": "GET", "server.address": "127.0.0.1", "server.port": 8000,
        "url.full": f"http://127.0.0.1:8000{path}"})


def served(run: RunBuilder, client: str, start_ms: float, end_ms: float) -> str:
    return run.span(300, "GET", "http", start_ms, end_ms, client, kind="SERVER")


def roundtrip(store: Store, run_id: str) -> dict[str, dict]:
    return {r["route"]: r for r in run_query(store, "roundtrip", {"run_id": run_id}).records()}


def test_a_server_span_outliving_its_client_counts_only_while_the_client_waited(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 3000)
    run.process(300, -100, 3100, command="server.py", trace=OTHER_TRACE)
    for start in (0, 1000, 2000):  # a client that timed out at 300 ms; the server took 1000 ms
        served(run, get(run, main, "/slow", start, start + 300), start + 1, start + 1001)
    stream = get(run, main, "/stream", 400, 404)  # the response's head at 4 ms, its body read after the span
    served(run, stream, 401, 600)
    redirect = get(run, main, "/redirect", 500, 600)  # two answers in one client span: each instant once
    served(run, redirect, 505, 510)
    served(run, redirect, 520, 590)
    run_id = run.load(store, tmp_path)
    rows = roundtrip(store, run_id)
    slow, streamed, redirected = rows["/slow"], rows["/stream"], rows["/redirect"]
    assert (slow["calls"], slow["with_server"], slow["total_ms"]) == (3, 3, 900)
    assert (slow["server_ms"], slow["overhead_ms"]) == (897, 3)
    assert (streamed["total_ms"], streamed["server_ms"], streamed["overhead_ms"]) == (4, 3, 1)
    assert (redirected["total_ms"], redirected["server_ms"], redirected["overhead_ms"]) == (100, 75, 25)


def test_a_server_span_copied_under_other_runs_answers_once(store: Store, tmp_path: Path) -> None:
    client_run = RunBuilder("client")
    main = client_run.process(100, 0, 100)
    client = get(client_run, main, "/x", 10, 40)
    for server_id in ("server-a", "server-b"):  # a server traced as its own run, loaded twice
        server_run = RunBuilder(server_id, first_id=1000)
        server_run.process(300, -100, 200, command="server.py", trace=OTHER_TRACE)
        server_run.span(300, "GET /x", "http", 15, 45, client, kind="SERVER", trace=TRACE,
                        attributes={"http.route": "/x"})
        server_run.load(store, tmp_path)
    client_run.load(store, tmp_path)
    (row,) = roundtrip(store, "client").values()
    assert (row["route"], row["with_server"], row["server_ms"], row["overhead_ms"]) == ("/x", 1, 25, 5)


def test_a_server_span_outside_its_client_span_adds_no_server_time(store: Store, tmp_path: Path) -> None:
    # another host's clock, behind: the answer seems to come after the call
    run = RunBuilder()
    main = run.process(100, 0, 100)
    served(run, get(run, main, "/late", 10, 20), 30, 40)
    run_id = run.load(store, tmp_path)
    (row,) = roundtrip(store, run_id).values()
    assert (row["with_server"], row["server_ms"], row["overhead_ms"]) == (1, 0, 10)

