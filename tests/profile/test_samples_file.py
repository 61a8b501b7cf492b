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
    lines, counts = fmt.convert(events, anchor_ns=1_000_000_000, rate_hz=100, known=fmt.Interned())
    samples = [row.split("\t") for row in lines if row.startswith("S")]
    assert [(s[1], s[2], s[3], s[4], s[5], s[7], s[8]) for s in samples] == [
        ("1000000000", "10", "12", "30000000", "3", "", "MainThread"),
        ("1030000000", "10", "12", "10000000", "1", "i", "MainThread"),  # idle (a threading wait)
    ]
    # each frame once (F: its number, function, file), each stack once (K: its frames' numbers and lines)
    frames = [row.split("\t") for row in lines if row.startswith("F")]
    assert [(f[6], f[8], f[9]) for f in frames] == [("1", "main", "a.py"), ("2", "hot", "a.py"),
                                                   ("3", "Condition.wait", "/x/threading.py")]
    stacks = [row.split("\t") for row in lines if row.startswith("K")]
    assert [(k[8], k[9]) for k in stacks] == [("1,2", "1,5"), ("1,3", "1,320")]
    assert counts == {"slices": 2, "samples": 4, "threads": 1, "pids": [10], "moved_ms": 0.0, "within_ms": 0}


def test_py_spy_s_time_zero_is_the_anchor_unless_its_sampling_line_rules_the_anchor_out() -> None:
    ms = 1_000_000
    # it said it samples at 100 ms; its first sample, stamped after that line, at 30 ms on its clock:
    # its zero lies within [70, 100] ms
    assert fmt.time_zero(80 * ms, 100 * ms, 30_000) == 80 * ms
    assert fmt.time_zero(70 * ms, 100 * ms, 30_000) == 70 * ms and fmt.time_zero(100 * ms, 100 * ms, 30_000) == 100 * ms
    # a start-up slower than starting it (the anchor too early), a watcher late to note the anchor
    # (too late): the earliest zero, so times come out early as the loader's placement expects
    assert fmt.time_zero(0, 100 * ms, 30_000) == 70 * ms
    assert fmt.time_zero(120 * ms, 100 * ms, 30_000) == 70 * ms
    assert fmt.time_zero(5 * ms, None, 30_000) == 5 * ms and fmt.time_zero(5 * ms, 100 * ms, None) == 5 * ms


def test_a_slow_py_spy_s_samples_are_placed_by_its_sampling_line() -> None:
    ms = 1_000_000
    events = [event("B", 0, THREAD), event("B", 40_000, THREAD), event("B", 40_000, "main", "a.py", 1),
              event("E", 60_000, "main", "a.py", 1), event("E", 60_000, THREAD)]
    lines, counts = fmt.convert(events, anchor_ns=1000 * ms, rate_hz=100, known=fmt.Interned(), attached_ns=2000 * ms)
    (sample,) = [row.split("\t") for row in lines if row.startswith("S")]
    assert (int(sample[1]), int(sample[4])) == (2040 * ms, 20 * ms)  # zero at 2000 - 0 (the first B: a thread's)
    assert (counts["moved_ms"], counts["within_ms"]) == (1000.0, 0.0)
    lines, counts = fmt.convert(events[1:], anchor_ns=1000 * ms, rate_hz=100, known=fmt.Interned(),
                                attached_ns=2000 * ms)
    (sample,) = [row.split("\t") for row in lines if row.startswith("S")]
    assert int(sample[1]) == 2000 * ms and (counts["moved_ms"], counts["within_ms"]) == (960.0, 40.0)


def test_a_stack_seen_before_is_written_once() -> None:
    events = [event("B", 0, THREAD), event("B", 0, "f", "a.py", 1), event("E", 5_000, "f", "a.py", 1),
              event("B", 5_000, "g", "a.py", 2), event("E", 9_000, "g", "a.py", 2), event("B", 9_000, "f", "a.py", 1),
              event("E", 12_000, "f", "a.py", 1), event("E", 12_000, THREAD)]
    known = fmt.Interned()
    lines, _ = fmt.convert(events, 0, 100, known)
    assert [row[0] for row in lines] == ["F", "K", "S", "F", "K", "S", "S"]
    again, _ = fmt.convert(events, 0, 100, known)
    assert [row[0] for row in again] == ["S", "S", "S"]


