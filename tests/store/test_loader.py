"""The store and its loader, on real span files in tmp_path and a real DuckDB file: nothing mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile
from selfopt_trace.errors import QueryError, RunNotFoundError, StoreLockedError, StoreOpenError
from selfopt_trace.store import Store, loader
from tests.store.spanfiles import TRACE, T0, block, complete, diagnostic, end, header, line, sid, start, tick, write_run

MS = 1_000_000


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "db" / "traces.duckdb") as opened:
        yield opened


def spans(store: Store, where: str = "true") -> dict[str, dict]:
    """The run's spans by name, as dicts with attributes decoded."""
    columns, rows = store.sql(f"SELECT * FROM spans WHERE {where} ORDER BY start_ns")
    result = {}
    for row in rows:
        span = dict(zip(columns, row))
        span["attributes"] = json.loads(span["attributes"])
        span["resource_attributes"] = json.loads(span["resource_attributes"])
        result[span["name"]] = span
    return result


def test_complete_spans_are_loaded_with_their_file_header(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {
        "100-0000abcd.spans": header(100, resource={"service.name": "api", "service.version": "1.2"})
        + complete(sid(1), "", "import json", "import", T0, T0 + 3 * MS, attributes={"code.namespace": "json"}),
    }, run_json={"run_id": "run-1", "command": ["python", "-m", "app"], "cwd": "/src", "exit_code": 0,
                 "start_ns": T0 - MS, "end_ns": T0 + 9 * MS, "group_id": "g", "service": "api"})

    result = store.load_run(run)

    assert (result.run_id, result.files, result.spans, result.warnings) == ("run-1", 1, 1, [])
    span = spans(store)["import json"]
    assert span == {
        "run_id": "run-1", "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": sid(1),
        "parent_span_id": None, "name": "import json", "kind": "INTERNAL", "category": "import",
        "start_ns": T0, "end_ns": T0 + 3 * MS, "duration_ns": 3 * MS, "status": "UNSET",
        "incomplete": False, "service_name": "api", "pid": 100,
        "attributes": {"code.namespace": "json"},
        "resource_attributes": {"service.name": "api", "service.version": "1.2"},
        "source_file": "100-0000abcd.spans",
    }
    [info] = store.runs()
    assert (info.run_id, info.group_id, info.command, info.cwd, info.exit_code, info.service_name) == (
        "run-1", "g", "python -m app", "/src", 0, "api")
    assert (info.start_ns, info.end_ns, info.span_count, info.process_count) == (T0 - MS, T0 + 9 * MS, 1, 1)
    assert info.run_dir == str(run.resolve())


def test_end_record_attributes_merge_over_start_attributes(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + start(sid(1), "", "GET /items", "http", T0, {"http.request.method": "GET", "url.full": "http://x/items"},
                kind="CLIENT")
        + end(sid(1), T0 + 5 * MS, "ERROR", {"http.response.status_code": 500, "url.full": "http://x/items?p=1"})})

    store.load_run(run)

    span = spans(store)["GET /items"]
    assert span["attributes"] == {"http.request.method": "GET", "url.full": "http://x/items?p=1",
                                  "http.response.status_code": 500}
    assert (span["kind"], span["status"], span["end_ns"], span["duration_ns"], span["incomplete"]) == (
        "CLIENT", "ERROR", T0 + 5 * MS, 5 * MS, False)


def test_end_record_with_a_parent_reparents_the_span(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + start(sid(1), "", "process", "process", T0)
        + start(sid(2), sid(1), "work", "phase", T0 + MS)
        + complete(sid(3), sid(1), "late parent", "phase", T0 + MS, T0 + 2 * MS)
        + end(sid(2), T0 + 4 * MS, parent=sid(3))
        + end(sid(1), T0 + 9 * MS)})

    store.load_run(run)

    assert spans(store)["work"]["parent_span_id"] == sid(3)


