"""hot_frames and the tables the loader prepares for it (frames, stack_frames), against a count by hand.

A hand-written run (docs/span-format.md) with a few thousand random slices over recursive stacks,
loaded into a real DuckDB file; the reference reads back the loaded samples, stacks and spans and
ranks the frames in Python, so the query's shortcuts (integer frame ids, totals summed only for the
frames that can make a top) must give what the plain definition gives.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest

from selfopt_trace.store import Store
from selfopt_trace.watchers import profile_samples as fmt
from tests.store.spanfiles import T0, complete, header, sid, write_run

MS = 1_000_000
PID, WORKER = 10, 11
FUNCTIONS = [(f"f{n}", f"/src/mod{n % 4}.py") for n in range(25)]


def _spans() -> str:
    return (header(PID)
            + complete(sid(1), "", "process", "process", T0, T0 + 10_000 * MS)
            + complete(sid(2), sid(1), "alpha", "phase", T0 + 1000 * MS, T0 + 4000 * MS)
            + complete(sid(3), sid(2), "beta", "phase", T0 + 1500 * MS, T0 + 2500 * MS)
            + complete(sid(4), sid(1), "alpha", "phase", T0 + 5000 * MS, T0 + 7000 * MS)
            + complete(sid(5), sid(1), "thread", "thread", T0 + 500 * MS, T0 + 9000 * MS, attributes={"thread.id": WORKER})
            + complete(sid(6), sid(5), "beta", "phase", T0 + 2000 * MS, T0 + 6000 * MS)
            + complete(sid(7), sid(1), "gamma", "step", T0 + 8000 * MS, T0 + 8500 * MS))


def _samples(rng: random.Random) -> str:
    stacks = []
    for _ in range(60):  # recursion: a function may come back deeper in its own stack
        frames = tuple(rng.choice(FUNCTIONS) + (rng.randrange(1, 50),) for _ in range(rng.randrange(3, 12)))
        stacks.append(frames)
    only = [tuple(rng.choice(FUNCTIONS[:5]) + (1,) for _ in range(rng.randrange(2, 6))) + (("only", "/src/x.py", 7),)
            for _ in range(8)]  # gamma's: one running frame, so its top is filled up by totals
    known = fmt.Interned()
    text = fmt.header() + "".join("".join(known.stack_lines(fmt.stack_id(s), s)) for s in stacks + only)
    for _ in range(3000):
        tid = rng.choice((PID, WORKER))
        at = T0 + rng.randrange(0, 10_000 * MS)
        in_gamma = tid == PID and T0 + 8000 * MS <= at <= T0 + 8500 * MS
        frames = rng.choice(only if in_gamma else stacks)
        text += fmt.line(fmt.SAMPLE, at, PID, tid, rng.randrange(1, 20) * MS, rng.uniform(0.5, 3.0),
                         fmt.stack_id(frames), "", "MainThread" if tid == PID else "worker")
    return text


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("hot")
    run_dir = write_run(root / "run", {f"{PID}-00000001.spans": _spans()}, {"run_id": "h1"})
    (run_dir / "profile").mkdir()
    (run_dir / fmt.SAMPLES_PATH).write_text(_samples(random.Random(13)))
    with Store(root / "db.duckdb") as opened:
        loaded = opened.load_run(run_dir)
        assert loaded.samples > 2000 and not loaded.warnings, loaded
        yield opened


def _reference(store: Store, span: str | None, category: str | None, limit: int) -> list[tuple]:
    """hot_frames by its definition, from the loaded rows."""
    _, spans = store.sql("SELECT span_id, parent_span_id, name, category, duration_ns FROM spans WHERE run_id = 'h1'")
    _, samples = store.sql("SELECT span_id, stack_id, weight, duration_ns FROM samples WHERE run_id = 'h1' AND NOT idle")
    _, stacks = store.sql("SELECT stack_id, frames FROM stacks WHERE run_id = 'h1'")
    _, ids = store.sql("SELECT function, file, frame_id FROM frames WHERE run_id = 'h1'")
    frame_id = {(function, file): number for function, file, number in ids}
    frames_of = {stack: [(f["function"], f["file"], f["line"]) for f in frames] for stack, frames in stacks}
    by_id = {row[0]: row for row in spans}
    groups: dict[str, set] = {}
    walls: dict[str, list] = {}
    if span is None and category is None:
        for span_id, _, name, _, duration in spans:
            groups.setdefault(name, set()).add(span_id)
        sampled = {row[0] for row in samples}
        for name, members in groups.items():
            inside = [by_id[m][4] for m in members if m in sampled]
            walls[name] = [len(inside), sum(inside)]
    else:
        chosen = {s[0] for s in spans if (span is None or s[2] == span) and (category is None or s[3] == category)}
        children = defaultdict(set)
        for span_id, parent, *_ in spans:
            children[parent].add(span_id)
        members, todo = set(), list(chosen)
        while todo:
            current = todo.pop()
            if current not in members:
                members.add(current)
                todo += children[current]

        def under_chosen(span_id: str) -> bool:
            parent = by_id[span_id][1]
            while parent in by_id:
                if parent in chosen:
                    return True
                parent = by_id[parent][1]
            return False

        outermost = [by_id[c][4] for c in chosen if not under_chosen(c)]
        groups = {span or category: members}
        walls = {span or category: [len(outermost), sum(outermost)]}
    rows = []
    for group, members in groups.items():
        per_stack = defaultdict(lambda: [0.0, 0.0])
        for span_id, stack, weight, ns in samples:
            if span_id in members:
                per_stack[stack][0] += weight
                per_stack[stack][1] += ns
        self_w, self_ns, total_w, total_ns = (defaultdict(float) for _ in range(4))
        best_line: dict = {}
        for stack, (weight, ns) in per_stack.items():
            frames = frames_of[stack]
            running = frames[-1][:2]
            self_w[running] += weight
            self_ns[running] += ns
            if running not in best_line or weight > best_line[running][0]:
                best_line[running] = (weight, frames[-1][2])
            for frame in {f[:2] for f in frames}:
                total_w[frame] += weight
                total_ns[frame] += ns
        ranked = sorted(total_w, key=lambda f: (-round(self_w[f], 6), -round(total_w[f], 6), frame_id[f]))[:limit]
        spans_in, wall_ns = walls[group]
        for frame in ranked:
            rows.append((group, *frame, best_line.get(frame, (0, None))[1], round(self_w[frame]), round(total_w[frame]),
                         self_ns[frame] / 1e6, total_ns[frame] / 1e6, 100 * self_ns[frame] / wall_ns,
                         100 * total_ns[frame] / wall_ns, spans_in, wall_ns / 1e6))
    return rows


@pytest.mark.parametrize("span, category, limit", [
    (None, None, 3),  # every span name: gamma's top needs frames that never ran
    (None, None, 1000),  # every frame
    ("alpha", None, 4),  # two spans of that name, and what is under them
    ("beta", None, 5),  # one on the main thread, one on the worker: both
    (None, "phase", 3),  # beta under alpha: alpha's wall time only
    ("gamma", None, 2),
])
def test_hot_frames_ranks_as_counted_by_hand(store: Store, span: str | None, category: str | None, limit: int) -> None:
    params = {"run_id": "h1", "span": span, "category": category, "limit": limit}
    got = store.query("hot_frames", {k: v for k, v in params.items() if v is not None}).rows
    expected = _reference(store, span, category, limit)
    assert len(got) == len(expected) and len(got) > 0

    def key(row: tuple) -> tuple:
        return row[0], row[1], row[2]

    for row, want in zip(sorted(got, key=key), sorted(expected, key=key)):
        assert row[:4] == want[:4] and row[10] == want[10], (row, want)
        assert all(abs(a - b) <= 1 for a, b in zip(row[4:6], want[4:6])), (row, want)
        assert all(abs(a - b) <= 0.11 for a, b in zip(row[6:10] + row[11:], want[6:10] + want[11:])), (row, want)


def test_each_stack_is_taken_apart_into_its_distinct_frames(store: Store) -> None:
    _, stacks = store.sql("SELECT stack_id, frames FROM stacks WHERE run_id = 'h1'")
    _, rows = store.sql("""SELECT k.stack_id, f.function, f.file, k.running, k.line FROM stack_frames AS k
                           JOIN frames AS f ON f.run_id = k.run_id AND f.frame_id = k.frame_id WHERE k.run_id = 'h1'""")
    taken = defaultdict(dict)
    for stack, function, file, running, line_no in rows:
        assert (function, file) not in taken[stack]  # once, recursion or not
        taken[stack][(function, file)] = (running, line_no)
    for stack, frames in stacks:
        last = frames[-1]
        expected = {(f["function"], f["file"]): (False, None) for f in frames}
        expected[(last["function"], last["file"])] = (True, last["line"])
        assert taken[stack] == expected
