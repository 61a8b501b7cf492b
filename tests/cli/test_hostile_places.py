"""Where a new user runs the tool in a place that fights back: a deleted working directory, a full
disk, a database that is someone else's or no file at all, values no number can be. Each gets one
line that says what is wrong, CMD's status where CMD ran, and nothing of the user's is changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.cli.conftest import python


def test_run_from_a_deleted_working_directory_traces_into_the_home_given_else_says_where_to(cli, tmp_path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    # a shell left in a directory that was removed since (`rm -rf build` from another terminal)
    script = f"cd {gone} && rmdir {gone} && exec \"$@\""
    run = [*cli.argv("run", "-q", "--", sys.executable, "-c", "print('hello')")]
    done = subprocess.run(["sh", "-c", script, "sh", *run], capture_output=True, env=cli.env(), timeout=120)
    assert done.returncode == 0 and done.stdout == b"hello\n", done.stderr
    (run_id,) = [r for (r,) in cli.query("SELECT run_id FROM runs")]
    assert cli.query("SELECT count(*) FROM spans WHERE run_id = ? AND name = 'process'", [run_id]) == [(1,)]
    environ = {k: v for k, v in cli.env().items() if k != "SELFOPT_TRACE_HOME"}
    for args in (("run", "--", *python("print('hello')")), ("runs",)):
        gone.mkdir()
        done = subprocess.run(["sh", "-c", script, "sh", *cli.argv(*args)], capture_output=True, env=environ,
                              timeout=120)
        assert done.returncode == 2 and done.stdout == b"", done.stderr
        assert done.stderr.decode() == ("selfopt-trace: error: the working directory no longer exists: set "
                                        "SELFOPT_TRACE_HOME (or --db and --out) to say where traces go\n")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 KiB tmpfs (root only: skipped, saying so, where it cannot be mounted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave_kib: int) -> None:
    with open(disk / "filler", "wb") as out:
        while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave_kib * 1024:
            out.write(b"\0" * 1024)
            out.flush()


def test_a_full_disk_refuses_before_cmd_or_keeps_cmd_s_status_with_one_line(cli, small_disk: Path) -> None:
    fill(small_disk, 0)
    marker = cli.cwd / "ran"
    done = cli("run", "--", *python(f"open({str(marker)!r}, 'w')"),
               env={**cli.env(), "SELFOPT_TRACE_HOME": str(small_disk / "h")})
    assert done.returncode == 2 and not marker.exists(), done.stderr
    err = done.stderr.decode()
    assert err.startswith("selfopt-trace: error: cannot write ") and err.endswith("No space left on device\n"), err
    assert list((small_disk / "h" / "runs").iterdir()) == []  # nothing half-made left behind
    (small_disk / "filler").unlink()
    fill(small_disk, 12)  # room for the run's files, not for the database
    done = cli("run", "--", *python("print('hello'); raise SystemExit(3)"),
               env={**cli.env(), "SELFOPT_TRACE_HOME": str(small_disk / "h")})
    assert done.returncode == 3 and done.stdout == b"hello\n", done.stderr
    assert "Traceback" not in done.stderr.decode() and done.stderr.decode().count("\n") == 1, done.stderr


def test_sql_as_json_writes_intervals_times_uuids_and_non_finite_numbers(cli) -> None:
    assert cli("run", "-q", "--", *python("pass")).returncode == 0
    done = cli("sql", "SELECT INTERVAL 90 SECOND AS i, TIME '10:00' AS t, "
               "'00000000-0000-0000-0000-000000000001'::UUID AS u, 'NaN'::DOUBLE AS n, '-inf'::DOUBLE AS f",
               "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"i": "0:01:30", "t": "10:00:00", "u": "00000000-0000-0000-0000-000000000001",
                                        "n": None, "f": None}]  # strict JSON: no NaN


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_duckdb_database_of_someone_else_s_is_never_written_into(cli, tmp_path) -> None:
    theirs = tmp_path / "theirs.duckdb"
    with duckdb.connect(str(theirs)) as con:
        con.execute("CREATE TABLE orders (id INTEGER)")
    before = digest(theirs)
    for args in (("sql", "SELECT 1"), ("runs",), ("tree",), ("report", "-o", str(tmp_path / "r.html"))):
        done = cli(*args, "--db", str(theirs))
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.decode() == (f"selfopt-trace: error: cannot open trace database {theirs}: it holds tables "
                                        "but is no trace database (no `spans` table): choose another --db\n"), args
    done = cli("run", "-q", "--db", str(theirs), "--", *python("raise SystemExit(4)"))
    assert done.returncode == 4 and "no trace database" in done.stderr.decode(), done.stderr
    assert digest(theirs) == before


def test_a_database_that_is_no_regular_file_and_a_threshold_no_number_are_refused_before_cmd(cli) -> None:
    marker = cli.cwd / "ran"
    for args, message in (
            (("--db", "/dev/null"), "trace database /dev/null is not a regular file: choose another --db"),
            (("--import-threshold-ms", "nan"), "--import-threshold-ms must be a number >= 0, not nan"),
            (("--import-threshold-ms", "inf"), "--import-threshold-ms must be a number >= 0, not inf")):
        done = cli("run", *args, "--", *python(f"open({str(marker)!r}, 'w')"))
        assert done.returncode == 2 and not marker.exists(), (args, done.stderr)
        assert done.stderr.decode() == f"selfopt-trace: error: {message}\n", args
    done = cli("run", "--", *python(f"open({str(marker)!r}, 'w')"),
               env=cli.env(SELFOPT_TRACE_IMPORT_THRESHOLD_MS="1e400"))
    assert done.returncode == 2 and not marker.exists(), done.stderr
