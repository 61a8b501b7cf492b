"""The `--json` option parsing, on known inputs."""

from __future__ import annotations

from selfopt_trace.cli.run import normalize_json_option


def test_json_option_takes_a_file_only_before_a_double_dash():
    value = {"--out", "--db", "--run-id", "--service", "--import-threshold-ms", "--repeat", "--warmup"}
    assert normalize_json_option(["--json", "--", "cmd"], value) == ["--json=-", "--", "cmd"]
    assert normalize_json_option(["--json", "f.json", "--", "cmd"], value) == ["--json=f.json", "--", "cmd"]
    assert normalize_json_option(["--json", "cmd", "arg"], value) == ["--json=-", "cmd", "arg"]
    assert normalize_json_option(["--json=f.json", "cmd"], value) == ["--json=f.json", "cmd"]
    assert normalize_json_option(["--out", "d", "--json", "-q", "--", "c"], value) == ["--out", "d", "--json=-", "-q", "--", "c"]
    # options of the command are the command's
    assert normalize_json_option(["cmd", "--json", "x", "--", "y"], value) == ["cmd", "--json", "x", "--", "y"]
