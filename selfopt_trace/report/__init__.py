"""The visual report: one self-contained HTML file (inline CSS and JS, no network, works from file://).

    html = render_report(store, run_id)

`data.collect` runs the queries and picks the spans (at most `data.SPAN_LIMIT` drawn one by one,
the rest summed per parent); `html.render` turns that into the page and runs no SQL.
"""

from __future__ import annotations

from typing import Any

from .data import SPAN_LIMIT, collect
from .html import render


def render_report(store: Any, run_id: str, span_limit: int = SPAN_LIMIT) -> str:
    return render(collect(store, run_id, span_limit))


__all__ = ["SPAN_LIMIT", "collect", "render", "render_report"]
