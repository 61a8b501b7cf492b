"""Where the loader puts each slice (its span, idle or not), at the edges its fast joins must get right.

Hand-written run directories (docs/span-format.md: spans, CPU samples, profile samples) loaded into
a real DuckDB file.
"""

from __future__ import annotations

from pathlib import Path

from selfopt_trace.flame import fetch_profile
from selfopt_trace.store import Store
from selfopt_trace.watchers import profile_samples as fmt
from tests.store.spanfiles import T0, complete, header, sid, write_run

MS = 1_000_000
PID, WORKER = 10, 11
CPU_HEADER = "#selfopt-trace/cpu 1\trec\ttime_ns\tpid\ttid\tprocess_start_ns\tcpu_ns\trunqueue_ns\tname\tmessage\n"


def _write(tmp_path: Path, spans: str, samples: list[str], cpu: str | None = None,
           stacks: dict[int, tuple] | None = None, window_ns: int = MS) -> Path:
    """A run directory: one process's spans, its samples (of stack 7, one frame `f`, unless `stacks`
    says otherwise: {stack id: frames}) and CPU readings; `window_ns`: how long py-spy took to start."""
    run_dir = write_run(tmp_path / "run", {f"{PID}-00000001.spans": header(PID) + spans}, {"run_id": "a1"})
    (run_dir / "profile").mkdir()
    profiler = fmt.line(fmt.PROFILER, T0, PID, duration_ns=window_ns, weight="100", name="10-1.json",
                        message='{"idle":true}')
    converted = fmt.line(fmt.CONVERTED, pid=PID, name="10-1.json", message="{}")
    interned = fmt.Interned()
    written = "".join(line for sid, frames in (stacks or {7: (("f", "a.py", 1),)}).items()
                      for line in interned.stack_lines(sid, frames))
    (run_dir / fmt.SAMPLES_PATH).write_text(fmt.header() + profiler + converted + written + "".join(samples))
    if cpu is not None:
        (run_dir / "cpu").mkdir()
        (run_dir / "cpu" / "samples.tsv").write_text(CPU_HEADER + cpu)
    return run_dir


def _load(tmp_path: Path, spans: str, samples: list[str], cpu: str | None = None) -> dict[int, tuple]:
    """{slice start, ms after T0: (span name or None, idle)} of the loaded run (run --idle: idle kept)."""
    run_dir = _write(tmp_path, spans, samples, cpu)
    with Store(tmp_path / "db.duckdb") as store:
        loaded = store.load_run(run_dir)
        assert not loaded.warnings, loaded.warnings
        _, rows = store.sql("""SELECT (p.time_ns - $t0) // 1000000, s.name, p.idle FROM samples AS p
                               LEFT JOIN spans AS s USING (run_id, span_id)
                               ORDER BY p.time_ns""", {"t0": T0})
    return {at: (name, idle) for at, name, idle in rows}


def _slice(at_ms: int, tid: int | str = PID, ms: int = 1, stack: int = 7) -> str:
    return fmt.line(fmt.SAMPLE, T0 + at_ms * MS, PID, tid, ms * MS, ms / 10, stack, "", "t")


def test_a_slice_goes_to_the_span_open_at_its_start_on_its_thread(tmp_path: Path) -> None:
    spans = (complete(sid(1), "", "process", "process", T0, T0 + 1000 * MS)
             + complete(sid(2), sid(1), "first", "phase", T0 + 100 * MS, T0 + 200 * MS)
             + complete(sid(3), sid(1), "second", "phase", T0 + 200 * MS, T0 + 300 * MS)  # starts as first ends
             + complete(sid(4), sid(3), "inner", "phase", T0 + 250 * MS, T0 + 260 * MS)
             + complete(sid(5), sid(1), "thread", "thread", T0 + 50 * MS, T0 + 600 * MS, attributes={"thread.id": WORKER})
             + complete(sid(6), sid(5), "task", "phase", T0 + 400 * MS, T0 + 500 * MS))
    got = _load(tmp_path, spans, [
        _slice(150), _slice(200), _slice(255), _slice(260), _slice(350),
        _slice(450, WORKER), _slice(550, WORKER), _slice(700, WORKER),  # the thread ended: its process
        _slice(460, ""),  # py-spy could not name the thread: its process
        _slice(-3), _slice(1001),  # just outside its process's span (alignment, finalization): its process
        _slice(1500),  # long after its process ended: no span
    ])
    assert {at: name for at, (name, _) in got.items()} == {
        -3: "process", 150: "first", 200: "second", 255: "inner", 260: "second", 350: "process",  # at an end: the parent
        450: "task", 460: "process", 550: "thread", 700: "process", 1001: "process", 1500: None}


