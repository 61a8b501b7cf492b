"""The report page: data from `data.collect` in, one self-contained HTML document out (no SQL here)."""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from importlib import resources
from typing import Any

from .. import __version__

# Breakdown categories (the breakdown query's order) and their colours.
CATEGORY_COLORS = {
    "interpreter start-up": "#fc8d62", "imports": "#66c2a5", "parsing": "#e5c494", "serialization": "#ffd92f",
    "http client overhead": "#b3de69", "http server time": "#4daf4a", "subprocess spawn overhead": "#e78ac3",
    "interpreter teardown": "#d95f02", "garbage collection": "#7570b3",
    "child processes' own work": "#bc80bd", "container start-up": "#1f78b4", "own work": "#8da0cb",
    "sleeps": "#80b1d3",
    "untraced child processes": "#a6761d", "untraced http servers": "#e6ab02", "untraced waits": "#bdbdbd",
    "outside traced processes": "#d9d9d9",
}


def render(payload: dict[str, Any]) -> str:
    run = payload["run"]
    css = _asset("report.css")
    script = _asset("report.js")
    # Inside <script>, "</" would end the element: JSON allows writing it as "<\/".
    hot = payload.get("hot") or {}
    data = json.dumps({"spans": payload["spans"], "aggregates": payload["aggregates"], "hot": hot},
                      separators=(",", ":")).replace("</", "<\\/")
    drawn = len(payload["spans"])
    limited = (f"The run has {payload['span_total']} spans; the {drawn} that structure the trace or last longest "
               f"are drawn one by one (limit {payload['span_limit']}), the rest as one grey bar per parent.") \
        if payload["aggregates"] else f"All {drawn} spans of the run."
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>selfopt-trace report: {escape(str(run.get("run_id")))}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>Run <code>{escape(str(run.get("run_id")))}</code></h1>
<div class="facts">{_facts(run)}</div>
</header>
<section id="breakdown">
<h2>Where the wall time went</h2>
<p class="about">Every instant of the run counted once: overlapping work (threads, parallel children) is split
between what ran at that instant. <i>busy</i> counts every process and thread in full.</p>
{_breakdown(payload["breakdown"])}
{_notes(payload.get("notes") or [])}
</section>
<section id="waterfall">
<h2>Waterfall</h2>
<p class="about">{escape(limited)} Wheel over the bars: zoom; drag: pan; click a name: fold or unfold; hover: details.</p>
<div class="toolbar"><button id="wf-reset">Reset zoom</button><button id="wf-expand">Expand all</button>
<button id="wf-collapse">Collapse to processes</button><span class="hint">{drawn} spans</span></div>
<div id="wf-scroll"><div id="wf-inner"><canvas id="wf-canvas"></canvas></div></div>
</section>
{_hot_section(hot)}
{"".join(_table_section(table) for table in payload["tables"])}
<footer><section><p class="about">selfopt-trace {escape(__version__)}</p></section></footer>
<div id="tooltip"></div>
<script type="application/json" id="report-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _facts(run: dict[str, Any]) -> str:
    facts = []
    if run.get("command"):  # one line, cut at the page's width; the whole of it on hover
        command = " ".join(run["command"].split())
        facts.append(f'command <code title="{escape(command)}">{escape(command)}</code>')
    if run.get("start_ns"):
        facts.append("started " + escape(datetime.fromtimestamp(run["start_ns"] / 1e9).strftime("%Y-%m-%d %H:%M:%S")))
    if run.get("start_ns") and run.get("end_ns"):
        facts.append(f"wall {(run['end_ns'] - run['start_ns']) / 1e6:.1f} ms")
    for key, label in (("exit_code", "exit code"), ("process_count", "processes"), ("span_count", "spans"),
                       ("group_id", "group")):
        if run.get(key) is not None:
            facts.append(f"{label} {escape(str(run[key]))}")
    return "".join(f"<span>{fact}</span>" for fact in facts)


def _breakdown(breakdown: dict[str, Any]) -> str:
    records = [dict(zip(breakdown["columns"], row)) for row in breakdown["rows"]]
    parts = [r for r in records if r["category"] != "total"]
    total = next((r["wall_ms"] for r in records if r["category"] == "total"), 0) or 0
    bars = "".join(f'<div title="{escape(r["category"])}: {r["wall_ms"]:.1f} ms" '
                   f'style="width:{100 * r["wall_ms"] / total:.3f}%;background:{CATEGORY_COLORS.get(r["category"], "#ccc")}"></div>'
                   for r in parts if total and r["wall_ms"] > 0)
    legend = "".join(f'<span><i class="swatch" style="background:{CATEGORY_COLORS.get(r["category"], "#ccc")}"></i>'
                     f'{escape(r["category"])} {r["wall_ms"]:.1f} ms ({r["wall_pct"] or 0:.1f} %)</span>'
                     for r in parts if r["wall_ms"] > 0)
    return (f'<div class="stack">{bars}</div><div class="legend">{legend}</div>'
            + _table(breakdown["columns"], breakdown["rows"]))


def _notes(notes: list[str]) -> str:
    """The summary's notes (summary_notes.py), a paragraph each; their `commands` as code."""
    if not notes:
        return ""
    items = "".join(f"<li>{_code_spans(note)}</li>" for note in notes)
    return f'<h3>What the figures call for</h3><ul class="notes">{items}</ul>'


def _code_spans(text: str) -> str:
    """Escaped text whose `backquoted` parts are <code>."""
    parts = escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _hot_section(hot: dict[str, list]) -> str:
    """The panel the waterfall fills with a clicked span's hottest frames (run --profile)."""
    if not hot:
        return ""
    return ('<section id="hot"><h2>Hottest frames</h2><p class="about">Click a bar of the waterfall: the Python '
            "frames py-spy saw running inside that span (under it: its threads and child processes too), the most "
            f"self time first. {len(hot)} spans have samples. "
            "<code>selfopt-trace query hot_frames --param span=NAME</code>, <code>selfopt-trace flame</code></p>"
            '<div id="hot-frames"><p class="about">(no span selected)</p></div></section>')


def _table_section(table: dict[str, Any]) -> str:
    params = "".join(f" --param {escape(k)}={escape(str(v))}" for k, v in table["params"].items())
    return (f'<section><h2>{escape(table["title"])}</h2><p class="about">{escape(table["summary"])} '
            f'<code>selfopt-trace query {escape(table["query"])}{params}</code></p>'
            + (_table(table["columns"], table["rows"]) if table["rows"] else '<p class="about">(nothing)</p>')
            + "</section>")


def _table(columns: list[str], rows: list[tuple]) -> str:
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows if row[i] is not None)
               for i in range(len(columns))]
    head = "".join(f'<th class="{"num" if numeric[i] else ""}">{escape(c)}</th>' for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(_cell(value, numeric[i]) for i, value in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(value: Any, numeric: bool) -> str:
    """One line (CSS cuts it with an ellipsis at the column's width; the whole text on hover)."""
    if value is None:
        return '<td class="null">-</td>'
    text = str(value)
    if "\n" in text or "\t" in text:
        text = text.replace("\n", " ").replace("\t", " ")
    title = f' title="{escape(text.strip())}"' if len(text) > 60 else ""
    if text.startswith(" ") or "  " in text:  # indented tree labels keep their indentation
        text = text.replace(" ", "\u00a0")
    return f'<td class="{"num" if numeric else ""}"{title}>{escape(text)}</td>'
