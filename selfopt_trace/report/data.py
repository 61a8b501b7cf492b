"""What the report shows, gathered from the store: run facts, query results and the spans to draw.

Large runs stay usable: at most SPAN_LIMIT spans are drawn one by one. Those kept are the ones
that structure the trace (processes, start-up, subprocess, HTTP, container and phase spans) and
then the longest of the rest; every parent's children that did not make it are drawn as one
aggregate bar ("N more spans") covering them, with their count and total time.
"""

from __future__ import annotations

import json
from typing import Any

from ..queries import run_query

SPAN_LIMIT = 20_000
STRUCTURAL = ("process", "startup", "subprocess", "http", "container", "phase")
# (query, parameters, title) of the tables under the waterfall, in page order.
TABLES = (
    ("critical_path", {"limit": 100}, "Critical path"),
    ("subprocess", {}, "Child processes"),
    ("roundtrip", {}, "HTTP round-trips"),
    ("serialization", {}, "Serialization"),
    ("serialization", {"category": "parse"}, "Parsing"),
    ("imports", {"limit": 30}, "Imports"),
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

_DROPPED_SQL = """
WITH ranked AS (
    SELECT parent_span_id, start_ns, end_ns, duration_ns,
           row_number() OVER (ORDER BY list_contains($structural, category) DESC, duration_ns DESC, start_ns) AS rank
    FROM spans WHERE run_id = $run_id
)
SELECT parent_span_id, count(*), sum(duration_ns), min(start_ns), max(end_ns)
FROM ranked
WHERE rank > $limit
GROUP BY parent_span_id
"""


def collect(store: Any, run_id: str, span_limit: int = SPAN_LIMIT) -> dict[str, Any]:
    """Everything the page needs, as plain JSON-able data."""
    _, run_rows = store.sql("SELECT run_id, group_id, command, cwd, start_ns, end_ns, exit_code, span_count, "
                            "process_count FROM runs WHERE run_id = $run_id", {"run_id": run_id})
    run = dict(zip(("run_id", "group_id", "command", "cwd", "start_ns", "end_ns", "exit_code", "span_count",
                    "process_count"), run_rows[0])) if run_rows else {"run_id": run_id}
    params = {"run_id": run_id, "structural": list(STRUCTURAL), "limit": span_limit}
    _, kept = store.sql(_KEPT_SQL, params)
    _, dropped = store.sql(_DROPPED_SQL, params)
    origin = min((row[6] for row in kept), default=0)
    spans = [[span_id, parent, name, category, kind, pid, start - origin, end - start, status, bool(incomplete),
              json.loads(attributes) if attributes else {}]
             for span_id, parent, name, category, kind, pid, start, end, status, incomplete, attributes in kept]
    aggregates = [[parent, count, total, start - origin, end - start] for parent, count, total, start, end in dropped]
    breakdown = run_query(store, "breakdown", {"run_id": run_id})
    tables = []
    for name, extra, title in TABLES:
        result = run_query(store, name, {"run_id": run_id, **extra})
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
        "tables": tables,
    }