def test_a_span_ended_twice_is_one_span_ending_at_its_last_end(store: Store, tmp_path: Path) -> None:
    """A process span ended for an exec that failed, reopened, ended again at exit."""
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + start(sid(1), "", "process", "process", T0)
        + end(sid(1), T0 + 3 * MS, attributes={"process.exit.code": 0})
        + end(sid(1), T0 + 9 * MS, attributes={"process.exit.code": 5})})

    store.load_run(run)

    _, rows = store.sql("SELECT end_ns, attributes->>'process.exit.code' FROM spans")
    assert rows == [(T0 + 9 * MS, "5")]


def test_a_server_span_written_whole_and_as_still_open_is_the_whole_one(store: Store, tmp_path: Path) -> None:
    """A handler thread wrote its SERVER span whole while the process's end (SIGTERM in the main
    thread) wrote it as still open: one span, complete, as the handler ended it."""
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + start(sid(1), "", "process", "process", T0)
        + complete(sid(2), sid(1), "GET /x", "http", T0 + MS, T0 + 5 * MS, kind="SERVER",
                   attributes={"http.response.status_code": 200})
        + start(sid(2), sid(1), "GET", "http", T0 + MS, kind="SERVER")
        + start(sid(3), sid(1), "GET", "http", T0 + 6 * MS, kind="SERVER")  # truly open at the end
        + end(sid(1), T0 + 9 * MS)})

    store.load_run(run)

    _, rows = store.sql("SELECT span_id, name, end_ns, incomplete FROM spans WHERE kind = 'SERVER' ORDER BY span_id")
    assert rows == [(sid(2), "GET /x", T0 + 5 * MS, False), (sid(3), "GET", T0 + 9 * MS, True)]


def test_incomplete_spans_end_at_the_last_time_known_for_their_file(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {
        "100-0000abcd.spans": header(100) + start(sid(1), "", "process", "process", T0)
        + complete(sid(2), sid(1), "import a", "import", T0 + MS, T0 + 2 * MS)
        + tick(T0 + 7 * MS),
        # The other file's later times must not leak into the first file's incomplete span.
        "200-0000abcd.spans": header(200) + start(sid(3), "", "child", "process", T0)
        + end(sid(3), T0 + 20 * MS),
    })

    result = store.load_run(run)

    process = spans(store)["process"]
    assert (process["end_ns"], process["duration_ns"], process["incomplete"], process["status"]) == (
        T0 + 7 * MS, 7 * MS, True, "UNSET")
    assert spans(store)["child"]["incomplete"] is False
    assert result.incomplete_spans == 1


def test_cmd_killed_before_its_last_record_lives_until_run_reaped_it(store: Store, tmp_path: Path) -> None:
    """CMD (run.json's pid) killed: its process span ends where `run` saw it exit, still incomplete;
    a top-level process of another pid (a shell CMD's child) keeps its file's last time known."""
    run = write_run(tmp_path / "run-1", {
        "100-0000abcd.spans": header(100) + start(sid(1), "", "process", "process", T0) + tick(T0 + 7 * MS),
        "300-0000abcd.spans": header(300) + start(sid(3), "", "other", "process", T0) + tick(T0 + 5 * MS),
    }, run_json={"run_id": "run-1", "start_ns": T0, "end_ns": T0 + 12 * MS, "exit_code": -9, "pid": 100})

    store.load_run(run)

    _, rows = store.sql("SELECT name, end_ns, incomplete FROM spans ORDER BY name")
    assert rows == [("other", T0 + 5 * MS, True), ("process", T0 + 12 * MS, True)]


