"""The `--json` option: its parsing on known inputs, and a run writing to stdout."""

from __future__ import annotations

import json

from selfopt_trace.cli.run import normalize_json_option
from tests.cli.conftest import Cli, python


def test_json_option_takes_a_file_only_before_a_double_dash():
    value = {"--out", "--db", "--run-id", "--service", "--import-threshold-ms", "--repeat", "--warmup"}
    assert normalize_json_option(["--json", "--", "cmd"], value) == ["--json=-", "--", "cmd"]
    assert normalize_json_option(["--json", "f.json", "--", "cmd"], value) == ["--json=f.json", "--", "cmd"]
    assert normalize_json_option(["--json", "cmd", "arg"], value) == ["--json=-", "cmd", "arg"]
    assert normalize_json_option(["--json=f.json", "cmd"], value) == ["--json=f.json", "cmd"]
    assert normalize_json_option(["--out", "d", "--json", "-q", "--", "c"], value) == ["--out", "d", "--json=-", "-q", "--", "c"]
    # options of the command are the command's
    assert normalize_json_option(["cmd", "--json", "x", "--", "y"], value) == ["cmd", "--json", "x", "--", "y"]
    # `-` before a `--` is the FILE (stdout), not the command
    assert normalize_json_option(["--json", "-", "--", "cmd"], value) == ["--json=-", "--", "cmd"]
    assert normalize_json_option(["--json", "-", "-q", "--", "cmd"], value) == ["--json=-", "-q", "--", "cmd"]


def test_json_dash_before_a_double_dash_writes_the_summary_to_stdout(cli: Cli) -> None:
    done = cli("run", "--run-id", "dash", "--json", "-", "--", *python("print('out')"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"out\n")
    assert json.loads(done.stdout.removeprefix(b"out\n"))["run_id"] == "dash"