def test_a_slice_is_idle_where_the_cpu_sampler_saw_its_thread_wait(tmp_path: Path) -> None:
    spans = complete(sid(1), "", "process", "process", T0, T0 + 10_000 * MS)
    start = T0 - 5 * MS
    # (ms, CPU ms so far): busy to 100 ms, idle to 150 (5 of 50 ms), idle to 3150 (10 of 3000 ms: a reading
    # longer than the buckets the loader lists readings in), busy after
    readings = [(0, 0), (50, 45), (100, 95), (150, 100), (3150, 110), (3200, 160), (3210, 170)]
    cpu = "".join(f"C\t{T0 + at * MS}\t{PID}\t{PID}\t{start}\t{used * MS}\t0\t\t\t.\n" for at, used in readings)
    got = _load(tmp_path, spans, [_slice(60, ms=20), _slice(110, ms=20), _slice(1000, ms=20), _slice(3000, ms=20),
                                  _slice(3170, ms=10), _slice(3204, ms=2), _slice(5000, ms=20)], cpu)
    assert {at: idle for at, (_, idle) in got.items()} == {  # by the reading around the slice's middle
        60: False, 110: True, 1000: True, 3000: True, 3170: False, 3204: False, 5000: False}


def _pieces(tmp_path: Path, spans: str, samples: list[str], **write) -> list[tuple]:
    """(start, ms after T0; ms; weight; span name) of each loaded row, in time order."""
    run_dir = _write(tmp_path, spans, samples, **write)
    with Store(tmp_path / "db.duckdb") as store:
        loaded = store.load_run(run_dir)
        assert not loaded.warnings, loaded.warnings
        _, rows = store.sql("""SELECT (p.time_ns - $t0) / 1e6, p.duration_ns / 1e6, round(p.weight, 6), s.name
                               FROM samples AS p LEFT JOIN spans AS s USING (run_id, span_id) ORDER BY p.time_ns""",
                            {"t0": T0})
    return rows


def test_a_long_slice_that_starts_early_goes_to_its_span_from_the_span_s_start(tmp_path: Path) -> None:
    """py-spy's times come out early (its clock starts after the recorded anchor), by about as long
    as starting it took: a slice of 62 samples that starts 8.6 ms before the span whose function it
    sampled, inside a short sleep just before that span, where starting py-spy took 9 ms, is the
    span's from the span's start on (placed by its start, it was cut to the sleep's end); the 8.6 ms
    before go to the span that encloses both, not to the sleep."""
    spans = (complete(sid(1), "", "process", "process", T0, T0 + 1000 * MS)
             + complete(sid(2), sid(1), "time.sleep", "sleep", T0 + 90 * MS, T0 + 100 * MS)
             + complete(sid(3), sid(1), "phase", "phase", T0 + 100 * MS, T0 + 800 * MS))
    early = fmt.line(fmt.SAMPLE, T0 + 100 * MS - 8_600_000, PID, PID, 620 * MS, 62, 7, "", "t")
    assert _pieces(tmp_path, spans, [early, _slice(50)], window_ns=9 * MS) == [
        (50.0, 1.0, 0.1, "process"), (91.4, 8.6, 0.86, "process"), (100.0, 611.4, 61.14, "phase")]


