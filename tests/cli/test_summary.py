"""The end-of-run summary's figures: what it computes without the breakdown query is what the query says."""

from __future__ import annotations

import json
from pathlib import Path

from selfopt_trace import summary
from selfopt_trace.store import Store
from tests.store.spanfiles import T0, diagnostic, header, write_run

MS = 1_000_000


def assert_agrees_with_the_breakdown(store: Store, run_id: str, wall_ns: int) -> None:
    spans = store.sql("SELECT count(*) FROM spans WHERE run_id = ?", [run_id])[1][0][0]
    assert spans == 0
    without_query = summary.time_by_category(store, run_id, wall_ns, spans)
    by_query = summary.time_by_category(store, run_id, wall_ns)
    assert list(without_query.items()) == list(by_query.items())  # the same categories, in the same order
    assert without_query[summary.OUTSIDE] == wall_ns


def test_a_run_of_a_command_that_is_not_python(cli) -> None:
    result = cli("run", "--export", "never", "--json", "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["processes"] == 0 and printed["spans"] == 0
    with Store(cli.db, read_only=True) as store:
        assert_agrees_with_the_breakdown(store, printed["run_id"], round(printed["wall_ms"] * MS))


def test_a_run_whose_files_hold_no_span(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", {"10-00000001.spans": header(10) + diagnostic(T0 + MS, "agent.x", "no spans")},
                        {"run_id": "empty", "start_ns": T0, "end_ns": T0 + 5 * MS})
    with Store(tmp_path / "traces.duckdb") as store:
        store.load_run(run_dir)
        assert_agrees_with_the_breakdown(store, "empty", 5 * MS)
        result = summary.summarize(store, "empty")
    assert (result.processes, result.spans, result.diagnostics) == (0, 0, 1)
    assert result.by_category == {**dict.fromkeys(summary.BREAKDOWN_CATEGORIES, 0), summary.OUTSIDE: 5 * MS}