def test_a_killed_process_whose_start_up_was_not_written_gets_what_its_file_bounds(store: Store,
                                                                                   tmp_path: Path) -> None:
    """interpreter.startup is written at its end: killed before the flush after it, the file still
    says the process started at 0, its agent was entered at 6 (the header) and flushed at 8 (the
    first tick). Not for a fork (agent there from its start), a process that ended, or one whose
    start-up was written."""
    def process(pid: int, entered: int, *records: str, ended: bool = False) -> str:
        return (header(pid, start=T0 + entered * MS) + start(sid(pid), "", "process", "process", T0)
                + "".join(records) + tick(T0 + 8 * MS) + tick(T0 + 20 * MS)
                + (end(sid(pid), T0 + 21 * MS) if ended else ""))

    run = write_run(tmp_path / "run-1", {
        "100-0000abcd.spans": process(100, 6),
        "200-0000abcd.spans": process(200, 0),  # a fork
        "300-0000abcd.spans": process(300, 6, ended=True),
        "400-0000abcd.spans": process(400, 6, complete(sid(401), sid(400), "interpreter.startup", "startup",
                                                       T0, T0 + 9 * MS)),
    })

    store.load_run(run)

    _, rows = store.sql("SELECT pid, parent_span_id, start_ns, end_ns, incomplete, attributes FROM spans "
                        "WHERE category = 'startup' ORDER BY pid")
    assert [row[:5] for row in rows] == [(100, sid(100), T0, T0 + 8 * MS, True), (400, sid(400), T0, T0 + 9 * MS, False)]
    assert json.loads(rows[0][5]) == {"python.startup.before_bootstrap_ns": 6 * MS, "selfopt_trace.startup.agent_ns": 2 * MS}
    store.load_run(run)  # loaded again: the same rows, once
    assert store.sql("SELECT count(*) FROM spans WHERE category = 'startup'")[1] == [(2,)]


def test_a_torn_last_line_is_skipped_with_a_warning_naming_the_file(store: Store, tmp_path: Path) -> None:
    torn = complete(sid(2), "", "import b", "import", T0, T0 + MS)[:40]  # a crash mid-write: no newline
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + complete(sid(1), "", "import a", "import", T0, T0 + MS) + torn})

    result = store.load_run(run)

    assert list(spans(store)) == ["import a"]
    assert result.skipped_lines == 1
    [warning] = result.warnings
    assert str(run / "spans" / "100-0000abcd.spans") in str(warning)
    assert "1 damaged line(s): line 3 (torn: no end of line)" in str(warning)


def test_damaged_lines_in_the_middle_are_skipped_and_counted(store: Store, tmp_path: Path) -> None:
    good = complete(sid(1), "", "import a", "import", T0, T0 + MS)
    damaged = [
        "garbage without tabs\n",
        good.replace("\t.\n", "\t.\textra\n"),               # 13 fields
        good.replace("\t.\n", "\tX\n"),                      # wrong terminator
        good.replace(str(T0), "17000x"),                     # not a number
        good.replace("{}", '{"unterminated": '),             # attributes not JSON
        line("Q", sid(9), start=T0),                         # unknown record type
    ]
    not_utf8 = good.replace("import a", "import ?").encode().replace(b"?", b"\xff")
    content = (header(100) + good + "".join(damaged)).encode() + not_utf8 + complete(
        sid(2), "", "import b", "import", T0, T0 + MS).encode()
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": content})

    result = store.load_run(run)

    assert sorted(spans(store)) == ["import a", "import b"]
    assert result.skipped_lines == len(damaged) + 1
    assert f"skipped {len(damaged) + 1} damaged line(s)" in str(result.warnings[0])


SCOPE = {"otel.scope.name": "app", "otel.scope.version": "1.0"}


def otel_span(n: int, attributes: dict, status: str = "UNSET") -> tuple:
    """An M record's row (docs/span-format.md): an OTel SDK span under span 1."""
    return (n, sid(1), TRACE, f"otel {n}", "INTERNAL", "other", T0 + n, T0 + n + MS, status, SCOPE, attributes)


