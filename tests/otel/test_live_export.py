"""Live export: `run` follows the span files and sends the spans to a real Jaeger v2 while CMD runs.

The follower is checked against the loader on the same files (what is sent live is what `push` sends
after loading); the export end to end against Jaeger's HTTP API, the one its UI uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent import spanblock, spanfile
from selfopt_trace.export import SpanColumns, fetch_spans
from selfopt_trace.store import Store
from selfopt_trace.watchers.live_export import EXIT_BUDGET_S
from selfopt_trace.watchers.span_follower import SpanFollower
from tests.cli.conftest import clean_environ
from tests.otel.conftest import Jaeger, free_port
from tests.otel.jaeger_check import assert_client_server_links, assert_jaeger_has_the_run, exported_spans, stored_spans

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = Path(__file__).resolve().parent / "workload"
TRACE = "2ea76e3ca8b6a2fd1307e4452968c7ac"


# ---------------------------------------------------------------- the follower, against the loader

def header(pid: int, service: str = "svc") -> str:
    return spanfile.header_line(1_000, "follow", pid, {"service.name": service, "process.pid": pid, "host.name": "h"})


def span_id(n: int) -> str:
    return f"{n:016x}"


def follow_to_the_end(follower: SpanFollower) -> list:
    spans = []
    while True:
        got = follower.poll()
        if not got:
            return spans + follower.still_open()
        spans += got


def comparable(spans) -> dict[str, tuple]:
    return {s.span_id: (s.trace_id, s.parent_span_id, s.name, s.kind, s.category, s.start_ns, s.end_ns, s.status,
                        s.incomplete, s.service_name, s.pid, s.attributes, s.resource_attributes, s.source_file)
            for s in spans}


def test_the_follower_reads_growing_files_as_the_loader_reads_them_whole(tmp_path: Path) -> None:
    run_dir = tmp_path / "follow"
    (run_dir / "spans").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": "follow"}))
    first, second = run_dir / "spans" / "11-aaaaaaaa.spans", run_dir / "spans" / "22-bbbbbbbb.spans"
    follower = SpanFollower(run_dir, "follow")
    assert follower.poll() == []  # no file yet

    x_line = spanfile.complete_line(span_id(2), span_id(1), TRACE, "json.dumps", "INTERNAL", "serialization",
                                    2_000, 2_500, "UNSET", spanfile.encode({"n": 1, "s": "é\u2603"}))
    first.write_text(header(11) + spanfile.start_line(span_id(1), "", TRACE, "process", "INTERNAL", "process", 1_000,
                                                     spanfile.encode({"a": 1, "keep": "x"})) + x_line[:25])
    assert follower.poll() == []  # the S stays open; the X is not complete yet
    with first.open("a") as out:
        out.write(x_line[25:])
        out.write(spanfile.start_line(span_id(3), span_id(1), TRACE, "GET", "CLIENT", "http", 3_000, "{}"))
        out.write(spanfile.end_line(span_id(3), 3_900, "ERROR", spanfile.encode({"http.status": 500})))
        out.write(spanfile.start_line(span_id(4), span_id(1), TRACE, "late", "INTERNAL", "other", 4_000, "{}"))
        out.write(spanfile.end_line(span_id(4), 4_100, "OK", "{}", parent_id=span_id(3)))  # re-parented
        out.write(spanfile.end_line(span_id(2), 2_500, "UNSET", "{}"))  # an E after its X: changes nothing
        out.write("this line is damaged\n")
        out.write(spanfile.tick_line(9_000))
    emitted = follower.poll()
    assert sorted(s.span_id for s in emitted) == [span_id(2), span_id(3), span_id(4)]
    second.write_text(header(22, "other") + spanfile.start_line(span_id(5), span_id(3), TRACE, "process", "SERVER",
                                                                 "process", 3_100, "{}"))
    with first.open("a") as out:  # the process span ends, then again later (the last end counts)
        out.write(spanfile.end_line(span_id(1), 9_500, "UNSET", spanfile.encode({"a": 2, "b": [1, "x"]})))
        out.write(spanfile.end_line(span_id(1), 9_700, "UNSET", spanfile.encode({"c": None, "keep": None})))
    # A child process ends, then the span of its parent that started it, with the child's pid and exit code.
    third = run_dir / "spans" / "33-cccccccc.spans"
    third.write_text(header(33, "child") + spanfile.complete_line(span_id(7), span_id(6), TRACE, "process", "INTERNAL",
                                                                 "process", 5_100, 5_800, "UNSET", "{}"))
    assert follower.poll() == []  # process spans without an exit code wait for it
    with first.open("a") as out:
        out.write(spanfile.complete_line(span_id(6), span_id(1), TRACE, "subprocess", "CLIENT", "subprocess", 5_000,
                                         5_900, "UNSET", spanfile.encode({"process.pid": 33, "process.exit.code": 3})))
    ended = follower.poll()
    assert sorted((s.span_id, s.attributes.get("process.exit.code")) for s in ended) == [(span_id(6), 3), (span_id(7), 3)]
    assert follower.damaged_lines == 1
    rest = follower.still_open(cmd_pid=11, root_parent=None, returncode=-15)  # CMD (pid 11) killed by SIGTERM
    assert sorted((s.span_id, s.end_ns, s.incomplete) for s in rest) == [
        (span_id(1), 9_700, False), (span_id(5), 3_100, True)]  # 1: sent once, as last ended; 5: its file's last time
    assert [s.attributes for s in rest if s.span_id == span_id(1)] == [{"a": 1, "process.exit.code": -15}]
    emitted += ended + rest
    (run_dir / "run.json").write_text(json.dumps({"run_id": "follow", "pid": 11, "exit_code": -15}))

    with Store(tmp_path / "t.duckdb") as store:
        store.load_run(run_dir)
        loaded = comparable(fetch_spans(store, "follow"))
    assert comparable(emitted) == loaded  # a span sent twice: its last version is the loader's
    at_once = SpanFollower(run_dir, "follow")
    assert comparable(at_once.poll() + at_once.still_open(11, None, -15)) == loaded  # all at once: the same
    assert loaded[span_id(5)][8] is True  # still open at the end: incomplete, closed at its file's last time
    assert loaded[span_id(4)][1] == span_id(3)
    assert loaded[span_id(1)][11] == {"a": 1, "process.exit.code": -15}


def spawning_parent(tmp_path: Path, name: str, spawn_attributes: dict) -> tuple[Path, Path, Path]:
    """A run directory whose parent (pid 11) has started a subprocess span for a child (pid 22):
    (the directory, the parent's span file, the child's, not written yet)."""
    run_dir = tmp_path / name
    (run_dir / "spans").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": "follow", "pid": 11, "exit_code": 0}))
    parent, child = run_dir / "spans" / "11-aaaaaaaa.spans", run_dir / "spans" / "22-bbbbbbbb.spans"
    parent.write_text(header(11) + spanfile.start_line(span_id(1), "", TRACE, "process", "INTERNAL", "process", 1_000,
                                                      "{}")
                      + spanfile.start_line(span_id(2), span_id(1), TRACE, "subprocess", "CLIENT", "subprocess", 2_000,
                                            spanfile.encode(spawn_attributes)))
    return run_dir, parent, child


def test_a_child_that_exited_unseen_ends_at_its_last_record_as_the_loader_ends_it(tmp_path: Path) -> None:
    """Reaped in C (gevent's, uvloop's loop), the child's exit is seen by nobody: its spawning span
    ends at the parent's exit, marked so, and the loader ends it at the child's last record."""
    run_dir, parent, child = spawning_parent(tmp_path, "unseen", {"process.pid": 22})
    follower = SpanFollower(run_dir, "follow")
    emitted = follower.poll()
    child.write_text(header(22, "child") + spanfile.complete_line(span_id(3), span_id(2), TRACE, "process", "INTERNAL",
                                                                 "process", 2_100, 2_800, "UNSET", "{}"))
    emitted += follower.poll()
    with parent.open("a") as out:
        out.write(spanfile.end_line(span_id(2), 9_000, "UNSET", spanfile.encode({"selfopt_trace.child.exited_unseen": True})))
        out.write(spanfile.end_line(span_id(1), 9_500, "UNSET", "{}"))
    emitted += follower.poll() + follower.still_open(11, None, 0)
    assert [s.end_ns for s in emitted if s.span_id == span_id(2)] == [2_800]
    with Store(tmp_path / "t.duckdb") as store:
        store.load_run(run_dir)
        assert comparable(emitted) == comparable(fetch_spans(store, "follow"))


@pytest.mark.parametrize("apart", [False, True])
def test_a_process_no_traced_parent_waited_for_gets_its_own_exit_status_as_the_loader_gives_it(
        tmp_path: Path, apart: bool) -> None:
    """A Python a shell ran (CMD the shell, pid 10): its process span waits for an exit code, which its
    own interpreter.finalize span gives (the C twin's, at exit()), read in the same chunk (its X record
    before the process span's E in the follower's order) or in a later poll."""
    run_dir = tmp_path / "shell"
    (run_dir / "spans").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": "follow", "pid": 10, "exit_code": 0}))
    path = run_dir / "spans" / "11-aaaaaaaa.spans"
    finalize = spanfile.complete_line(span_id(2), span_id(1), TRACE, "interpreter.finalize", "INTERNAL", "finalize",
                                      5_000, 5_400, "UNSET", spanfile.encode({"process.exit.code": 3}))
    path.write_text(header(11) + spanfile.start_line(span_id(1), "", TRACE, "process", "INTERNAL", "process", 1_000, "{}")
                    + spanfile.end_line(span_id(1), 5_000, "UNSET", "{}") + ("" if apart else finalize))
    follower = SpanFollower(run_dir, "follow")
    emitted = follower.poll()
    if apart:
        assert emitted == []  # held for its exit code
        with path.open("a") as out:
            out.write(finalize)
        emitted = follower.poll()
    assert sorted((s.span_id, s.attributes.get("process.exit.code")) for s in emitted) == [(span_id(1), 3), (span_id(2), 3)]
    assert follower.still_open(10, None, 0) == []
    with Store(tmp_path / "t.duckdb") as store:
        store.load_run(run_dir)
        assert comparable(emitted) == comparable(fetch_spans(store, "follow"))


def test_a_killed_child_ends_where_it_was_reaped_as_the_loader_ends_it(tmp_path: Path) -> None:
    """Killed (a `subprocess.run` timeout), the child never ended its process span: the loader ends
    it where its spawning span reaped it, and so does the follower's `still_open()`."""
    run_dir, parent, child = spawning_parent(tmp_path, "killed", {})
    child.write_text(header(22, "child") + spanfile.start_line(span_id(3), span_id(2), TRACE, "process", "INTERNAL",
                                                              "process", 2_100, "{}")
                     + spanfile.complete_line(span_id(4), span_id(3), TRACE, "interpreter.startup", "INTERNAL",
                                              "startup", 2_100, 2_800, "UNSET", "{}"))
    follower = SpanFollower(run_dir, "follow")
    emitted = follower.poll()
    with parent.open("a") as out:
        out.write(spanfile.end_line(span_id(2), 9_000, "ERROR", spanfile.encode(
            {"process.pid": 22, "selfopt_trace.spawn_ns": 50, "process.exit.code": -9})))
        out.write(spanfile.end_line(span_id(1), 9_500, "UNSET", "{}"))
    emitted += follower.poll() + follower.still_open(11, None, 0)
    [killed] = [s for s in emitted if s.span_id == span_id(3)]
    assert (killed.incomplete, killed.end_ns, killed.attributes["process.exit.code"]) == (True, 9_000, -9)
    with Store(tmp_path / "t.duckdb") as store:
        store.load_run(run_dir)
        assert comparable(emitted) == comparable(fetch_spans(store, "follow"))


