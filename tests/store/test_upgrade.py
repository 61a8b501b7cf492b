"""A database written by an older selfopt-trace (before CPU samples and exports, with profile stacks
stored whole) still answers, also read-only."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.queries.builder import RunBuilder, at


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


def _older_store(tmp_path: Path, older: str) -> tuple[Path, str]:
    """A store of one run (CMD's process, 50 ms of its 80), then made as an older version left it by
    the statements `older`; its path and the run's id."""
    path = tmp_path / "old.duckdb"
    run = RunBuilder()
    run.process(100, 0, 50)
    with Store(path) as store:
        run_id = run.load(store, tmp_path, end_ns=at(80), pid=100)
        assert store.query("breakdown", {"run_id": run_id}).records()[-1]["wall_ms"] == 80  # CMD's teardown
    con = duckdb.connect(str(path))
    con.execute(older + "; UPDATE store_schema SET schema_sql = '-- an older version'")
    con.close()
    return path, run_id


def test_an_older_database_without_cmd_s_pid_is_upgraded_read_only_and_keeps_its_runs(tmp_path: Path) -> None:
    path, run_id = _older_store(tmp_path, "ALTER TABLE runs DROP COLUMN pid")  # every table there, runs without `pid`
    with Store(path, read_only=True) as store:
        for query in ("breakdown", "critical_path", "process_tree", "subprocess"):
            assert run_query(store, query, {"run_id": run_id}).records(), query
        wall = {r["category"]: r["wall_ms"] for r in store.query("breakdown", {"run_id": run_id}).records()}
        # pid unknown: no teardown of CMD's, the run's time after its span is outside traced processes
        assert (wall["interpreter teardown"], wall["outside traced processes"], wall["total"]) == (0, 30, 80)
        assert store.sql("SELECT run_id, pid FROM runs")[1] == [(run_id, None)]


def test_an_older_database_without_the_run_span_is_upgraded_and_exports_without_one(tmp_path: Path) -> None:
    from selfopt_trace.export import fetch_spans
    from selfopt_trace.export.run_span import with_run_span

    path, run_id = _older_store(tmp_path, "ALTER TABLE runs DROP COLUMN run_trace_id; "  # before the run span
                                          "ALTER TABLE runs DROP COLUMN run_span_id; ALTER TABLE runs DROP COLUMN run_parent_span_id")
    with Store(path, read_only=True) as store:
        assert store.sql("SELECT run_id, pid, run_span_id FROM runs")[1] == [(run_id, 100, None)]
        spans = fetch_spans(store, run_id)
        assert with_run_span(store, run_id, spans) == spans  # no ids, no run span: the spans as they are


def _profiled_run(root: Path, run_id: str, seed: int) -> tuple[Path, dict[int, tuple]]:
    """A run with random recursive stacks (a function may come back deeper in its own stack), each
    sampled; the run's directory and its stacks by id."""
    from selfopt_trace.watchers import profile_samples as fmt
    from tests.store.spanfiles import T0, complete, header, sid, write_run

    ms = 1_000_000
    rng = random.Random(seed)
    run_dir = write_run(root / run_id, {"10-00000001.spans": header(10) + complete(
        sid(1), "", "process", "process", T0, T0 + 1000 * ms)}, {"run_id": run_id})
    functions = [(f"f{n}", f"/src/m{n % 3}.py") for n in range(8 + seed)]
    stacks = {}
    for _ in range(30):
        frames = tuple(rng.choice(functions) + (rng.randrange(1, 40),) for _ in range(rng.randrange(1, 9)))
        stacks[fmt.stack_id(frames)] = frames
    known = fmt.Interned()
    text = fmt.header() + "".join("".join(known.stack_lines(stack, frames)) for stack, frames in stacks.items())
    for n, stack in enumerate(stacks):
        text += fmt.line(fmt.SAMPLE, T0 + n * 20 * ms, 10, 10, 10 * ms, 1 + n % 4, stack, "", "MainThread")
    (run_dir / "profile").mkdir()
    (run_dir / fmt.SAMPLES_PATH).write_text(text)
    return run_dir, stacks


def _profile_answers(store: Store) -> dict[str, list]:
    from selfopt_trace.flame.data import fetch_profile

    answers = {"frames": store.sql("SELECT run_id, frame_id, function, file FROM frames ORDER BY ALL")[1],
               "stack_frames": store.sql("SELECT * FROM stack_frames ORDER BY ALL")[1]}
    for run_id in ("p1", "p2"):
        answers[f"hot_frames {run_id}"] = run_query(store, "hot_frames", {"run_id": run_id}).records()
        answers[f"flame {run_id}"] = sorted(fetch_profile(store, run_id).stacks.items())
    return answers


@pytest.mark.parametrize("taken_apart", [False, True], ids=["stacks-whole-only", "stacks-whole-and-taken-apart"])
def test_profile_stacks_stored_whole_by_an_older_version_are_converted_with_nothing_lost(
        tmp_path: Path, taken_apart: bool) -> None:
    path = tmp_path / "old.duckdb"
    written = {}
    with Store(path) as store:
        for run_id, seed in (("p1", 1), ("p2", 2)):
            run_dir, written[run_id] = _profiled_run(tmp_path, run_id, seed)
            store.load_run(run_dir)
        answers = _profile_answers(store)
    con = duckdb.connect(str(path))  # what an older version left: `stacks` a table of each stack's frames as structs
    con.execute("CREATE TABLE whole AS SELECT * FROM stacks; DROP VIEW stacks; DROP TABLE stack_numbers; "
                "ALTER TABLE whole RENAME TO stacks; UPDATE store_schema SET schema_sql = '-- an older version'")
    if taken_apart:  # the version before this one: frames (not numbered) and stack_frames beside stacks
        con.execute("ALTER TABLE frames DROP COLUMN number")
    else:  # the first version with profiles
        con.execute("DROP TABLE frames; DROP TABLE stack_frames")
    con.close()
    with Store(path, read_only=True) as store:  # converted once, then read as asked
        _, stacks = store.sql("SELECT run_id, stack_id, frames FROM stacks")
        assert {(run_id, stack): tuple((f["function"], f["file"], f["line"]) for f in frames)
                for run_id, stack, frames in stacks} == {
            (run_id, stack): frames for run_id, by_id in written.items() for stack, frames in by_id.items()}
        assert _profile_answers(store) == answers
        assert store.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'stacks%'")[1] == [(0,)]
    for run_id, by_id in written.items():  # every stack was sampled: flame has each, named right
        assert {stack for stack, _ in answers[f"flame {run_id}"]} == {
            tuple(frame[:2] for frame in frames) for frames in by_id.values()}


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