def test_marshal_blocks_load_as_the_complete_spans_they_hold(store: Store, tmp_path: Path) -> None:
    """An M record holds complete spans as raw values: they load as the X records of the same fields
    would, attributes encoded as JSON (the span's over its scope's, a tuple as a list, NaN as null,
    text that is not UTF-8 escaped), beside the text records of the same file, in a version 2 file."""
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100, version=2)
        + start(sid(1), "", "process", "process", T0)
        + block(otel_span(2, {"s": "x", "n": 7, "f": 0.5, "b": True, "t": ("a", "b"), "nan": float("nan")}),
                otel_span(3, {"otel.scope.name": "mine", "path": "\udcff/x", "q": 'say "hi"\n'}, "ERROR"),
                otel_span(4, {}, "OK"))
        + complete(sid(5), sid(1), "import a", "import", T0, T0 + MS)
        + end(sid(1), T0 + 9 * MS)})

    result = store.load_run(run)

    assert (result.spans, result.warnings) == (5, [])
    loaded = spans(store)
    assert loaded["otel 2"]["attributes"] == {**SCOPE, "s": "x", "n": 7, "f": 0.5, "b": True, "t": ["a", "b"],
                                              "nan": None}
    assert loaded["otel 3"]["attributes"] == {"otel.scope.name": "mine", "otel.scope.version": "1.0",
                                              "path": "\\xff/x", "q": 'say "hi"\n',
                                              "selfopt_trace.escaped": ["path"]}
    assert loaded["otel 4"]["attributes"] == SCOPE
    assert [(loaded[f"otel {n}"]["span_id"], loaded[f"otel {n}"]["parent_span_id"], loaded[f"otel {n}"]["trace_id"],
             loaded[f"otel {n}"]["start_ns"], loaded[f"otel {n}"]["duration_ns"], loaded[f"otel {n}"]["status"],
             loaded[f"otel {n}"]["incomplete"]) for n in (2, 3, 4)] == [
        (sid(n), sid(1), TRACE, T0 + n, MS, status, False) for n, status in ((2, "UNSET"), (3, "ERROR"), (4, "OK"))]
    assert {"import a", "process"} <= set(loaded)


def test_a_marshal_block_longer_than_the_loaders_reads_loads_whole(store: Store, tmp_path: Path) -> None:
    """The loader copies a file with M records a MiB at a time: a block longer than one read (a
    flush of 6,000 spans) and the lines around it all load."""
    big = block(*(otel_span(n, {"n": n, "text": "x" * 40}) for n in range(10, 6010)))
    assert len(big) > 1 << 20
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100, version=2)
        + complete(sid(5), sid(1), "before", "import", T0, T0 + MS) + big
        + complete(sid(6), sid(1), "after", "import", T0, T0 + MS)})

    result = store.load_run(run)

    assert (result.spans, result.warnings) == (6002, [])
    assert spans(store, "name = 'otel 6009'")["otel 6009"]["attributes"] == {**SCOPE, "n": 6009, "text": "x" * 40}


