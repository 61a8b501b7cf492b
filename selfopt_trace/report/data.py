"""What the report shows, gathered from the store: run facts, query results and the spans to draw.

Server spans traced as another run are drawn under the client spans they answered. Large runs stay
usable: at most SPAN_LIMIT spans are drawn one by one. Those kept are the ones
that structure the trace (processes, start-up, subprocess, HTTP, container and phase spans) and
then the longest of the rest; under each drawn span, what did not make it is one aggregate bar
("N more spans") covering its direct children that were left out, with the count of every span
left out below it and the total time of those children.
"""

from __future__ import annotations

import json
from typing import Any

from ..queries import get_query, missing_data, run_query
from ..summary import categories_of, process_rows
from ..summary_notes import run_notes

SPAN_LIMIT = 20_000
STRUCTURAL = ("process", "startup", "subprocess", "http", "container", "phase")
# (query, parameters, title) of the tables under the waterfall, in page order; a profile query's only
# where the run has the samples it reads (`waits`: run --profile --idle).
TABLES = (
    ("critical_path", {}, "Critical path"),  # its defaults: the whole run, and a row for what was cut
    ("waits", {}, "Untraced waits on the critical path"),
    ("subprocess", {}, "Child processes"),
    ("roundtrip", {}, "HTTP round-trips"),
    ("serialization", {}, "Serialization"),
    ("serialization", {"category": "parse"}, "Parsing"),
    ("imports", {"limit": 30}, "Imports"),
    ("gc", {}, "Garbage collector's passes"),
    ("slowest_spans", {"limit": 30}, "Slowest spans"),
    ("process_tree", {}, "Processes"),
)

_KEPT_SQL = """
WITH ranked AS (
    SELECT *, row_number() OVER (ORDER BY list_contains($structural, category) DESC, duration_ns DESC, start_ns) AS rank
    FROM spans WHERE run_id = $run_id
)
SELECT span_id, parent_span_id, name, category, kind, pid, start_ns, end_ns, status, incomplete, attributes
FROM ranked
WHERE rank <= $limit
ORDER BY start_ns
"""

# Server spans traced as another run that answered this run's clients (store/macros.sql, the ones
# the breakdown follows): drawn under their client.
_SERVERS_SQL = """
SELECT span_id, parent_span_id, name, category, kind, pid, start_ns, end_ns, status, incomplete, attributes
FROM foreign_servers($run_id)
"""

_DROPPED_SQL = """
WITH ranked AS (
    SELECT span_id, parent_span_id, start_ns, end_ns,
           row_number() OVER (ORDER BY list_contains($structural, category) DESC, duration_ns DESC, start_ns) AS rank
    FROM spans WHERE run_id = $run_id
)
SELECT span_id, parent_span_id, start_ns, end_ns FROM ranked WHERE rank > $limit
"""


# For each drawn span with py-spy samples in it (under it: its threads and child processes too), its
# hottest frames: (span, function, file, self ms, total ms), at most $per_span each, most self first.
_HOT_SQL = """
WITH RECURSIVE
sampled AS (
    SELECT span_id, stack_id, sum(duration_ns) AS ns FROM samples
    WHERE run_id = $run_id AND NOT idle GROUP BY ALL
),
up(span_id, ancestor) AS (
    SELECT DISTINCT span_id, span_id FROM sampled
    UNION
    SELECT u.span_id, s.parent_span_id
    FROM up AS u JOIN spans AS s ON s.run_id = $run_id AND s.span_id = u.ancestor
    WHERE s.parent_span_id IS NOT NULL
),
drawn AS (SELECT DISTINCT unnest($drawn::VARCHAR[]) AS ancestor),
inside AS (  -- a join with the drawn spans, not list_contains: one lookup per pair, not a list scan
    SELECT u.ancestor, p.stack_id, sum(p.ns) AS ns
    FROM up AS u JOIN drawn USING (ancestor) JOIN sampled AS p USING (span_id)
    GROUP BY ALL
),
selfs AS (  -- self time: each stack's running frame (stack_frames: each stack's frames once)
    SELECT i.ancestor, f.frame_id, sum(i.ns) AS self_ns
    FROM inside AS i JOIN stack_frames AS f ON f.run_id = $run_id AND f.stack_id = i.stack_id AND f.running
    GROUP BY i.ancestor, f.frame_id
),
-- Totals only for the frames that can make a span's top: those at or above its $per_span-th self
-- time (ties kept); every frame of a span where fewer frames ran (the rest are ordered by total).
cut AS (
    SELECT ancestor, CASE WHEN count(*) >= $per_span THEN min(self_ms) END AS min_self_ms
    FROM (SELECT ancestor, round(self_ns / 1e6, 1) AS self_ms FROM selfs
          QUALIFY row_number() OVER (PARTITION BY ancestor ORDER BY self_ns DESC) <= $per_span)
    GROUP BY ancestor
),
candidates AS (
    SELECT s.ancestor, s.frame_id FROM selfs AS s JOIN cut AS c USING (ancestor)
    WHERE c.min_self_ms IS NOT NULL AND round(s.self_ns / 1e6, 1) >= c.min_self_ms
),
totals AS (
    SELECT i.ancestor, f.frame_id, sum(i.ns) AS total_ns
    FROM candidates AS c
    JOIN stack_frames AS f ON f.run_id = $run_id AND f.frame_id = c.frame_id
    JOIN inside AS i ON i.ancestor = c.ancestor AND i.stack_id = f.stack_id
    GROUP BY i.ancestor, f.frame_id
    UNION ALL
    SELECT i.ancestor, f.frame_id, sum(i.ns)
    FROM inside AS i JOIN stack_frames AS f ON f.run_id = $run_id AND f.stack_id = i.stack_id
    WHERE i.ancestor IN (SELECT ancestor FROM cut WHERE min_self_ms IS NULL)
    GROUP BY i.ancestor, f.frame_id
),
ranked AS (
    SELECT t.ancestor, t.frame_id, coalesce(s.self_ns, 0) AS self_ns, t.total_ns
    FROM totals AS t LEFT JOIN selfs AS s USING (ancestor, frame_id)
)
SELECT r.ancestor, n.function, n.file,
       round(r.self_ns / 1e6, 1) AS self_ms, round(r.total_ns / 1e6, 1) AS total_ms
FROM ranked AS r JOIN frames AS n ON n.run_id = $run_id AND n.frame_id = r.frame_id
QUALIFY row_number() OVER (PARTITION BY r.ancestor ORDER BY self_ms DESC, total_ms DESC, n.function) <= $per_span
ORDER BY r.ancestor, self_ms DESC, total_ms DESC, n.function
"""
HOT_PER_SPAN = 10


