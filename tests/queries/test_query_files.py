"""Named queries: headers read from the .sql files, parameters bound (never pasted), clear errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from selfopt_trace.errors import QueryError
from selfopt_trace.queries import (QueryDefinitionError, QueryNotFoundError, builtin_dir, get_query, load_queries,
                                   parse_query, run_query)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("breakdown", "roundtrip", "serialization", "subprocess", "imports", "critical_path", "slowest_spans",
           "process_tree")


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.sql"
    path.write_text(text)
    return path


def test_every_shipped_query_says_what_it_answers_its_parameters_and_columns() -> None:
    queries = load_queries()
    assert set(SHIPPED) <= set(queries)
    for name in SHIPPED:
        query = queries[name]
        assert query.summary and query.summary[0].isupper(), name
        assert "run_id" in [p.name for p in query.parameters], name
        assert all(p.description for p in query.parameters), name
        assert query.columns and all(c.description for c in query.columns), name


def test_a_header_gives_types_defaults_and_wrapped_descriptions(tmp_path: Path) -> None:
    path = write(tmp_path, "mine", """-- Spans of one category.
-- Longer description
-- on two lines.
--
-- Parameters:
--   run_id                the run
--   limit = 5             rows
--   ratio = 0.5           a float
--   name: text = null     a name, or null; this description
--                         goes on here
--   flag = false          a boolean
-- Columns:
--   name                  the name
SELECT name FROM spans WHERE run_id = $run_id AND ($name IS NULL OR name = $name) LIMIT $limit
""")
    query = parse_query(path)
    assert query.name == "mine" and query.summary == "Spans of one category."
    assert query.description == "Spans of one category. Longer description on two lines."
    params = {p.name: p for p in query.parameters}
    assert params["run_id"].required and params["run_id"].type is str
    assert (params["limit"].type, params["limit"].default) == (int, 5)
    assert (params["ratio"].type, params["ratio"].default) == (float, 0.5)
    assert (params["name"].type, params["name"].default) == (str, None)
    assert params["name"].description == "a name, or null; this description goes on here"
    assert (params["flag"].type, params["flag"].default) == (bool, False)
    assert query.bind({"run_id": "r", "limit": "7", "flag": "true"}) == {
        "run_id": "r", "limit": 7, "ratio": 0.5, "name": None, "flag": True}


def test_values_are_bound_never_pasted_into_the_sql(store, tmp_path: Path) -> None:
    query = parse_query(write(tmp_path, "echo", """-- Echo a value.
-- Parameters:
--   run_id    the run
--   text: text = null  anything
SELECT $text AS text, (SELECT count(*) FROM spans WHERE run_id = $run_id) AS spans
"""))
    hostile = "x'; DROP TABLE spans; --"
    result = run_query(store, query, {"run_id": hostile, "text": hostile})
    assert result.rows == [(hostile, 0)]
    assert store.sql("SELECT count(*) FROM spans")[1] == [(0,)]


def test_values_written_into_a_query_planned_ahead_are_the_values_bound(store, tmp_path: Path) -> None:
    """PlannedQuery writes the checked values in as literals: the same values of the same types as
    bound, a quote or a `$name` in a text as it was."""
    query = parse_query(write(tmp_path, "typed", """-- Each value and its type.
-- Parameters:
--   text: text = null  anything
--   number: int = null   an int
--   ratio: float = null  a float
--   flag: bool = null    a boolean
SELECT $text AS text, typeof($text) AS t, $number AS number, typeof($number) AS n, $ratio AS ratio,
       typeof($ratio) AS r, $flag AS flag, typeof($flag) AS f, (SELECT count(*) FROM spans) AS spans
