"""A readable reference of the `breakdown` query in plain Python, for checking the SQL against.

Same rules, computed the slow obvious way: each span's self intervals are its interval minus the
union of its children's (clipped) intervals; every elementary time segment of the run is split
equally between the self intervals open in it. Small-call sums are not modelled here (they have
their own exact tests).
"""

from __future__ import annotations

from collections import defaultdict

from tests.queries.builder import MS, Span

CATEGORIES = ("interpreter start-up", "imports", "parsing", "serialization", "http client overhead",
              "http server time", "subprocess spawn overhead", "waiting on children", "container start-up",
              "own work", "untraced")


def breakdown(spans: list[Span], main_trace: str) -> dict[str, tuple[float, float]]:
    """category -> (wall, busy), in the spans' time unit.

    A span's self intervals: its interval (within the run) minus its children's, clipped to it.
    """
    nodes = {s.id: s for s in spans if s.trace == main_trace}
    parent = {}
    for span in nodes.values():
        p = span.parent
        if p in nodes and nodes[p].name == "exec":
            process = next(n for n in nodes.values() if n.file == nodes[p].file and n.name == "process")
            p = process.parent
        parent[span.id] = p if p in nodes else None
    top = [s for s in nodes.values() if parent[s.id] is None]
    run_start, run_end = min(s.start for s in top), max(s.end for s in top)
    main_files = {s.file for s in top if s.name == "process"}
    traced_children = {parent[s.id] for s in nodes.values() if s.name == "process" and parent[s.id]}
    containers = {parent[s.id] for s in nodes.values() if s.category == "container" and parent[s.id]}

    def clipped(span: Span) -> tuple[float, float]:
        p = parent[span.id]
        if p is None:
            return span.start, span.end
        return max(span.start, nodes[p].start), min(span.end, nodes[p].end)

    children = defaultdict(list)
    for span in nodes.values():
        children[parent[span.id]].append(clipped(span))

    def category(span: Span) -> str:
        if span.category == "startup":
            return "interpreter start-up"
        if span.category == "import":
            return "imports"
        if span.category == "parse":
            return "parsing"
        if span.category == "serialization":
            return "serialization"
        if span.category == "http":
            return "http server time" if span.kind == "SERVER" else "http client overhead"
        if span.category == "subprocess" and span.id in containers:
            return "container start-up"
        if span.category == "subprocess":
            return "subprocess spawn overhead" if span.id in traced_children else "untraced child"
        if span.category == "container":
            return "container start-up"
        return "own work" if span.file in main_files else "waiting on children"

    intervals = []  # (start, end, category)
    owners = [(None, run_start, run_end, "untraced")] + [
        (s.id, max(s.start, run_start), min(s.end, run_end), category(s)) for s in nodes.values()]
    for owner, lo, hi, name in owners:
        if hi <= lo:
            continue
        for gap in _minus(lo, hi, [c for c in children[owner] if c[1] > c[0]]):
            if name == "untraced child":
                span = nodes[owner]
                spawned = min(max(span.start + span.attributes.get("selfopt_trace.spawn_ns", 0) / MS, gap[0]), gap[1])
                intervals += [(gap[0], spawned, "subprocess spawn overhead"), (spawned, gap[1], "waiting on children")]
            else:
                intervals.append((*gap, name))
    intervals = [i for i in intervals if i[1] > i[0]]
    wall, busy = defaultdict(float), defaultdict(float)
    for lo, hi, name in intervals:
        busy[name] += hi - lo
    points = sorted({t for lo, hi, _ in intervals for t in (lo, hi)})
    for a, b in zip(points, points[1:]):
        open_ = [name for lo, hi, name in intervals if lo <= a and hi >= b]
        for name in open_:
            wall[name] += (b - a) / len(open_)
    return {name: (wall[name], busy[name]) for name in CATEGORIES}


def _minus(lo: float, hi: float, parts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """[lo, hi] minus the union of parts."""
    gaps, cursor = [], lo
    for a, b in sorted(parts):
        if a > cursor:
            gaps.append((cursor, min(a, hi)))
        cursor = max(cursor, b)
    if cursor < hi:
        gaps.append((cursor, hi))
    return [g for g in gaps if g[1] > g[0]]
