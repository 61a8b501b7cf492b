"""Before/after: two runs, or two groups of runs (`run --repeat N`), compared by category and span name.

    result = compare(store, ["run-a"], ["run-b1", "run-b2", "run-b3"])
    print(render_markdown(result))

Per category, the figures are the `breakdown` query's wall_ms; per span name, the total duration of
the spans of that name in the run. A group counts by its median run. Where a side has several runs,
its spread is max - min over its runs, and a difference no larger than the wider spread of the two
sides is marked as within the run-to-run spread (noise, not a change). With one run on each side
there is no spread to judge by, and nothing is marked.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from .queries import run_query

SPAN_ROWS = 20  # span names shown: the largest differences


@dataclass(frozen=True)
class Row:
    kind: str  # "total", "category" or "span"
    name: str
    a_ms: float
    b_ms: float
    a_spread_ms: float | None  # max - min over the side's runs (None: one run)
    b_spread_ms: float | None

    @property
    def delta_ms(self) -> float:
        return self.b_ms - self.a_ms

    @property
    def delta_pct(self) -> float | None:
        return 100.0 * self.delta_ms / self.a_ms if self.a_ms else None

    @property
    def within_spread(self) -> bool | None:
        """True: the difference is no larger than the run-to-run spread (None: no spread known)."""
        spreads = [s for s in (self.a_spread_ms, self.b_spread_ms) if s is not None]
        return abs(self.delta_ms) <= max(spreads) if spreads else None


@dataclass
class Comparison:
    a_label: str
    b_label: str
    a_runs: list[str]
    b_runs: list[str]
    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def compare(store: Any, a_runs: Sequence[str], b_runs: Sequence[str], a_label: str | None = None,
            b_label: str | None = None, span_rows: int = SPAN_ROWS) -> Comparison:
    """Compare the runs `a_runs` (before) with `b_runs` (after); `span_rows`: how many span names (>= 0)."""
    if span_rows < 0:  # a slice would take it as "all but the last N"
        raise ValueError(f"span_rows must be 0 or more, not {span_rows}")
    result = Comparison(a_label or _label(a_runs), b_label or _label(b_runs), list(a_runs), list(b_runs))
    result.warnings.extend(_command_warnings(store, result))
    categories = {run: _categories(store, run) for run in {*a_runs, *b_runs}}
    names = list(next(iter(categories.values())))
    for name in names:
        a_values = [categories[run].get(name, 0.0) for run in a_runs]
        b_values = [categories[run].get(name, 0.0) for run in b_runs]
        result.rows.append(_row("total" if name == "total" else "category", name, a_values, b_values))
    result.rows.sort(key=lambda row: row.kind != "total")  # the wall time first
    spans = _span_totals(store, [*a_runs, *b_runs])
    span_rows_all = [_row("span", name, [spans.get((run, name), 0.0) for run in a_runs],
                          [spans.get((run, name), 0.0) for run in b_runs])
                     for name in sorted({name for _, name in spans})]
    span_rows_all.sort(key=lambda row: (-abs(row.delta_ms), row.name))
    result.rows.extend(span_rows_all[:span_rows])
    return result


def _label(runs: Sequence[str]) -> str:
    return runs[0] if len(runs) == 1 else f"{runs[0]} (+{len(runs) - 1})"


def _row(kind: str, name: str, a_values: list[float], b_values: list[float]) -> Row:
    return Row(kind, name, statistics.median(a_values), statistics.median(b_values), _spread(a_values), _spread(b_values))


def _spread(values: list[float]) -> float | None:
    return max(values) - min(values) if len(values) > 1 else None


def _categories(store: Any, run_id: str) -> dict[str, float]:
    result = run_query(store, "breakdown", {"run_id": run_id})
    return {record["category"]: float(record["wall_ms"]) for record in result.records()}


def _span_totals(store: Any, runs: list[str]) -> dict[tuple[str, str], float]:
    _, rows = store.sql("""
        SELECT run_id, name, sum(duration_ns) / 1e6 FROM spans
        WHERE list_contains($runs, run_id)
        GROUP BY run_id, name""", {"runs": runs})
    return {(run, name): float(ms) for run, name, ms in rows}


def _command_warnings(store: Any, result: Comparison) -> list[str]:
    _, rows = store.sql("SELECT run_id, command FROM runs WHERE list_contains($runs, run_id)",
                        {"runs": [*result.a_runs, *result.b_runs]})
    commands = dict(rows)
    a_commands = {commands.get(run) for run in result.a_runs}
    b_commands = {commands.get(run) for run in result.b_runs}
    warnings = []
    for label, side in ((result.a_label, a_commands), (result.b_label, b_commands)):
        if len(side) > 1:
            warnings.append(f"the runs of {label} ran different commands: {_commands(side)}")
    if a_commands != b_commands and len(a_commands) == len(b_commands) == 1:
        warnings.append(f"comparing runs of different commands: {result.a_label} ran {_commands(a_commands)}, "
                        f"{result.b_label} ran {_commands(b_commands)}")
    return warnings


def _commands(commands: set[str | None]) -> str:
    return ", ".join(f"`{command}`" if command else "(unknown)" for command in sorted(commands, key=str))


# ----------------------------------------------------------------------------------- rendering

COLUMNS = ("what", "name", "before_ms", "after_ms", "delta_ms", "delta_pct", "within_spread")


def table_rows(result: Comparison) -> list[tuple]:
    """The comparison as plain rows (COLUMNS), for the table, CSV and JSON outputs."""
    return [(row.kind, row.name, round(row.a_ms, 3), round(row.b_ms, 3), round(row.delta_ms, 3),
             None if row.delta_pct is None else round(row.delta_pct, 1), row.within_spread)
            for row in result.rows]


def render_markdown(result: Comparison) -> str:
    """A table ready for a PR description: before, after, delta in ms and %."""
    lines = [f"**Before:** {_runs_text(result.a_label, result.a_runs)}  ",
             f"**After:** {_runs_text(result.b_label, result.b_runs)}", ""]
    lines += [f"> warning: {warning}" for warning in result.warnings]
    if result.warnings:
        lines.append("")
    lines += ["| | before (ms) | after (ms) | delta (ms) | delta |", "|---|---:|---:|---:|---:|"]
    spans_started = False
    for row in result.rows:
        if row.kind == "span" and not spans_started:
            spans_started = True
            lines.append("| *by span name (total duration)* | | | | |")
        name = f"**{row.name}**" if row.kind == "total" else (f"`{row.name}`" if row.kind == "span" else row.name)
        pct = "" if row.delta_pct is None else f"{row.delta_pct:+.1f} %"
        noise = " (within spread)" if row.within_spread else ""
        lines.append(f"| {name} | {row.a_ms:.1f} | {row.b_ms:.1f} | {row.delta_ms:+.1f} | {pct}{noise} |")
    return "\n".join(lines) + "\n"


def _runs_text(label: str, runs: list[str]) -> str:
    if len(runs) == 1:
        return f"`{runs[0]}`"
    return f"`{label}`: median of {len(runs)} runs"