"""))
    hostile = "x'; DROP TABLE spans; -- $number \\'"
    for values in ({}, {"text": hostile, "number": 7, "ratio": 0.1, "flag": True},
                   {"text": "", "number": -2 ** 63, "ratio": -1e300, "flag": False}, {"number": 2 ** 40, "ratio": 5.0}):
        bound = query.bind(values)
        assert store.sql(query.written_with(bound)) == store.sql(query.sql, bound), values
    assert store.sql(query.written_with(query.bind({"text": hostile})))[1][0][0] == hostile


def test_a_missing_parameter_is_named(store) -> None:
    with pytest.raises(QueryError, match=r"query breakdown needs the parameter run_id \(the run\)"):
        run_query(store, "breakdown", {})


def test_an_unknown_parameter_lists_the_real_ones(store) -> None:
    with pytest.raises(QueryError, match=r"imports has no parameter colour; its parameters: limit, order, pid, run_id"):
        run_query(store, "imports", {"run_id": "r", "colour": "red"})


def test_a_value_of_the_wrong_type_says_what_was_expected(store) -> None:
    with pytest.raises(QueryError, match=r"parameter limit must be int, not 'ten'"):
        run_query(store, "imports", {"run_id": "r", "limit": "ten"})


def test_an_unknown_query_lists_those_that_exist() -> None:
    with pytest.raises(QueryNotFoundError) as error:
        get_query("brekdown")
    assert "no query named 'brekdown'; available: breakdown, critical_path" in str(error.value)


def test_a_sql_error_names_the_query_file_and_line(store, tmp_path: Path) -> None:
    path = write(tmp_path, "broken", """-- A query with a mistake on line 6.
-- Parameters:
--   run_id   the run
SELECT name
FROM spans
WHERE run_id = $run_id AND no_such_column = 1
""")
    with pytest.raises(QueryError) as error:
        run_query(store, parse_query(path), {"run_id": "r"})
    assert f"query broken failed ({path}:6):" in str(error.value)
    assert "no_such_column" in str(error.value)


def test_an_error_without_a_line_still_names_the_file(store, tmp_path: Path) -> None:
    path = write(tmp_path, "fails", """-- Fails while running.
-- Parameters:
--   run_id   the run
SELECT error($run_id) AS n
""")
    with pytest.raises(QueryError, match=rf"query fails failed \({path}\): Invalid Input Error: boom"):
        run_query(store, parse_query(path), {"run_id": "boom"})


@pytest.mark.parametrize("header, message", [
    ("SELECT 1\n", r"mine.sql:1: a query starts with a comment saying what it answers"),
    ("-- Uses an undeclared parameter.\nSELECT $nope\n", r"uses \$nope but its header's Parameters do not declare it"),
    ("-- Bad parameter line.\n-- Parameters:\n--   9lives  cats\nSELECT 1\n", r"mine.sql:3: cannot read the parameter line"),
    ("-- Bad type.\n-- Parameters:\n--   n: integer = 1  n\nSELECT $n\n", r"mine.sql:3: unknown type 'integer'"),
    ("-- Bad default.\n-- Parameters:\n--   n = [1]  n\nSELECT $n\n", r"mine.sql:3: default '\[1\]' is not a number"),
])
def test_a_malformed_header_is_reported_with_its_line(tmp_path: Path, header: str, message: str) -> None:
    with pytest.raises(QueryDefinitionError, match=message):
        parse_query(write(tmp_path, "mine", header))


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.sql"
    path.write_bytes(b"-- Spans.\n-- Parameters:\n--   run_id  the r\xf4le\nSELECT 1\n")
    with pytest.raises(QueryDefinitionError, match=rf"^{path}:3: not UTF-8 text \(byte 0xf4\); save the file as UTF-8$"):
        parse_query(path)


def test_a_bad_file_is_left_out_of_the_list_when_asked_and_raises_otherwise(tmp_path: Path) -> None:
    write(tmp_path / "mine", "good", "-- Good.\nSELECT 1 AS one\n")
    write(tmp_path / "mine", "imports", "-- Replaces imports, badly.\nSELECT $nope\n")
    (tmp_path / "mine" / "folder.sql").mkdir()  # no file: not a query
    with pytest.raises(QueryDefinitionError, match="imports.sql: uses \\$nope"):
        load_queries([tmp_path / "mine"])
    bad: list[QueryDefinitionError] = []
    queries = load_queries([tmp_path / "mine"], bad)
    assert "good" in queries and "breakdown" in queries
    assert "imports" not in queries  # not the shipped one: `query imports` would read the bad file
    assert [str(error) for error in bad] == [
        f"{tmp_path / 'mine' / 'imports.sql'}: uses $nope but its header's Parameters do not declare it"]


def test_a_query_with_no_statement_is_a_clear_error(store, tmp_path: Path) -> None:
    path = write(tmp_path, "empty", "-- Only a header.\n;\n")
    with pytest.raises(QueryError, match=rf"query empty failed \({path}\): no SQL statement to run"):
        run_query(store, parse_query(path))
    with pytest.raises(QueryError, match="no SQL statement to run"):
        store.sql("  ")


def test_a_users_folder_adds_queries_and_may_replace_a_shipped_one(tmp_path: Path) -> None:
    write(tmp_path / "mine", "extra", "-- My own question.\n-- Parameters:\n--   run_id  the run\nSELECT 1 AS one\n")
    write(tmp_path / "mine", "imports", "-- My imports.\n-- Parameters:\n--   run_id  the run\nSELECT 2 AS two\n")
    queries = load_queries([tmp_path / "mine"])
    assert queries["extra"].summary == "My own question."
    assert queries["imports"].summary == "My imports." and queries["breakdown"].path.parent == builtin_dir()
    with pytest.raises(QueryDefinitionError, match="queries folder not found"):
        load_queries([tmp_path / "missing"])


def test_the_wheel_ships_the_queries_and_the_report_assets(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, timeout=300)
    assert built.returncode == 0, built.stderr.decode()
    (wheel,) = tmp_path.glob("selfopt_trace-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        assert f"selfopt_trace/_queries/{name}.sql" in names
    assert {"selfopt_trace/report/report.js", "selfopt_trace/report/report.css"} <= names


@pytest.mark.parametrize("params, message", [
    ({"order": "bogus"}, "parameter order must be one of 'cumulative', 'self', not 'bogus'"),  # silently cumulative
    ({"limit": "-1"}, "parameter limit must be >= 0, not '-1'"),  # DuckDB's Binder Error, on several lines
    ({"limit": "99999999999999999999"}, "parameter limit must be <= 9223372036854775807, not '99999999999999999999'"),
    ({"limit": -1}, "parameter limit must be >= 0, not -1"),  # from Python too
])
def test_a_value_the_header_does_not_allow_is_a_one_line_error(store, params: dict, message: str) -> None:
    with pytest.raises(QueryError) as error:
        run_query(store, "imports", {"run_id": "r", **params})
    assert str(error.value) == message


def test_a_header_bounds_a_parameter_or_lists_its_values(tmp_path: Path) -> None:
    query = parse_query(write(tmp_path, "mine", """-- Checked parameters.