def test_a_slice_a_fast_started_py_spy_put_early_still_goes_to_its_span(tmp_path: Path) -> None:
    """Starting py-spy returned in 0.24 ms, but its clock starts later (its own start-up, 2-3 ms): a
    sleep's slice 1.3 ms before the sleep's span (seen in CI) is the sleep's, not the phase's around it."""
    spans = (complete(sid(1), "", "process", "process", T0, T0 + 1000 * MS)
             + complete(sid(2), sid(1), "phase", "phase", T0 + 100 * MS, T0 + 800 * MS)
             + complete(sid(3), sid(2), "time.sleep", "sleep", T0 + 301_300_000, T0 + 401_300_000))
    sleep = fmt.line(fmt.SAMPLE, T0 + 300 * MS, PID, PID, 109 * MS, 10.9, 7, "", "t")
    assert _pieces(tmp_path, spans, [sleep], window_ns=244_112) == [
        (300.0, 1.3, 0.13, "phase"), (301.3, 100.0, 10.0, "time.sleep")]


def test_a_slice_counts_in_its_span_only_between_the_span_s_start_and_end(tmp_path: Path) -> None:
    """A slice that began before its span (placed by its middle: py-spy's times come out early) counts
    there only from the span's start: the part before goes to the innermost span that was open over
    all of it and encloses the slice's span (never to a sibling that ran then, nor whole to the span:
    a 7 ms span held 17 ms of samples); else, on a thread of its own, to its process span."""
    spans = (complete(sid(1), "", "process", "process", T0, T0 + 1000 * MS)
             + complete(sid(2), sid(1), "outer", "phase", T0 + 100 * MS, T0 + 500 * MS)
             + complete(sid(3), sid(2), "sibling", "phase", T0 + 150 * MS, T0 + 198 * MS)
             + complete(sid(4), sid(2), "inner", "phase", T0 + 200 * MS, T0 + 207 * MS)
             + complete(sid(5), sid(2), "middle", "phase", T0 + 296 * MS, T0 + 400 * MS)  # starts after the slice
             + complete(sid(6), sid(5), "deep", "phase", T0 + 300 * MS, T0 + 307 * MS)
             + complete(sid(7), sid(1), "thread", "thread", T0 + 600 * MS, T0 + 700 * MS, attributes={"thread.id": WORKER}))
    got = _pieces(tmp_path, spans, [
        _slice(193, ms=16),  # middle at 201: inner's; 193-198 ran in the sibling
        _slice(293, ms=16),  # deep's; before it, middle had not started at 293: outer's
        _slice(595, WORKER, ms=16),  # the thread's; before it, on no span of its thread: its process's
    ], window_ns=9 * MS)
    assert got == [(193.0, 7.0, 0.7, "outer"), (200.0, 7.0, 0.7, "inner"),  # and not 7 ms past inner's end
                   (293.0, 7.0, 0.7, "outer"), (300.0, 7.0, 0.7, "deep"),
                   (595.0, 5.0, 0.5, "process"), (600.0, 11.0, 1.1, "thread")]


def test_a_slice_goes_no_further_from_its_start_than_py_spy_s_clock_can_be_off(tmp_path: Path) -> None:
    """The stack of a slice was seen at its start; it lasts until the next sample py-spy got, which
    may be intervals later. Where py-spy started in 0.2 ms, a 34 ms slice of json.loads is the
    json.loads span's (the one open at its start), cut to its end; not the json.dumps span's after it
    (where its middle is: json.dumps had 27 % of its time in json.loads' frames, and 126 % of it
    sampled in all)."""
    spans = (complete(sid(1), "", "process", "process", T0, T0 + 1000 * MS)
             + complete(sid(2), sid(1), "json.loads", "serialization", T0 + 99_500_000, T0 + 108_200_000)
             + complete(sid(3), sid(1), "json.dumps", "serialization", T0 + 109_450_000, T0 + 121_200_000))
    stacks = {1: (("main", "m.py", 1), ("loads", "json/__init__.py", 2)),
              2: (("main", "m.py", 1), ("dumps", "json/__init__.py", 3))}
    samples = [_slice(90, ms=10, stack=2), _slice(100, ms=34, stack=1), _slice(134, ms=5, stack=2)]
    run_dir = _write(tmp_path, spans, samples, stacks=stacks, window_ns=200_000)
    with Store(tmp_path / "db.duckdb") as store:
        store.load_run(run_dir)
        rows = store.query("hot_frames", {"run_id": "a1"}).records()
        profile = fetch_profile(store, "a1", span="json.dumps")
    by_span: dict[str, set[str]] = {}
    for row in rows:
        by_span.setdefault(row["span"], set()).add(row["function"])
        assert row["total_pct"] <= 100, row
    assert by_span["json.loads"] == {"main", "loads"}
    assert "json.dumps" not in by_span  # no sample was taken in it
    assert profile.stacks == {}
