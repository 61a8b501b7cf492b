"""The agent's CPU edges (tracer.cpu_edges) cut the sampler's readings (store/cpu_edges.py): hand-written
run directories as docs/span-format.md describes them, and one real traced run; a real DuckDB file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from selfopt_trace.store import Store
from tests.cli.conftest import Cli
from tests.store.spanfiles import T0, complete, header, sid, write_run
from tests.store.test_cpu_samples import HEADER, MS, START, cpu, rows, store, thread, write_cpu  # noqa: F401

EDGES = "selfopt_trace.cpu.tid", "selfopt_trace.cpu.start_ns", "selfopt_trace.cpu.end_ns"


def edges(tid: int, start_cpu: int, end_cpu: int) -> dict:
    return dict(zip(EDGES, (tid, start_cpu, end_cpu)))


def intervals(store: Store, tid: int = 100) -> list[tuple[int, int, float, float]]:
    """(start, end, cpu, queued) of the thread's samples, in ms from T0."""
    found = rows(store, "SELECT start_ns, end_ns, cpu_ns, runqueue_ns FROM cpu_samples WHERE tid = $tid ORDER BY start_ns",
                 {"tid": tid})
    return [((r["start_ns"] - T0) / MS, (r["end_ns"] - T0) / MS, r["cpu_ns"] / MS, r["runqueue_ns"] / MS) for r in found]


def test_a_lagging_reading_is_cut_where_an_import_ended(store: Store, tmp_path: Path) -> None:
    """An import runs 10-38 ms and the thread then blocks on a pipe; the sampler's reading at 30 ms
    lags by 4 ms (the kernel counts a running thread at its tick), so the 30-50 ms reading holds
    12 ms, which the breakdown would spread over the wait. The import's edges say 36 ms of CPU at
    its end (2 ms queued before): the CPU goes before 38 ms, none after."""
    spans = (header(100) + complete(sid(1), "", "process", "process", T0, T0 + 100 * MS)
             + complete(sid(2), sid(1), "import slow", "import", T0 + 10 * MS, T0 + 38 * MS,
                        attributes=edges(100, 10 * MS, 36 * MS)))
    run = write_run(tmp_path / "run-1", {"100-a.spans": spans})
    write_cpu(run, HEADER + thread(T0, 100, 100, "python")
              + cpu(T0 + 10 * MS, 100, 100, 10 * MS)
              + cpu(T0 + 30 * MS, 100, 100, 24 * MS, 2 * MS)  # 4 ms behind: the thread runs
              + cpu(T0 + 50 * MS, 100, 100, 36 * MS, 2 * MS))  # blocked since 38 ms: exact

    assert store.load_run(run).warnings == []
    assert intervals(store) == [(0, 10, 10, 0), (10, 30, 18, 2), (30, 38, 8, 0), (38, 50, 0, 0)]


def test_edges_that_contradict_the_readings_or_each_other_change_nothing_they_cannot(store: Store,
                                                                                     tmp_path: Path) -> None:
    """Edges outside the thread's readings, of another thread, or going backwards leave the readings as
    they are; the thread's CPU in all is the same."""
    spans = (header(100) + complete(sid(1), "", "process", "process", T0, T0 + 100 * MS)
             + complete(sid(2), sid(1), "import early", "import", T0 - 5 * MS, T0 - 1 * MS,
                        attributes=edges(100, 0, 1 * MS))  # before the first reading
             + complete(sid(3), sid(1), "import other", "import", T0 + 10 * MS, T0 + 20 * MS,
                        attributes=edges(999, 10 * MS, 20 * MS))  # another thread, never read
             + complete(sid(4), sid(1), "import odd", "import", T0 + 20 * MS, T0 + 25 * MS,
                        attributes=edges(100, 9 * MS, 8 * MS)))  # its clock going backwards
    run = write_run(tmp_path / "run-1", {"100-a.spans": spans})
    write_cpu(run, HEADER + thread(T0, 100, 100, "python") + cpu(T0 + 10 * MS, 100, 100, 10 * MS)
              + cpu(T0 + 50 * MS, 100, 100, 30 * MS))

    store.load_run(run)
    assert intervals(store) == [(0, 10, 10, 0), (10, 50, 20, 0)]


