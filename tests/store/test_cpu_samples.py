"""cpu/samples.tsv into `cpu_samples`, `process_cpu` and `process_span_cpu`: hand-written files as
docs/span-format.md ("CPU samples") describes them, a real DuckDB file, nothing mocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfopt_trace.store import Store
from tests.store.spanfiles import T0, complete, header, sid, write_run

MS = 1_000_000
HEADER = "#selfopt-trace/cpu 1\trec\ttime_ns\tpid\ttid\tprocess_start_ns\tcpu_ns\trunqueue_ns\tname\tmessage\n"
START = T0 - 10 * MS  # the sampled process's start time


def thread(at: int, pid: int, tid: int, name: str, process_start: int = START) -> str:
    return f"T\t{at}\t{pid}\t{tid}\t{process_start}\t\t\t{name}\t\t.\n"


def cpu(at: int, pid: int, tid: int, cpu_ns: int, runqueue_ns: int = 0, process_start: int = START) -> str:
    return f"C\t{at}\t{pid}\t{tid}\t{process_start}\t{cpu_ns}\t{runqueue_ns}\t\t\t.\n"


def diagnostic(at: int, code: str, message: str) -> str:
    return f"D\t{at}\t\t\t\t\t\t{code}\t{message}\t.\n"


def process_span(pid: int, n: int, start: int, end: int) -> str:
    return header(pid) + complete(sid(n), "", "process", "process", start, end)


def write_cpu(run_dir: Path, text: str | bytes) -> None:
    (run_dir / "cpu").mkdir(exist_ok=True)
    path = run_dir / "cpu" / "samples.tsv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "db" / "traces.duckdb") as opened:
        yield opened


def rows(store: Store, sql: str, params: dict | None = None) -> list[dict]:
    columns, found = store.sql(sql, params)
    return [dict(zip(columns, row)) for row in found]


def test_consecutive_readings_become_intervals_from_the_thread_start(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-a.spans": process_span(100, 1, T0, T0 + 200 * MS)})
    write_cpu(run, HEADER
              + thread(START, 100, 100, "python")
              + cpu(T0, 100, 100, 6 * MS, 1 * MS)          # start-up: 6 ms of CPU in its first 10 ms
              + thread(T0 + 20 * MS, 100, 101, "worker")
              + cpu(T0 + 50 * MS, 100, 100, 46 * MS, 2 * MS)  # running
              + cpu(T0 + 50 * MS, 100, 101, 30 * MS)          # all of its 30 ms
              + cpu(T0 + 150 * MS, 100, 100, 46 * MS, 2 * MS)  # idle for 100 ms (one held-back reading)
              + cpu(T0 + 150 * MS, 100, 101, 30 * MS)
              + cpu(T0 + 200 * MS, 100, 100, 100 * MS, 9 * MS))  # counters a bit ahead of the clock

    result = store.load_run(run)

    assert (result.cpu_samples, result.warnings) == (6, [])
    found = rows(store, "SELECT tid, thread_name, process_start_ns, (start_ns - $t0) // 1000000 AS start_ms,"
                        " (end_ns - $t0) // 1000000 AS end_ms, cpu_ns // 1000000 AS cpu_ms,"
                        " runqueue_ns // 1000000 AS runqueue_ms, gil_ns"
                        " FROM cpu_samples WHERE run_id = 'run-1' ORDER BY tid, start_ns", {"t0": T0})
    assert all(r["process_start_ns"] == START and r["gil_ns"] == 0 for r in found)  # version 1: no GIL waits told
    assert [(r["tid"], r["thread_name"], r["start_ms"], r["end_ms"], r["cpu_ms"], r["runqueue_ms"]) for r in found] == [
        (100, "python", -10, 0, 6, 1),
        (100, "python", 0, 50, 40, 1),
        (100, "python", 50, 150, 0, 0),
        (100, "python", 150, 200, 50, 0),  # 54 ms of CPU in 50 ms: clipped to the interval, nothing left to wait
        (101, "worker", 20, 50, 30, 0),
        (101, "worker", 50, 150, 0, 0),
    ]
    [total] = rows(store, "SELECT * FROM process_cpu WHERE run_id = 'run-1'")
    assert (total["pid"], total["process_start_ns"], total["threads"], total["cpu_ns"]) == (100, START, 2, 126 * MS)
    assert (total["start_ns"], total["last_sample_ns"]) == (START, T0 + 200 * MS)


def test_version_2_tells_the_waits_for_the_gil_each_within_what_its_interval_was_off_the_cpu(
        store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-a.spans": process_span(100, 1, T0, T0 + 100 * MS)})
    v2 = HEADER.replace("cpu 1", "cpu 2").replace("runqueue_ns\t", "runqueue_ns\tgil_ns\t")
    write_cpu(run, v2
              + f"T\t{T0}\t100\t101\t{START}\t\t\t\tworker\t\t.\n"
              + f"C\t{T0 + 50 * MS}\t100\t101\t{START}\t{20 * MS}\t{5 * MS}\t{25 * MS}\t\t\t.\n"
              + f"C\t{T0 + 100 * MS}\t100\t101\t{START}\t{45 * MS}\t{5 * MS}\t{60 * MS}\t\t\t.\n"
              + f"C\t{T0 + 110 * MS}\t100\t101\t{START}\t{45 * MS}\t{5 * MS}\t-1\t\t\t.\n")

    result = store.load_run(run)

    # the third reading's negative GIL count is damaged: skipped and counted
    assert (result.cpu_samples, result.skipped_lines) == (2, 1)
    found = rows(store, "SELECT cpu_ns // 1000000 AS cpu, runqueue_ns // 1000000 AS queued, gil_ns // 1000000 AS gil"
                        " FROM cpu_samples WHERE run_id = 'run-1' ORDER BY start_ns")
    # 25 ms of its first 50 off the CPU waiting for the GIL; then 35 told for 25 off the CPU: cut to 25
    assert [(r["cpu"], r["queued"], r["gil"]) for r in found] == [(20, 5, 25), (25, 0, 25)]


def test_loading_twice_replaces_the_samples(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-a.spans": process_span(100, 1, T0, T0 + 50 * MS)})
    write_cpu(run, HEADER + thread(START, 100, 100, "python") + cpu(T0, 100, 100, 5 * MS))
    store.load_run(run)
    write_cpu(run, HEADER + thread(START, 100, 100, "python") + cpu(T0, 100, 100, 5 * MS)
              + cpu(T0 + 50 * MS, 100, 100, 7 * MS))

    assert store.load_run(run).cpu_samples == 2
    assert store.sql("SELECT count(*), sum(cpu_ns) FROM cpu_samples")[1] == [(2, 7 * MS)]
    store.delete_run("run-1")
    assert store.sql("SELECT count(*) FROM cpu_samples")[1] == [(0,)]


def test_damaged_lines_are_counted_and_skipped_with_a_warning(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-a.spans": process_span(100, 1, T0, T0 + 50 * MS)})
    good = [thread(START, 100, 100, "python"), cpu(T0, 100, 100, 5 * MS), cpu(T0 + 50 * MS, 100, 100, 7 * MS)]
    damaged = [
        cpu(T0 + 60 * MS, 100, 100, 8 * MS).replace("\t.\n", "\tx\n"),  # not ending in "."
        cpu(T0 + 70 * MS, 100, 100, -1),                                  # a negative counter
        "C\tsoon\t100\t100\t1\t2\t3\t\t\t.\n",                            # a time that is no number
        "C\t1\t100\t100\t1\t2\t3\t\t\t.\textra\n",                        # a field too many
        "Z\t1\t100\t100\t1\t2\t3\t\t\t.\n",                               # an unknown record
        b"C\t1\t100\t\xff\xfe\t1\t2\t3\t\t\t.\n".decode("latin-1"),       # garbage
        cpu(T0 + 90 * MS, 100, 100, 9 * MS)[:20],                         # torn at the end (no newline)
    ]
    write_cpu(run, HEADER + good[0] + "".join(damaged[:-1]) + good[1] + good[2] + damaged[-1])

    result = store.load_run(run)

    assert result.skipped_lines == len(damaged)
    [warning] = result.warnings
    assert warning.code == "loader.damaged_lines" and "samples.tsv" in warning.message and "7 damaged" in warning.message
    assert store.sql("SELECT count(*), sum(cpu_ns) FROM cpu_samples")[1] == [(2, 7 * MS)]
    assert store.sql("SELECT source_file FROM diagnostics WHERE code = 'loader.damaged_lines'")[1] == [
        ("cpu/samples.tsv",)]


def test_an_unknown_version_or_a_missing_header_skips_the_file(store: Store, tmp_path: Path) -> None:
    for n, first_line in enumerate(("#selfopt-trace/cpu 3\trec\n", "")):
        run = write_run(tmp_path / f"run-{n}", {"100-a.spans": process_span(100, 1, T0, T0 + 50 * MS)})
        write_cpu(run, first_line + thread(START, 100, 100, "python") + cpu(T0, 100, 100, 5 * MS))

        result = store.load_run(run)

        [warning] = result.warnings
        assert warning.code == "loader.file_skipped", warning
        assert ("version 3 is not supported (this loader reads version 1 or 2)" if n == 0
                else "no CPU sample header") in warning.message
        assert result.spans == 1  # the spans load all the same
    assert store.sql("SELECT count(*) FROM cpu_samples")[1] == [(0,)]


def test_a_sampler_diagnostic_goes_to_the_diagnostics_table(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-a.spans": process_span(100, 1, T0, T0 + 50 * MS)})
    write_cpu(run, HEADER + diagnostic(T0, "cpu.unavailable", "cannot read /proc/100/task: No such file or directory"))

    result = store.load_run(run)

    assert (result.cpu_samples, result.diagnostics, result.warnings) == (0, 1, [])
    assert rows(store, "SELECT source_file, time_ns, code, message FROM diagnostics") == [{
        "source_file": "cpu/samples.tsv", "time_ns": T0, "code": "cpu.unavailable",
        "message": "cannot read /proc/100/task: No such file or directory"}]


def test_a_run_without_cpu_samples_loads_as_before(store: Store, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run-1", {"100-a.spans": process_span(100, 1, T0, T0 + 50 * MS)})

    result = store.load_run(run)

    assert (result.spans, result.cpu_samples, result.warnings) == (1, 0, [])
    assert store.sql("SELECT * FROM process_span_cpu('run-1')")[1] == []


def test_process_spans_get_the_cpu_of_their_own_process_under_a_reused_pid(store: Store, tmp_path: Path) -> None:
    # pid 100 is one process until T0+100ms, then (killed, pid reused) another from T0+300ms.
    second_start = T0 + 300 * MS
    run = write_run(tmp_path / "run-1", {
        "100-a.spans": process_span(100, 1, T0, T0 + 60 * MS),  # its span file ends before it was killed
        "100-b.spans": process_span(100, 2, second_start + 5 * MS, T0 + 400 * MS),
    })
    write_cpu(run, HEADER
              + thread(T0, 100, 100, "first", process_start=T0) + cpu(T0 + 100 * MS, 100, 100, 90 * MS, process_start=T0)
              + thread(second_start, 100, 100, "second", process_start=second_start)
              + cpu(T0 + 400 * MS, 100, 100, 20 * MS, process_start=second_start))
    store.load_run(run)

    found = rows(store, "SELECT span_id, process_start_ns, cpu_ns FROM process_span_cpu('run-1') ORDER BY span_id")

    assert found == [{"span_id": sid(1), "process_start_ns": T0, "cpu_ns": 90 * MS},
                     {"span_id": sid(2), "process_start_ns": second_start, "cpu_ns": 20 * MS}]
    assert [r["pid"] for r in rows(store, "SELECT pid FROM process_cpu")] == [100, 100]


def test_the_images_of_one_process_share_its_cpu_at_the_exec(store: Store, tmp_path: Path) -> None:
    # One process (pid 100) execs at T0+100ms: two process spans, one sampled process.
    run = write_run(tmp_path / "run-1", {
        "100-a.spans": process_span(100, 1, T0, T0 + 100 * MS),
        "100-b.spans": process_span(100, 2, T0 + 100 * MS, T0 + 300 * MS),
    })
    write_cpu(run, HEADER + thread(T0, 100, 100, "python", process_start=T0)
              + cpu(T0 + 50 * MS, 100, 100, 50 * MS, process_start=T0)
              + cpu(T0 + 150 * MS, 100, 100, 70 * MS, process_start=T0)   # 20 ms across the exec: 10 + 10
              + cpu(T0 + 300 * MS, 100, 100, 100 * MS, process_start=T0))
    store.load_run(run)

    found = rows(store, "SELECT span_id, cpu_ns FROM process_span_cpu('run-1') ORDER BY span_id")

    assert found == [{"span_id": sid(1), "cpu_ns": 60 * MS}, {"span_id": sid(2), "cpu_ns": 40 * MS}]


def test_the_cpu_the_agent_recorded_at_exit_completes_the_samples(store: Store, tmp_path: Path) -> None:
    # pid 100 exec'd at T0+100ms and recorded 130 ms of CPU at its exit (T0+300ms); the sampler's last
    # reading was at T0+250ms (100 ms). pid 200 lived 30 ms: never sampled, it recorded 25 ms.
    def exiting(pid: int, n: int, start: int, end: int, cpu_ns: int) -> str:
        return complete(sid(n), "", "process", "process", start, end, attributes={"process.cpu_ns": cpu_ns})

    run = write_run(tmp_path / "run-1", {
        "100-a.spans": process_span(100, 1, T0, T0 + 100 * MS),
        "100-b.spans": header(100) + exiting(100, 2, T0 + 100 * MS, T0 + 300 * MS, 130 * MS),
        "200-a.spans": header(200) + exiting(200, 3, T0 + 10 * MS, T0 + 40 * MS, 25 * MS),
    })
    write_cpu(run, HEADER + thread(T0, 100, 100, "python", process_start=T0)
              + cpu(T0 + 50 * MS, 100, 100, 50 * MS, process_start=T0)
              + cpu(T0 + 250 * MS, 100, 100, 100 * MS, process_start=T0))
    store.load_run(run)

    found = rows(store, "SELECT span_id, cpu_ns FROM process_span_cpu('run-1') ORDER BY span_id")

    # a quarter of the second interval's 50 ms fell before the exec: the first image 62.5, the second
    # 130 - 62.5 (it was sampled 37.5)
    assert found == [{"span_id": sid(1), "cpu_ns": 62_500_000}, {"span_id": sid(2), "cpu_ns": 67_500_000},
                     {"span_id": sid(3), "cpu_ns": 25 * MS}]


def test_process_tree_and_subprocess_show_each_process_cpu(store: Store, tmp_path: Path) -> None:
    # The parent (pid 100) starts a child (pid 200) that is SIGKILLed: its process span was closed at
    # its file's last tick (T0+60ms), its CPU was sampled until T0+250ms.
    call = complete(sid(2), sid(1), "subprocess", "subprocess", T0 + 10 * MS, T0 + 260 * MS, kind="CLIENT",
                    attributes={"process.pid": 200, "process.exit.code": -9})
    run = write_run(tmp_path / "run-1", {
        "100-a.spans": header(100) + complete(sid(1), "", "process", "process", T0, T0 + 300 * MS,
                                              attributes={"process.command": "main.py"}) + call,
        "200-b.spans": header(200) + complete(sid(3), sid(2), "process", "process", T0 + 20 * MS, T0 + 60 * MS,
                                              attributes={"process.command": "child.py"}),
    })
    write_cpu(run, HEADER + thread(T0, 100, 100, "python", process_start=T0)
              + cpu(T0 + 300 * MS, 100, 100, 30 * MS, process_start=T0)
              + thread(T0 + 10 * MS, 200, 200, "python", process_start=T0 + 10 * MS)
              + cpu(T0 + 250 * MS, 200, 200, 230 * MS, process_start=T0 + 10 * MS))
    store.load_run(run)

    tree = store.query("process_tree", {"run_id": "run-1"}).records()
    children = store.query("subprocess", {"run_id": "run-1"}).records()

    assert [(r["process"], r["cpu_ms"]) for r in tree] == [("main.py", 30.0), ("  child.py", 230.0)]
    assert [(r["command"], r["cpu_ms"]) for r in children] == [("child.py", 230.0), ("TOTAL", 230.0)]


def test_subprocess_cpu_is_the_kernels_count_at_the_reap_where_the_parent_recorded_it(store: Store,
                                                                                     tmp_path: Path) -> None:
    # child.py was sampled at 40 ms, its reaping parent got 47 ms from the kernel (its teardown after
    # the last reading); `git` is untraced: only the reap knows its 12 ms
    calls = (complete(sid(2), sid(1), "subprocess", "subprocess", T0 + 10 * MS, T0 + 100 * MS, kind="CLIENT",
                      attributes={"process.pid": 200, "process.exit.code": 0, "process.reaped.cpu_ns": 47 * MS})
             + complete(sid(4), sid(1), "subprocess", "subprocess", T0 + 110 * MS, T0 + 150 * MS, kind="CLIENT",
                        attributes={"process.pid": 300, "process.exit.code": 0, "process.executable.name": "git",
                                    "process.reaped.cpu_ns": 12 * MS}))
    run = write_run(tmp_path / "run-1", {
        "100-a.spans": header(100) + complete(sid(1), "", "process", "process", T0, T0 + 200 * MS,
                                              attributes={"process.command": "main.py"}) + calls,
        "200-b.spans": header(200) + complete(sid(3), sid(2), "process", "process", T0 + 20 * MS, T0 + 95 * MS,
                                              attributes={"process.command": "child.py"}),
    })
    write_cpu(run, HEADER + thread(T0 + 15 * MS, 200, 200, "python", process_start=T0 + 15 * MS)
              + cpu(T0 + 90 * MS, 200, 200, 40 * MS, process_start=T0 + 15 * MS))
    store.load_run(run)

    children = store.query("subprocess", {"run_id": "run-1"}).records()

    assert [(r["command"], r["cpu_ms"]) for r in children] == [("child.py", 47.0), ("git", 12.0), ("TOTAL", 59.0)]


def test_a_pid_reused_at_once_is_told_apart_by_start_time(store: Store, tmp_path: Path) -> None:
    # /proc start times are floored to 10 ms: the second process's start can read earlier than the
    # moment the first one's span ended.
    first_end, second_start = T0 + 150 * MS, T0 + 145 * MS
    run = write_run(tmp_path / "run-1", {
        "100-a.spans": process_span(100, 1, T0 + 2 * MS, first_end),
        "100-b.spans": process_span(100, 2, T0 + 152 * MS, T0 + 300 * MS),
    })
    write_cpu(run, HEADER
              + thread(T0, 100, 100, "first", process_start=T0) + cpu(first_end, 100, 100, 140 * MS, process_start=T0)
              + thread(second_start, 100, 100, "second", process_start=second_start)
              + cpu(T0 + 300 * MS, 100, 100, 100 * MS, process_start=second_start))
    store.load_run(run)

    found = rows(store, "SELECT span_id, process_start_ns, cpu_ns FROM process_span_cpu('run-1') ORDER BY span_id")

    assert found == [{"span_id": sid(1), "process_start_ns": T0, "cpu_ns": 140 * MS},
                     {"span_id": sid(2), "process_start_ns": second_start, "cpu_ns": 100 * MS}]
