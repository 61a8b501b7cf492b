"""A database written by an older selfopt-trace (before CPU samples and exports) still answers, also read-only."""

from __future__ import annotations

from pathlib import Path

import duckdb

from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.queries.builder import RunBuilder


def test_an_older_database_opened_read_only_is_upgraded_once_and_answers_every_query(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    run = RunBuilder()
    main = run.process(100, 0, 50)
    run.span(100, "interpreter.startup", "startup", 0, 10, main)
    with Store(path) as store:
        run_id = run.load(store, tmp_path)
    con = duckdb.connect(str(path))  # what an older version left: no CPU samples
    con.execute("DROP MACRO TABLE process_span_cpu; DROP VIEW process_cpu; DROP TABLE cpu_samples; DROP TABLE exports")
    con.close()
    with Store(path, read_only=True) as store:
        for query in ("breakdown", "critical_path", "process_tree", "subprocess"):
            assert run_query(store, query, {"run_id": run_id}).records(), query
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'cpu_samples'").fetchone() == (1,)
    con.close()