def test_a_spawning_call_is_cut_at_its_end_not_at_the_childs(store: Store, tmp_path: Path) -> None:
    """A subprocess span lives as long as its child; its CPU edges are those of the spawning call
    (selfopt_trace.spawn_ns from its start)."""
    spans = (header(100) + complete(sid(1), "", "process", "process", T0, T0 + 100 * MS)
             + complete(sid(2), sid(1), "subprocess", "subprocess", T0 + 20 * MS, T0 + 90 * MS, kind="CLIENT",
                        attributes={"selfopt_trace.spawn_ns": 2 * MS, **edges(100, 15 * MS, 17 * MS)}))
    run = write_run(tmp_path / "run-1", {"100-a.spans": spans})
    write_cpu(run, HEADER + thread(T0, 100, 100, "python") + cpu(T0 + 10 * MS, 100, 100, 10 * MS)
              + cpu(T0 + 50 * MS, 100, 100, 18 * MS))

    store.load_run(run)
    assert intervals(store) == [(0, 10, 10, 0), (10, 20, 5, 0), (20, 22, 2, 0), (22, 50, 1, 0)]


def test_a_traced_run_records_the_edges_of_its_outermost_imports_and_spawns(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (tmp_path / "slow.py").write_text("import colorsys\nimport time\nt = time.thread_time()\n"
                                      "while time.thread_time() - t < 0.02:\n    pass\n")
    (tmp_path / "main.py").write_text("import slow\nimport subprocess, sys\n"
                                      "subprocess.run([sys.executable, '-c', 'pass'])\n")
    done = cli("run", "--run-id", "edges", "--quiet", "--import-threshold-ms", "0", "--", sys.executable, "main.py")
    assert done.returncode == 0, done.stderr.decode()

    found = {(name, parent_name): json.loads(attributes) for name, parent_name, attributes in cli.query(
        "SELECT s.name, p.name, s.attributes FROM spans AS s JOIN spans AS p ON p.span_id = s.parent_span_id "
        "WHERE s.run_id = 'edges' AND s.category IN ('import', 'subprocess') AND s.pid = p.pid")}
    slow = found["import slow", "process"]
    assert slow[EDGES[2]] - slow[EDGES[1]] >= 20 * MS  # its 20 ms of CPU
    assert EDGES[1] not in found["import colorsys", "import slow"]  # nested: no edges
    spawn = found["subprocess", "process"]
    assert 0 < spawn[EDGES[2]] - spawn[EDGES[1]] <= spawn["selfopt_trace.spawn_ns"]
    [(pid,)] = cli.query("SELECT pid FROM spans WHERE run_id = 'edges' AND name = 'process' AND parent_span_id IS NULL")
    assert slow[EDGES[0]] == spawn[EDGES[0]] == pid  # the main thread: its tid is the pid


def test_queued_time_at_an_edge_goes_to_the_side_that_did_not_run(store: Store, tmp_path: Path) -> None:
    """The thread waits 6 ms for a CPU (10-16 ms), then its import runs to the next reading: the 6 ms
    queued between the readings at 10 and 20 ms are all before the import's start. Shared by time
    (3.6 ms and 2.4 ms), the 16-20 ms interval would hold 6.4 ms in 4, and the cap at its length
    would drop 2.4 ms of the thread's time."""
    spans = (header(100) + complete(sid(1), "", "process", "process", T0, T0 + 100 * MS)
             + complete(sid(2), sid(1), "import slow", "import", T0 + 16 * MS, T0 + 25 * MS,
                        attributes=edges(100, 10 * MS, 19 * MS)))
    run = write_run(tmp_path / "run-1", {"100-a.spans": spans})
    write_cpu(run, HEADER + thread(T0, 100, 100, "python")
              + cpu(T0 + 10 * MS, 100, 100, 10 * MS)
              + cpu(T0 + 20 * MS, 100, 100, 14 * MS, 6 * MS)
              + cpu(T0 + 30 * MS, 100, 100, 19 * MS, 6 * MS))

    assert store.load_run(run).warnings == []
    assert intervals(store) == [(0, 10, 10, 0), (10, 16, 0, 6), (16, 20, 4, 0), (20, 25, 5, 0), (25, 30, 0, 0)]


WAKE = "selfopt_trace.cpu.tid", "selfopt_trace.cpu.wake_time_ns", "selfopt_trace.cpu.wake_ns", "selfopt_trace.cpu.wake_runqueue_ns"


def test_a_reading_taken_in_a_wake_up_queue_is_held_by_the_late_sleep_s_clocks(store: Store, tmp_path: Path) -> None:
    """A 20 ms sleep from 10 ms ends when the time is up (30 ms), and the thread waits for a CPU until
    36 ms. The sampler reads it at 33 ms, queued: the kernel counts the stretch only as it ends, so that
    reading shows nothing since 10 ms (an untraced wait, for the breakdown), and the next one has all
    6 ms queued. The agent's reading as the sleep returned (36.5 ms: 0.5 ms run, 6 ms queued) says the
    thread was off the CPU at most 3 ms of the 3.5 after 33: 3 ms were queued by then."""
    spans = (header(100) + complete(sid(1), "", "process", "process", T0, T0 + 100 * MS)
             + complete(sid(2), sid(1), "time.sleep", "sleep", T0 + 10 * MS, T0 + 30 * MS,
                        attributes=dict(zip(WAKE, (100, T0 + 36_500_000, 10_500_000, 6 * MS)))))
    run = write_run(tmp_path / "run-1", {"100-a.spans": spans})
    write_cpu(run, HEADER + thread(T0, 100, 100, "python")
              + cpu(T0 + 10 * MS, 100, 100, 10 * MS)
              + cpu(T0 + 33 * MS, 100, 100, 10 * MS)  # queued since 30 ms: not counted yet
              + cpu(T0 + 50 * MS, 100, 100, 14 * MS, 6 * MS))

    assert store.load_run(run).warnings == []
    assert intervals(store) == [(0, 10, 10, 0), (10, 33, 0, 3), (33, 36.5, 0.5, 3), (36.5, 50, 3.5, 0)]


def test_a_spawning_call_s_queued_time_is_its_own_not_a_share(store: Store, tmp_path: Path) -> None:
    """The thread runs 10-12 ms, waits for a CPU 12-16, and its spawning call ends at 18; then it
    blocks on the child until after the 30 ms reading. The call's end read both clocks (14 ms of CPU,
    4 ms queued), so all 4 ms go before it. Shared by the time each side did not run (4 ms before,
    12 after), 3 of them would read as running in the wait on the child."""
    spans = (header(100) + complete(sid(1), "", "process", "process", T0, T0 + 100 * MS)
             + complete(sid(2), sid(1), "subprocess", "subprocess", T0 + 11 * MS, T0 + 90 * MS, kind="CLIENT",
                        attributes={"selfopt_trace.spawn_ns": 7 * MS, **edges(100, 11 * MS, 14 * MS),
                                    "selfopt_trace.cpu.end_runqueue_ns": 4 * MS}))
    run = write_run(tmp_path / "run-1", {"100-a.spans": spans})
    write_cpu(run, HEADER + thread(T0, 100, 100, "python") + cpu(T0 + 10 * MS, 100, 100, 10 * MS)
              + cpu(T0 + 30 * MS, 100, 100, 14 * MS, 4 * MS))

    assert store.load_run(run).warnings == []
    assert intervals(store) == [(0, 10, 10, 0), (10, 11, 1, 0), (11, 18, 3, 4), (18, 30, 0, 0)]


def test_a_reading_taken_queued_is_held_by_the_main_thread_s_clocks_at_the_process_end(store: Store,
                                                                                       tmp_path: Path) -> None:
    """The main thread blocks on a pipe 10-20 ms, then waits for a CPU until 26 and runs to the
    process span's end at 28, where it read both its clocks (12 ms of CPU, 6 ms queued); the
    interpreter's teardown follows. The sampler's reading at 23 shows nothing since 10 (the kernel
    counts the queued stretch when it ends): off the CPU at most 3 of the 5 ms after it, the thread
    had queued 3 ms by then."""
    spans = header(100) + complete(sid(1), "", "process", "process", T0, T0 + 28 * MS,
                                   attributes={"selfopt_trace.thread.cpu_ns": 12 * MS,
                                               "selfopt_trace.thread.runqueue_ns": 6 * MS})
    run = write_run(tmp_path / "run-1", {"100-a.spans": spans})
    write_cpu(run, HEADER + thread(T0, 100, 100, "python") + cpu(T0 + 10 * MS, 100, 100, 10 * MS)
              + cpu(T0 + 23 * MS, 100, 100, 10 * MS)  # queued since 20 ms: not counted yet
              + cpu(T0 + 40 * MS, 100, 100, 14 * MS, 6 * MS))

    assert store.load_run(run).warnings == []
    assert intervals(store) == [(0, 10, 10, 0), (10, 23, 0, 3), (23, 28, 2, 3), (28, 40, 2, 0)]