def _hot_frames(store: Any, run_id: str, drawn: list[str]) -> dict[str, list]:
    """{span id: [[function, file, self ms, total ms], ...]} for the drawn spans with samples inside."""
    _, counted = store.sql("SELECT count(*) FROM samples WHERE run_id = $run_id", {"run_id": run_id})
    if not counted[0][0]:
        return {}
    _, rows = store.sql(_HOT_SQL, {"run_id": run_id, "drawn": drawn, "per_span": HOT_PER_SPAN})
    hot: dict[str, list] = {}
    for span_id, function, file, self_ms, total_ms in rows:
        hot.setdefault(span_id, []).append([function, file, self_ms, total_ms])
    return hot


def _aggregates(kept_ids: set[str], dropped: list[tuple]) -> list[list]:
    """[drawn span id (None: top level), spans left out below it, total ns of its direct children left out,
    start, end of those] for every drawn span with something left out below it."""
    parent_of = {span_id: parent for span_id, parent, _, _ in dropped}
    anchor: dict[str, str | None] = {}

    def drawn_ancestor(span_id: str) -> str | None:
        chain = []
        while span_id in parent_of and span_id not in anchor:
            chain.append(span_id)
            span_id = parent_of[span_id]
        found = anchor.get(span_id, span_id if span_id in kept_ids else None)
        for link in chain:
            anchor[link] = found
        return found

    groups: dict[str | None, list] = {}
    for span_id, parent, start, end in dropped:
        group = groups.setdefault(drawn_ancestor(span_id), [0, 0, None, None])
        group[0] += 1
        if parent is None or parent in kept_ids or parent not in parent_of:  # a direct child of the drawn span
            group[1] += end - start
            group[2] = start if group[2] is None else min(group[2], start)
            group[3] = end if group[3] is None else max(group[3], end)
    return [[owner, count, total, start, end] for owner, (count, total, start, end) in groups.items()]


def collect(store: Any, run_id: str, span_limit: int = SPAN_LIMIT) -> dict[str, Any]:
    """Everything the page needs, as plain JSON-able data."""
    _, run_rows = store.sql("SELECT run_id, group_id, command, cwd, start_ns, end_ns, exit_code, span_count, "
                            "process_count, run_dir FROM runs WHERE run_id = $run_id", {"run_id": run_id})
    run = dict(zip(("run_id", "group_id", "command", "cwd", "start_ns", "end_ns", "exit_code", "span_count",
                    "process_count", "run_dir"), run_rows[0])) if run_rows else {"run_id": run_id}
    params = {"run_id": run_id, "structural": list(STRUCTURAL), "limit": span_limit}
    _, kept = store.sql(_KEPT_SQL, params)
    _, servers = store.sql(_SERVERS_SQL, {"run_id": run_id})
    kept += servers
    _, dropped = store.sql(_DROPPED_SQL, params)
    origin = min((row[6] for row in kept), default=0)
    spans = [[span_id, parent, name, category, kind, pid, start - origin, end - start, status, bool(incomplete),
              json.loads(attributes) if attributes else {}]
             for span_id, parent, name, category, kind, pid, start, end, status, incomplete, attributes in kept]
    aggregates = [[owner, count, total, start - origin, end - start]
                  for owner, count, total, start, end in _aggregates({row[0] for row in kept}, dropped)]
    breakdown = run_query(store, "breakdown", {"run_id": run_id})
    # The summary's notes on the same figures: what they call for, and where to look next
    notes = run_notes(store, run_id, process_rows(store, run_id), categories_of(breakdown),
                      (run.get("start_ns") or 0, run.get("end_ns") or 0), run.get("run_dir"))
    tables = []
    for name, extra, title in TABLES:
        query = get_query(name)
        if missing_data(store, query, run_id):
            continue
        result = run_query(store, query, {"run_id": run_id, **extra})
        tables.append({"title": title, "query": name, "params": extra, "summary": result.query.summary,
                       "columns": result.columns, "rows": result.rows})
    return {
        "run": run,
        "origin_ns": origin,
        "span_total": (run.get("span_count") or len(spans) + sum(a[1] for a in aggregates)),
        "span_limit": span_limit,
        "spans": spans,
        "aggregates": aggregates,
        "breakdown": {"columns": breakdown.columns, "rows": breakdown.rows},
        "notes": notes,
        "tables": tables,
        "hot": _hot_frames(store, run_id, [row[0] for row in kept]),
    }
