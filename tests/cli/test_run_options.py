"""`run`'s options and settings: output locations, --json, --repeat, TRACEPARENT, disabled tracing."""

from __future__ import annotations

import json
import os
import sys

from tests.cli.conftest import python

HELLO = python("print('hello from the command')")


def marker_cmd(path) -> list[str]:
    return python(f"open({str(path)!r}, 'a').write('ran\\n')")


def test_a_run_writes_run_json_and_loads_into_the_database(cli):
    result = cli("run", "-q", "--run-id", "first", "--", *HELLO)
    assert result.returncode == 0, result.stderr
    meta = cli.run_json("first")
    assert meta["run_id"] == "first" and meta["group_id"] is None and meta["exit_code"] == 0
    assert meta["command"] == HELLO and meta["cwd"] == str(cli.cwd)
    assert 0 < meta["start_ns"] < meta["end_ns"]
    assert cli.query("SELECT pid FROM spans WHERE name = 'process'") == [(meta["pid"],)]
    assert list((cli.runs_dir / "first" / "spans").glob("*.spans"))
    assert cli.query("SELECT run_id, exit_code, start_ns, end_ns FROM runs") == [("first", 0, meta["start_ns"], meta["end_ns"])]
    (processes,) = cli.query("SELECT count(*) FROM spans WHERE run_id = 'first' AND name = 'process'")[0]
    assert processes == 1


def test_secrets_in_the_command_line_stay_out_of_run_json(cli):
    result = cli("run", "-q", "--run-id", "s", "--", *python("pass"), "--api-key", "XYZSECRET", "--token=ABC123SECRET")
    assert result.returncode == 0, result.stderr
    text = (cli.runs_dir / "s" / "run.json").read_text()
    assert "XYZSECRET" not in text and "ABC123SECRET" not in text
    assert "XYZSECRET" not in str(cli.query("SELECT * FROM runs"))