def test_the_agent_s_frames_are_left_out_and_its_own_thread_is_not_written() -> None:
    agent = "/opt/x/bootstrap/selfopt_trace_agent"
    flusher = "thread (13): "
    events = [
        # the program sleeps through the agent's wrapper of time.sleep, then calls on through a hook's wrapper
        event("B", 0, THREAD), event("B", 0, "main", "a.py", 1),
        event("B", 0, "_install_sleep_hook.<locals>.sleep", f"{agent}/process.py", 112),
        event("E", 20_000, "_install_sleep_hook.<locals>.sleep", f"{agent}/process.py", 112),
        event("B", 20_000, "dumps_hook", f"{agent}/hooks/serialization.py", 40), event("B", 20_000, "dumps", "/x/json/__init__.py", 231),
        event("E", 30_000, "dumps", "/x/json/__init__.py", 231), event("E", 30_000, "dumps_hook", f"{agent}/hooks/serialization.py", 40),
        event("E", 30_000, "main", "a.py", 1), event("E", 30_000, THREAD),
        # the agent's flusher thread: its frames alone
        event("B", 0, flusher, tid=78), event("B", 0, "_flusher_loop", f"{agent}/tracer.py", 720, tid=78),
        event("E", 30_000, "_flusher_loop", f"{agent}/tracer.py", 720, tid=78), event("E", 30_000, flusher, tid=78),
    ]
    lines, counts = fmt.convert(events, 0, 100, fmt.Interned())
    assert not [row for row in lines if "selfopt_trace_agent" in row]
    frames = {f[6]: f[8] for f in (row.split("\t") for row in lines if row.startswith("F"))}
    stacks = [[frames[n] for n in k[8].split(",")] for k in (row.split("\t") for row in lines if row.startswith("K"))]
    assert stacks == [["main"], ["main", "dumps"]]  # the sleep under the line that called it
    samples = [row.split("\t") for row in lines if row.startswith("S")]
    assert [(s[3], s[4]) for s in samples] == [("12", "20000000"), ("12", "10000000")]
    assert counts["threads"] == 1


def test_the_import_machinery_loading_the_agent_s_own_module_goes_with_the_agent() -> None:
    """A hook's module loads at its first call (time.sleep's): the import machinery the agent runs for
    it is the agent's work, shown under the program's line; a program module imported through the
    agent's import wrapper keeps its machinery's frames."""
    agent = "/opt/x/bootstrap/selfopt_trace_agent"
    boot, external = "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>"
    stacks = {
        "hook's module": [("main", "a.py", 1), ("sleep", f"{agent}/lazy.py", 80), ("_resolve", f"{agent}/lazy.py", 200),
                          ("_find_and_load", boot, 1176), ("_call_with_frames_removed", boot, 241)],
        "between two of the agent's": [("main", "a.py", 2), ("_run", f"{agent}/lazy.py", 150),
                                       ("_load_unlocked", boot, 690), ("<module>", f"{agent}/hooks/time_.py", 1)],
        # the bootstrap's shim runs a module of the lazy bundle
        "the shim's": [("main", "a.py", 4), ("_load_bundled", f"{agent}/importtime.py", 190),
                       ("_selfopt_trace_run_module", "/opt/x/bootstrap/sitecustomize.py", 90)],
        "a program module": [("main", "a.py", 3), ("_find_and_load", f"{agent}/importtime.py", 90),
                             ("_load_unlocked", boot, 690), ("get_code", external, 1070), ("<module>", "b.py", 1)],
    }
    kept = {name: [f[0] for f in fmt._program_frames(tuple(frames))] for name, frames in stacks.items()}
    assert kept == {"hook's module": ["main"], "between two of the agent's": ["main"], "the shim's": ["main"],
                    "a program module": ["main", "_load_unlocked", "get_code", "<module>"]}


