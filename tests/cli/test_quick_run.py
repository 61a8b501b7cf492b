"""`run` parsed without typer (cli/quick_run.py) means what typer makes of the same command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from selfopt_trace import runner
from selfopt_trace.cli import app, quick_run

AGREED = [
    ["--", "/bin/true"],
    ["/bin/true", "-q"],
    ["-q", "--no-load", "--run-id", "r1", "--", "python", "-c", "pass"],
    ["--quiet", "--replace", "--run-id=r2", "--out", "o", "--db=d.duckdb", "python", "x.py"],
    ["--service", "svc", "--export", "never", "-t", "a:b", "--target", "c:D.e", "--", "cmd"],
    ["--json", "--", "cmd", "arg"],
    ["--json", "out.json", "--", "cmd"],
    ["--json", "cmd", "--x"],
    ["--json=f.json", "--no-cpu-sampling", "cmd"],
    ["--cpu-sampling", "--", "--weird-command"],
]
TYPER_ONLY = [
    ["--help"], ["-h"], ["--profile", "--", "cmd"], ["--repeat", "3", "cmd"], ["-qt", "a:b", "cmd"],
    ["--quiet=yes", "cmd"], ["--unknown", "cmd"], ["--"], [], ["--run-id"], ["--rate", "10", "cmd"],
]


def typer_options(args: list[str], monkeypatch) -> tuple:
    """What the typer command hands runner.run for `run ARGS` (runner.run itself not called)."""
    seen: list = []
    monkeypatch.setattr(runner, "run", lambda options, available_commands=(): seen.append((options, available_commands)) or 0)
    result = CliRunner().invoke(app, ["run", *args], env={name: None for name in quick_run.OPTION_VARIABLES})
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize("args", AGREED, ids=" ".join)
def test_the_quick_parse_agrees_with_typer(args, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in quick_run.OPTION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    options, commands = typer_options(args, monkeypatch)
    parsed = quick_run.parse(args, os.environ)
    assert parsed is not None
    assert quick_run.options_of(parsed) == options
    assert commands == quick_run.COMMANDS


@pytest.mark.parametrize("args", TYPER_ONLY, ids=lambda a: " ".join(a) or "nothing")
def test_anything_else_is_typers(args):
    assert quick_run.parse(args, {}) is None


def test_a_variable_that_sets_an_option_is_typers():
    for name in quick_run.OPTION_VARIABLES:
        assert quick_run.parse(["--", "cmd"], {name: "1"}) is None


def test_the_options_read_are_the_typer_commands():
    """Each option the quick parse reads is one of typer's `run` with the same kind (flag or value)."""
    command = typer.main.get_command(app).commands["run"]
    flags = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if getattr(p, "is_flag", False)}
    values = {opt for p in command.params if not getattr(p, "is_flag", False) for opt in p.opts if opt.startswith("-")}
    assert set(quick_run.FLAGS) <= flags and set(quick_run.VALUES) <= values
    envvars = {p.envvar for p in command.params if p.envvar}
    assert envvars <= set(quick_run.OPTION_VARIABLES)


def test_run_starts_cmd_without_importing_typer(tmp_path):
    """A real `selfopt-trace run`: CMD's output and exit status, and no typer or pydantic loaded."""
    env = {k: v for k, v in os.environ.items() if k not in quick_run.OPTION_VARIABLES and not k.startswith("SELFOPT_TRACE_")}
    env["SELFOPT_TRACE_HOME"] = str(tmp_path)
    code = ("import sys; sys.argv = ['selfopt-trace', 'run', '-q', '--no-load', '--export', 'never', '--', "
            f"{sys.executable!r}, '-c', 'print(42); raise SystemExit(3)'];"
            "import atexit; atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith(('typer', 'pydantic'))), file=sys.stderr));"
            "from selfopt_trace.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and result.stdout == "42\n"
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr


def test_a_loaded_run_imports_duckdbs_engine_alone_and_no_compileall(tmp_path):
    """A real `run` that loads and summarizes: DuckDB's engine module without the package's Python
    layer (store/engine.py), and no compileall when the bootstrap's .pyc files are current."""
    from selfopt_trace import runner

    runner.precompile_bootstrap()
    env = {k: v for k, v in os.environ.items() if k not in quick_run.OPTION_VARIABLES and not k.startswith("SELFOPT_TRACE_")}
    env["SELFOPT_TRACE_HOME"] = str(tmp_path)
    code = ("import sys; sys.argv = ['selfopt-trace', 'run', '--export', 'never', '--', "
            f"{sys.executable!r}, '-c', 'print(42)'];"
            "import atexit; atexit.register(lambda: print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'typer', 'pydantic', 'duckdb', '_duckdb', 'compileall'}), file=sys.stderr));"
            "from selfopt_trace.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "42\n", result.stderr
    assert "1 process" in result.stderr  # the summary of a loaded run
    assert result.stderr.strip().splitlines()[-1] == "['_duckdb']", result.stderr
