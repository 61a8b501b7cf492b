"""py-spy's Chrome trace into samples-file slices: merged stacks weighted by their length."""

from __future__ import annotations

import json

from selfopt_trace.watchers import profile_samples as fmt


def event(ph: str, ts: int, name: str, file: str = "", line: int = 0, pid: int = 10, tid: int = 77) -> dict:
    return {"ph": ph, "ts": ts, "name": name, "pid": pid, "tid": tid, "cat": "py-spy",
            "args": {"filename": file, "line": line}}


THREAD = "thread (12): MainThread"


def test_merged_stacks_are_weighted_by_how_long_they_lasted() -> None:
    events = [
        event("B", 0, THREAD), event("B", 0, "main", "a.py", 1), event("B", 0, "hot", "a.py", 5),
        # 30 ms unchanged (py-spy wrote nothing for the samples in between), then a wait
        event("E", 30_000, "hot", "a.py", 5), event("B", 30_000, "Condition.wait", "/x/threading.py", 320),
        event("E", 40_000, "Condition.wait", "/x/threading.py", 320), event("E", 40_000, "main", "a.py", 1),
        event("E", 40_000, THREAD),
    ]
    lines, counts = fmt.convert(events, anchor_ns=1_000_000_000, rate_hz=100, known_stacks=set())
    samples = [row.split("\t") for row in lines if row.startswith("S")]
    assert [(s[1], s[2], s[3], s[4], s[5], s[7], s[8]) for s in samples] == [
        ("1000000000", "10", "12", "30000000", "3", "", "MainThread"),
        ("1030000000", "10", "12", "10000000", "1", "il", "MainThread"),  # idle (a threading wait), the last
    ]
    stacks = [row for row in lines if row.startswith("K")]
    assert len(stacks) == 2 and '"function":"hot"' in stacks[0] and "thread (" not in stacks[0]
    assert counts == {"slices": 2, "samples": 4, "threads": 1, "pids": [10]}


def test_a_stack_seen_before_is_written_once() -> None:
    events = [event("B", 0, THREAD), event("B", 0, "f", "a.py", 1), event("E", 5_000, "f", "a.py", 1),
              event("B", 5_000, "g", "a.py", 2), event("E", 9_000, "g", "a.py", 2), event("B", 9_000, "f", "a.py", 1),
              event("E", 12_000, "f", "a.py", 1), event("E", 12_000, THREAD)]
    known: set[int] = set()
    lines, _ = fmt.convert(events, 0, 100, known)
    assert sum(row.startswith("K") for row in lines) == 2 and sum(row.startswith("S") for row in lines) == 3
    again, _ = fmt.convert(events, 0, 100, known)
    assert not any(row.startswith("K") for row in again)


def test_a_thread_py_spy_could_not_name_natively() -> None:
    events = [event("B", 0, "thread (0x7F00AB): MainThread"), event("B", 0, "f", "a.py", 1),
              event("B", 0, "thread (0x7F00CD): worker", tid=88), event("B", 0, "g", "a.py", 2, tid=88),
              event("E", 1_000, "f", "a.py", 1), event("E", 1_000, "thread (0x7F00AB): MainThread"),
              event("E", 1_000, "g", "a.py", 2, tid=88), event("E", 1_000, "thread (0x7F00CD): worker", tid=88)]
    samples = [row.split("\t") for row in fmt.convert(events, 0, 100, set())[0] if row.startswith("S")]
    assert sorted((s[3], s[8]) for s in samples) == [("", "worker"), ("10", "MainThread")]


