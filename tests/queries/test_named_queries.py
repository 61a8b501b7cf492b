"""Every shipped query on a real traced run (tests/queries/workload), with what each must say."""

from __future__ import annotations

import pytest

from selfopt_trace.queries import get_query, load_queries, run_query
from tests.queries.conftest import WORKLOAD


@pytest.mark.parametrize("name", sorted(load_queries()))
def test_every_shipped_query_runs_and_returns_its_documented_columns(traced_store, name: str) -> None:
    result = run_query(traced_store, name, {"run_id": "q1"})
    assert result.columns == [column.name for column in result.query.columns]


@pytest.mark.parametrize("name", sorted(load_queries()))
def test_every_shipped_query_gives_its_rows_planned_without_the_optimizer(traced_store, name: str) -> None:
    """run_query plans a shipped query without DuckDB's optimizer on a small store."""
    query = get_query(name)
    bound = query.bind({"run_id": "q1"})
    with traced_store.planned_unoptimized(True):
        unoptimized = traced_store.sql(query.sql, bound)[1]
    assert unoptimized == traced_store.sql(query.sql, bound)[1]


def records(store, name: str, **params) -> list[dict]:
    return run_query(store, name, {"run_id": "q1", **params}).records()


def test_breakdown_sums_to_the_run_s_wall_time_its_root_s_teardown_included(traced_store) -> None:
    rows = {r["category"]: r for r in records(traced_store, "breakdown")}
    _, main = traced_store.sql("SELECT duration_ns / 1e6, (r.end_ns - r.start_ns) / 1e6, (r.end_ns - s.end_ns) / 1e6 "
                               "FROM spans AS s JOIN runs AS r USING (run_id, pid) "
                               "WHERE run_id = 'q1' AND name = 'process' AND parent_span_id IS NULL")
    process_ms, run_ms, teardown_ms = main[0]
    assert rows["total"]["wall_ms"] == pytest.approx(run_ms, abs=0.01)
    assert rows["interpreter teardown"]["wall_ms"] >= teardown_ms > 0  # CMD's own, and its children's
    assert process_ms + teardown_ms == pytest.approx(run_ms, abs=0.01)
    assert sum(r["wall_ms"] for c, r in rows.items() if c != "total") == pytest.approx(rows["total"]["wall_ms"], abs=0.01)
    for category in ("interpreter start-up", "imports", "parsing", "serialization", "http client overhead",
                     "http server time", "subprocess spawn overhead", "child processes' own work", "own work"):
        assert rows[category]["wall_ms"] > 0, category


def test_subprocess_splits_each_childs_time(traced_store) -> None:
    rows = records(traced_store, "subprocess")
    child, total = rows
    assert child["command"] == "child.py" and child["count"] == 2 and child["traced"] == 2 and child["failed"] == 0
    assert total["command"] == "TOTAL" and total["count"] == 2
    assert child["imports_ms"] >= 2 * 30  # slowmod sleeps 30 ms at import
    parts = child["spawn_ms"] + child["startup_ms"] + child["imports_ms"] + child["run_ms"] + child["teardown_ms"]
    assert parts == pytest.approx(child["total_ms"], abs=0.01)


def test_the_store_runs_named_queries_itself(traced_store, tmp_path) -> None:
    assert traced_store.query("breakdown", {"run_id": "q1"}).records() == records(traced_store, "breakdown")
    (tmp_path / "process_count.sql").write_text(
        "-- How many processes the run has.\n-- Parameters:\n--   run_id  the run\n"
        "SELECT count(*) AS processes FROM spans WHERE run_id = $run_id AND name = 'process'\n")
    assert traced_store.query("process_count", {"run_id": "q1"}, [tmp_path]).records() == [{"processes": 3}]


def test_imports_counts_a_module_once_per_process(traced_store) -> None:
    rows = {r["module"]: r for r in records(traced_store, "imports", limit=200)}
    assert rows["slowmod"]["imports"] == 2
    assert rows["slowmod"]["cumulative_ms"] >= 60 and rows["slowmod"]["self_ms"] >= 60
    assert rows["http.server"]["self_ms"] < rows["http.server"]["cumulative_ms"]
    _, (main_pid,) = traced_store.sql("SELECT pid FROM spans WHERE run_id = 'q1' AND parent_span_id IS NULL")
    only_main = {r["module"] for r in records(traced_store, "imports", limit=200, pid=main_pid[0])}
    assert "http.server" in only_main and "slowmod" not in only_main


def test_roundtrip_groups_the_requests_by_route_template(traced_store) -> None:
    (row,) = records(traced_store, "roundtrip")
    assert row["method"] == "GET" and row["route"] == "/items/{id}" and row["calls"] == 2
    assert row["with_server"] == 2 and row["new_connections"] == 2 and row["retries"] == 0 and row["errors"] == 0
    assert row["server_ms"] + row["overhead_ms"] == pytest.approx(row["total_ms"], abs=0.01)
    assert row["response_bytes"] > 0


def test_serialization_and_parsing_name_the_call_site(traced_store) -> None:
    source = (WORKLOAD / "main.py").read_text().splitlines()
    line = next(number for number, text in enumerate(source, 1) if text.startswith("payload = json.dumps"))
    dumps = [r for r in records(traced_store, "serialization") if r["operation"] == "dumps" and r["type"] == "list"]
    assert len(dumps) == 1 and dumps[0]["call_site"] == f"{WORKLOAD / 'main.py'}:{line} (<module>)"
    assert dumps[0]["bytes_out"] > 400_000
    (parse,) = [r for r in records(traced_store, "serialization", category="parse") if r["library"] == "ast"]
    assert parse["operation"] == "parse" and parse["bytes_in"] > 50_000


def test_process_tree_nests_children_under_their_parent(traced_store) -> None:
    rows = records(traced_store, "process_tree")
    assert [r["process"] for r in rows] == ["main.py", "  child.py", "  child.py"]
    assert rows[0]["children"] == 2 and rows[1]["parent_pid"] == rows[0]["pid"]
    assert all(r["startup_ms"] > 0 and r["overhead_ms"] >= 0 for r in rows)


def test_slowest_spans_come_longest_first(traced_store) -> None:
    rows = records(traced_store, "slowest_spans", limit=5)
    assert rows[0]["name"] == "process" and rows[0]["start_ms"] == 0
    assert [r["duration_ms"] for r in rows] == sorted((r["duration_ms"] for r in rows), reverse=True)
    assert {r["category"] for r in records(traced_store, "slowest_spans", category="import")} == {"import"}


def test_critical_path_self_times_add_up_to_the_wall_time(traced_store) -> None:
    rows = records(traced_store, "critical_path", min_ms=0, limit=100_000)
    wall = {r["category"]: r for r in records(traced_store, "breakdown")}["total"]["wall_ms"]
    teardown = rows[-1]  # CMD's own, after its process span
    assert teardown["span"] == "interpreter teardown" and teardown["category"] == "teardown"
    assert rows[0]["span"] == "process"
    assert rows[0]["on_path_ms"] + teardown["on_path_ms"] == pytest.approx(wall, abs=0.01)
    assert sum(r["self_ms"] for r in rows) == pytest.approx(wall, abs=0.05)
    assert any(r["span"].strip() == "import slowmod" for r in rows)  # the children run one after another