def test_a_torn_frame_s_line_is_no_line() -> None:
    # py-spy --nonblocking reads frames while the program changes them: one had line 4294967045
    events = [event("B", 0, THREAD), event("B", 0, "__package__", "__doc__", 4294967045), event("B", 0, "f", "a.py", -3),
              event("E", 10_000, "f", "a.py", -3), event("E", 10_000, "__package__", "__doc__", 4294967045),
              event("E", 10_000, THREAD)]
    lines, _ = fmt.convert(events, 0, 100, fmt.Interned())
    (stack,) = [row.split("\t") for row in lines if row.startswith("K")]
    assert stack[9] == "0,0"


def test_a_thread_py_spy_could_not_name_natively() -> None:
    events = [event("B", 0, "thread (0x7F00AB): MainThread"), event("B", 0, "f", "a.py", 1),
              event("B", 0, "thread (0x7F00CD): worker", tid=88), event("B", 0, "g", "a.py", 2, tid=88),
              event("E", 1_000, "f", "a.py", 1), event("E", 1_000, "thread (0x7F00AB): MainThread"),
              event("E", 1_000, "g", "a.py", 2, tid=88), event("E", 1_000, "thread (0x7F00CD): worker", tid=88)]
    samples = [row.split("\t") for row in fmt.convert(events, 0, 100, fmt.Interned())[0] if row.startswith("S")]
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
    stack = "".join(fmt.Interned().stack_lines(7, (("f", "a.py", 1),)))
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
    # that py-spy said it samples at 500 ms: its zero is there, past the end of `work`
    attached = fmt.line(fmt.ATTACHED, T0 + 500 * ms, 10, name="10-1.json")
    _, rows = _loaded_run(tmp_path / "attached", text + attached, {"10-1.json": chrome})
    assert rows == [(10, "process", 2.0, 20 * ms)]


def _stacks_of(tmp_path, samples_text: str, extra_files: dict | None = None):
    """The loaded run's stacks as tuples, its frames and stack_frames, and the load result."""
    from selfopt_trace.store import Store

    loaded, _ = _loaded_run(tmp_path, samples_text, extra_files)
    with Store(tmp_path / "db.duckdb") as store:
        _, stacks = store.sql("SELECT stack_id, frames FROM stacks")
        _, frames = store.sql("SELECT frame_id, function, file FROM frames ORDER BY ALL")
        _, taken_apart = store.sql("SELECT stack_id, frame_id, running, line FROM stack_frames ORDER BY ALL")
    return ({sid: tuple((f["function"], f["file"], f["line"]) for f in k) for sid, k in stacks}, frames, taken_apart,
            loaded)


RECURSIVE = (("main", "a.py", 1), ("f", "a.py", 5), ("f", "a.py", 6), ("", "", 0))  # recursion, a nameless frame
OTHER = (("main", "a.py", 2), ("g", "b.py", 9))


def _slices(*stacks: tuple) -> str:
    from tests.store.spanfiles import T0

    return "".join(fmt.line(fmt.SAMPLE, T0 + (150 + n) * 1_000_000, 10, 10, 1_000_000, 1, fmt.stack_id(s), "",
                            "MainThread") for n, s in enumerate(stacks))


def test_frames_are_written_once_and_stacks_come_back_whole_with_every_line(tmp_path) -> None:
    known = fmt.Interned()
    text = (fmt.header() + "".join(row for s in (RECURSIVE, OTHER) for row in known.stack_lines(fmt.stack_id(s), s))
            + _slices(RECURSIVE, OTHER))
    assert text.count("\nF\t") == 4  # main, f, the nameless one, g
    stacks, frames, taken_apart, loaded = _stacks_of(tmp_path, text)
    assert stacks == {fmt.stack_id(RECURSIVE): RECURSIVE, fmt.stack_id(OTHER): OTHER}
    assert loaded.samples == 2 and loaded.skipped_lines == 0
    assert sorted((function, file) for _, function, file in frames) == [("", ""), ("f", "a.py"), ("g", "b.py"),
                                                                        ("main", "a.py")]
    ids = {(function, file): frame_id for frame_id, function, file in frames}
    assert sorted(taken_apart) == sorted([  # each distinct frame of a stack once, its last one running
        (fmt.stack_id(RECURSIVE), ids[("main", "a.py")], False, None),
        (fmt.stack_id(RECURSIVE), ids[("f", "a.py")], False, None),
        (fmt.stack_id(RECURSIVE), ids[("", "")], True, 0),
        (fmt.stack_id(OTHER), ids[("main", "a.py")], False, None),
        (fmt.stack_id(OTHER), ids[("g", "b.py")], True, 9)])


