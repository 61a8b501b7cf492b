"""A database written by an older selfopt-trace (before CPU samples and exports, before stacks were taken
apart) still answers, also read-only."""

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


def test_profile_stacks_loaded_by_an_older_version_are_taken_apart_for_hot_frames(tmp_path: Path) -> None:
    from selfopt_trace.watchers import profile_samples as fmt
    from tests.store.spanfiles import T0, complete, header, sid, write_run

    ms = 1_000_000
    run_dir = write_run(tmp_path / "run", {"10-00000001.spans": header(10) + complete(
        sid(1), "", "process", "process", T0, T0 + 100 * ms)}, {"run_id": "p1"})
    (run_dir / "profile").mkdir()
    frames = (("main", "a.py", 1), ("hot", "b.py", 2))
    (run_dir / fmt.SAMPLES_PATH).write_text(
        fmt.header() + "".join(fmt.Interned().stack_lines(fmt.stack_id(frames), frames))
        + fmt.line(fmt.SAMPLE, T0 + 10 * ms, 10, 10, 50 * ms, 5, fmt.stack_id(frames), "", "MainThread"))
    path = tmp_path / "old.duckdb"
    with Store(path) as store:
        store.load_run(run_dir)
    con = duckdb.connect(str(path))  # what the first version with profiles left: stacks whole only
    con.execute("DROP TABLE frames; DROP TABLE stack_frames")
    con.close()
    with Store(path, read_only=True) as store:
        rows = run_query(store, "hot_frames", {"run_id": "p1"}).records()
    assert [(row["function"], row["self_samples"], row["total_samples"]) for row in rows] == [("hot", 5, 5), ("main", 0, 5)]


def test_a_current_database_is_not_rewritten_on_open_and_another_versions_schema_is_run_again(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    Store(path).close()
    written = path.read_bytes()
    with Store(path) as store:  # this version's schema, recorded in store_schema: nothing runs
        assert store.sql("SELECT count(*) FROM records")[1] == [(0,)]
    assert path.read_bytes() == written
    con = duckdb.connect(str(path))  # what another version left: its own schema text, no `records` view
    con.execute("UPDATE store_schema SET schema_sql = '-- another version'; DROP VIEW records")
    con.close()
    with Store(path) as store:
        assert store.sql("SELECT count(*) FROM records")[1] == [(0,)]
        assert store.sql("SELECT schema_sql FROM store_schema")[1][0][0].startswith("-- The trace database.")


def test_the_macros_are_stored_with_the_schema_and_another_versions_are_not_used(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    Store(path).close()
    sort_of_a_process = "SELECT span_sort('process', 'INTERNAL', 'process')"
    con = duckdb.connect(str(path))
    stored = {name for (name,) in con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE database_name = 'traces' AND function_type LIKE '%macro'"
    ).fetchall()}
    assert {"span_sort", "run_activity", "span_subtree", "process_span_cpu"} <= stored
    # What another version left: its own macros (here a span_sort that says otherwise) and schema text.
    con.execute("CREATE OR REPLACE MACRO span_sort(name, kind, category) AS 99::UTINYINT;"
                "UPDATE store_schema SET schema_sql = '-- another version'")
    con.close()
    with Store(path, read_only=True) as store:  # this version's, as TEMP macros: the file is not written
        assert store.sql(sort_of_a_process)[1] == [(1,)]
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(sort_of_a_process).fetchall() == [(99,)]
    Store(path).close()  # a writable open stores this version's again
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(sort_of_a_process).fetchall() == [(1,)]
