"""py-spy's Chrome trace into samples-file slices: merged stacks weighted by their length."""

from __future__ import annotations

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
    assert counts == {"slices": 2, "samples": 4, "threads": 1, "processes": 1}


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