def test_a_block_of_columns_loads_as_the_rows_it_stands_for(store: Store, tmp_path: Path) -> None:
    """The agent writes a block as columns (spanblock.block_line): a value every span shares once,
    the times as the first start, offsets and durations where all are ints. Its spans load as the
    same spans written as flat rows: shared and differing parents, names, kinds and statuses, a
    start before the first's, a float start (the times then as they are), one span alone."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import spanblock

    shared = [otel_span(n, {"n": n}) for n in (2, 3, 4)]
    mixed = [otel_span(5, {"n": 5}), (6, "", TRACE, "other", 2, "", T0 - 7, T0 + MS, 2, SCOPE, {"http.url": "x"}),
             (7, sid(5), TRACE, "otel 7", "SERVER", "http", T0 + 3, T0 + 4, "OK", {}, {"f": 0.5})]
    floats = [otel_span(8, {}), (9, sid(1), TRACE, "otel 9", "INTERNAL", "other", 1.5, T0, "UNSET", SCOPE, {})]
    groups = (shared, mixed, floats, [otel_span(10, {"alone": True})])
    loaded = []
    for name, text in (("columns", "".join(spanblock.block_line([v for span in group for v in span]) for group in groups)),
                       ("rows", "".join(block(*group) for group in groups))):
        run = write_run(tmp_path / name, {"100-0000abcd.spans": header(100, version=2) + text}, run_json={"run_id": name})
        assert store.load_run(run).warnings == []
        columns, rows = store.sql(f"SELECT * EXCLUDE (run_id) FROM spans WHERE run_id = '{name}' ORDER BY span_id")
        loaded.append(rows)
    assert loaded[0] == loaded[1] and len(loaded[0]) == 9
    written = spanblock.columns([v for span in shared for v in span])
    assert written[1] == (sid(1),) and written[3] == ["otel 2", "otel 3", "otel 4"]
    assert written[6] == (T0 + 2, [0, 1, 2]) and written[7] == [MS, MS, MS]
    assert spanblock.columns([v for span in floats for v in span])[6] == [T0 + 8, 1.5]


PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
OTHER_PYTHONS = [pytest.param(PYENV / version / "bin" / "python", id=version, marks=pytest.mark.skipif(
    not (PYENV / version / "bin" / "python").exists(), reason=f"no Python {version} (pyenv)"))
    for version in ("3.8.18", "3.13.0")]


@pytest.mark.parametrize("python", OTHER_PYTHONS)
def test_a_marshal_block_written_by_another_python_loads_as_this_ones(store: Store, tmp_path: Path, python: Path) -> None:
    """A traced program may run any Python 3.8-3.13: the block its agent writes (the agent's own
    spanblock.block_line, run by that interpreter) loads as the block this Python writes."""
    values_code = (f"[2**63 + 5, {sid(1)!r}, {TRACE!r}, 'n\\u00e9', 'CLIENT', 'http', {T0}, {T0 + MS}, 'ERROR', {SCOPE!r},"
                   " {'f': 0.1, 'nan': float('nan'), 't': ('a', 'b'), 'b': True, 'big': 2**70, 'neg': -3, 's': '\\udcff'}]")
    values = eval(values_code)
    code = ("import sys\nfrom selfopt_trace_agent import spanblock\n"
            f"sys.stdout.write(spanblock.block_line({values_code}))\n")
    other = subprocess.run([str(python), "-c", code], capture_output=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(Path(spanfile.__file__).parent.parent)}).stdout
    loaded = []
    for name, line in (("other", other.decode("ascii")), ("this", block(tuple(values)))):  # hex: ASCII
        run = write_run(tmp_path / name, {"100-0000abcd.spans": header(100, version=2) + line},
                        run_json={"run_id": name})
        assert store.load_run(run).warnings == []
        columns, rows = store.sql(f"SELECT * EXCLUDE (run_id) FROM spans WHERE run_id = '{name}'")
        loaded.append(rows)
    assert loaded[0] == loaded[1] and len(loaded[0]) == 1
    assert json.loads(dict(zip(columns, loaded[0][0]))["attributes"])["big"] == 2**70


def test_a_damaged_marshal_block_loses_nothing_before_it_and_is_reported(store: Store, tmp_path: Path) -> None:
    """A block cut short (its hex, the line still whole), one that is not a list of spans, and one torn
    by a crash mid-write (no newline): each is one damaged line, named; the spans before and between
    them load."""
    whole = block(otel_span(2, {"n": 1}), otel_span(3, {"n": 2}))
    cut_short = whole.replace("\t.\n", "")[:-20] + "\t.\n"
    not_spans = block((1, 2, 3))
    torn = block(otel_span(8, {"n": 8}))[:-30]
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100, version=2)
        + whole + cut_short + complete(sid(5), sid(1), "between", "import", T0, T0 + MS)
        + not_spans + block(otel_span(6, {"n": 6})) + torn})

    result = store.load_run(run)

    assert sorted(spans(store)) == ["between", "otel 2", "otel 3", "otel 6"]
    assert result.skipped_lines == 3
    [warning] = result.warnings
    assert str(run / "spans" / "100-0000abcd.spans") in str(warning)
    assert "3 damaged line(s): line 3 (a marshal block that does not read (" in str(warning)
    assert "line 5 (a marshal block that is not a list of 11 values a span)" in str(warning)
    assert "line 7 (torn: no end of line)" in str(warning)


def test_a_stray_carriage_return_does_not_fail_the_load(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + complete(sid(1), "", "import a", "import", T0, T0 + MS)
        + "X\tbad\rline\t\n" + complete(sid(2), "", "import b", "import", T0, T0 + MS)})

    result = store.load_run(run)

    assert sorted(spans(store)) == ["import a", "import b"]
    assert result.skipped_lines == 1


def test_files_of_an_unknown_version_or_format_are_refused(store: Store, tmp_path: Path) -> None:
    body = complete(sid(1), "", "import a", "import", T0, T0 + MS)
    run = write_run(tmp_path / "run-1", {
        "100-0000abcd.spans": header(100, version=99) + body,
        "200-0000abcd.spans": header(200, format_name="something/else") + body,
        "300-0000abcd.spans": body,  # no header at all
        "400-0000abcd.spans": header(400) + complete(sid(4), "", "kept", "import", T0, T0 + MS),
    })

    result = store.load_run(run)

    assert list(spans(store)) == ["kept"]
    assert (result.files, result.skipped_files) == (1, 3)
    messages = [str(warning) for warning in result.warnings]
    assert any("100-0000abcd.spans" in m and "version 99 is not supported" in m for m in messages)
    assert any("200-0000abcd.spans" in m and "not a span file" in m for m in messages)
    assert any("300-0000abcd.spans" in m and "no header record" in m for m in messages)


def test_garbage_and_empty_files_warn_without_failing(store: Store, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "BATCH_BYTES", 1)  # one file per batch: batches where no file is loadable
    run = write_run(tmp_path / "run-1", {
        "100-0000abcd.spans": os.urandom(20_000) + b"\r\x00\t\t\n",
        "200-0000abcd.spans": b"",
        "300-0000abcd.spans": header(300) + complete(sid(1), "", "kept", "import", T0, T0 + MS),
    })

    result = store.load_run(run)

    assert list(spans(store)) == ["kept"]
    messages = [str(warning) for warning in result.warnings]
    assert any("100-0000abcd.spans" in m and "file skipped" in m for m in messages)
    assert any("200-0000abcd.spans" in m and "file skipped" in m for m in messages)


def test_loading_twice_gives_the_same_rows_once(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + start(sid(1), "", "process", "process", T0) + end(sid(1), T0 + MS)
        + diagnostic(T0, "hook.failed", "urllib3 hook could not be installed")
        + "torn"}, run_json={"run_id": "run-1"})

    first = store.load_run(run)
    second = store.load_run(run)

    assert (first.spans, second.spans) == (1, 1)
    counts = store.sql("SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM runs), "
                       "(SELECT count(*) FROM diagnostics)")[1]
    assert counts == [(1, 1, 2)]  # the D record and the loader's warning about the torn line


def test_diagnostics_and_loader_warnings_go_to_the_diagnostics_table(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + diagnostic(T0 + MS, "hook.failed", "urllib3 hook could not be installed") + "torn"})

    result = store.load_run(run)

    assert result.diagnostics == 1
    _, rows = store.sql("SELECT source_file, pid, time_ns, code, message FROM diagnostics ORDER BY code")
    assert rows[0] == ("100-0000abcd.spans", 100, T0 + MS, "hook.failed", "urllib3 hook could not be installed")
    assert rows[1][0] == "100-0000abcd.spans" and rows[1][3] == "loader.damaged_lines"


def process_tree(child_end: str) -> dict[str, str]:
    """A parent process that ran a child (pid 200) in a subprocess span that saw its exit code 3."""
    return {
        "100-0000abcd.spans": header(100)
        + start(sid(1), "", "process", "process", T0, {"process.pid": 100})
        + start(sid(2), sid(1), "subprocess python", "subprocess", T0 + MS)
        + end(sid(2), T0 + 8 * MS, "ERROR", {"process.pid": 200, "process.exit.code": 3})
        + end(sid(1), T0 + 9 * MS),
        "200-0000abcd.spans": header(200)
        + start(sid(3), sid(2), "process", "process", T0 + 2 * MS, {"process.pid": 200}) + child_end,
    }


def test_a_child_process_gets_its_exit_code_from_the_parents_subprocess_span(store: Store, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "BATCH_BYTES", 1)  # one file per batch: refinements work across batches
    run = write_run(tmp_path / "run-1", process_tree(child_end=tick(T0 + 5 * MS)))

    store.load_run(run)

    _, rows = store.sql("SELECT pid, attributes->>'process.exit.code', incomplete FROM spans "
                        "WHERE name = 'process' ORDER BY pid")
    assert rows == [(100, None, False), (200, "3", True)]


def test_an_exit_code_is_only_taken_from_the_subprocess_span_of_the_same_pid(store: Store, tmp_path: Path) -> None:
    files = process_tree(child_end=tick(T0 + 5 * MS))
    files["100-0000abcd.spans"] = files["100-0000abcd.spans"].replace('"process.pid": 200', '"process.pid": 999')
    run = write_run(tmp_path / "run-1", files)

    store.load_run(run)

    assert "process.exit.code" not in spans(store, "pid = 200")["process"]["attributes"]


def test_the_root_process_gets_the_exit_code_of_run_json(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", process_tree(child_end=end(sid(3), T0 + 7 * MS, attributes={
        "process.exit.code": 4})), run_json={"run_id": "run-1", "exit_code": 2})

    store.load_run(run)

    _, rows = store.sql("SELECT pid, attributes->>'process.exit.code' FROM spans WHERE name = 'process' ORDER BY pid")
    assert rows == [(100, "2"), (200, "4")]  # a code the child wrote itself is kept
    assert store.runs()[0].exit_code == 2


def test_run_json_exit_code_is_the_roots_only_when_the_root_is_cmd(store: Store, tmp_path: Path) -> None:
    """CMD was a shell (pid 50): its Python child, the root process span here, keeps no code of CMD's."""
    run = write_run(tmp_path / "run-1", process_tree(child_end=end(sid(3), T0 + 7 * MS)),
                    run_json={"run_id": "run-1", "exit_code": 2, "pid": 50})

    store.load_run(run)

    _, rows = store.sql("SELECT pid, attributes->>'process.exit.code' FROM spans WHERE name = 'process' ORDER BY pid")
    assert rows == [(100, None), (200, "3")]  # the child's from the subprocess span that saw it
    assert store.runs()[0].exit_code == 2


