"""The live export's counts against the run as stored: `run` sending to a real OTLP/HTTP receiver.

export.json, the `exports` row and the summary's note say how many of the run's spans were sent: the
run's own span counted on both sides, the total of the whole run (the store's, once loaded), and
`complete` only when the store holds no span the export did not see.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from selfopt_trace.export.ledger import record_live_export
from selfopt_trace.store import Store
from tests.cli.conftest import clean_environ
from tests.export.test_send import Receiver, receiver  # noqa: F401  (the real receiver, a fixture)

MANY = "SELFOPT_TRACE_SMALL_NS"  # 0: every json.dumps is a span of its own


def run_argv(run_id: str, endpoint: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "selfopt_trace", "run", "--run-id", run_id, "--json=-", "--export", "always",
            "--otlp-endpoint", endpoint, *args]


def environ(home: Path) -> dict[str, str]:
    return clean_environ(SELFOPT_TRACE_HOME=str(home), **{MANY: "0"})


def stored_total(home: Path, run_id: str) -> int:
    """The run's spans in the store, and its own span (which every export adds)."""
    with duckdb.connect(str(home / "traces.duckdb"), read_only=True) as con:
        [(count,)] = con.execute("SELECT count(*) FROM spans WHERE run_id = ?", [run_id]).fetchall()
    return count + 1


def exports_row(home: Path, run_id: str) -> tuple:
    with duckdb.connect(str(home / "traces.duckdb"), read_only=True) as con:
        [row] = con.execute("SELECT spans_total, spans_sent, complete FROM exports WHERE run_id = ?", [run_id]).fetchall()
    return row


def test_the_runs_own_span_is_counted_as_seen_and_as_sent(receiver: Receiver, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = subprocess.run(run_argv("all", receiver.url, "--", sys.executable, "-c",
                                   "import json\nfor i in range(30): json.dumps([i])"),
                          cwd=tmp_path, env=environ(home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads((home / "runs" / "all" / "export.json").read_text())
    total = stored_total(home, "all")
    assert record["spans_seen"] == record["spans_sent"] == record["spans_total"] == total > 30, record
    assert record["complete"] and record["read_to_end"] and not record["exit_budget_exceeded"], record
    assert len(set(receiver.span_ids())) == total
    assert exports_row(home, "all") == (total, total, True)
    assert f"sent {total} spans to" in " ".join(json.loads(done.stdout)["notes"])


def test_a_collector_lost_mid_run_is_said_of_the_whole_run(receiver: Receiver, tmp_path: Path) -> None:
    home, ready, lost = tmp_path / "home", tmp_path / "ready", tmp_path / "lost"
    program = (f"import json, pathlib, time\n"
               f"for i in range(40): json.dumps([i])\n"
               f"pathlib.Path({str(ready)!r}).write_text('x')\n"
               f"while not pathlib.Path({str(lost)!r}).exists(): time.sleep(0.01)\n"
               f"for i in range(400): json.dumps([i])\n")
    run = subprocess.Popen(run_argv("lost", receiver.url, "--", sys.executable, "-c", program), cwd=tmp_path,
                           env=environ(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and len(receiver.span_ids()) >= 40) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists() and receiver.span_ids(), "the export sent nothing while CMD ran"
        receiver.server.shutdown()  # the collector goes away: its port refuses from now on
        receiver.server.server_close()
        lost.write_text("x")
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    record = json.loads((home / "runs" / "lost" / "export.json").read_text())
    total = stored_total(home, "lost")
    sent = record["spans_sent"]
    assert 0 < sent < total and record["spans_total"] == total > 440, record
    assert not record["complete"] and not record["read_to_end"], record
    # cut short at once because nothing listens any more, not because the exit budget ran out
    assert not record["exit_budget_exceeded"], record
    assert exports_row(home, "lost") == (total, sent, False)
    [note] = [note for note in json.loads(out)["notes"] if "push lost" in note]
    assert f"sent {sent} of {total} spans to" in note, note


def test_spans_stored_beyond_what_the_export_read_take_complete_back(receiver: Receiver, tmp_path: Path) -> None:
    """A traced process that outlives CMD (multiprocessing's resource tracker) writes its spans at
    its own exit, after the export read the files for the last time: the store has them, the
    collector never got them."""
    home, started, go = tmp_path / "home", tmp_path / "started", tmp_path / "go"
    (tmp_path / "child.py").write_text(  # (gives up after 60 s: no child left behind by a failed test)
        f"import json, pathlib, time\n"
        f"pathlib.Path({str(started)!r}).write_text('x')\n"
        f"deadline = time.monotonic() + 60\n"
        f"while not pathlib.Path({str(go)!r}).exists() and time.monotonic() < deadline: time.sleep(0.01)\n"
        f"for i in range(10): json.dumps([i])\n")
    cmd = (f"import pathlib, subprocess, sys, time\n"
           f"subprocess.Popen([sys.executable, {str(tmp_path / 'child.py')!r}], stdout=subprocess.DEVNULL, "
           f"stderr=subprocess.DEVNULL)\n"
           f"while not pathlib.Path({str(started)!r}).exists(): time.sleep(0.01)\n")
    done = subprocess.run(run_argv("outlived", receiver.url, "--no-load", "--", sys.executable, "-c", cmd),
                          cwd=tmp_path, env=environ(home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_dir = home / "runs" / "outlived"
    record = json.loads((run_dir / "export.json").read_text())
    assert record["complete"], record  # all it read was sent: the child's spans were not written yet
    go.write_text("x")  # now the child writes them, and exits
    deadline = time.monotonic() + 30
    while sum(f.read_text().count("json.dumps") for f in (run_dir / "spans").iterdir()) < 10:
        assert time.monotonic() < deadline, "the child wrote no spans"
        time.sleep(0.05)
    with Store(tmp_path / "traces.duckdb") as store:
        store.load_run(run_dir)
        record_live_export(store, "outlived", run_dir)
        _, rows = store.sql("SELECT count(*), (SELECT spans_total FROM exports), (SELECT complete FROM exports), "
                            "(SELECT notes FROM runs) FROM spans WHERE run_id = 'outlived'")
    [(count, row_total, row_complete, notes)] = rows
    record = json.loads((run_dir / "export.json").read_text())
    assert record["spans_total"] == row_total == count + 1 > record["spans_seen"], record
    assert not record["complete"] and row_complete is False
    assert "written after the export's last read" in record["error"], record
    # the export's note, as run.json kept it for the summary, says so now
    assert [note for note in notes if f"of {count + 1} spans" in note] and len(notes) == 1, notes