def test_no_slice_outlasts_its_thread(tmp_path: Path) -> None:
    # py-spy keys threads by an identifier the next thread may reuse: the slice of a thread that ended
    # lasts until a later thread under that key changes stack; and it ends a thread's last slice where it stopped
    spans = (complete(sid(1), "", "process", "process", T0, T0 + 1000 * MS)
             + complete(sid(2), sid(1), "thread", "thread", T0 + 100 * MS, T0 + 107 * MS, attributes={"thread.id": WORKER})
             + complete(sid(3), sid(2), "time.sleep", "sleep", T0 + 101 * MS, T0 + 106 * MS))
    run_dir = _write(tmp_path, spans, [
        _slice(102, WORKER, ms=694),  # asleep in the thread's last 5 ms, then nothing of it: 694 ms
        _slice(990, ms=30),  # the main thread's finalization, from before its process span's end
        _slice(1002, ms=3),  # and after it (the agent's last record): the thread lived on
    ])
    with Store(tmp_path / "db.duckdb") as store:
        store.load_run(run_dir)
        _, rows = store.sql("""SELECT (p.time_ns - $t0) // 1000000, p.duration_ns / 1e6, p.weight, s.name
                               FROM samples AS p LEFT JOIN spans AS s USING (run_id, span_id) ORDER BY p.time_ns""",
                            {"t0": T0})
    assert rows == [(102, 4.0, 0.4, "time.sleep"), (990, 10.0, 1.0, "process"), (1002, 3.0, 0.3, "process")]


def test_the_alignment_check_reads_only_spans_that_stand_for_their_function_on_the_sample_s_thread(
        tmp_path: Path) -> None:
    spans = (complete(sid(1), "", "process", "process", T0, T0 + 1000 * MS)
             + complete(sid(2), sid(1), "phase", "phase", T0 + 100 * MS, T0 + 200 * MS,  # a --target span
                        attributes={"code.namespace": "m", "code.function": "work"})
             + complete(sid(3), sid(1), "ast.parse", "parse", T0 + 300 * MS, T0 + 310 * MS,  # a call site
                        attributes={"code.function": "caller", "code.lineno": 5, "code.filepath": "m.py"})
             + complete(sid(4), sid(1), "thread", "thread", T0 + 50 * MS, T0 + 900 * MS, attributes={"thread.id": WORKER}))
    run_dir = _write(tmp_path, spans, [
        _slice(150, stack=1), _slice(203, stack=1),  # in work's span, and 3 ms after it
        _slice(500, WORKER, stack=1),  # work on a thread where it has no span: tells nothing
        _slice(600, stack=2),  # in the function that called the parser, 290 ms after the parse: as it should
    ], stacks={1: (("main", "m.py", 1), ("work", "m.py", 9)), 2: (("main", "m.py", 1), ("caller", "m.py", 5))})
    with Store(tmp_path / "db.duckdb") as store:
        store.load_run(run_dir)
        (message,) = store.sql("SELECT message FROM diagnostics WHERE code = 'profile.alignment'")[1][0]
    assert "2 samples ran in 1 function(s) with spans of their own: 1 outside, by at most 3.0 ms" in message, message