def test_without_run_json_the_run_is_named_after_its_directory(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "20240101-abc", {"100-0000abcd.spans": header(100, service="worker")
        + start(sid(1), "", "process", "process", T0, {"process.exit.code": 1}) + end(sid(1), T0 + MS)})

    result = store.load_run(run)

    [info] = store.runs()
    assert (result.run_id, info.run_id, info.exit_code, info.service_name) == ("20240101-abc",) * 2 + (1, "worker")
    assert (info.start_ns, info.end_ns) == (T0, T0 + MS)


def test_an_unreadable_run_json_is_a_warning(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-9", {"100-0000abcd.spans": header(100)})
    (run / "run.json").write_text("{not json", encoding="utf-8")

    result = store.load_run(run)

    assert result.run_id == "run-9"
    assert "run.json" in str(result.warnings[0])


def test_run_json_notes_are_the_run_s_unless_the_loader_is_given_them(store: Store, tmp_path: Path) -> None:
    """The watchers' notes `run` wrote in run.json (text only; bytes that are not UTF-8 escaped), or
    those `run` passes itself; not a list: none."""
    run = write_run(tmp_path / "run-1", process_tree(child_end=end(sid(3), T0 + 7 * MS)),
                    run_json={"run_id": "run-1", "notes": ["a", 7, "b\udcff"]})
    store.load_run(run)
    assert store.sql("SELECT notes, damaged_lines FROM runs")[1] == [(["a", "b\\xff"], 0)]
    store.load_run(run, notes=["given"])
    assert store.sql("SELECT notes FROM runs")[1] == [(["given"],)]
    (run / "run.json").write_text(json.dumps({"run_id": "run-1", "notes": "not a list"}), encoding="utf-8")
    store.load_run(run)
    assert store.sql("SELECT notes FROM runs")[1] == [([],)]


def test_records_view_answers_logfire_style_sql(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(
        100, resource={"service.name": "api", "service.version": "1.2", "deployment.environment": "dev"})
        + complete(sid(1), "", "ok", "phase", T0, T0 + 250 * MS)
        + complete(sid(2), "", "boom", "phase", T0, T0 + 1500 * MS, "ERROR",
                   {"exception.type": "ValueError", "exception.message": "bad value"})
        # How the agent ends a span an exception went through, and an HTTP error that is no exception.
        + complete(sid(3), "", "json.loads", "parse", T0, T0 + 500 * MS, "ERROR", {"error.type": "JSONDecodeError"})
        + complete(sid(4), "", "GET", "http", T0, T0 + MS, "ERROR", {"error.type": "500"}, kind="CLIENT")})
    store.load_run(run)

    assert store.sql("SELECT span_name, duration FROM records WHERE is_exception ORDER BY duration") == (
        ["span_name", "duration"], [("json.loads", 0.5), ("boom", 1.5)])
    _, rows = store.sql(
        "SELECT start_timestamp, end_timestamp, level, otel_status_code, otel_status_message, exception_type, "
        "attributes->>'exception.message', service_name, service_version, deployment_environment, process_pid, "
        "tags, kind, message FROM records WHERE span_name = $1", ["boom"])
    started = datetime.fromtimestamp(T0 / 1e9, timezone.utc)
    assert rows == [(started, started + timedelta(seconds=1.5), "error", "ERROR", "ValueError: bad value",
                     "ValueError", "bad value", "api", "1.2", "dev", 100, ["phase"], "span", "boom")]


