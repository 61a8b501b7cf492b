"""`runs`, `sql` and `tree` on a real database filled by real runs."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from selfopt_trace.store import Store
from tests.cli.conftest import python

PARENT = python("import subprocess, sys; subprocess.run([sys.executable, '-c', 'import json'], check=True); "
                "subprocess.run(['sh', '-c', 'true'], check=True)")


@pytest.fixture
def two_runs(cli):
    assert cli("run", "-q", "--run-id", "alpha-1", "--", *python("pass")).returncode == 0
    assert cli("run", "-q", "--run-id", "beta-2", "--", *PARENT).returncode == 0
    return cli


def test_runs_lists_the_most_recent_first(two_runs):
    cli = two_runs
    table = cli("runs")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.decode().splitlines()
    assert lines[0].split()[:2] == ["run", "started"]
    assert lines[1].split()[0] == "beta-2" and lines[2].split()[0] == "alpha-1"
    assert "subprocess.run([sys.executable" in lines[1]  # commands are text, never markup
    rows = json.loads(cli("runs", "--format", "json").stdout)
    assert [row["run_id"] for row in rows] == ["beta-2", "alpha-1"]
    assert rows[0]["processes"] == 2 and rows[0]["exit_code"] == 0 and rows[0]["wall_ms"] > 0
    parsed = list(csv.DictReader(io.StringIO(cli("runs", "-f", "csv").stdout.decode())))
    assert [row["run_id"] for row in parsed] == ["beta-2", "alpha-1"]
    assert json.loads(cli("runs", "-f", "json", "--limit", "1").stdout)[0]["run_id"] == "beta-2"


def test_a_typer_command_parses_its_options_without_pydantic(two_runs):
    """typer 0.29 coerces every option through a pydantic TypeAdapter, ~80 ms more a command
    (pyproject.toml keeps typer below it): `sql`'s text, --db and --format parsed, no pydantic loaded."""
    cli = two_runs
    code = ("import atexit, sys; atexit.register(lambda: print('pydantic' in sys.modules, file=sys.stderr)); "
            f"sys.argv = ['selfopt-trace', 'sql', '--db', {str(cli.db)!r}, '-f', 'json', 'SELECT 42 AS answer']; "
            "from selfopt_trace.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], env=cli.env(), cwd=cli.cwd, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"answer": 42}]
    assert result.stderr.strip().splitlines()[-1] == "False", result.stderr


def test_sql_formats(two_runs):
    cli = two_runs
    query = "SELECT run_id, count(*) AS processes FROM spans WHERE name = 'process' GROUP BY run_id ORDER BY run_id"
    as_json = cli("sql", query, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [{"run_id": "alpha-1", "processes": 1}, {"run_id": "beta-2", "processes": 2}]
    as_csv = cli("sql", query, "-f", "csv").stdout.decode()
    assert as_csv == "run_id,processes\nalpha-1,1\nbeta-2,2\n"
    table = cli("sql", query).stdout.decode()
    assert "alpha-1" in table and "beta-2" in table and "(2 rows)" in table


def test_sql_on_the_logfire_style_view(two_runs):
    result = two_runs("sql", "SELECT span_name, duration FROM records WHERE span_name = 'process' ORDER BY duration", "-f", "json")
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and all(row["duration"] > 0 for row in rows)


def test_sql_error_is_one_clear_line(two_runs):
    result = two_runs("sql", "SELECT nope FROM spans")
    assert result.returncode == 2
    assert result.stderr.startswith(b"selfopt-trace: error:") and b"nope" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("text, message", [
    ("", "no SQL statement in '': it is empty, or only `;` and comments"),
    ("   ", "no SQL statement in '   ': it is empty, or only `;` and comments"),
    (";", "no SQL statement in ';': it is empty, or only `;` and comments"),
    ("-- only a comment", "no SQL statement in '-- only a comment': it is empty, or only `;` and comments"),
    ("SELECT 1; SELECT 2", "sql runs one statement, and this text holds 2: run `selfopt-trace sql` once for each"),
])
def test_sql_needs_exactly_one_statement(cli, text, message):
    Store(cli.db).close()  # an empty database: what matters is the text
    result = cli("sql", text)
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == f"selfopt-trace: error: {message}\n"


def test_sql_may_start_with_a_comment_and_end_with_a_semicolon(cli):
    Store(cli.db).close()
    result = cli("sql", "-- the answer\nSELECT 42 AS answer;", "-f", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"answer": 42}]
    assert json.loads(cli("sql", "-f", "json", "-- a = b\nSELECT 1 AS one -- x;").stdout) == [{"one": 1}]


def test_tree_shows_processes_and_the_calls_between_them(two_runs):
    result = two_runs("tree", "beta")  # a unique prefix
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.startswith("run beta-2")
    assert "python -c import json" in text and "start-up" in text and "imports" in text
    assert "subprocess sh -c true" in text
    lines = text.splitlines()[1:]  # after the run's own line, which names the whole command
    parent = next(i for i, line in enumerate(lines) if "subprocess.run" in line)
    child = next(i for i, line in enumerate(lines) if "python -c import json" in line)
    assert parent < child
    indent = lambda line: len(line) - len(line.lstrip(" │├└─"))  # noqa: E731
    assert indent(lines[child]) > indent(lines[parent])


def test_tree_latest_is_the_most_recent_run(two_runs):
    assert two_runs("tree", "latest").stdout.startswith(b"run beta-2")
    assert two_runs("tree").stdout.startswith(b"run beta-2")


def test_unknown_run_lists_recent_runs(two_runs):
    result = two_runs("tree", "gamma")
    assert result.returncode == 2
    assert b"run not found: gamma" in result.stderr
    assert b"beta-2" in result.stderr and b"alpha-1" in result.stderr


def test_ambiguous_prefix_says_so(cli):
    for run_id in ("same-1", "same-2"):
        assert cli("run", "-q", "--run-id", run_id, "--", *python("pass")).returncode == 0
    result = cli("tree", "same")
    assert result.returncode == 2 and b"ambiguous" in result.stderr and b"same-1" in result.stderr


def test_missing_database_is_a_clear_error(cli):
    for args in (("runs",), ("sql", "SELECT 1"), ("tree", "latest")):
        result = cli(*args)
        assert result.returncode == 2
        assert b"does not exist" in result.stderr and b"selfopt-trace run" in result.stderr
        assert b"Traceback" not in result.stderr


def test_a_forkserver_s_fork_of_a_worker_traced_elsewhere_says_so(cli, tmp_path):
    """A forkserver forks the worker a Process.start asked for: the worker's process is traced under
    that start (in the main process), and the forkserver's fork line says where it is."""
    script = tmp_path / "forkserver.py"
    script.write_text("import multiprocessing as mp\n"
                      "if __name__ == '__main__':\n"
                      "    p = mp.get_context('forkserver').Process(target=print, args=('worker',))\n"
                      "    p.start(); p.join()\n")
    done = cli("run", "-q", "--export", "never", "--", sys.executable, str(script))
    assert done.returncode == 0 and done.stdout == b"worker\n", done.stderr
    text = cli("tree", "latest").stdout.decode()
    (fork,) = [line for line in text.splitlines() if " fork fork " in line]
    assert "traced elsewhere in this tree" in fork, text
    worker = fork.split("(pid ")[1].split(",")[0]
    assert sum(f"pid {worker}, start-up" in line for line in text.splitlines()) == 1, text
