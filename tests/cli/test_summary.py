"""The end-of-run summary's figures: what it computes without the breakdown query is what the query says."""

from __future__ import annotations

import html
import json
import shlex
import sys
import time
from pathlib import Path

import pytest

from selfopt_trace import import_twin, runner, summary, summary_notes
from selfopt_trace.queries import run_query
from selfopt_trace.store import Store, loader
from selfopt_trace.store.database import SMALL_STORE_SPANS
from tests.queries.builder import RunBuilder
from tests.store.spanfiles import T0, diagnostic, header, write_run

MS = 1_000_000


def assert_agrees_with_the_breakdown(store: Store, run_id: str, wall_ns: int) -> None:
    spans = store.sql("SELECT count(*) FROM spans WHERE run_id = ?", [run_id])[1][0][0]
    assert spans == 0
    without_query = summary.time_by_category(store, run_id, wall_ns, spans)
    by_query = summary.time_by_category(store, run_id, wall_ns)
    assert list(without_query.items()) == list(by_query.items())  # the same categories, in the same order
    assert without_query[summary.OUTSIDE] == wall_ns


def test_a_run_of_a_command_that_is_not_python(cli) -> None:
    result = cli("run", "--export", "never", "--json", "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["processes"] == 0 and printed["spans"] == 0
    with Store(cli.db, read_only=True) as store:
        assert_agrees_with_the_breakdown(store, printed["run_id"], round(printed["wall_ms"] * MS))


def test_a_run_whose_files_hold_no_span(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", {"10-00000001.spans": header(10) + diagnostic(T0 + MS, "agent.x", "no spans")},
                        {"run_id": "empty", "start_ns": T0, "end_ns": T0 + 5 * MS})
    with Store(tmp_path / "traces.duckdb") as store:
        store.load_run(run_dir)
        assert_agrees_with_the_breakdown(store, "empty", 5 * MS)
        result = summary.summarize(store, "empty")
    assert (result.processes, result.spans, result.diagnostics) == (0, 0, 1)
    assert result.by_category == {**dict.fromkeys(summary.BREAKDOWN_CATEGORIES, 0), summary.OUTSIDE: 5 * MS}


def traced_run(run_id: str, imports: int, children: int) -> RunBuilder:
    """A run as `run` records one (times in ms): a main process with its start-up, `imports` nested
    imports, serialization, an HTTP call answered by a server, and `children` started one at a time,
    each with its start-up and an import."""
    run = RunBuilder(run_id)
    t = 10 + imports + 10
    main = run.process(100, 0, t + 10 * children + 5)
    run.span(100, "interpreter.startup", "startup", 0, 10, main)
    for i in range(imports):
        outer = run.span(100, f"import m{i}", "import", 10 + i, 10.8 + i, main)
        run.span(100, f"import m{i}.sub", "import", 10.2 + i, 10.6 + i, outer)
    run.span(100, "json.dumps", "serialization", t - 10, t - 8, main)
    client = run.span(100, "POST", "http", t - 8, t - 1, main, kind="CLIENT")
    run.process(300, 1, t + 10 * children + 4, command="server.py")
    run.span(300, "POST /items", "http", t - 6, t - 3, client, kind="SERVER")
    for c in range(children):
        call = run.span(100, "subprocess", "subprocess", t, t + 9, main, kind="CLIENT")
        child = run.process(200 + c, t + 1, t + 8, call, command="child.py")
        run.span(200 + c, "interpreter.startup", "startup", t + 1, t + 4, child)
        run.span(200 + c, "import slow", "import", t + 4, t + 6, child)
        t += 10
    return run


def assert_summary_agrees_with_the_queries(store: Store, run_id: str) -> None:
    """The summary's time by category is the breakdown query's as `query breakdown` runs it (plus the
    run's wall time outside it), its processes `process_rows`' (both with DuckDB's optimizer)."""
    result = summary.summarize(store, run_id)
    by_query = {row["category"]: round(row["wall_ms"] * MS)
                for row in run_query(store, "breakdown", {"run_id": run_id}).records() if row["category"] != "total"}
    outside = by_query[summary.OUTSIDE] + max(0, result.wall_ns - sum(by_query.values()))
    assert sum(by_query.values()) > 0
    assert list(result.by_category.items()) == list({**by_query, summary.OUTSIDE: outside}.items())
    processes = summary.process_rows(store, run_id)
    assert result.processes == len(processes) > 1
    assert result.slowest == sorted(processes, key=lambda p: p.duration_ns, reverse=True)[:summary.SLOWEST]
    assert store.sql("SELECT current_setting('enable_optimizer')")[1] == [(True,)]  # restored after the summary


def test_the_summary_of_a_run_in_a_small_store(tmp_path: Path) -> None:
    with Store(tmp_path / "traces.duckdb") as store:
        run_id = traced_run("small", imports=3, children=2).load(store, tmp_path)
        assert store.is_small()
        assert_summary_agrees_with_the_queries(store, run_id)


def test_a_small_run_loads_into_a_small_store_as_with_the_optimizer(tmp_path: Path, monkeypatch) -> None:
    """Planned without the optimizer (a small run into a small store), the load stores the same rows."""
    rows = ["SELECT * EXCLUDE (run_id) FROM spans", "SELECT * EXCLUDE (run_id, loaded_at, run_dir) FROM runs",
            "SELECT * EXCLUDE (run_id) FROM diagnostics", "SELECT * EXCLUDE (run_id) FROM cpu_samples"]
    stored = []
    for small_run_bytes in (loader.SMALL_RUN_BYTES, 0):
        monkeypatch.setattr(loader, "SMALL_RUN_BYTES", small_run_bytes)
        with Store(tmp_path / f"traces-{small_run_bytes}.duckdb") as store:
            traced_run("small", imports=3, children=2).load(store, tmp_path / str(small_run_bytes))
            assert store.sql("SELECT current_setting('enable_optimizer')")[1] == [(True,)]
            stored.append([store.sql(f"{query} ORDER BY ALL")[1] for query in rows])
    assert stored[0] == stored[1] and stored[0][0]


def test_the_summary_of_runs_in_a_store_of_many_runs(tmp_path: Path) -> None:
    with Store(tmp_path / "traces.duckdb") as store:
        big = [traced_run(f"big-{i}", imports=SMALL_STORE_SPANS // 20, children=3).load(store, tmp_path)
               for i in range(11)]
        small = traced_run("small", imports=3, children=2).load(store, tmp_path)
        assert not store.is_small()
        assert_summary_agrees_with_the_queries(store, small)
        assert_summary_agrees_with_the_queries(store, big[-1])


def summarized_as_run_does(store: Store, run: RunBuilder, tmp_path: Path) -> summary.RunSummary:
    """The run loaded and summarized as `run` does it (run_report): its breakdown planned beside the load."""
    run_dir = run.write(tmp_path)
    planned = summary.plan_breakdown(store, run.run_id, run_dir)
    assert planned is not None
    try:
        store.load_run(run_dir)
        return summary.summarize(store, run.run_id, planned_breakdown=planned)
    finally:
        planned.close()


def test_a_breakdown_planned_beside_the_load_gives_the_figures_of_one_planned_after_it(tmp_path: Path) -> None:
    """In a small store, and where the load takes the store past SMALL_STORE_SPANS (the plan made
    without the optimizer is then set aside)."""
    with Store(tmp_path / "traces.duckdb") as store:
        small = summarized_as_run_does(store, traced_run("small", imports=3, children=2), tmp_path)
        assert store.is_small()
        big = summarized_as_run_does(store, traced_run("big", imports=SMALL_STORE_SPANS // 2, children=3), tmp_path)
        assert not store.is_small()
        for planned_ahead in (small, big):
            assert planned_ahead == summary.summarize(store, planned_ahead.run_id)
            assert planned_ahead.by_category[summary.OWN_WORK] > 0


def test_unoptimized_blocks_nest(tmp_path: Path) -> None:
    """A shipped query's block inside the summary's leaves the optimizer off until the summary's ends."""
    optimizer = "SELECT current_setting('enable_optimizer')"
    with Store(tmp_path / "traces.duckdb") as store:
        with store.planned_unoptimized(True):
            with store.planned_unoptimized(True):
                assert store.sql(optimizer)[1] == [(False,)]
            assert store.sql(optimizer)[1] == [(False,)]
        assert store.sql(optimizer)[1] == [(True,)]


def test_a_cursor_has_the_store_s_settings(tmp_path: Path) -> None:
    """The summary's queries on cursors (process rows, the breakdown planned ahead) plan as on the store."""
    with Store(tmp_path / "traces.duckdb") as store:
        cursor = store.cursor()
        try:
            settings = "SELECT current_setting('asof_loop_join_threshold'), current_setting('enable_progress_bar')"
            assert cursor.sql(settings)[1] == store.sql(settings)[1] == [(0, False)]
        finally:
            cursor.close()


def test_untraced_waits_that_dominate_say_how_to_see_where(cli) -> None:
    from tests.cli.conftest import python

    waits = cli("run", "--export", "never", "--json", "--", *python(
        "import threading; threading.Event().wait(0.5)"))  # a wait the trace does not name
    assert waits.returncode == 0, waits.stderr
    printed = json.loads(waits.stdout)
    (note,) = [note for note in printed["notes"] if note.startswith("untraced waits are")]
    assert "`selfopt-trace run --profile --idle`" in note and "`selfopt-trace query waits`" in note
    spins = cli("run", "--export", "never", "--json", "--", *python(
        "import time\nend = time.perf_counter() + 0.3\nwhile time.perf_counter() < end: pass"))
    assert spins.returncode == 0, spins.stderr
    assert not [note for note in json.loads(spins.stdout)["notes"] if note.startswith("untraced waits")]


def test_sleeps_that_dominate_say_where_the_program_slept(cli) -> None:
    from tests.cli.conftest import python

    slept = cli("run", "--export", "never", "--json", "--", *python(
        "import time\nfor _ in range(3):\n    time.sleep(0.1)\ntime.sleep(0.05)"))
    assert slept.returncode == 0, slept.stderr
    printed = json.loads(slept.stdout)
    (note,) = [note for note in printed["notes"] if note.startswith("sleeps are")]
    assert "the longest on the critical path at <string>:3 (3 sleeps, 300 ms)" in note, note  # not the last sleep's
    assert not [note for note in printed["notes"] if note.startswith("untraced waits")]


def test_the_notes_commands_name_the_store_they_read(cli, tmp_path: Path) -> None:
    """On a store other than the default one, a note's command says `--db`, and runs as written."""
    from tests.cli.conftest import python

    db = tmp_path / "elsewhere.duckdb"
    slept = cli("run", "--db", str(db), "--export", "never", "--json", "--", *python("import time\ntime.sleep(0.3)"))
    assert slept.returncode == 0, slept.stderr
    (note,) = [note for note in json.loads(slept.stdout)["notes"] if note.startswith("sleeps are")]
    command = note.rsplit("`", 2)[1]
    assert command.endswith(f" --db {db}"), note
    again = cli(*shlex.split(command)[1:])  # `selfopt-trace query critical_path --run ID --db PATH`
    assert again.returncode == 0 and "time.sleep" in again.stdout.decode(), again.stderr
    shown = cli("summary", "--db", str(db), "--json", "-")
    assert [n for n in json.loads(shown.stdout)["notes"] if n.startswith("sleeps are")] == [note]


SIDE_BY_SIDE_SLEEPS = """
import threading, time
threads = [threading.Thread(target=time.sleep, args=(0.1,)) for _ in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
time.sleep(0.25)
"""


def test_the_sleeps_note_names_the_line_that_cost_the_run_the_most(cli) -> None:
    """Four threads' 100 ms sleeps side by side cost the run 100 ms, the main thread's one sleep 250: the
    note names the latter, though the threads' sleeps add up to 400 ms."""
    from tests.cli.conftest import python

    slept = cli("run", "--export", "never", "--json", "--", *python(SIDE_BY_SIDE_SLEEPS))
    assert slept.returncode == 0, slept.stderr
    (note,) = [note for note in json.loads(slept.stdout)["notes"] if note.startswith("sleeps are")]
    assert "the longest on the critical path at <string>:6 (1 sleep, 25" in note, note


def test_the_sleeps_note_names_sleeps_off_the_critical_path_where_none_is_on_it(cli, tmp_path: Path) -> None:
    """A writer's sleeps pace the reader at the other end of a pipe, which the path goes through (it ends
    last): no sleep is on the path, so the note names the writer's line, with its sleeps' sum."""
    (tmp_path / "writer.py").write_text("import time\nfor i in range(5):\n    print(i, flush=True); time.sleep(0.06)\n")
    (tmp_path / "reader.py").write_text("import sys\nfor line in sys.stdin:\n    pass\nsum(range(3_000_000))\n")
    slept = cli("run", "--export", "never", "--json", "--", "sh", "-c",
                f"{sys.executable} {tmp_path / 'writer.py'} | {sys.executable} {tmp_path / 'reader.py'}")
    assert slept.returncode == 0, slept.stderr
    (note,) = [note for note in json.loads(slept.stdout)["notes"] if note.startswith("sleeps are")]
    assert f"none on the critical path, the most at {tmp_path / 'writer.py'}:3 (5 sleeps, 3" in note, note


IN_PROCESS_SERVER = """
import http.server, threading, time, urllib.request
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(0.05)
        self.send_response(200); self.send_header("Content-Length", "1"); self.end_headers(); self.wfile.write(b"x")
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
for _ in range(2):
    urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/").read()
server.shutdown()
"""


def test_a_server_loop_s_poll_that_a_shutdown_waited_for_is_a_sleep_with_a_note(cli) -> None:
    """An in-process server, two requests, shutdown(): the shutdown waited for the loop's select of
    0.5 s to end (~0.45 s), which was untraced waits (411 ms of 779); now the loop's sleep, and the
    note says what it is."""
    from tests.cli.conftest import python

    done = cli("run", "--export", "never", "--json", "--", *python(IN_PROCESS_SERVER))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    by_category = printed["time_by_category_ms"]
    assert by_category["sleeps"] >= 300 and by_category["untraced waits"] < 30, by_category
    (note,) = [note for note in printed["notes"] if note.startswith("sleeps are")]
    assert "socketserver.py:" in note and "serve_forever(poll_interval=0.05)" in note, note


def test_imports_that_dominate_name_the_costliest_outermost_ones(cli, tmp_path: Path) -> None:
    """`outer` imports `slow` (~100 ms of work at import), in CMD and in a child: the note names `outer`,
    the outermost import, with its time over both processes, not `slow` inside it."""
    from tests.cli.conftest import python

    (tmp_path / "slow.py").write_text("sum(range(4_000_000))\n")
    (tmp_path / "outer.py").write_text("import slow\n")
    program = f"import subprocess, sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport outer\n" \
              f"subprocess.run([sys.executable, '-c', 'import outer'], cwd={str(tmp_path)!r}, check=True)\n"
    imported = cli("run", "--export", "never", "--json", "--", *python(program))
    assert imported.returncode == 0, imported.stderr
    printed = json.loads(imported.stdout)
    (note,) = [note for note in printed["notes"] if note.startswith("imports are")]
    assert "over every process: outer " in note and " in 2 processes (" in note, note
    assert "`selfopt-trace query imports --run " in note, note
    report = cli("report", printed["run_id"], "-o", str(tmp_path / "report.html"))  # the same notes, on the page
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report.html").read_text()
    parts = note.split("`")  # its `command` as <code>
    assert "<li>" + "".join(f"<code>{html.escape(part)}</code>" if i % 2 else html.escape(part)
                            for i, part in enumerate(parts)) + "</li>" in page


UNTRACED_SERVER = """
import http.server, time

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(0.05)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

CALLS_THEN_A_SHELL = """
import http.client, subprocess, sys
server = subprocess.Popen([sys.executable, "-I", {server!r}], stdout=subprocess.PIPE, text=True)  # untraced
port = int(server.stdout.readline())
for _ in range(4):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/slow")
    connection.getresponse().read()
    connection.close()
subprocess.run(["sh", "-c", "sleep 0.3"], check=True)
server.kill()
server.wait()
"""


def test_untraced_servers_and_children_that_dominate_are_named(cli, tmp_path: Path) -> None:
    """An untraced server (python -I) answering four 50 ms calls, then `sh -c 'sleep 0.3'` waited on: each
    note names what the run waited on, not the server process, which lived through the whole run."""
    from tests.cli.conftest import python

    (tmp_path / "server.py").write_text(UNTRACED_SERVER)
    done = cli("run", "--export", "never", "--json", "--",
               *python(CALLS_THEN_A_SHELL.format(server=str(tmp_path / "server.py"))))
    assert done.returncode == 0, done.stderr
    notes = json.loads(done.stdout)["notes"]
    (servers,) = [note for note in notes if note.startswith("untraced http servers are")]
    assert "the most on GET 127.0.0.1:" in servers and " /slow: 4 calls, " in servers, servers
    assert "`selfopt-trace query roundtrip --run " in servers, servers
    (children,) = [note for note in notes if note.startswith("untraced child processes are")]
    assert "the longest on the critical path: `sh -c sleep 0.3`, 1 run, 3" in children, children
    assert "`selfopt-trace query subprocess --run " in children, children


@pytest.mark.parametrize("argv, timeout", [
    (["docker", "stop", "abc"], 10.0), (["docker", "stop", "-t", "1", "abc"], 1.0),
    (["docker", "--context", "ci", "restart", "--time=3", "abc", "def"], 3.0), (["podman", "stop", "--timeout", "2", "x"], 2.0),
    (["docker", "container", "stop", "-t", "0", "abc"], 0.0),
    (["docker", "run", "--rm", "img", "stop"], None), (["docker", "stop", "-t", "soon", "abc"], None), (["docker"], None)])
def test_a_docker_stop_s_timeout_is_read_from_its_command_line(argv: list[str], timeout: float | None) -> None:
    assert summary_notes._stop_timeout_s(argv) == timeout


def test_a_docker_stop_that_waited_its_whole_timeout_is_told_why(tmp_path: Path) -> None:
    """`docker stop -t 1` of a container whose first process ignored SIGTERM (pid 1, no handler) returns
    when the engine kills it, its timeout later: the note says so, where such stops are a large share;
    one that returned sooner (the process exited on SIGTERM) gets none."""
    def run_of(run_id: str, stop_ms: float) -> RunBuilder:
        run = RunBuilder(run_id)
        main = run.process(100, 0, stop_ms + 20)
        call = run.span(100, "subprocess", "subprocess", 10, 10 + stop_ms, main, kind="CLIENT", attributes={
            "process.command_args": ["docker", "stop", "-t", "1", "c0ffee"], "process.executable.name": "docker",
            "process.pid": 200, "selfopt_trace.spawn_ns": 1_000_000})
        run.span(100, "Popen.wait", "wait", 11, 10 + stop_ms, main, attributes={"selfopt_trace.wait.on": [call]})
        return run

    with Store(tmp_path / "traces.duckdb") as store:
        waited = summary.summarize(store, run_of("waited", 1010).load(store, tmp_path))
        stopped = summary.summarize(store, run_of("stopped", 300).load(store, tmp_path))
    (note,) = [n for n in waited.notes if n.startswith("`docker stop` waited")]
    assert "(1 stop, 1.01 s)" in note and "`docker run --init`" in note, note
    assert not [n for n in stopped.notes if n.startswith("`docker stop` waited")], stopped.notes


def test_many_short_pythons_get_the_start_up_note(cli) -> None:
    """Twenty `python -c pass` children one after the other: start-up is most of the wall time, and the note
    says how many Pythons paid it and how much each."""
    from tests.cli.conftest import python

    done = cli("run", "--export", "never", "--json", "--", *python(
        "import subprocess, sys\nfor _ in range(20):\n    subprocess.run([sys.executable, '-c', 'pass'], check=True)"))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    (note,) = [note for note in printed["notes"] if note.startswith("interpreter start-up is")]
    with Store(cli.db, read_only=True) as store:
        _, rows = store.sql("SELECT duration_ns FROM spans WHERE category = 'startup' ORDER BY duration_ns")
    startups = [ns for ns, in rows]  # 21: the median is the middle one; of 2 (below), their mean
    assert f": 21 Python processes, {summary.format_ns(startups[10])} each (median)" in note, note
    assert summary_notes._median([1, 3, 2]) == 2 and summary_notes._median([10, 30]) == 20
    share = 100 * printed["time_by_category_ms"]["interpreter start-up"] / printed["wall_ms"]
    assert abs(int(note.split()[3]) - share) <= 1, (note, share)  # "interpreter start-up is N % ..."


def test_parsing_that_dominates_names_its_costliest_call_site(cli) -> None:
    """ast.parse of a 3,000-line source, 15 times on one line: the note names that call site, with its calls."""
    from tests.cli.conftest import python

    done = cli("run", "--export", "never", "--json", "--", *python(
        "import ast\nsource = 'x = [1, 2, 3]\\n' * 3000\nfor _ in range(15):\n    ast.parse(source)"))
    assert done.returncode == 0, done.stderr
    (note,) = [note for note in json.loads(done.stdout)["notes"] if note.startswith("parsing is")]
    assert "the most, over every process: ast.parse at <string>:4 (<module>), 15 calls, " in note, note
    assert note.endswith(" -p category=parse`"), note


def test_own_work_that_dominates_says_how_to_see_its_lines(cli) -> None:
    """A loop on the CPU, under no span: most of the wall time is own work, and the note says how to see
    its lines (tests/profile: on a profiled run, it names the hottest)."""
    from tests.cli.conftest import python

    done = cli("run", "--export", "never", "--json", "--", *python("sum(range(20_000_000))"))
    assert done.returncode == 0, done.stderr
    (note,) = [note for note in json.loads(done.stdout)["notes"] if note.startswith("code on the CPU outside")]
    assert "(own work " in note and "child processes' own work" not in note, note
    assert note.endswith("run it again with `selfopt-trace run --profile`, then `selfopt-trace query hot_frames`"), note


SLOW_HANDLER = """
import http.client, http.server, threading, time

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        end = time.perf_counter() + 0.06
        while time.perf_counter() < end:
            pass
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
for _ in range(5):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
    connection.request("GET", "/report")
    connection.getresponse().read()
    connection.close()
"""


def test_a_traced_server_s_time_that_dominates_names_its_endpoint(cli) -> None:
    """Five calls to a handler working 60 ms each: the note names the endpoint and a call's time in the server."""
    from tests.cli.conftest import python

    done = cli("run", "--export", "never", "--json", "--", *python(SLOW_HANDLER))
    assert done.returncode == 0, done.stderr
    (note,) = [note for note in json.loads(done.stdout)["notes"] if note.startswith("http server time is")]
    assert "; the most on GET 127.0.0.1:" in note and " /report: 5 calls, " in note, note
    per_call = float(note.split(" /report: 5 calls, ")[1].split(" ms a call")[0])
    assert 55 <= per_call <= 120, note


def test_time_outside_traced_processes_is_explained(cli) -> None:
    done = cli("run", "--export", "never", "--json", "--", "sh", "-c", f"sleep 0.3; {sys.executable} -c pass")
    assert done.returncode == 0, done.stderr
    (note,) = [note for note in json.loads(done.stdout)["notes"] if note.startswith("outside traced processes is")]
    assert ": no traced process was alive (a shell or another program CMD ran before its Python started" in note, note


KEEP_ALIVE_CALLS = """
import http.client, http.server, threading

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; the headers and the body in two writes
    disable_nagle_algorithm = {nodelay}

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{{}}")

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
for _ in range(8):
    connection.request("GET", "/item")
    connection.getresponse().read()
"""


def test_a_delayed_ack_stall_on_a_loopback_connection_is_named(cli) -> None:
    """http.server's HTTP/1.1 reply in two writes: each keep-alive call after the first waits ~40 ms for
    a delayed ACK, 0.3 s of http client overhead that the note names, with its cause; with TCP_NODELAY
    on the handler's socket the calls take a millisecond and there is no note."""
    from tests.cli.conftest import python

    stalled = cli("run", "--export", "never", "--json", "--", *python(KEEP_ALIVE_CALLS.format(nodelay=False)))
    assert stalled.returncode == 0, stalled.stderr
    printed = json.loads(stalled.stdout)
    assert printed["time_by_category_ms"]["http client overhead"] > 200, printed["time_by_category_ms"]
    (note,) = [note for note in printed["notes"] if note.startswith("http client overhead is")]
    assert "the most on GET 127.0.0.1:" in note and " /item: 8 calls, " in note, note
    assert "Nagle's algorithm" in note and "`disable_nagle_algorithm = True`" in note, note
    assert "`selfopt-trace query roundtrip --run " in note, note
    prompt = cli("run", "--export", "never", "--json", "--", *python(KEEP_ALIVE_CALLS.format(nodelay=True)))
    assert prompt.returncode == 0, prompt.stderr
    printed = json.loads(prompt.stdout)
    assert printed["time_by_category_ms"]["http client overhead"] < 50, printed["time_by_category_ms"]
    assert not [note for note in printed["notes"] if note.startswith("http client overhead")], printed["notes"]


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.3.0.1", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("10.0.0.1", False),
                                                ("192.168.1.20", False), ("api.example.com", False), ("", False)])
def test_a_loopback_server_address_is_told_apart(host: str, loopback: bool) -> None:
    assert summary_notes._loopback(host) is loopback


SLOW_TEARDOWN = """
import time

class Slow:  # a module global, finalized after the exit handlers (the agent's last record among them)
    def __del__(self, sleep=time.sleep):
        sleep(0.4)

slow = Slow()
"""


def test_a_teardown_after_the_last_record_is_interpreter_teardown_with_a_note(cli) -> None:
    from tests.cli.conftest import python

    done = cli("run", "--export", "never", "--json", "--", *python(SLOW_TEARDOWN))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    with Store(cli.db, read_only=True) as store:
        rows = {r["category"]: r["wall_ms"] for r in run_query(store, "breakdown", {"run_id": printed["run_id"]}).records()}
        _, [(process_ms,)] = store.sql("SELECT duration_ns / 1e6 FROM spans WHERE name = 'process'")
    assert 400 <= rows["interpreter teardown"] < 400 + 100, rows
    assert rows["total"] == pytest.approx(printed["wall_ms"], abs=0.01)
    assert rows["total"] == pytest.approx(process_ms + rows["interpreter teardown"], abs=0.01)
    (process,) = printed["slowest_processes"]
    assert process["teardown_ms"] == pytest.approx(rows["interpreter teardown"], abs=0.01)
    # of it, the interpreter's finalization (the __del__'s sleep), timed to the end of Py_FinalizeEx
    assert 400 <= process["finalize_ms"] <= process["teardown_ms"], process
    (note,) = [note for note in printed["notes"] if note.startswith("interpreter teardown is")]
    assert "os._exit()" in note and "gc.freeze()" in note and f"query subprocess --run {printed['run_id']}" in note
    assert f"(pid {process['pid']})'s" in note and "of its interpreter's finalization" in note, note


LARGE_HEAP = """
import atexit, gc, sys
keep = [{"i": i, "items": [i]} for i in range(400_000)]
if sys.argv[1:] == ["freeze"]:
    atexit.register(gc.freeze)  # the exit handler the note advises (the agent's own runs after it)
"""


def test_a_large_heap_s_teardown_is_the_collector_s_walks_that_gc_freeze_spares(cli) -> None:
    """What the teardown note says, measured by the figure it is about: a heap of 800,000 tracked
    objects takes 109-122 ms to finalize, 35-37 ms once gc.freeze() has put them beyond the
    collector's full passes at exit (the rest: module teardown, freeing the heap)."""
    from tests.cli.conftest import python

    teardowns: dict[str, list[float]] = {"plain": [], "freeze": []}
    for _ in range(2):  # alternating, the shortest of each: a loaded machine stretches both alike
        for how in teardowns:
            done = cli("run", "--export", "never", "--json", "--", *python(LARGE_HEAP), how)
            assert done.returncode == 0, done.stderr
            (process,) = json.loads(done.stdout)["slowest_processes"]
            teardowns[how].append(process["teardown_ms"])
            assert process["finalize_ms"] <= process["teardown_ms"], process  # the exit and the reaping: the rest
    plain, frozen = min(teardowns["plain"]), min(teardowns["freeze"])
    assert plain >= 40 and frozen < 0.6 * plain, teardowns


def test_a_pipeline_s_first_stage_has_its_own_teardown_not_its_shell_s_end(cli) -> None:
    """`sh -c 'a | b'`: both Pythons hang under the spawn of the shell, which reaped `a` unseen as it
    exited; `b` ran on 0.5 s. `a`'s teardown is until its own exit, as the C twin saw it (it was
    0.5 s when read from the spawn's end: until the shell's)."""
    from tests.cli.conftest import python

    first, second = (" ".join(map(shlex.quote, python(code))) for code in
                     ("print('x')", "import sys, time; sys.stdin.read(); time.sleep(0.5)"))
    code = f"import subprocess; subprocess.run({f'{first} | {second}'!r}, shell=True)"
    done = cli("run", "--export", "never", "--json", "--", *python(code))
    assert done.returncode == 0, done.stderr
    processes = {p["pid"]: p for p in json.loads(done.stdout)["slowest_processes"]}
    stages = sorted((p for p in processes.values() if p["command"] != processes[min(processes)]["command"]),
                    key=lambda p: p["duration_ms"])
    assert len(stages) == 2, processes
    assert stages[1]["duration_ms"] >= 500, stages
    assert stages[0]["teardown_ms"] < 100 and stages[0]["exit_code"] == 0, stages


def test_the_processes_a_shell_reaps_have_their_exit_status_and_teardown(cli) -> None:
    """CMD is a shell: no traced process waits for its Pythons. Each one's exit status and exit time
    are what the C twin saw at its exit() (importtime.c, on_exit): a SystemExit's code, the low 8
    bits of sys.exit(263), an uncaught exception's 1; os._exit(4) as the agent's hook saw it, with no
    teardown after it. The breakdown's teardown is theirs, not time outside traced processes, where
    no other Python's span covers it (a process span starts at the kernel's start time, in clock
    ticks: up to 10 ms before the process runs, so the next Python's may begin before one's exit)."""
    from tests.cli.conftest import python

    programs = ("import json; raise SystemExit(3)", "import sys; sys.exit(256 + 7)", "1 / 0", "import os; os._exit(4)")
    script = "; ".join(" ".join(map(shlex.quote, python(code))) for code in programs) + "; sleep 0.2; exit 9"
    done = cli("run", "--export", "never", "--json", "--", "sh", "-c", script)
    assert done.returncode == 9, done.stderr
    printed = json.loads(done.stdout)
    by_program = {p["command_args"][-1]: p for p in printed["slowest_processes"]}
    processes = [by_program[code] for code in programs]
    assert [p["exit_code"] for p in processes] == [3, 7, 1, 4], processes
    with Store(cli.db, read_only=True) as store:
        _, finalized = store.sql(
            "SELECT p.pid, (f.end_ns - p.end_ns) / 1e6 FROM spans AS p JOIN spans AS f ON f.parent_span_id = p.span_id"
            " WHERE f.category = 'finalize' AND f.run_id = ?", [printed["run_id"]])
        _, lives = store.sql("SELECT p.start_ns, p.end_ns, f.end_ns FROM spans AS p LEFT JOIN spans AS f"
                             " ON f.parent_span_id = p.span_id AND f.category = 'finalize'"
                             " WHERE p.run_id = ? AND p.name = 'process'", [printed["run_id"]])
        breakdown = {r["category"]: r["wall_ms"] for r in run_query(store, "breakdown", {"run_id": printed["run_id"]}).records()}
    teardowns = dict(finalized)  # none after os._exit
    assert [p["teardown_ms"] for p in processes] == [pytest.approx(teardowns[p["pid"]], abs=0.01)
                                                     for p in processes[:3]] + [None]
    # the tails' microseconds that no process span covers
    tails = [(end, exit) for _, end, exit in lives if exit is not None]
    uncovered = sum(1 for us in range(min(a for a, _ in tails) // 1000, max(b for _, b in tails) // 1000)
                    if any(a <= us * 1000 < b for a, b in tails) and not any(s <= us * 1000 < e for s, e, _ in lives))
    assert breakdown["interpreter teardown"] == pytest.approx(uncovered / 1000, abs=0.05), breakdown
    assert breakdown["outside traced processes"] >= 200 and breakdown["total"] == pytest.approx(printed["wall_ms"], abs=0.01)


def test_a_shell_s_pythons_exit_when_the_shell_sees_them_exit(cli, tmp_path: Path) -> None:
    """Ground truth for the exit the C twin records: after each Python the shell writes the clock
    (`date +%s%N`, a program it starts once it has reaped the Python). Each Python's exit (its
    interpreter.finalize span's end) comes before that, by the kernel's end of the process, the
    shell's reap and date's start: a few milliseconds."""
    from tests.cli.conftest import python

    clock = tmp_path / "clock"
    script = "".join(f"{' '.join(map(shlex.quote, python(code)))}; date +%s%N >> {shlex.quote(str(clock))}; "
                     for code in ("import json", "import email.parser", "pass"))
    done = cli("run", "--export", "never", "--json", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    with Store(cli.db, read_only=True) as store:
        _, exits = store.sql("SELECT p.end_ns, f.end_ns FROM spans AS p JOIN spans AS f ON f.parent_span_id = p.span_id"
                             " WHERE f.category = 'finalize' AND f.run_id = ? ORDER BY p.start_ns", [printed["run_id"]])
    seen = [int(line) for line in clock.read_text().split()]
    assert len(exits) == len(seen) == 3, (exits, seen)
    for (last_record, exited), shell_saw in zip(exits, seen):
        assert last_record <= exited < shell_saw < exited + 50_000_000, (last_record, exited, shell_saw)


def test_a_child_its_parent_never_waited_for_has_its_exit_status(cli) -> None:
    """The parent exits without waiting for its child: init reaps the child, no traced process sees
    its exit. Its status is the one the C twin saw at its exit()."""
    from tests.cli.conftest import python

    child = python("import time; time.sleep(0.1); raise SystemExit(5)")
    done = cli("run", "--export", "never", "--json", "--", *python(
        f"import subprocess, time; subprocess.Popen({child!r}); time.sleep(0.3)"))
    assert done.returncode == 0, done.stderr
    processes = sorted(json.loads(done.stdout)["slowest_processes"], key=lambda p: "SystemExit(5)" in p["command"])
    assert [p["exit_code"] for p in processes] == [0, 5], processes
    assert processes[1]["teardown_ms"] < 100, processes


def test_a_short_run_s_teardown_gets_no_note(cli) -> None:
    from tests.cli.conftest import python

    done = cli("run", "--export", "never", "--json", "--", *python(SLOW_TEARDOWN.replace("sleep(0.4)", "sleep(0.02)")))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    teardown = printed["time_by_category_ms"][summary.TEARDOWN]
    assert teardown >= 20 and teardown / printed["wall_ms"] >= summary_notes.TEARDOWN_NOTE_SHARE  # a share worth a note
    assert not [note for note in printed["notes"] if note.startswith("interpreter teardown")]  # not 50 ms


def test_cmd_s_teardown_follows_its_last_image_after_an_exec(tmp_path: Path) -> None:
    # CMD (pid 100) execs a new image at 50: the first image's span ends there, which is no teardown
    run = RunBuilder("exec")
    first = run.process(100, 0, 50)
    exec_span = run.span(100, "exec", "subprocess", 50, 50, first, kind="CLIENT")
    run.process(100, 50.5, 100, exec_span, command="new image", image="b")
    with Store(tmp_path / "traces.duckdb") as store:
        run.load(store, tmp_path, end_ns=T0 + 130 * MS, pid=100)
        rows = summary.process_rows(store, "exec")
        breakdown = {r["category"]: r["wall_ms"] for r in run_query(store, "breakdown", {"run_id": "exec"}).records()}
    assert [(row.command, row.teardown_ns) for row in rows] == [("main.py", None), ("new image", 30 * MS)]
    assert breakdown["interpreter teardown"] == 30 and breakdown["total"] == 130


def test_a_process_cmd_leaves_running_is_broken_down_up_to_cmd_s_exit_with_a_note(cli) -> None:
    """`sh -c 'python x &'`: the shell exits, the traced Python goes on. The breakdown stops at CMD's
    exit (its categories summed 233 % of the wall time when the process recorded after it), the
    summary names the process and how to take in the rest; loaded again once it ends, the run keeps
    CMD's wall time."""
    # the shell exits once the program runs (its agent has written its span file by then)
    started = cli.cwd / "started"
    background = (f"{sys.executable} -c 'import time; open(\"{started}\", \"w\").close(); time.sleep(0.5)' & "
                  f"while [ ! -e {started} ]; do sleep 0.01; done")
    result = cli("run", "--export", "never", "--json", "--", "sh", "-c", background)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    (process,) = printed["slowest_processes"]
    assert process["incomplete"] and process["exit_code"] is None
    categories = printed["time_by_category_ms"]
    assert sum(categories.values()) == pytest.approx(printed["wall_ms"], abs=0.01)
    (note,) = [n for n in printed["notes"] if "had not ended when CMD exited" in n]
    assert f"pid {process['pid']}" in note and "selfopt-trace load" in note
    run_dir = cli.runs_dir / printed["run_id"]
    deadline = time.monotonic() + 30
    while not any("\nE\t" in p.read_text() for p in (run_dir / "spans").glob("*.spans")):  # its span's end
        assert time.monotonic() < deadline, "the background process did not end"
        time.sleep(0.05)
    reloaded = cli("load", str(run_dir))
    assert reloaded.returncode == 0, reloaded.stderr
    with Store(cli.db, read_only=True) as store:
        rows = run_query(store, "breakdown", {"run_id": printed["run_id"]}).records()
    total = next(r for r in rows if r["category"] == "total")
    assert total["wall_ms"] <= printed["wall_ms"] + 0.01 and total["wall_pct"] == 100.0
    assert sum(r["wall_pct"] for r in rows if r["category"] != "total") == pytest.approx(100, abs=0.2)


def test_a_helper_that_ends_with_cmd_did_not_go_on(tmp_path: Path) -> None:
    """A helper ending as CMD does (multiprocessing's resource tracker reads its parent's end) gets no
    note; one that ran on after CMD's exit does."""
    notes = {}
    with Store(tmp_path / "traces.duckdb") as store:
        for after_ms in (0.2, summary_notes.WENT_ON_AFTER_NS / MS + 5):
            run = RunBuilder(f"helper-{after_ms}")
            main = run.process(100, 0, 100)
            call = run.span(100, "subprocess", "subprocess", 5, 6, main, kind="CLIENT")
            run.process(200, 6, 100 + after_ms, call, command="tracker.py")
            run.load(store, tmp_path, end_ns=T0 + 100 * MS, pid=100)
            notes[after_ms] = [n for n in summary.summarize(store, run.run_id).notes if "had not ended" in n]
    ended_with_cmd, ran_on = notes.values()
    assert ended_with_cmd == [] and len(ran_on) == 1 and "pid 200" in ran_on[0]


def breakdown_of(cli, run_id: str) -> dict[str, float]:
    with Store(cli.db, read_only=True) as store:
        return {r["category"]: r["wall_ms"] for r in run_query(store, "breakdown", {"run_id": run_id}).records()}


def test_a_run_that_starts_and_ends_outside_traced_processes_is_the_query_s_figures(cli) -> None:
    """A shell before and after its Python child, and a CMD of no Python at all: the breakdown query
    covers the run's whole wall time (`outside traced processes` in it), and the summary shows the
    query's figures as they are."""
    child = f"{sys.executable} -c 'import time; time.sleep(0.1)'"
    for command in (["sh", "-c", f"sleep 0.2; {child}; sleep 0.1"], ["sleep", "0.2"]):
        result = cli("run", "--export", "never", "--json", "--", *command)
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        rows = breakdown_of(cli, printed["run_id"])
        assert rows.pop("total") == pytest.approx(printed["wall_ms"], abs=0.01)
        assert rows == printed["time_by_category_ms"]
        assert sum(rows.values()) == pytest.approx(printed["wall_ms"], abs=0.01)
        assert rows[summary.OUTSIDE] >= (300 if command[0] == "sh" else 200), rows


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGSEGV", "SIGABRT"])
def test_cmd_killed_by_a_signal_is_traced_until_run_reaped_it(cli, signal_name: str) -> None:
    """CMD killed before its last record: its process span runs until `run` saw it die, so none of
    its life is outside traced processes, and its start-up (written at its end, lost with it) is
    recovered from what its span file bounds."""
    import signal

    from tests.cli.conftest import python

    signum = int(getattr(signal, signal_name))
    result = cli("run", "--export", "never", "--json", "--", *python(f"import os; os.kill(os.getpid(), {signum})"))
    assert result.returncode == -signum, result.stderr
    printed = json.loads(result.stdout)
    rows = breakdown_of(cli, printed["run_id"])
    assert rows.pop("total") == pytest.approx(printed["wall_ms"], abs=0.01)
    assert rows == printed["time_by_category_ms"]
    assert rows[summary.OUTSIDE] == 0 and rows["interpreter start-up"] > 0, rows
    (process,) = printed["slowest_processes"]
    assert process["incomplete"] and process["exit_code"] == -signum
    assert process["startup_ms"] == rows["interpreter start-up"]
    assert cli.query("SELECT s.end_ns = r.end_ns FROM spans AS s JOIN runs AS r USING (run_id) "
                     "WHERE s.name = 'process'") == [(True,)]


# A span file with no header (skipped, and said so), and a damaged line in the program's own.
DAMAGING = """import glob, os, time
time.sleep(0.2)
spans = os.path.join(os.environ['SELFOPT_TRACE_DIR'], 'spans')
open(os.path.join(spans, 'bogus.spans'), 'w').write('garbage\\n')
own, = glob.glob(os.path.join(spans, f'*{os.getpid()}*'))
open(own, 'a').write('X\\tnot a record\\n')
"""


def test_summary_prints_a_stored_run_s_summary_again_as_run_printed_it(cli) -> None:
    """`summary RUN` reads back from the store what `run` printed, text and JSON alike: the loader's
    notes, the damaged lines' count, and the watchers' notes (the live export's: no collector)."""
    from tests.cli.conftest import python
    from tests.otel.conftest import free_port

    env = cli.env(COLUMNS="120", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    done = cli("run", "--export", "always", "--json", "printed.json", "--", *python(DAMAGING), env=env)
    assert done.returncode == 0, done.stderr
    printed = json.loads((cli.cwd / "printed.json").read_text())
    assert any("bogus.spans" in note for note in printed["notes"]), printed["notes"]
    assert any(note.startswith("collector unreachable") for note in printed["notes"]), printed["notes"]
    assert printed["damaged_lines"] == 1
    again = cli("summary", "latest", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == done.stderr  # the text, as printed
    as_json = cli("summary", printed["run_id"][:12], "--json", "-", env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == printed


def test_a_run_loaded_later_keeps_what_its_watchers_said(cli) -> None:
    """`run --no-load` prints the watchers' notes; run.json keeps them, so `load` then `summary` say
    them too, with the loader's own."""
    from tests.cli.conftest import python
    from tests.otel.conftest import free_port

    env = cli.env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    done = cli("run", "--no-load", "--export", "always", "--json", "-", "--", *python(DAMAGING), env=env)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)  # not loaded: the reason, then the watchers' notes
    (unreachable,) = [line for line in printed["reason"].splitlines() if line.startswith("collector unreachable")]
    loaded = cli("load", str(cli.runs_dir / printed["run_id"]))
    assert loaded.returncode == 0, loaded.stderr
    again = json.loads(cli("summary", printed["run_id"], "--json", "-").stdout)
    assert unreachable in again["notes"] and any("bogus.spans" in note for note in again["notes"]), again["notes"]
    assert again["damaged_lines"] == 1


def test_summary_of_no_such_run_says_so(cli) -> None:
    from tests.cli.conftest import python

    assert cli("run", "-q", "--", *python("pass")).returncode == 0
    missing = cli("summary", "no-such-run")
    assert missing.returncode != 0 and b"no-such-run" in missing.stderr, missing.stderr


def test_a_program_the_collector_takes_a_share_of_gets_a_note_and_its_gc_time(cli) -> None:
    """Five full passes over 500,000 lists, timed (SELFOPT_TRACE_GC): the process's `gc_ms` is their time,
    the note says what they are, and the breakdown's `garbage collection` is the time of the passes
    long enough to be spans, taken from what they interrupted (the categories still add up)."""
    from tests.cli.conftest import python

    (cli.cwd / "collects.py").write_text("import gc\ngc.collect()\n")  # a pass inside an import
    code = "import gc\nkeep = [[i] for i in range(500_000)]\nfor _ in range(5):\n    gc.collect()\nimport collects\n"
    done = cli("run", "--export", "never", "--json", "--", *python(code), env=cli.env(SELFOPT_TRACE_GC="1"))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    (process,) = printed["slowest_processes"]
    with Store(cli.db, read_only=True) as store:
        _, [(passes, spans_ms)] = store.sql("SELECT count(*), sum(duration_ns) / 1e6 FROM spans WHERE category = 'gc'")
        rows = {r["category"]: r["wall_ms"] for r in run_query(store, "breakdown", {"run_id": printed["run_id"]}).records()}
    if passes == 0 and import_twin.twin_path(runner.BOOTSTRAP_DIR) is None:  # built wherever it can be
        pytest.skip("no C twin for this Python (CPython 3.8-3.13 on Linux only): the collector's passes are not timed")
    assert passes >= 6 and process["gc_ms"] >= 50, (passes, process)
    (note,) = [note for note in printed["notes"] if note.startswith("garbage collection is")]
    assert f"(pid {process['pid']})" in note and "gc.freeze()" in note, note
    assert f"`selfopt-trace query gc --run {printed['run_id']}`" in note
    assert f"the most: `process` in pid {process['pid']}," in note, note  # the module's own passes
    header = next(line for line in done.stderr.decode().splitlines() if line.startswith("process "))
    assert header.split()[-2:] == ["gc", "exit"], header  # the processes' table has the collector's column
    where = json.loads(cli("query", "gc", "--run", printed["run_id"], "--format", "json").stdout)
    by_span = {row["interrupted"]: row for row in where}  # the module's code, then the import's
    assert by_span["process"]["passes"] >= 5 and by_span["process"]["full_passes"] >= 5, where
    assert by_span["import collects"]["full_passes"] == 1 and by_span["import collects"]["category"] == "import"
    assert sum(row["gc_ms"] for row in where) == pytest.approx(spans_ms, abs=0.01)
    assert sum(ms for category, ms in rows.items() if category != "total") == pytest.approx(rows["total"], abs=0.01)
    assert rows["garbage collection"] == pytest.approx(spans_ms, abs=0.01) and 50 <= spans_ms <= process["gc_ms"]
    assert printed["time_by_category_ms"]["garbage collection"] == pytest.approx(spans_ms, abs=0.01)


def test_a_program_the_collector_barely_touches_gets_no_gc_note(cli) -> None:
    from tests.cli.conftest import python

    done = cli("run", "--export", "never", "--json", "--", *python("import json\njson.dumps([1])"))
    assert done.returncode == 0, done.stderr
    assert not [note for note in json.loads(done.stdout)["notes"] if note.startswith("garbage collection")]
    where = cli("query", "gc")  # not timed: no row, and why
    assert where.returncode == 0 and b"SELFOPT_TRACE_GC=1 selfopt-trace run" in where.stderr, where.stderr