-- Parameters:
--   n = 5 [>= 1, <= 9]    a count
--   ratio: float = null [>= 0]  a share
--   order = 'a' ['a', 'b']  the order
SELECT $n, $ratio, $order
"""))
    n, ratio, order = query.parameters
    assert (n.default, n.minimum, n.maximum, n.description) == (5, 1, 9, "a count")
    assert (ratio.type, ratio.minimum, order.choices, order.description) == (float, 0, ("a", "b"), "the order")
    assert query.bind({"n": "9", "ratio": "0.5", "order": "b"}) == {"n": 9, "ratio": 0.5, "order": "b"}
    assert query.bind({"ratio": "null"}) == {"n": 5, "ratio": None, "order": "a"}  # null: not given
    for values, message in (({"n": "10"}, "parameter n must be <= 9, not '10'"),
                            ({"ratio": "-0.1"}, "parameter ratio must be >= 0, not '-0.1'"),
                            ({"ratio": "inf"}, "parameter ratio must be a finite number, not 'inf'"),
                            ({"order": "c"}, "parameter order must be one of 'a', 'b', not 'c'")):
        with pytest.raises(QueryError) as error:
            query.bind(values)
        assert str(error.value) == message


@pytest.mark.parametrize("line, message", [
    ("n = 0 [>= 1]  n", r"mine.sql:3: the default of n must be >= 1"),
    ("n = 1 [> 1]  n", r"mine.sql:3: cannot read the check '> 1' of n"),
    ("n = 1 ['a']  n", r"mine.sql:3: cannot read the check \"'a'\" of n"),
    ("n = 1 [1, >= 0]  n", r"mine.sql:3: n: give either the values allowed or bounds"),
])
def test_a_check_that_cannot_hold_is_reported_with_its_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(QueryDefinitionError, match=message):
        parse_query(write(tmp_path, "mine", f"-- Checked.\n-- Parameters:\n--   {line}\nSELECT $n\n"))