def test_unwritable_out_fails_before_the_command_runs(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    marker = tmp_path / "marker"
    result = cli("run", "--out", str(blocker / "runs"), "--", *marker_cmd(marker))
    assert result.returncode == 2
    assert result.stderr.startswith(b"selfopt-trace: error: the run output directory ")
    assert str(blocker / "runs").encode() in result.stderr
    assert not marker.exists()


def test_unwritable_db_fails_before_the_command_runs(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    marker = tmp_path / "marker"
    result = cli("run", "--db", str(blocker / "t.duckdb"), "--", *marker_cmd(marker))
    assert result.returncode == 2
    assert b"selfopt-trace: error:" in result.stderr and str(blocker).encode() in result.stderr
    assert not marker.exists()
    directory = cli("run", "--db", str(tmp_path), "--", *marker_cmd(marker))
    assert directory.returncode == 2 and b"is a directory" in directory.stderr
    assert not marker.exists()
    assert cli.run_dirs() == []


def test_json_on_stdout_comes_after_the_commands_output(cli):
    result = cli("run", "-q", "--json", "--", *HELLO)
    assert result.returncode == 0, result.stderr
    head, _, rest = result.stdout.partition(b"\n")
    assert head == b"hello from the command"
    summary = json.loads(rest)
    assert summary["exit_code"] == 0 and summary["processes"] == 1 and summary["traced"] is True
    assert summary["spans"] >= 2 and summary["incomplete_spans"] == 0
    by_category = summary["time_by_category_ms"]
    # after start-up, print() and exit: well under a ms, on the CPU (own work) or not (an untraced wait)
    assert by_category["interpreter start-up"] > 0 and by_category["own work"] + by_category["untraced waits"] > 0
    # the categories account for the wall time, to rounding, and are the breakdown query's
    assert abs(sum(by_category.values()) - summary["wall_ms"]) < 0.01
    breakdown = json.loads(cli("query", "breakdown", "--format", "json").stdout)
    assert {row["category"]: row["wall_ms"] for row in breakdown if row["category"] != "total"} == by_category
    [process] = summary["slowest_processes"]
    assert process["command"] == "python -c \"print('hello from the command')\""
    assert process["startup_ms"] > 0 and process["exit_code"] == 0
    assert result.stderr == b""


def test_json_to_a_file(cli, tmp_path):
    target = tmp_path / "out" / "summary.json"
    (tmp_path / "out").mkdir()
    result = cli("run", "-q", "--json", str(target), "--", *HELLO)
    assert result.stdout == b"hello from the command\n"
    assert json.loads(target.read_text())["exit_code"] == 0
    equals = cli("run", "-q", f"--json={target}", *HELLO)
    assert equals.stdout == b"hello from the command\n"


def test_json_without_double_dash_takes_the_command_not_a_file(cli):
    result = cli("run", "-q", "--json", *HELLO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"hello from the command\n{")


def test_summary_on_stderr_names_the_run_and_next_commands(cli):
    result = cli("run", "--run-id", "visible", "--", *HELLO)
    assert result.returncode == 0
    text = result.stderr.decode()
    for expected in ("visible", "wall time", "1 process,", "start-up", "Slowest processes", "tracer overhead",
                     "selfopt-trace tree visible"):
        assert expected in text, text


def test_no_load_keeps_files_and_creates_no_database(cli):
    result = cli("run", "--no-load", "--run-id", "kept", "--", *HELLO)
    assert result.returncode == 0
    assert list((cli.runs_dir / "kept" / "spans").glob("*.spans"))
    assert not cli.db.exists()
    assert b"not loaded (--no-load)" in result.stderr
    loaded = cli("load", str(cli.runs_dir / "kept"))
    assert loaded.returncode == 0, loaded.stderr
    assert cli.query("SELECT run_id FROM runs") == [("kept",)]


def test_settings_from_environment_variables(cli, tmp_path):
    env = cli.env(SELFOPT_TRACE_OUT=str(tmp_path / "elsewhere"), SELFOPT_TRACE_DB=str(tmp_path / "other.duckdb"),
                  SELFOPT_TRACE_QUIET="1", SELFOPT_TRACE_SERVICE="my-service")
    result = cli("run", "--run-id", "env", "--", *HELLO, env=env)
    assert result.returncode == 0 and result.stderr == b""
    assert (tmp_path / "elsewhere" / "env" / "run.json").exists()
    cli.db = tmp_path / "other.duckdb"
    assert cli.query("SELECT DISTINCT service_name FROM spans") == [("my-service",)]


def test_service_flag_and_otel_service_name(cli):
    cli("run", "-q", "--run-id", "flag", "--service", "svc-flag", "--", *HELLO)
    cli("run", "-q", "--run-id", "otel", "--", *HELLO, env=cli.env(OTEL_SERVICE_NAME="svc-otel"))
    assert cli.query("SELECT run_id, service_name FROM runs ORDER BY run_id") == [("flag", "svc-flag"), ("otel", "svc-otel")]


def test_import_threshold(cli):
    code = python("import json, decimal, email.parser")
    cli("run", "-q", "--run-id", "all", "--import-threshold-ms", "0", "--", *code)
    cli("run", "-q", "--run-id", "none", "--import-threshold-ms", "100000", "--", *code)
    counts = dict(cli.query("SELECT run_id, count(*) FILTER (WHERE category = 'import') FROM spans GROUP BY run_id"))
    assert counts["none"] == 0
    assert counts["all"] >= 3


def test_run_id_is_validated_and_never_reused(cli, tmp_path):
    marker = tmp_path / "marker"
    bad = cli("run", "--run-id", "../escape", "--", *marker_cmd(marker))
    assert bad.returncode == 2 and b"invalid run id" in bad.stderr
    assert cli("run", "-q", "--run-id", "once", "--", *HELLO).returncode == 0
    again = cli("run", "--run-id", "once", "--", *marker_cmd(marker))
    assert again.returncode == 2 and b"already exists" in again.stderr
    assert not marker.exists()


def test_generated_run_ids_sort_by_time(cli):
    for _ in range(2):
        assert cli("run", "-q", "--no-load", "--", *HELLO).returncode == 0
    first, second = [p.name for p in cli.run_dirs()]
    assert first < second and first[:4].isdigit() and first[8] == "T"


def test_repeat_with_warmup_makes_one_group(cli, tmp_path):
    marker = tmp_path / "marker"
    result = cli("run", "-q", "--json", "--repeat", "3", "--warmup", "1", "--run-id", "grp", "--", *marker_cmd(marker))
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "ran\n" * 4  # one warm-up, three measured
    rows = cli.query("SELECT run_id, group_id FROM runs ORDER BY run_id")
    assert rows == [("grp-1", "grp"), ("grp-2", "grp"), ("grp-3", "grp")]
    assert [p.name for p in cli.run_dirs()] == ["grp-1", "grp-2", "grp-3"]  # warm-up files discarded
    assert all(cli.run_json(f"grp-{i}")["group_id"] == "grp" for i in (1, 2, 3))
    summary = json.loads(result.stdout)
    assert summary["group_id"] == "grp" and len(summary["runs"]) == 3
    assert summary["wall_ms"]["min"] <= summary["wall_ms"]["median"] <= summary["wall_ms"]["max"]


def test_repeat_summary_on_stderr(cli):
    result = cli("run", "--repeat", "2", "--", *HELLO)
    assert result.returncode == 0
    assert b"(2 runs)" in result.stderr and b"median" in result.stderr


def test_a_group_s_summary_gives_its_last_run_s_notes(cli):
    result = cli("run", "--repeat", "2", "--run-id", "naps", "--", *python("import time; time.sleep(0.2)"))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.decode().split())  # rich folds long lines
    assert "Notes (on the last run) note: sleeps are " in text, text
    assert "`selfopt-trace query critical_path --run naps-2`" in text, text


def test_incoming_traceparent_is_joined(cli):
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    env = cli.env(TRACEPARENT=f"00-{trace_id}-{parent_id}-01")
    code = python("import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'])")
    assert cli("run", "-q", "--run-id", "ci", "--", *code, env=env).returncode == 0
    root = cli.query("SELECT trace_id, parent_span_id FROM spans WHERE name = 'process' ORDER BY start_ns LIMIT 1")
    assert root == [(trace_id, parent_id)]
    assert cli.query("SELECT DISTINCT trace_id FROM spans") == [(trace_id,)]
    # exported, the run's own span is the incoming span's child, and CMD's process span the run's
    [(run_span_id, run_parent)] = cli.query("SELECT run_span_id, run_parent_span_id FROM runs WHERE run_id = 'ci'")
    assert run_parent == parent_id and len(run_span_id) == 16 and run_span_id != parent_id
    spans = exported(cli, "ci")
    assert (spans[run_span_id]["traceId"], spans[run_span_id]["parentSpanId"]) == (trace_id, parent_id)
    assert [span["parentSpanId"] for span in spans.values() if span["name"] == "process"][0] == run_span_id


def exported(cli, run_id: str) -> dict[str, dict]:
    """The run's spans as `export --format otlp-json` writes them, by span id."""
    done = cli("export", run_id, "--format", "otlp-json", "--out", "-")
    assert done.returncode == 0, done.stderr
    return {span["spanId"]: span for line in done.stdout.splitlines()
            for resource in json.loads(line)["resourceSpans"] for scope in resource["scopeSpans"]
            for span in scope["spans"]}


def test_without_traceparent_the_run_is_a_new_trace(cli):
    assert cli("run", "-q", "--run-id", "fresh", "--", *HELLO).returncode == 0
    assert cli("run", "-q", "--run-id", "again", "--", *HELLO).returncode == 0
    runs = cli.query("SELECT run_id, trace_id, parent_span_id FROM spans WHERE name = 'process' ORDER BY run_id")
    (_, first, first_parent), (_, second, second_parent) = runs
    assert first != second and len(first) == len(second) == 32 and first_parent is second_parent is None


def test_the_python_processes_a_shell_cmd_starts_are_one_trace(cli):
    """Each top-level process of a shell CMD started a trace of its own, and the breakdown followed
    only the first (the rest was 'outside traced processes')."""
    sleep = f"{sys.executable} -c 'import time; time.sleep(%s)'"
    result = cli("run", "-q", "--json", "--run-id", "sh", "--", "sh", "-c", f"{sleep % 0.2}; {sleep % 0.1}")
    assert result.returncode == 0, result.stderr
    processes = cli.query("SELECT DISTINCT trace_id, parent_span_id FROM spans WHERE name = 'process'")
    assert len(processes) == 1 and processes[0][1] is None  # one trace, both at its top
    # exported, one tree: the run's own span the one root, over both processes, from spawn to exit
    spans = exported(cli, "sh")
    [root] = [span for span in spans.values() if not span.get("parentSpanId")]
    [(start_ns, end_ns, command)] = cli.query("SELECT start_ns, end_ns, command FROM runs WHERE run_id = 'sh'")
    assert (root["name"], int(root["startTimeUnixNano"]), int(root["endTimeUnixNano"])) == \
        ("selfopt-trace run", start_ns, end_ns)
    assert {"key": "process.command_line", "value": {"stringValue": command}} in root["attributes"]
    assert [span["parentSpanId"] for span in spans.values() if span["name"] == "process"] == [root["spanId"]] * 2
    summary = json.loads(result.stdout)
    assert summary["processes"] == 2
    by_category = summary["time_by_category_ms"]
    assert by_category["sleeps"] >= 299.9  # both processes' sleeps: the run's time went there
    # the second starts after the first ended (the kernel's start, in 10 ms ticks, is bounded by
    # the time the process has run or waited for a CPU: no overlap shared between them)
    (_, first_end), (second_start, _) = cli.query(
        "SELECT start_ns, end_ns FROM spans WHERE run_id = 'sh' AND name = 'process' ORDER BY start_ns")
    assert second_start >= first_end
    assert by_category["outside traced processes"] < by_category["sleeps"] / 2


def test_otel_sdk_disabled_runs_untraced_and_says_so(cli):
    probe = python("import os, sys; print(os.environ.get('SELFOPT_TRACE_DIR'), 'selfopt_trace_agent' in sys.modules)")
    result = cli("run", "--json", "--", *probe, env=cli.env(OTEL_SDK_DISABLED="true"))
    assert result.returncode == 0
    head, _, rest = result.stdout.partition(b"\n")
    assert head == b"None False"
    summary = json.loads(rest)
    assert summary["traced"] is False and summary["exit_code"] == 0
    assert b"tracing disabled by OTEL_SDK_DISABLED" in result.stderr
    assert cli.run_dirs() == [] and not cli.db.exists()


def test_traced_command_sees_the_injected_environment(cli):
    probe = python("import os, sys; print(os.environ['SELFOPT_TRACE_RUN_ID'], os.environ['PYTHONPATH'].split(os.pathsep)[0].endswith('bootstrap'),"
                   " '' not in os.environ['PYTHONPATH'].split(os.pathsep), 'selfopt_trace_agent' in sys.modules)")
    result = cli("run", "-q", "--no-load", "--run-id", "envcheck", "--", *probe)
    assert result.stdout == b"envcheck True True True\n", result.stderr


def test_python_dash_m_and_version(cli):
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith(b"selfopt-trace ")
    for command in ("run", "runs", "sql", "tree", "demo", "load"):
        help_result = cli(command, "--help")
        assert help_result.returncode == 0 and b"Usage" in help_result.stdout, command


def test_version_answers_without_loading_the_typer_app():
    """`--version` is the command line's cheapest path: no typer, no command module (~100 ms)."""
    import subprocess

    code = ("import sys; sys.argv = ['selfopt-trace', '--version']; from selfopt_trace.cli import main; main(); "
            "print(sorted(m for m in sys.modules if m.startswith(('typer', 'rich', 'duckdb', 'selfopt_trace.cli.'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    version, modules = result.stdout.splitlines()
    assert version.startswith("selfopt-trace ") and modules == "[]"


def _hold_database(path, seconds: float):
    """Another process holding the database's write lock for `seconds`."""
    import subprocess

    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); "
                               f"print('locked', flush=True); time.sleep({seconds})"], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"locked\n"
    return holder