def _loaded_run(tmp_path, samples_text: str, extra_files: dict | None = None):
    """A hand-written run: one process (pid 10) with a span `work` on its main thread, a worker thread
    (tid 11) with a span `task`, and the given samples file; loaded into a fresh store."""
    from selfopt_trace.store import Store
    from tests.store.spanfiles import T0, complete, header, sid, write_run

    ms = 1_000_000
    spans = (header(10) + complete(sid(1), "", "process", "process", T0, T0 + 1000 * ms)
             + complete(sid(2), sid(1), "work", "phase", T0 + 100 * ms, T0 + 400 * ms)
             + complete(sid(3), sid(1), "thread", "thread", T0 + 50 * ms, T0 + 900 * ms, attributes={"thread.id": 11})
             + complete(sid(4), sid(3), "task", "phase", T0 + 200 * ms, T0 + 300 * ms)
             + complete(sid(5), sid(5), "loop", "phase", T0 + 950 * ms, T0 + 960 * ms))  # bad input: its own parent
    run_dir = write_run(tmp_path / "run", {"10-00000001.spans": spans}, {"run_id": "r1"})
    (run_dir / "profile").mkdir()
    for name, text in {"samples.tsv": samples_text, **(extra_files or {})}.items():
        (run_dir / "profile" / name).write_text(text)
    with Store(tmp_path / "db.duckdb") as store:
        loaded = store.load_run(run_dir)
        _, rows = store.sql("SELECT p.tid, s.name, p.weight, p.duration_ns FROM samples p "
                            "LEFT JOIN spans s USING (run_id, span_id) ORDER BY p.time_ns, p.tid")
    return loaded, rows


def test_samples_go_to_the_innermost_span_of_their_thread_and_damaged_lines_are_counted(tmp_path) -> None:
    from selfopt_trace.store import Store
    from tests.store.spanfiles import T0

    ms = 1_000_000
    stack = fmt.line(fmt.STACK, stack_id=7, name=fmt.stack_json((("f", "a.py", 1),)))
    text = (fmt.header() + stack
            + fmt.line(fmt.SAMPLE, T0 + 150 * ms, 10, 10, 10 * ms, 1, 7, "", "MainThread")   # in work
            + fmt.line(fmt.SAMPLE, T0 + 250 * ms, 10, 11, 10 * ms, 1, 7, "", "worker")       # in task, thread 11
            + fmt.line(fmt.SAMPLE, T0 + 350 * ms, 10, 11, 100 * ms, 10, 7, "", "worker")     # task ended: thread span
            + fmt.line(fmt.SAMPLE, T0 + 385 * ms, 10, 10, 20 * ms, 2, 7, "", "MainThread")   # ends with work: 15 ms
            + "S\tgarbage\n" + fmt.line(fmt.SAMPLE, T0, 10, 10, 1, 1, 7, "", "x")[:-3] + "\n")
    loaded, rows = _loaded_run(tmp_path, text)
    assert [(tid, name) for tid, name, _, _ in rows] == [(10, "work"), (11, "task"), (11, "thread"), (10, "work")]
    assert rows[-1][2:] == (1.5, 15 * ms)  # placed by its middle (395), cut at the end of its span, its weight with it
    assert loaded.samples == 4 and loaded.skipped_lines == 2
    with Store(tmp_path / "db.duckdb") as store:
        assert store.query("hot_frames", {"run_id": "r1", "span": "loop"}).rows == []
        assert store.query("hot_frames", {"run_id": "r1", "span": "work"}).rows[0][1] == "f"
    assert any(w.code == "loader.damaged_lines" for w in loaded.warnings)


def test_load_converts_a_py_spy_file_the_watcher_never_got_to(tmp_path) -> None:
    from tests.store.spanfiles import T0

    ms = 1_000_000
    chrome = json.dumps([event("B", 0, "thread (10): MainThread"), event("B", 0, "f", "a.py", 1),
                         event("E", 20_000, "f", "a.py", 1), event("E", 20_000, "thread (10): MainThread")])
    text = fmt.header() + fmt.line(fmt.PROFILER, T0 + 120 * ms, 10, duration_ns=ms, weight="100", name="10-1.json",
                                   message='{"idle":false}')
    loaded, rows = _loaded_run(tmp_path, text, {"10-1.json": chrome})
    assert rows == [(10, "work", 2.0, 20 * ms)]
