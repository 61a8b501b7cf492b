"""Bad input a new user gives on purpose (issue 15, cases 1-10): never lost or misread without a word.

Each test is one numbered case: a clear message, a non-zero exit where nothing was done, and
nothing lost.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile
from tests.cli.conftest import python
from tests.store import spanfiles as sf


def marker_cmd(path: Path) -> list[str]:
    return python(f"open({str(path)!r}, 'a').write('ran\\n')")


def test_1_load_names_damaged_lines_by_file_and_line_and_counts_them(cli):
    assert cli("run", "-q", "--no-load", "--run-id", "torn", "--", *python("pass")).returncode == 0
    [path] = (cli.runs_dir / "torn" / "spans").glob("*.spans")
    with path.open("a") as stream:
        stream.write("X\tnot enough fields\t.\n")
        stream.write(sf.complete(sf.sid(9), "", "ok", "other", sf.T0, sf.T0 + 1))
        stream.write("X\t" + "\t" * 9 + "{broken json\t.\n")
    lines = path.read_text().count("\n")
    loaded = cli("load", str(cli.runs_dir / "torn"))
    assert loaded.returncode == 0, loaded.stderr
    err = loaded.stderr.decode()
    assert f"{path}: skipped 2 damaged line(s): line {lines - 2} (3 fields" in err
    assert f"line {lines} (attributes are not JSON)" in err
    assert loaded.stdout.decode().strip().endswith("2 damaged line(s) skipped")
    # and the summary of a run counts them, and names them in a note
    code = ("import os; d = os.environ['SELFOPT_TRACE_DIR'];"
            f"open(os.path.join(d, 'spans', 'x.spans'), 'w').write({sf.header(1)!r} + 'garbage\\n')")
    run = cli("run", "--json", "--", *python(code))
    summary = json.loads(run.stdout)
    assert summary["damaged_lines"] == 1
    assert any("x.spans: skipped 1 damaged line(s): line 2 (1 fields" in note for note in summary["notes"])
    assert "1 damaged line skipped" in run.stderr.decode()


def test_2_load_of_a_wrong_path_fails_and_changes_nothing(cli, tmp_path):
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert cli("run", "-q", "--no-load", "--run-id", "r1", "--", *python("pass")).returncode == 0
    for path, message in ((tmp_path / "typo", b"not found (no such file or directory)"),
                          (other, b"not a run directory (no run.json, no spans/)"),
                          (text, b"not collector output"),
                          (cli.runs_dir, b"is a folder of 1 run directories, not a run"),
                          (cli.runs_dir / "r1" / "spans", b"no collector output in it")):
        result = cli("load", str(path))
        assert result.returncode == 2, (path, result.stderr)
        assert result.stderr.startswith(b"selfopt-trace: error: ") and message in result.stderr, result.stderr
    assert not cli.db.exists()  # nothing was done, not even a database created
    # a good run directory with a bad one: nothing loaded at all
    assert cli("load", str(cli.runs_dir / "r1"), str(tmp_path / "typo")).returncode == 2
    assert not cli.db.exists()


LATIN1 = b"caf\xe9-d\xe9j\xe0"


def test_3_an_argument_and_a_directory_that_are_not_utf8_are_stored_escaped_and_round_trip(cli, tmp_path):
    workdir = Path(os.fsdecode(bytes(tmp_path) + b"/" + LATIN1))
    workdir.mkdir()
    child = "import subprocess, sys, os; subprocess.run([sys.executable, '-c', 'pass', os.fsdecode(%r)], check=True)" % LATIN1
    result = cli("run", "--run-id", "latin", "--", *python(child), os.fsdecode(LATIN1), cwd=workdir)
    assert result.returncode == 0 and b"error" not in result.stderr, result.stderr
    rows = cli.query("SELECT name, attributes FROM spans WHERE run_id = 'latin' AND category IN ('process', 'subprocess')")
    assert len(rows) == 3  # CMD, its subprocess span, the child: no line lost
    for name, attributes in rows:
        attributes = json.loads(attributes)
        args = attributes["process.command_args"]
        assert "process.command_args" in attributes[spanfile.ESCAPED], attributes
        assert os.fsencode(spanfile.unescape(args[-1])) == LATIN1
    [(cwd, command)] = cli.query("SELECT cwd, command FROM runs WHERE run_id = 'latin'")
    assert os.fsencode(spanfile.unescape(cwd)) == bytes(workdir)
    assert "caf\\xe9" in command
    assert cli.query("SELECT count(*) FROM diagnostics WHERE run_id = 'latin' AND code = 'loader.escaped'") == [(1,)]
    again = cli("load", str(cli.runs_dir / "latin"))  # and it loads again the same
    assert again.returncode == 0, again.stderr


def test_4_a_span_line_over_2_mb_is_kept_and_the_child_is_not_a_second_root(cli, tmp_path):
    big = ["x" * 1000] * 3000  # 3 MB of argv on one span line
    run_dir = tmp_path / "big"
    sf.write_run(run_dir, {
        "1-a.spans": sf.header(1) + sf.complete(sf.sid(1), "", "process", "process", sf.T0, sf.T0 + 100)
        + sf.complete(sf.sid(2), sf.sid(1), "subprocess", "subprocess", sf.T0 + 10, sf.T0 + 90,
                      attributes={"process.command_args": big, "process.pid": 2}, kind="CLIENT"),
        "2-b.spans": sf.header(2) + sf.complete(sf.sid(3), sf.sid(2), "process", "process", sf.T0 + 20, sf.T0 + 80),
    }, {"run_id": "big"})
    result = cli("load", str(run_dir))
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    [(args,)] = cli.query("SELECT attributes->'process.command_args' FROM spans WHERE name = 'subprocess'")
    assert json.loads(args) == big
    roots = cli.query("SELECT name FROM spans WHERE parent_span_id = '' OR parent_span_id IS NULL")
    assert roots == [("process",)]


def test_5_command_args_beyond_64_kib_are_kept_whole(cli):
    args = [f"{i:05d}" + "y" * 995 for i in range(100)]  # 100 KB
    result = cli("run", "-q", "--run-id", "long", "--", *python("pass"), *args)
    assert result.returncode == 0, result.stderr
    [(stored,)] = cli.query("SELECT attributes->'process.command_args' FROM spans WHERE name = 'process'")
    assert json.loads(stored)[3:] == args


def test_6_an_existing_run_id_is_refused_before_anything_changes(cli, tmp_path):
    assert cli("run", "-q", "--run-id", "same", "--", *python("pass")).returncode == 0
    before = cli.query("SELECT span_id FROM spans ORDER BY 1")
    marker = tmp_path / "marker"
    again = cli("run", "--run-id", "same", "--out", str(tmp_path / "elsewhere"), "--", *marker_cmd(marker))
    assert again.returncode == 2 and b"run same is already in the database" in again.stderr, again.stderr
    assert b"--replace" in again.stderr and not marker.exists()
    assert cli.query("SELECT span_id FROM spans ORDER BY 1") == before
    # load of a directory whose run.json names a stored run: refused too
    copy = tmp_path / "copy"
    sf.write_run(copy, {"1-a.spans": sf.header(1) + sf.complete(sf.sid(1), "", "process", "process", sf.T0, sf.T0 + 5)},
                 {"run_id": "same"})
    refused = cli("load", str(copy))
    assert refused.returncode == 2 and b"run same is already in the database" in refused.stderr
    assert cli.query("SELECT span_id FROM spans ORDER BY 1") == before
    # the same run directory loads again; --replace replaces
    assert cli("load", str(cli.runs_dir / "same")).returncode == 0
    assert cli("load", "--replace", str(copy)).returncode == 0
    assert cli.query("SELECT span_id FROM spans") == [(sf.sid(1),)]
    replaced = cli("run", "-q", "--replace", "--run-id", "same", "--out", str(tmp_path / "elsewhere"), "--",
                   *marker_cmd(marker))
    assert replaced.returncode == 0 and marker.exists()


def test_7_repeat_checks_every_run_id_before_the_first_run(cli, tmp_path):
    assert cli("run", "-q", "--run-id", "g-2", "--", *python("pass")).returncode == 0
    marker = tmp_path / "marker"
    result = cli("run", "--repeat", "3", "--run-id", "g", "--out", str(tmp_path / "other"), "--", *marker_cmd(marker))
    assert result.returncode == 2 and b"run g-2 is already in the database" in result.stderr, result.stderr
    assert not marker.exists()
    (cli.runs_dir / "h-3").mkdir(parents=True)
    result = cli("run", "--repeat", "3", "--run-id", "h", "--", *marker_cmd(marker))
    assert result.returncode == 2 and b"h-3 already exists" in result.stderr and not marker.exists()


def test_8_load_does_not_hang_on_a_run_json_that_is_a_fifo(cli, tmp_path):
    run_dir = tmp_path / "fifo-run"
    sf.write_run(run_dir, {"1-a.spans": sf.header(1) + sf.complete(sf.sid(1), "", "process", "process", sf.T0, sf.T0 + 5)})
    os.mkfifo(run_dir / "run.json")
    result = cli("load", str(run_dir), timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"run.json: not a regular file; ignored" in result.stderr
    assert cli.query("SELECT run_id FROM runs") == [("fifo-run",)]


def test_9_a_db_that_is_not_a_duckdb_database_stops_run_before_cmd(cli, tmp_path):
    db = tmp_path / "notes.txt"
    db.write_text("my notes, not a database\n")
    marker = tmp_path / "marker"
    result = cli("run", "--db", str(db), "--", *marker_cmd(marker))
    assert result.returncode == 2 and b"is not a DuckDB database" in result.stderr, result.stderr
    assert not marker.exists() and db.read_text() == "my notes, not a database\n"


def test_10_pythonpath_set_by_env_keeps_tracing(cli, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "helper.py").write_text("VALUE = 42\n")
    code = "import helper, sys; print(helper.VALUE)"
    result = cli("run", "--json", "--run-id", "env", "--", "env", f"PYTHONPATH={mine}", sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"42\n")
    assert json.loads(result.stdout.split(b"\n", 1)[1])["processes"] == 1
    # a traced program that sets PYTHONPATH itself, then starts a child through os.system
    code = ("import os, sys; os.environ['PYTHONPATH'] = %r; "
            "os.system(sys.executable + ' -c \"import helper\"')" % str(mine))
    assert cli("run", "-q", "--run-id", "system", "--", *python(code)).returncode == 0
    assert cli.query("SELECT count(*) FROM spans WHERE run_id = 'system' AND name = 'process'") == [(2,)]


def test_10_a_process_that_falls_out_of_the_trace_is_named_with_why(cli):
    script = "PYTHONPATH=/nowhere exec %s -c 'import time; time.sleep(0.5)'" % sys.executable
    result = cli("run", "--json", "--run-id", "shell", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("is not traced" in note and "PYTHONPATH=/nowhere" in note and "sh" in note for note in notes), notes


def test_the_summary_of_a_100_line_script_fits_60_columns(cli):
    code = "import os, sys\n" + "".join(f"x{i} = {i}  # line {i}\n" for i in range(100))
    code += "import subprocess; subprocess.run([sys.executable, '-c', 'print(1)\\n' * 50], check=True)\n"
    # (no Jaeger link: a Jaeger answering on this machine would add a URL, which is never cut)
    result = cli("run", "--export", "never", "--", *python(code),
                 env=cli.env(COLUMNS="60", SELFOPT_TRACE_JAEGER_URL="http://127.0.0.1:9"))
    assert result.returncode == 0
    lines = result.stderr.decode().splitlines()
    assert all(len(line) <= 60 for line in lines), "\n".join(line for line in lines if len(line) > 60)
    table = [line for line in lines if line.startswith("python -c ")]
    assert len(table) == 2 and table[0].startswith("python -c x0"), "\n".join(lines)  # one line per process


def test_show_prints_the_whole_command_line(cli):
    code = "import sys\n" + "".join(f"y{i} = {i}\n" for i in range(30))
    assert cli("run", "-q", "--run-id", "show", "--", *python(code)).returncode == 0
    shown = cli("show", "show")
    assert shown.returncode == 0, shown.stderr
    assert "y29 = 29" in shown.stdout.decode() and "python -c" in shown.stdout.decode()


def test_subprocess_spans_carry_the_process_name(cli):
    code = "import subprocess; subprocess.run(['sh', '-c', 'true'], check=True)"
    assert cli("run", "-q", "--run-id", "names", "--", *python(code)).returncode == 0
    assert cli.query("SELECT attributes->>'process.command' FROM spans WHERE name = 'subprocess'") == [("sh -c true",)]


def test_an_install_without_its_queries_says_so_and_keeps_the_run(cli, tmp_path: Path):
    """A failure while the summary's queries run (here: a copy of the package without queries/) is
    told as itself, with the run's files kept; closing the store under another thread's query used
    to raise over it (DuckDB: the connection is busy), a traceback instead of the message."""
    import shutil

    from tests.conftest import BOOTSTRAP

    package = tmp_path / "install"
    shutil.copytree(BOOTSTRAP.parent, package / "selfopt_trace")
    env = cli.env(PYTHONPATH=str(package))
    result = cli("run", "--run-id", "noqueries", "--", *python("pass"), env=env)
    err = result.stderr.decode()
    assert result.returncode == 0 and "Traceback" not in err, err  # CMD's exit status, as ever
    assert err.endswith(f"selfopt-trace: error: queries folder not found: {package / 'queries'}; the run files are kept: "
                        f"load them with `selfopt-trace load {cli.runs_dir / 'noqueries'}`\n"), err
    assert list((cli.runs_dir / "noqueries" / "spans").glob("*.spans"))


def test_a_damaged_database_is_one_line_that_says_so_and_run_keeps_cmds_status(cli, tmp_path):
    """A store cut short (a disk that filled, a copy interrupted): each command says so in one line
    and what to do; `run` runs CMD, exits with its status, and keeps the run files with the load
    command for them."""
    assert cli("run", "-q", "--", *python("pass")).returncode == 0
    damaged = tmp_path / "damaged.duckdb"
    damaged.write_bytes(cli.db.read_bytes()[:cli.db.stat().st_size // 3])
    told = f"selfopt-trace: error: trace database {damaged} is damaged ("
    for command in (["runs"], ["sql", "SELECT 1"], ["tree", "latest"], ["query", "breakdown"]):
        result = cli(*command, "--db", str(damaged))
        err = result.stderr.decode()
        assert result.returncode == 2 and err.startswith(told) and err.count("\n") == 1, err
        assert err.endswith("): move it aside or delete it; the next `run` or `load` makes a new one\n"), err
    before = cli.run_dirs()
    result = cli("run", "-q", "--db", str(damaged), "--", *python("print('RAN'); raise SystemExit(3)"))
    err = result.stderr.decode()
    assert result.returncode == 3 and result.stdout == b"RAN\n", err
    [kept] = set(cli.run_dirs()) - set(before)
    assert err.startswith(told) and "Traceback" not in err, err
    assert err.endswith(f"; the run files are kept: load them with `selfopt-trace load {kept} --db {damaged}`\n"), err
    assert list((kept / "spans").glob("*.spans"))
    # a --run-id is checked in the database before CMD: the damage stops the run there (exit 2)
    marker = tmp_path / "marker"
    result = cli("run", "-q", "--run-id", "named", "--db", str(damaged), "--", *marker_cmd(marker))
    assert (result.returncode, result.stderr.decode().startswith(told)) == (2, True), result.stderr
    assert not marker.exists()


def test_a_db_or_out_where_no_file_can_be_made_says_what_is_in_the_way(cli, tmp_path):
    """Not the OS's words for it ("File exists" under a file, "No such file or directory" in /proc)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    marker = tmp_path / "marker"
    assert cli("run", "-q", "--no-load", "--run-id", "r", "--", *python("pass")).returncode == 0
    cases = [
        (["run", "--db", f"{blocker}/t.duckdb", "--", *marker_cmd(marker)],
         f"the directory of the trace database {blocker} is a file, not a directory"),
        (["run", "--out", f"{blocker}/sub/runs", "--", *marker_cmd(marker)],
         f"the run output directory {blocker}/sub/runs cannot be created: {blocker} is a file, not a directory"),
        (["load", str(cli.runs_dir / "r"), "--db", f"{blocker}/t.duckdb"],
         f"cannot open trace database {blocker}/t.duckdb: its directory {blocker} is a file, not a directory"),
    ]
    if os.path.isdir("/proc/self"):  # a file system that takes no new files
        cases.append((["run", "--db", "/proc/t.duckdb", "--", *marker_cmd(marker)],
                      "the directory of the trace database /proc is not writable: no file can be created there"))
    for args, message in cases:
        result = cli(*args)
        assert (result.returncode, result.stderr.decode()) == (2, f"selfopt-trace: error: {message}\n")
    assert not marker.exists()