def test_a_briefly_locked_database_is_waited_for(cli):
    cli.db.parent.mkdir(parents=True)
    holder = _hold_database(cli.db, 1.0)
    result = cli("run", "-q", "--run-id", "waited", "--", *HELLO)
    holder.wait(timeout=30)
    assert result.returncode == 0 and result.stderr == b""
    assert cli.query("SELECT run_id FROM runs") == [("waited",)]


def test_a_locked_database_is_a_clear_error_and_keeps_the_commands_exit_code(cli):
    cli.db.parent.mkdir(parents=True)
    holder = _hold_database(cli.db, 30)
    try:
        result = cli("run", "--run-id", "locked", "--", *python("import sys; print('ran'); sys.exit(3)"),
                     env=cli.env(SELFOPT_TRACE_LOCK_WAIT_S="0.5"))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 3
    assert result.stdout == b"ran\n"
    assert b"is locked by PID %d" % holder.pid in result.stderr
    assert b"the run files are kept: load them with `selfopt-trace load " in result.stderr
    assert (cli.runs_dir / "locked" / "run.json").exists()
    loaded = cli("load", str(cli.runs_dir / "locked"))
    assert loaded.returncode == 0, loaded.stderr
    assert cli.query("SELECT run_id, exit_code FROM runs") == [("locked", 3)]