def test_a_database_locked_by_another_process_names_it(tmp_path: Path) -> None:
    db = tmp_path / "traces.duckdb"
    Store(db).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
                               "sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError) as raised:
            Store(db)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    message = str(raised.value)
    assert str(db) in message and f"PID {holder.pid}" in message
    assert raised.value.path == db


def test_an_unusable_database_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(StoreOpenError, match="cannot open trace database"):
        Store(blocker / "traces.duckdb")
    not_a_database = tmp_path / "notes.duckdb"
    not_a_database.write_text("hello " * 1000, encoding="utf-8")
    with pytest.raises(StoreOpenError, match=str(not_a_database)):
        Store(not_a_database)


def test_delete_run_and_missing_runs(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": header(100)
        + complete(sid(1), "", "a", "phase", T0, T0 + MS) + complete(sid(2), "", "b", "phase", T0, T0 + MS)})
    store.load_run(run)

    assert store.delete_run("run-1") == 2
    assert store.runs() == [] and store.sql("SELECT count(*) FROM spans")[1] == [(0,)]
    with pytest.raises(RunNotFoundError):
        store.delete_run("run-1")
    with pytest.raises(RunNotFoundError):
        store.load_run(tmp_path / "no-such-run")


def test_a_bad_query_is_a_query_error(store: Store) -> None:
    with pytest.raises(QueryError, match="no_such_table"):
        store.sql("SELECT * FROM no_such_table")


def test_lines_from_the_agents_writer_load(store: Store, tmp_path: Path) -> None:
    """The writer's own line functions and the loader agree on the format."""
    content = (spanfile.header_line(T0, "run-1", 100, {"service.name": "svc"})
               + spanfile.start_line(sid(1), "", "0" * 31 + "1", "process", "INTERNAL", "process", T0, "{}")
               + spanfile.complete_line(sid(2), sid(1), "0" * 31 + "1", "import json", "INTERNAL", "import",
                                        T0, T0 + MS, "UNSET", spanfile.encode({"code.namespace": "json"}))
               + spanfile.tick_line(T0 + 2 * MS)
               + spanfile.diagnostic_line(T0, "test.code", "tab\tand newline\n")
               + spanfile.end_line(sid(1), T0 + 3 * MS, "OK", spanfile.encode({"process.exit.code": 0})))
    run = write_run(tmp_path / "run-1", {"100-0000abcd.spans": content})

    result = store.load_run(run)

    assert (result.spans, result.diagnostics, result.warnings) == (2, 1, [])
    assert spans(store)["process"]["attributes"] == {"process.exit.code": 0}