def test_a_samples_file_of_version_1_loads_as_it_did(tmp_path) -> None:
    def v1_stack(frames: tuple) -> str:
        return fmt.line(fmt.STACK, stack_id=fmt.stack_id(frames), name=json.dumps(
            [{"function": f, "file": file, "line": n} for f, file, n in frames]))

    old = ("#selfopt-trace/samples 1\t" + fmt.HEADER.split("\t", 1)[1] + v1_stack(RECURSIVE) + v1_stack(OTHER)
           + fmt.line(fmt.STACK, stack_id=5, name='[{"function": "torn"') + _slices(RECURSIVE, OTHER))
    known = fmt.Interned()
    new = fmt.header() + "".join(row for s in (RECURSIVE, OTHER) for row in known.stack_lines(fmt.stack_id(s), s)) + _slices(
        RECURSIVE, OTHER)
    *from_old, loaded_old = _stacks_of(tmp_path / "old", old)
    *from_new, loaded_new = _stacks_of(tmp_path / "new", new)
    assert from_old == from_new and len(from_old[0]) == 2
    assert loaded_old.samples == loaded_new.samples == 2
    assert loaded_old.skipped_lines == 1  # the torn stack, as before


def test_a_samples_file_of_an_unknown_version_is_skipped_with_a_clear_warning(tmp_path) -> None:
    text = "#selfopt-trace/samples 9\t" + fmt.HEADER.split("\t", 1)[1] + _slices(OTHER)
    _, _, _, loaded = _stacks_of(tmp_path, text)
    assert loaded.samples == 0 and loaded.skipped_files == 1
    [warning] = [w for w in loaded.warnings if w.code == "loader.file_skipped"]
    assert "version 9 is not supported" in warning.message


def test_a_stack_whose_frames_or_lines_are_damaged_is_counted_and_the_others_load(tmp_path) -> None:
    known = fmt.Interned()
    good = "".join(known.stack_lines(fmt.stack_id(OTHER), OTHER))
    text = (fmt.header() + good
            + fmt.line(fmt.STACK, stack_id=5, name="1,99", message="1,2")     # frame 99 was never written
            + fmt.line(fmt.STACK, stack_id=6, name="1,2", message="1")        # a line short
            + fmt.line(fmt.STACK, stack_id=7, name="1,x", message="1,2")      # not a number
            + fmt.line(fmt.FRAME, stack_id="", name="h", message="c.py")      # a frame without its number
            + _slices(OTHER))
    stacks, _, _, loaded = _stacks_of(tmp_path, text)
    assert stacks == {fmt.stack_id(OTHER): OTHER}
    assert loaded.skipped_lines == 4 and loaded.samples == 1


def test_a_py_spy_file_converted_at_load_numbers_its_frames_after_the_file_s(tmp_path) -> None:
    from tests.store.spanfiles import T0

    known = fmt.Interned()
    text = (fmt.header() + "".join(known.stack_lines(fmt.stack_id(OTHER), OTHER)) + _slices(OTHER)
            + fmt.line(fmt.PROFILER, T0 + 120 * 1_000_000, 10, duration_ns=1_000_000, weight="100", name="10-1.json",
                       message='{"idle":false}'))
    chrome = json.dumps([event("B", 0, "thread (10): MainThread", pid=10, tid=10),
                         event("B", 0, "main", "a.py", 2, pid=10, tid=10), event("B", 0, "h", "c.py", 3, pid=10, tid=10),
                         event("E", 20_000, "h", "c.py", 3, pid=10, tid=10),
                         event("E", 20_000, "main", "a.py", 2, pid=10, tid=10),
                         event("E", 20_000, "thread (10): MainThread", pid=10, tid=10)])
    stacks, _, _, loaded = _stacks_of(tmp_path, text, {"10-1.json": chrome})
    converted = (("main", "a.py", 2), ("h", "c.py", 3))
    assert stacks == {fmt.stack_id(OTHER): OTHER, fmt.stack_id(converted): converted}
    assert loaded.samples == 2 and loaded.skipped_lines == 0