def test_a_command_without_python_is_run_and_summarized(cli):
    result = cli("run", "-q", "--json", "--", "sh", "-c", "echo from sh; exit 4")
    assert result.returncode == 4
    head, _, rest = result.stdout.partition(b"\n")
    assert head == b"from sh"
    summary = json.loads(rest)
    assert summary["processes"] == 0 and summary["exit_code"] == 4
    assert any("no Python process was traced" in note for note in summary["notes"])
    assert summary["time_by_category_ms"]["outside traced processes"] == summary["wall_ms"]


TARGET_MODULE = """
class Helper:
    def run(self):
        return 2


def slow():
    return 1
"""


def test_targets_from_the_flag_and_pyproject_become_spans_in_every_process(cli):
    (cli.cwd / "targetmod.py").write_text(TARGET_MODULE)
    (cli.cwd / "pyproject.toml").write_text('[tool.selfopt-trace]\ntargets = ["targetmod:slow"]\n')
    child = "import targetmod; targetmod.slow()"
    # the child gets an explicit env=: the targets reach it all the same
    code = (f"import subprocess, sys, targetmod; targetmod.slow(); targetmod.Helper().run(); "
            f"subprocess.run([sys.executable, '-c', {child!r}], env={{'PYTHONPATH': {str(cli.cwd)!r}}}, check=True)")
    result = cli("run", "-q", "--run-id", "t", "--target", "targetmod:Helper.run", "--", *python(code))
    assert result.returncode == 0, result.stderr
    spans = cli.query("SELECT name, count(DISTINCT pid) FROM spans WHERE run_id = 't' AND name IN ('slow', 'Helper.run') "
                      "GROUP BY name ORDER BY name")
    assert spans == [("Helper.run", 1), ("slow", 2)]


