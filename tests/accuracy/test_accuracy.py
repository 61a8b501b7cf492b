"""Numbers you can trust: breakdown, roundtrip and subprocess against a workload's ground truth.

The workload (workload/cli.py) has known, injected costs: a payload whose serialization sleeps
in json's `default` hook, POSTs to a service (workload/server.py, traced as a run of its own)
whose handler sleeps, through a local proxy adding a fixed latency, and Python children that each
import a module sleeping at import. Every process records what it measured itself with its own
clock (its truth). The truth intervals go through the plain-Python reference of the breakdown's
rules (tests/queries/reference.py), and every figure the queries give must match it within
5 % or 2 ms, whichever is larger. Three cases: everything in sequence, the requests from threads
at once, and the children all running at once.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.accuracy.proxy import DelayProxy
from tests.cli.conftest import clean_environ
from tests.conftest import traced_environ
from tests.queries import reference
from tests.queries.builder import Span

WORKLOAD = Path(__file__).resolve().parent / "workload"
SERVER_MS, PROXY_MS, IMPORT_MS, CHILD_WORK_MS, SLOW_OBJECT_MS = 40, 25, 35, 15, 6
COSTS = {"ACCURACY_IMPORT_MS": str(IMPORT_MS), "ACCURACY_CHILD_WORK_MS": str(CHILD_WORK_MS),
         "ACCURACY_SLOW_OBJECT_MS": str(SLOW_OBJECT_MS)}
# case: (number, mode, requests, children)
CASES = {"sequential": (1, "sequential", 3, 3), "threads": (2, "threads", 3, 2), "parallel": (3, "parallel", 1, 3)}
TRACE = "truth"


def close_enough(actual: float, truth: float) -> bool:
    return abs(actual - truth) <= max(0.05 * abs(truth), 2.0)


def check(figures: dict[str, tuple[float, float]]) -> None:
    """Every (measured, truth) pair matches; else the message lists them all, the wrong ones marked."""
    wrong = [name for name, (actual, truth) in figures.items() if not close_enough(actual, truth)]
    assert not wrong, "figures off the truth by more than 5 % and 2 ms:\n" + "\n".join(
        f"{'WRONG' if name in wrong else 'ok':5} {name:40} measured {actual:10.3f} ms   truth {truth:10.3f} ms"
        for name, (actual, truth) in figures.items())


@pytest.fixture(scope="module")
def accuracy(tmp_path_factory) -> dict[str, Any]:
    """Run the three cases against one traced service; load everything into one store."""
    base = tmp_path_factory.mktemp("accuracy")
    server_truth = base / "server-truth.jsonl"
    server_run = base / "server-run"
    server = subprocess.Popen([sys.executable, str(WORKLOAD / "server.py"), str(SERVER_MS), str(server_truth)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=traced_environ(server_run))
    try:
        port = int(server.stdout.readline())
        proxy = DelayProxy(port, PROXY_MS / 1000)
        home = base / "home"
        results: dict[str, Any] = {}
        for case, (number, mode, requests, children) in CASES.items():
            truth = base / f"{case}.json"
            done = subprocess.run(
                # every import a span, so that the truth's timed import blocks are all imports for the tracer too
                [sys.executable, "-m", "selfopt_trace", "run", "--run-id", case, "--quiet", "--import-threshold-ms", "0",
                 "--",
                 sys.executable, str(WORKLOAD / "cli.py"), str(truth), str(proxy.port), str(number), mode,
                 str(requests), str(children)],
                env=clean_environ(SELFOPT_TRACE_HOME=str(home), **COSTS), capture_output=True, timeout=120)
            assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
            results[case] = json.loads(truth.read_text())
            results[case]["children_truth"] = [json.loads(line) for line in
                                               Path(f"{truth}.children").read_text().splitlines()]
        proxy.close()
    finally:
        server.communicate(b"", timeout=30)
    assert server.returncode == 0, server.stderr.read() if server.stderr else ""
    served = {entry["path"]: entry for entry in map(json.loads, server_truth.read_text().splitlines())}
    store = Store(home / "traces.duckdb")
    store.load_run(server_run)
    yield {"store": store, "truth": results, "served": served}
    store.close()


def truth_spans(run: dict, served: dict, run_start_ns: int) -> list[Span]:
    """What each process measured, as spans (ms from the run's start) for the reference breakdown."""
    def ms(ns: int) -> float:
        return (ns - run_start_ns) / 1e6

    spans = [Span("main", "", "process", "process", "INTERNAL", 0.0, ms(run["last"]), "main", TRACE),
             Span("main-startup", "main", "interpreter.startup", "startup", "INTERNAL", 0.0, ms(run["first"]), "main",
                  TRACE),
             Span("main-imports", "main", "imports", "import", "INTERNAL", ms(run["import_start"]),
                  ms(run["import_end"]), "main", TRACE),
             Span("serialize", "main", "json.dumps", "serialization", "INTERNAL", ms(run["serialize_start"]),
                  ms(run["serialize_end"]), "main", TRACE)]
    for request in run["requests"]:
        answer = served[request["path"]]
        spans.append(Span(request["path"], "main", "POST", "http", "CLIENT", ms(request["start"]), ms(request["end"]),
                          "main", TRACE))
        spans.append(Span("served " + request["path"], request["path"], "POST", "http", "SERVER", ms(answer["start"]),
                          ms(answer["end"]), "server", TRACE))
    children = {child["pid"]: child for child in run["children_truth"]}
    for call in run["children"]:
        child = children[call["pid"]]
        name = f"child-{call['pid']}"
        spans += [Span(f"call-{call['pid']}", "main", "subprocess", "subprocess", "CLIENT", ms(call["spawn"]),
                       ms(call["reaped"]), "main", TRACE),
                  Span(name, f"call-{call['pid']}", "process", "process", "INTERNAL", ms(call["spawn"]),
                       ms(child["last"]), name, TRACE),
                  Span(name + "-startup", name, "interpreter.startup", "startup", "INTERNAL", ms(call["spawn"]),
                       ms(child["first"]), name, TRACE),
                  Span(name + "-imports", name, "imports", "import", "INTERNAL", ms(child["import_start"]),
                       ms(child["import_end"]), name, TRACE)]
    return spans


def records(store: Store, query: str, case: str) -> list[dict]:
    return run_query(store, query, {"run_id": case}).records()


def run_start(store: Store, case: str) -> int:
    _, rows = store.sql("SELECT start_ns FROM runs WHERE run_id = $run_id", {"run_id": case})
    return rows[0][0]


@pytest.mark.parametrize("case", CASES)
def test_the_injected_costs_took_what_they_should(accuracy, case: str) -> None:
    """The workload itself did what the numbers below assume (else the comparison says nothing)."""
    run = accuracy["truth"][case]
    assert (run["serialize_end"] - run["serialize_start"]) / 1e6 >= 5 * SLOW_OBJECT_MS
    for request in run["requests"]:
        answer = accuracy["served"][request["path"]]
        assert (answer["end"] - answer["start"]) / 1e6 >= SERVER_MS
        assert (request["end"] - request["start"]) / 1e6 >= SERVER_MS + PROXY_MS
    for child in run["children_truth"]:
        assert (child["import_end"] - child["import_start"]) / 1e6 >= IMPORT_MS


@pytest.mark.parametrize("case", CASES)
def test_breakdown_matches_the_truth(accuracy, case: str) -> None:
    store = accuracy["store"]
    truth = reference.breakdown(truth_spans(accuracy["truth"][case], accuracy["served"], run_start(store, case)), TRACE)
    measured = {r["category"]: r for r in records(store, "breakdown", case)}
    figures = {}
    for category in reference.CATEGORIES:
        figures[f"{category} (wall)"] = (measured[category]["wall_ms"], truth[category][0])
        figures[f"{category} (busy)"] = (measured[category]["busy_ms"], truth[category][1])
    run = accuracy["truth"][case]
    figures["total"] = (measured["total"]["wall_ms"], (run["last"] - run_start(store, case)) / 1e6)
    check(figures)


@pytest.mark.parametrize("case", CASES)
def test_roundtrip_matches_the_truth(accuracy, case: str) -> None:
    run = accuracy["truth"][case]
    (row,) = records(accuracy["store"], "roundtrip", case)
    durations = [(r["end"] - r["start"]) / 1e6 for r in run["requests"]]
    served = [(accuracy["served"][r["path"]]["end"] - accuracy["served"][r["path"]]["start"]) / 1e6
              for r in run["requests"]]
    calls = len(run["requests"])
    assert (row["method"], row["route"], row["calls"], row["with_server"]) == ("POST", "/items/{id}", calls, calls)
    assert (row["new_connections"], row["reused_connections"], row["retries"], row["errors"]) == (calls, 0, 0, 0)
    assert row["request_bytes"] == sum(r["request_bytes"] for r in run["requests"])
    assert row["response_bytes"] == sum(r["response_bytes"] for r in run["requests"])
    check({
        "p50": (row["p50_ms"], statistics.median(durations)),
        "p95": (row["p95_ms"], statistics.quantiles(durations, n=20, method="inclusive")[-1] if calls > 1 else durations[0]),
        "max": (row["max_ms"], max(durations)),
        "total": (row["total_ms"], sum(durations)),
        "server": (row["server_ms"], sum(served)),
        "overhead": (row["overhead_ms"], sum(durations) - sum(served)),
    })


@pytest.mark.parametrize("case", CASES)
def test_subprocess_matches_the_truth(accuracy, case: str) -> None:
    run = accuracy["truth"][case]
    child_row, total_row = records(accuracy["store"], "subprocess", case)
    children = {child["pid"]: child for child in run["children_truth"]}
    totals = [(c["reaped"] - c["spawn"]) / 1e6 for c in run["children"]]
    n = len(run["children"])
    assert (child_row["command"], child_row["count"], child_row["traced"], child_row["failed"]) == ("child.py", n, n, 0)
    assert total_row["command"] == "TOTAL" and total_row["total_ms"] == child_row["total_ms"]
    check({
        "total": (child_row["total_ms"], sum(totals)),
        "spawn": (child_row["spawn_ms"], 0.0),  # Popen call -> the child exists: the tracer's own clock mark
        "spawn + start-up": (child_row["spawn_ms"] + child_row["startup_ms"],
                             sum((children[c["pid"]]["first"] - c["spawn"]) / 1e6 for c in run["children"])),
        "imports": (child_row["imports_ms"],
                    sum((c["import_end"] - c["import_start"]) / 1e6 for c in children.values())),
        "run": (child_row["run_ms"], sum((c["last"] - c["import_end"]) / 1e6 for c in children.values())),
        "teardown": (child_row["teardown_ms"],
                     sum((c["reaped"] - children[c["pid"]]["last"]) / 1e6 for c in run["children"])),
        "p50": (child_row["p50_ms"], statistics.median(totals)),
        "max": (child_row["max_ms"], max(totals)),
    })
