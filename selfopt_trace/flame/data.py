"""The samples a flamegraph shows: stacks with the time they stand for, from the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import SelfoptTraceError

Frame = tuple[str, str]  # (function, file)

# The samples of a run inside the chosen spans (their subtrees: span_subtree in
# store/profile_macros.sql), or of one process, summed per stack; a stack as its frames' numbers
# (stack_numbers, what the `stacks` view reads), named in Python from the run's frames by number:
# a million-sample run's 2 M frames are fetched as integers, not as 2 M pairs of strings.
_STACKS_SQL = """
WITH picked AS (
    SELECT stack_id, sum(weight) AS weight, sum(duration_ns) AS ns
    FROM samples
    WHERE run_id = $run_id AND ($idle OR NOT idle) AND ($pid IS NULL OR pid = $pid)
      AND (($span IS NULL AND $category IS NULL)
           OR span_id IN (SELECT span_id FROM span_subtree($run_id, $span, $category)))
    GROUP BY stack_id
)
SELECT k.numbers, p.weight, p.ns
FROM picked AS p JOIN stack_numbers AS k ON k.run_id = $run_id AND k.stack_id = p.stack_id
"""

_FRAMES_SQL = "SELECT function, file FROM frames WHERE run_id = $run_id ORDER BY number"

_SELECTION_SQL = """
SELECT count(*) FILTER (WHERE outermost), coalesce(sum(duration_ns) FILTER (WHERE outermost), 0)
FROM span_subtree($run_id, $span, $category)
"""


@dataclass
class Profile:
    """Stacks (root first) with the samples and nanoseconds they stand for; `before` for a diff."""

    title: str
    stacks: dict[tuple[Frame, ...], list[float]] = field(default_factory=dict)  # stack -> [samples, ns]
    before: dict[tuple[Frame, ...], list[float]] | None = None  # a differential profile's first run
    notes: list[str] = field(default_factory=list)

    @property
    def total_ns(self) -> float:
        return sum(ns for _, ns in self.stacks.values())


def fetch_profile(store: Any, run_id: str, span: str | None = None, category: str | None = None,
                  pid: int | None = None, idle: bool = False) -> Profile:
    """The samples of `run_id` inside the spans named `span` and/or of `category`, or of process `pid`."""
    params = {"run_id": run_id, "span": span, "category": category, "pid": pid, "idle": idle}
    _, loaded = store.sql("SELECT count(*) FROM samples WHERE run_id = $run_id", {"run_id": run_id})
    if not loaded[0][0]:
        raise SelfoptTraceError(f"run {run_id} has no profile samples: record it with `selfopt-trace run --profile -- CMD`")
    chosen = [f"{key} {value}" for key, value in (("span", span), ("category", category), ("pid", pid)) if value is not None]
    profile = Profile(title=f"run {run_id}" + (f" ({', '.join(chosen)})" if chosen else ""))
    if pid is not None:  # a pid not in the run is a mistake, as a span name not in it is
        _, sampled = store.sql("SELECT DISTINCT pid FROM samples WHERE run_id = $run_id ORDER BY pid", {"run_id": run_id})
        pids = [row[0] for row in sampled]
        if pid not in pids:
            listed = ", ".join(map(str, pids[:10])) + (f" and {len(pids) - 10} more" if len(pids) > 10 else "")
            raise SelfoptTraceError(f"run {run_id} has no profile samples of pid {pid} (the sampled processes: {listed})")
    if span is not None or category is not None:
        _, selection = store.sql(_SELECTION_SQL, {"run_id": run_id, "span": span, "category": category})
        count, wall_ns = selection[0]
        if not count:
            what = " and ".join(f"{key} {value!r}" for key, value in (("name", span), ("category", category))
                                if value is not None)
            raise SelfoptTraceError(f"run {run_id} has no span with {what}")
        profile.notes.append(f"{count} span{'s' if count != 1 else ''}, {wall_ns / 1e6:.1f} ms of wall time")
    _, rows = store.sql(_STACKS_SQL, params)
    _, names = store.sql(_FRAMES_SQL, {"run_id": run_id})
    frame_of = [("", ""), *names].__getitem__  # a frame by its number (1, 2, ...)
    for numbers, weight, ns in rows:
        entry = profile.stacks.setdefault(tuple(map(frame_of, numbers)), [0.0, 0.0])
        entry[0] += weight
        entry[1] += ns
    if not profile.stacks:
        profile.notes.append("no samples inside" + (" (idle ones left out: --idle)" if not idle else ""))
    return profile


def diff_profiles(before: Profile, after: Profile) -> Profile:
    """A differential profile: after's stacks, with before's kept to compare (what grew, what shrank)."""
    return Profile(title=f"{before.title} -> {after.title}", stacks=after.stacks, before=before.stacks,
                   notes=[f"before: {before.total_ns / 1e6:.1f} ms sampled", f"after: {after.total_ns / 1e6:.1f} ms sampled"])