def test_a_bad_target_fails_before_the_command_runs(cli, tmp_path):
    marker = tmp_path / "marker"
    result = cli("run", "--target", "no-colon", "--", *marker_cmd(marker))
    assert result.returncode == 2 and b"--target 'no-colon': expected module:qualname" in result.stderr
    # the script run as __main__ is not imported through the import system: the agent found its
    # module empty ("__main__:hot_loop not found" in diagnostics) and the run had no span of it
    result = cli("run", "-t", "__main__:hot_loop", "--", *marker_cmd(marker))
    assert result.returncode == 2 and result.stderr.decode().splitlines() == [
        "selfopt-trace: error: --target '__main__:hot_loop': a target must be in a module the program imports; the "
        "script itself (__main__: python FILE, -m, -c) is not imported, so none of its functions can be one: put "
        "hot_loop in a module the script imports and name that (MODULE:hot_loop)"]
    # given through the environment only, they are checked the same (the agent said "not found" in a diagnostic)
    result = cli("run", "--", *marker_cmd(marker), env=cli.env(SELFOPT_TRACE_TARGETS="json:dumps;__main__:hot_loop"))
    assert result.returncode == 2 and result.stderr.decode().startswith(
        "selfopt-trace: error: SELFOPT_TRACE_TARGETS '__main__:hot_loop': a target must be in a module")
    (cli.cwd / "pyproject.toml").write_text('[tool.selfopt-trace]\ntargets = "targetmod:slow"\n')
    result = cli("run", "--", *marker_cmd(marker))
    assert result.returncode == 2 and b"targets must be a list" in result.stderr
    (cli.cwd / "pyproject.toml").write_text('[tool.selfopt-trace\n')
    result = cli("run", "--", *marker_cmd(marker))
    assert result.returncode == 2 and str(cli.cwd / "pyproject.toml").encode() in result.stderr
    assert not marker.exists()


def test_cmd_is_given_the_container_s_id_and_reads_no_proc_for_it(cli):
    """`run` reads the container's id once and passes it on (keyed by its mount namespace): no traced
    process loads container.py, and each still says which container it ran in."""
    in_a_container = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    probe = "import os, sys; print(os.environ.get('SELFOPT_TRACE_CONTAINER_ID', ''), 'selfopt_trace_agent.container' in sys.modules)"
    result = cli("run", "-q", "--run-id", "contained", "--", *python(probe))
    assert result.returncode == 0, result.stderr
    passed_on, loaded = result.stdout.decode().rstrip("\n").rsplit(" ", 1)
    assert loaded == "False"
    if not in_a_container:
        assert passed_on == ""
        return
    namespace, container_id = passed_on.split("\t")
    assert namespace == os.readlink("/proc/self/ns/mnt")
    resource = json.loads(cli.query("SELECT resource_attributes FROM spans WHERE run_id = 'contained' AND name = 'process'")[0][0])
    assert resource["container.runtime"] in ("docker", "podman") and resource.get("container.id", "") == container_id