def test_files_the_loader_refuses_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "spans").mkdir()
    (tmp_path / "spans" / "1-a.spans").write_text(
        spanfile.start_line(span_id(1), "", TRACE, "process", "INTERNAL", "process", 1, "{}"))
    (tmp_path / "spans" / "2-b.spans").write_text(header(2).replace(f'"version":{spanfile.FORMAT_VERSION}', '"version":99')
                                                  + spanfile.complete_line(span_id(2), "", TRACE, "x", "INTERNAL",
                                                                           "other", 1, 2, "UNSET", "{}"))
    (tmp_path / "spans" / "3-c.spans").write_bytes(header(3).encode() + b"X\t\xff\xfe\n")
    follower = SpanFollower(tmp_path, "r")
    assert follow_to_the_end(follower) == []
    assert follower.refused_files() == {"1-a.spans": "no header record",
                                        "2-b.spans": "span file version 99 is not supported"}
    assert follower.damaged_lines == 1  # not UTF-8


def test_columns_of_complete_spans_are_what_the_loader_reads_in_any_chunking(tmp_path: Path) -> None:
    """The follower reads a chunk of X lines as columns (one split, one JSON parse, no per-field code)
    and anything else line by line, an M record as the X records it holds; both, whatever the
    chunking, give the loader's spans (a damaged block skipped and counted by both)."""
    import random

    rng = random.Random(7)
    run_dir = tmp_path / "cols"
    (run_dir / "spans").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": "cols", "pid": 11, "exit_code": 0}))
    lines = [header(11), spanfile.start_line(span_id(1), "", TRACE, "process", "INTERNAL", "process", 1_000, "{}")]
    for n in range(2, 3000):
        kind = rng.random()
        attributes = spanfile.encode({"n": n, "s": "é" * (n % 3), "f": n / 3, "b": n % 2 == 0, "l": [n]})
        if n in (500, 1500, 2500):
            lines.append("X\tdamaged\n")  # the loader skips it: so does the follower (that chunk line by line)
        elif n in (1000, 2000):  # a block cut short: damaged
            lines.append(spanblock.block_line([n, span_id(1), TRACE, "cut", "INTERNAL", "other", 1, 2, "OK", {}, {}])
                         .replace("\t.\n", "")[:-8] + "\t.\n")
        elif kind < 0.05:  # an OTel SDK span and the next as one M record
            scope = {"otel.scope.name": "app"}
            lines.append(spanblock.block_line([
                n, span_id(1), TRACE, "otel", "CLIENT", "http", 1_000 + n, 2_000 + n, "UNSET", scope,
                {"n": n, "t": ("é", "x"), "f": n / 3},
                n + 10_000, span_id(n), TRACE, "otel child", "INTERNAL", "other", 1_001 + n, 1_999 + n, "OK", scope, {}]))
        elif kind < 0.9:
            lines.append(spanfile.complete_line(span_id(n), span_id(1), TRACE, f"work {n % 7}", "INTERNAL", "other",
                                                1_000 + n, 2_000 + n, "OK" if n % 5 else "", attributes))
        elif kind < 0.97:
            lines.append(spanfile.start_line(span_id(n), span_id(1), TRACE, "open", "CLIENT", "http", 1_000 + n, attributes))
            lines.append(spanfile.tick_line(3_000 + n))
            lines.append(spanfile.end_line(span_id(n), 4_000 + n, "ERROR", '{"code":1}'))
        elif kind < 0.98:
            lines.append(spanfile.complete_line(span_id(n), "", TRACE, "root", "SERVER", "http", 1_000 + n, 2_000 + n,
                                                "UNSET", "{}"))  # no parent
        else:
            lines.append(spanfile.complete_line(span_id(n), span_id(1), TRACE, "child", "CLIENT", "subprocess",
                                                1_000 + n, 2_000 + n, "UNSET", spanfile.encode({"process.pid": 99})))
    lines.append(spanfile.end_line(span_id(1), 9_999_999, "UNSET", "{}"))
    content = "".join(lines).encode()
    path = run_dir / "spans" / "11-aaaaaaaa.spans"
    path.write_bytes(content)
    with Store(tmp_path / "t.duckdb") as store:
        store.load_run(run_dir)
        loaded = comparable(fetch_spans(store, "cols"))
    assert len(loaded) > 2500 and sum(span[2] == "otel child" for span in loaded.values()) > 50  # blocks read
    for chunking in ("whole", "random"):
        path.write_bytes(b"")
        follower = SpanFollower(run_dir, "cols")
        spans, column_items = [], 0
        cuts = sorted(rng.sample(range(1, len(content)), 40)) if chunking == "random" else []
        for cut_start, cut_stop in zip([0, *cuts], [*cuts, len(content)]):
            with path.open("ab") as out:
                out.write(content[cut_start:cut_stop])
            for item in follower.poll(columns=True):
                if isinstance(item, SpanColumns):
                    column_items += 1
                    spans += item.records()
                else:
                    spans.append(item)
        spans += follower.still_open(11, None, 0)
        assert comparable(spans) == loaded, chunking
        assert column_items >= (0 if chunking == "whole" else 30)  # the columns were used
        assert follower.damaged_lines == sum(line == "X\tdamaged\n" for line in lines) + 2  # and the 2 blocks cut short


