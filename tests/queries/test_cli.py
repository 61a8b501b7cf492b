"""`selfopt-trace query / compare / report / export` as real processes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from selfopt_trace.store import Store
from tests.cli.conftest import Cli
from tests.queries.builder import RunBuilder


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def small_run(run_id: str, import_ms: float, command: str = "python main.py", group: str | None = None,
              started_ms: float = 0) -> RunBuilder:
    run = RunBuilder(run_id)
    main = run.process(100, 0, 100)
    run.span(100, "interpreter.startup", "startup", 0, 10, main)
    run.span(100, "import slow", "import", 10, 10 + import_ms, main)
    run.json_fields = {"command": command, **({"group_id": group} if group else {})}
    run.started_ms = started_ms
    return run


def load(cli: Cli, *runs: RunBuilder) -> None:
    cli.home.mkdir(parents=True, exist_ok=True)
    with Store(cli.db) as store:
        for run in runs:
            run.load(store, cli.home, run.started_ms, **run.json_fields)


def test_list_shows_each_query_with_what_it_answers(cli: Cli) -> None:
    done = cli("query", "--list")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    for name in ("breakdown", "roundtrip", "serialization", "subprocess", "imports", "critical_path",
                 "slowest_spans", "process_tree"):
        assert name in out
    assert "Where the wall time of the run went" in out and "limit=30" in out


@pytest.mark.parametrize("fmt", ["csv", "json", "markdown", "table"])
def test_query_prints_rows_in_each_format(cli: Cli, fmt: str) -> None:
    load(cli, small_run("r1", 30))
    done = cli("query", "breakdown", "--run", "r1", "--format", fmt)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert {r["category"]: float(r["wall_ms"]) for r in rows}["imports"] == 30
    elif fmt == "json":
        assert {r["category"]: r["wall_ms"] for r in json.loads(out)}["total"] == 100
    elif fmt == "markdown":
        assert out.startswith("| category | wall_ms | wall_pct | busy_ms | spans |\n|---|---:|---:|---:|---:|\n")
        assert "| imports | 30.0 | 30.0 | 30.0 | 1 |" in out
    else:
        assert "imports" in out and "(18 rows)" in out


def test_parameters_and_the_latest_run_by_default(cli: Cli) -> None:
    load(cli, small_run("r2", 40, started_ms=1), small_run("r1", 30))
    done = cli("query", "slowest_spans", "--param", "category=import", "-p", "limit=1", "-f", "json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["name"] == "import slow" and row["duration_ms"] == 40  # r2 started last: the latest


def test_users_own_queries_run_beside_the_shipped_ones(cli: Cli, tmp_path: Path) -> None:
    load(cli, small_run("r1", 30))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "count.sql").write_text("-- Spans per category.\n-- Parameters:\n--   run_id  the run\n"
                                    "SELECT category, count(*) AS n FROM spans WHERE run_id = $run_id "
                                    "GROUP BY category ORDER BY category\n")
    done = cli("query", "count", "--queries", str(mine), "-f", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["category,n", "import,1", "process,1", "startup,1"]
    listed = cli("query", "--list", "--queries", str(mine)).stdout.decode()
    assert "Spans per category." in listed


@pytest.mark.parametrize("args, message", [
    (["query", "nosuch"], "no query named 'nosuch'; available: breakdown,"),
    (["query", "breakdown", "--run", "zzz"], "run not found: zzz; the most recent runs are:\n  r1"),
    (["query", "imports", "-p", "limit"], "'limit': write a parameter as key=value"),
    (["query", "imports", "-p", "colour=red"], "has no parameter colour"),
    (["query", "imports", "-p", "order=bogus"], "parameter order must be one of 'cumulative', 'self', not 'bogus'"),
    (["query", "imports", "-p", "limit=99999999999999999999"], "parameter limit must be <= 9223372036854775807"),
    (["query", "imports", "-p", "run_id=r1", "--run", "r1"], "--run r1 and -p run_id=r1 both name the run: give one"),
    (["query", "imports", "-p", "run_id=zzz"], "run not found: zzz; the most recent runs are:\n  r1"),
    (["compare", "r1", "zzz"], "run not found: zzz"),
    (["compare", "r1", "r1", "--spans", "-5"], "Invalid value for '--spans'"),  # not "all but the last 5"
    (["report", "zzz"], "run not found: zzz"),
    (["export", "zzz", "-o", "out.json"], "run not found: zzz"),
])
def test_bad_input_gets_a_clear_error(cli: Cli, args: list[str], message: str) -> None:
    load(cli, small_run("r1", 30))
    done = cli(*args)
    assert done.returncode == 2
    assert message in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_a_value_the_query_does_not_allow_is_one_line_not_duckdb_s_error(cli: Cli) -> None:
    load(cli, small_run("r1", 30))
    done = cli("query", "imports", "-p", "limit=-1")
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == "selfopt-trace: error: parameter limit must be >= 0, not '-1'\n"


def test_the_run_is_named_once_by_run_or_by_its_parameter(cli: Cli, tmp_path: Path) -> None:
    load(cli, small_run("r1", 30), small_run("s2", 40, started_ms=1))
    done = cli("query", "slowest_spans", "-p", "run_id=r1", "--run", "s2", "-p", "category=import")
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == "selfopt-trace: error: --run s2 and -p run_id=r1 both name the run: give one\n"
    for args in (["-p", "run_id=r1"], ["--run", "r1"], ["-p", "run_id=r"]):  # a prefix either way
        done = cli("query", "slowest_spans", *args, "-p", "category=import", "-f", "json")
        assert done.returncode == 0, done.stderr
        assert [row["duration_ms"] for row in json.loads(done.stdout)] == [30], args
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "seven.sql").write_text("-- No run in it.\nSELECT 7 AS seven\n")
    done = cli("query", "seven", "--queries", str(mine), "--run", "s2")
    assert done.returncode == 2
    assert done.stderr.decode() == "selfopt-trace: error: query seven has no run_id parameter: --run does not apply to it\n"
    assert json.loads(cli("query", "seven", "--queries", str(mine), "-f", "json").stdout) == [{"seven": 7}]


def test_a_bad_query_file_is_named_and_hides_no_other_query(cli: Cli, tmp_path: Path) -> None:
    load(cli, small_run("r1", 30))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "latin1.sql").write_bytes("-- Caf\u00e9 spans.\n-- Parameters:\n--   run_id  the run\nSELECT 1\n".encode("latin-1"))
    (mine / "undeclared.sql").write_text("-- Uses what it does not declare.\nSELECT $nope\n")
    (mine / "count.sql").write_text("-- Spans in the run.\n-- Parameters:\n--   run_id  the run\n"
                                    "SELECT count(*) AS n FROM spans WHERE run_id = $run_id\n")
    done = cli("query", "latin1", "--queries", str(mine))
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == (f"selfopt-trace: error: {mine / 'latin1.sql'}:1: not UTF-8 text (byte 0xe9); "
                                    "save the file as UTF-8\n")
    done = cli("query", "undeclared", "--queries", str(mine))
    assert done.returncode == 2
    assert f"{mine / 'undeclared.sql'}: uses $nope but its header" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
    # the good file and the shipped queries still run, and are listed; the bad ones are named
    assert json.loads(cli("query", "count", "--queries", str(mine), "-f", "json").stdout) == [{"n": 3}]
    done = cli("query", "--list", "--queries", str(mine))
    assert done.returncode == 2
    listed = done.stdout.decode()
    assert "Spans in the run." in listed and "Where the wall time of the run went" in listed
    assert "latin1" not in listed and "undeclared" not in listed
    errors = done.stderr.decode().splitlines()
    assert len(errors) == 2 and all(line.startswith("selfopt-trace: error: ") for line in errors)
    assert str(mine / "latin1.sql") in errors[0] and str(mine / "undeclared.sql") in errors[1]
    done = cli("query", "nosuch", "--queries", str(mine))
    assert done.returncode == 2 and "no query named 'nosuch'; available: breakdown," in done.stderr.decode()


def test_compare_two_runs_in_markdown(cli: Cli) -> None:
    load(cli, small_run("before", 40), small_run("after", 10))
    done = cli("compare", "before", "after", "--format", "markdown")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "| imports | 40.0 | 10.0 | -30.0 | -75.0 % |" in out
    assert "| `import slow` | 40.0 | 10.0 | -30.0 | -75.0 % |" in out
    assert done.stderr == b""


def test_compare_groups_uses_medians_and_marks_the_spread(cli: Cli) -> None:
    load(cli, small_run("a1", 40, group="ga"), small_run("a2", 44, group="ga"), small_run("a3", 42, group="ga"),
         small_run("b1", 20, group="gb"), small_run("b2", 41, group="gb"), small_run("b3", 22, group="gb"))
    done = cli("compare", "ga", "gb", "-f", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["before"]["runs"] == ["a1", "a2", "a3"]
    rows = {(r["what"], r["name"]): r for r in result["rows"]}
    imports = rows[("category", "imports")]
    assert (imports["before_ms"], imports["after_ms"], imports["delta_ms"]) == (42, 22, -20)
    assert imports["within_spread"] is True  # group b spans 20..41 ms: a 20 ms change is within it
    assert rows[("category", "interpreter start-up")]["within_spread"] is True  # no change at all


def test_comparing_runs_of_different_commands_warns(cli: Cli) -> None:
    load(cli, small_run("r1", 30, command="python a.py"), small_run("r2", 30, command="python b.py"))
    done = cli("compare", "r1", "r2")
    assert done.returncode == 0
    assert "warning: comparing runs of different commands: r1 ran `python a.py`, r2 ran `python b.py`" \
        in done.stderr.decode()


def test_report_and_export_write_their_files(cli: Cli, tmp_path: Path) -> None:
    load(cli, small_run("r1", 30))
    report = tmp_path / "r.html"
    done = cli("report", "r1", "-o", str(report))
    assert done.returncode == 0, done.stderr
    assert report.read_text().startswith("<!DOCTYPE html>")
    for fmt in ("otlp-json", "jaeger-json", "chrome"):
        out = tmp_path / f"r.{fmt}"
        done = cli("export", "r1", "--format", fmt, "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert f"3 spans" in done.stderr.decode()
        assert out.stat().st_size > 100


def test_an_unknown_compare_side_lists_the_runs_and_the_groups(cli: Cli) -> None:
    load(cli, small_run("a1", 40, group="ga"), small_run("b1", 20))
    done = cli("compare", "ga", "nope")
    assert done.returncode == 2
    message = done.stderr.decode()
    assert "run not found: nope; the most recent runs are:" in message
    assert "nor is it a group; the most recent groups are:\n  ga" in message


def test_a_profile_query_on_a_run_without_its_samples_says_why_it_is_empty(cli: Cli) -> None:
    from selfopt_trace.watchers import profile_samples as fmt
    from tests.store.spanfiles import T0

    load(cli, small_run("plain", 20))
    for query, how in (("hot_frames", "--profile --"), ("waits", "--profile --idle --")):
        done = cli("query", query, "--run", "plain")
        assert done.returncode == 0 and b"(0 rows)" in done.stdout
        assert f"run plain has no profile samples: `selfopt-trace run {how} CMD` records them".encode() in done.stderr
    assert b"note" not in cli("query", "breakdown", "--run", "plain").stderr  # not a profile query
    # profiled without --idle: the samples of waiting threads were left out at load
    run = small_run("busy", 20)
    run_dir = cli.home / "busy"
    with Store(cli.db) as store:
        run.load(store, cli.home)
    (run_dir / "profile").mkdir()
    stack = "".join(fmt.Interned().stack_lines(7, (("f", "a.py", 1),)))
    (run_dir / fmt.SAMPLES_PATH).write_text(
        fmt.header() + fmt.line(fmt.PROFILER, T0, 100, duration_ns=1, weight="100", name="100-1.json", message='{"idle":false}')
        + stack + fmt.line(fmt.SAMPLE, T0 + 50_000_000, 100, 100, 1_000_000, 0.1, 7, "i", "MainThread")
        + fmt.line(fmt.SAMPLE, T0 + 60_000_000, 100, 100, 1_000_000, 0.1, 7, "", "MainThread"))
    assert cli("load", "--replace", str(run_dir)).returncode == 0
    done = cli("query", "waits", "--run", "busy")
    assert b"run busy was profiled without --idle" in done.stderr, done.stderr
    assert b"note" not in cli("query", "hot_frames", "--run", "busy").stderr  # it has its busy sample