# ---------------------------------------------------------------- end to end, against a real Jaeger

def selfopt(home: Path, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 180)
    return subprocess.run([sys.executable, "-m", "selfopt_trace", *args], cwd=home.parent,
                          env=clean_environ(SELFOPT_TRACE_HOME=str(home), **(env or {})), **kwargs)


def endpoint_of(jaeger: Jaeger, protocol: str) -> str:
    return f"http://{jaeger.otlp_grpc_endpoint}" if protocol == "grpc" else jaeger.otlp_http_endpoint


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_multi_process_run_arrives_in_jaeger_as_one_trace(jaeger: Jaeger, tmp_path: Path, protocol: str) -> None:
    home = tmp_path / "home"
    done = selfopt(home, "run", "--run-id", "live", "--json=-", "--otlp-protocol", protocol, "--otlp-endpoint",
                   endpoint_of(jaeger, protocol), "--", sys.executable, str(WORKLOAD / "main.py"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("done\n")  # CMD's output first and untouched
    summary = json.loads(done.stdout.removeprefix("done\n"))
    original = exported_spans(home / "traces.duckdb", "live")
    assert len(original) > 20
    assert any(f"sent {len(original)} spans to" in note for note in summary["notes"]), summary["notes"]
    trace = assert_jaeger_has_the_run(jaeger, original, "live")
    assert_client_server_links(trace, original, servers=4)
    assert sorted(jaeger.services()) == ["main.py", "selfopt-trace", "server.py", "worker.py"]
    assert {span["status"] for span in original.values()} >= {"ERROR", "UNSET"}  # the /fail call
    record = json.loads((home / "runs" / "live" / "export.json").read_text())
    assert record["complete"] and record["spans_sent"] == len(original) and record["protocol"] == protocol



def test_the_python_processes_of_a_shell_cmd_arrive_in_jaeger_as_one_trace(jaeger: Jaeger, tmp_path: Path) -> None:
    """A shell script's Python processes get no TRACEPARENT: each started a trace of its own."""
    home = tmp_path / "home"
    python = f"{sys.executable} -c 'import json; json.dumps([1])'"
    done = selfopt(home, "run", "--run-id", "shell", "-q", "--otlp-endpoint", jaeger.otlp_http_endpoint, "--",
                   "sh", "-c", f"{python}; {python}")
    assert done.returncode == 0, done.stderr
    stored = stored_spans(home / "traces.duckdb", "shell")
    processes = [span for span in stored.values() if span["name"] == "process"]
    assert len(processes) == 2 and all(span["parent_span_id"] is None for span in processes)  # both top-level
    trace = assert_jaeger_has_the_run(jaeger, exported_spans(home / "traces.duckdb", "shell"), "shell")  # of one trace
    # one tree: the run's own span at the root, both processes under it
    [root] = [span for span in trace["spans"] if not span["references"]]
    assert root["operationName"] == "selfopt-trace run"
    assert root["startTime"] <= min(span["start_ns"] // 1000 for span in processes)
    tags = {tag["key"]: tag["value"] for tag in root["tags"]}
    assert tags["process.command_line"].startswith("sh -c ") and tags["process.exit.code"] == 0
    assert sorted(span["references"][0]["spanID"] for span in trace["spans"] if span["operationName"] == "process") \
        == [root["spanID"]] * 2


def test_a_running_service_shows_up_in_jaeger_within_seconds_of_a_request(jaeger: Jaeger, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    run = subprocess.Popen([sys.executable, "-m", "selfopt_trace", "run", "--run-id", "service", "-q", "--otlp-endpoint",
                            jaeger.otlp_http_endpoint, "--", sys.executable, str(WORKLOAD / "server.py")],
                           cwd=tmp_path, env=clean_environ(SELFOPT_TRACE_HOME=str(home)), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        base = run.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:"), run.stderr.read() if run.poll() is not None else base
        latencies = []
        for n in range(3):  # the first request's span may wait for the export thread's start-up
            trace_id, parent = f"{n + 1:032x}", f"{n + 1:016x}"
            request = urllib.request.Request(f"{base}/items/{n}", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            answered = time.monotonic()
            [trace] = jaeger.trace(trace_id, timeout=15)["data"]
            latencies.append(time.monotonic() - answered)
            # the SERVER span (on a loaded machine a call in the handler may pass the span threshold too)
            [server] = [span for span in trace["spans"]
                        if {tag["key"]: tag["value"] for tag in span["tags"]}.get("span.kind") == "server"]
            assert server["references"][0]["spanID"] == parent  # the client's span, from the traceparent
            assert trace["processes"][server["processID"]]["serviceName"] == "server.py"
        assert run.poll() is None  # CMD still serves: the spans came while it ran
        assert min(latencies) < 2.0 and max(latencies[1:]) < 3.0, latencies  # the agent flushes every 100 ms, we poll every 100 ms
    finally:
        try:
            urllib.request.urlopen(f"{base}/quit", timeout=10).read()
        except OSError:
            run.terminate()
        run.wait(timeout=60)
    assert run.returncode == 0, run.stderr.read()


def test_spans_open_at_exit_are_sent_marked_incomplete(jaeger: Jaeger, tmp_path: Path) -> None:
    home = tmp_path / "home"
    marker = tmp_path / "outlived"
    # CMD leaves a traced child running: its process span is still open when CMD exits.
    (tmp_path / "child.py").write_text(f"import pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(30)\n")
    (tmp_path / "cmd.py").write_text(
        "import pathlib, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'child.py')!r}], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"while not pathlib.Path({str(marker)!r}).exists():\n    time.sleep(0.01)\n"
        "time.sleep(0.3)\n")
    done = selfopt(home, "run", "--run-id", "open", "-q", "--otlp-endpoint", jaeger.otlp_http_endpoint, "--",
                   sys.executable, str(tmp_path / "cmd.py"))
    assert done.returncode == 0, done.stderr
    original = exported_spans(home / "traces.duckdb", "open")
    [still_running] = [span for span in original.values() if span["name"] == "process" and span["incomplete"]]
    try:
        assert_jaeger_has_the_run(jaeger, original, "open", still_running=True)  # marked selfopt_trace.incomplete
        record = json.loads((home / "runs" / "open" / "export.json").read_text())
        assert record["complete"] and record["incomplete_sent"] == sum(span["incomplete"] for span in original.values())
    finally:
        os.kill(still_running["pid"], 15)


def test_a_collector_down_or_silent_changes_nothing_for_cmd(tmp_path: Path, jaeger: Jaeger) -> None:
    cmd = ["--", sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"]
    silent = __import__("socket").socket()  # accepts connections (the kernel does), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        timings = {}
        for name, options in [("never", ["--export", "never"]),
                              ("down-grpc", ["--export", "always", "--otlp-protocol", "grpc",
                                             "--otlp-endpoint", f"http://127.0.0.1:{free_port()}"]),
                              ("down-http", ["--export", "always", "--otlp-endpoint", f"http://127.0.0.1:{free_port()}"]),
                              ("silent", ["--otlp-protocol", "grpc", "--otlp-endpoint",
                                          f"http://127.0.0.1:{silent.getsockname()[1]}"])]:
            home = tmp_path / name
            started = time.monotonic()
            done = selfopt(home, "run", "--run-id", name, "--json=-", *options, *cmd)
            timings[name] = time.monotonic() - started
            assert done.returncode == 3 and done.stdout.startswith("out\n") and done.stderr.startswith("err\n")
            summary = json.loads(done.stdout.removeprefix("out\n"))
            if name != "never":
                [note] = [note for note in summary["notes"] if "push" in note]
                assert f"`selfopt-trace push {name}`" in note and ("unreachable" in note or "nothing sent" in note), note
                assert summary["diagnostics"] >= 1
                record = json.loads((home / "runs" / name / "export.json").read_text())
                assert not record["complete"]
                # CMD's end waited for the export at most its budget (the join's wake-up late on a busy machine)
                assert record["exit_wait_s"] <= EXIT_BUDGET_S + 0.5, record
                if name.startswith("down"):  # given up at once: nothing listens, no budget ran out
                    assert not record["exit_budget_exceeded"], record
        # The whole runs' walls: loose, a loaded machine moves them by seconds; a hang would be far over.
        assert max(timings.values()) - timings["never"] < 10 * EXIT_BUDGET_S, timings
    finally:
        silent.close()
    # What was not sent is in the run: push sends it once a collector is there.
    pushed = selfopt(tmp_path / "down-grpc", "push", "down-grpc", "--endpoint", jaeger.otlp_http_endpoint)
    assert pushed.returncode == 0, pushed.stderr
    original = exported_spans(tmp_path / "down-grpc" / "traces.duckdb", "down-grpc")
    assert_jaeger_has_the_run(jaeger, original, "down-grpc")


@pytest.mark.parametrize("options, env, message", [
    (["--otlp-protocol", "thrift"], {}, "unsupported OTLP protocol 'thrift'"),
    (["--otlp-endpoint", "ftp://collector:21"], {}, "the scheme must be http or https"),
    (["--otlp-endpoint", "http://collector:port"], {}, "its port is not a number"),
    ([], {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20secret,broken"}, "malformed header"),
    ([], {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    (["--export", "sometimes"], {}, "--export"),
])
def test_bad_export_settings_stop_run_before_cmd(tmp_path: Path, options: list[str], env: dict[str, str],
                                                 message: str) -> None:
    marker = tmp_path / "cmd-ran"
    done = selfopt(tmp_path / "home", "run", *options, "--", sys.executable, "-c",
                   f"open({str(marker)!r}, 'w').close()", env=env)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    runs = tmp_path / "home" / "runs"
    assert not marker.exists() and not (runs.exists() and any(runs.iterdir()))  # no CMD, no run directory
    assert "secret" not in done.stderr


def test_a_run_with_nothing_to_export_never_imports_the_sdk(tmp_path: Path) -> None:
    for options in (["--export", "never"], ["--otlp-endpoint", f"http://127.0.0.1:{free_port()}"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "selfopt_trace", "run", "-q", *options, "--",
                               sys.executable, "-c", "pass"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env=clean_environ(SELFOPT_TRACE_HOME=str(tmp_path / "home")))
        assert done.returncode == 0, done.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        assert "selfopt_trace.runner" in imported
        assert not {name for name in imported if name.startswith(("opentelemetry", "grpc", "google.protobuf"))}


def test_values_otlp_cannot_carry_are_sent_converted_and_counted(jaeger: Jaeger, tmp_path: Path) -> None:
    home = tmp_path / "home"
    huge = "a" * 70_000
    # A child whose command line holds a 70,000-character argument and a byte that is not UTF-8.
    (tmp_path / "cmd.py").write_text("import os, subprocess, sys\n"
                                     f"subprocess.run([sys.executable, '-c', 'pass', {huge!r}, os.fsdecode(b'caf\\xe9')])\n")
    done = selfopt(home, "run", "--run-id", "odd", "--json=-", "--otlp-endpoint", jaeger.otlp_http_endpoint, "--",
                   sys.executable, str(tmp_path / "cmd.py"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    [trace_id] = {span["trace_id"] for span in stored_spans(home / "traces.duckdb", "odd").values()}
    # The parent's span of the call, with the child's argv: the agent wrote the byte that is not
    # UTF-8 escaped (docs/agent.md, "Text that is not UTF-8"), the store keeps the argument whole.
    trace = jaeger.trace(trace_id, min_spans=4)["data"][0]
    [args] = [json.loads(tags["process.command_args"]) for tags in
              ({tag["key"]: tag["value"] for tag in span["tags"]} for span in trace["spans"])
              if tags["selfopt_trace.category"] == "subprocess"]
    assert args[-2:] == ["a" * 65_536, "caf\\xe9"]  # truncated for OTLP; the byte that was not UTF-8, escaped
    assert summary["diagnostics"] >= 1
    with duckdb.connect(str(home / "traces.duckdb"), read_only=True) as con:
        [(message,)] = con.execute("SELECT message FROM diagnostics WHERE run_id = 'odd' AND code = 'export.converted'"
                                   ).fetchall()
        [(stored,)] = con.execute("SELECT attributes->'process.command_args' FROM spans WHERE run_id = 'odd' "
                                  "AND category = 'subprocess'").fetchall()
    assert "truncated strings" in message, message
    assert json.loads(stored)[-2:] == [huge, "caf\\xe9"]
