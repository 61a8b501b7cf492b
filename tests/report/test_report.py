"""The HTML report, opened in a real headless Chromium: it renders the spans, reacts, and logs nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from selfopt_trace.report import collect, render, render_report
from selfopt_trace.report.data import STRUCTURAL
from tests.report.browser import BROWSER, open_page, screenshot

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine: install it with "
                                                           "scripts/browser-test-setup.sh")

def harness(steps: str) -> str:
    """A page that opens report.html in a frame, runs `steps` (JS with doc, win, canvas, rect, result)
    once it loaded, and leaves what `result(key, value)` recorded on its own <body> as data-*."""
    return """<!DOCTYPE html>
<html><body><iframe id="report" src="report.html" style="width:1400px;height:900px"></iframe>
<script>
function result(key, value) { document.body.setAttribute("data-" + key, String(value)); }
document.getElementById("report").addEventListener("load", function () {
  try {
    var doc = this.contentDocument, win = this.contentWindow;
    var canvas = doc.getElementById("wf-canvas"), rect = canvas.getBoundingClientRect();
""" + steps + """
  } catch (error) { result("error", error.message); }
});
</script></body></html>
"""


INTERACTIONS = """
    var firstRow = rect.top + 26 + 9;
    function mouse(type, x, y) {
      canvas.dispatchEvent(new win.MouseEvent(type, {clientX: x, clientY: y, bubbles: true}));
    }
    result("rows-before", doc.body.dataset.rows);
    result("drawn-before", doc.body.dataset.renderedSpans);
    mouse("click", rect.left + 20, firstRow);
    result("rows-folded", doc.body.dataset.rows);
    mouse("click", rect.left + 20, firstRow);
    result("rows-unfolded", doc.body.dataset.rows);
    mouse("mousemove", rect.left + 700, firstRow);
    var tip = doc.getElementById("tooltip");
    result("tooltip", tip.style.display + ":" + tip.textContent.slice(0, 60));
    for (var i = 0; i < 12; i++) {
      canvas.dispatchEvent(new win.WheelEvent("wheel", {clientX: rect.left + 365, clientY: firstRow + 40,
                                                        deltaY: -500, bubbles: true, cancelable: true}));
    }
    result("drawn-zoomed", doc.body.dataset.renderedSpans);
    doc.getElementById("wf-reset").click();
    result("drawn-reset", doc.body.dataset.renderedSpans);
    doc.getElementById("wf-collapse").click();
    result("rows-collapsed", doc.body.dataset.rows);
"""


def write_report(tmp_path: Path, html: str) -> Path:
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    return page


@needs_browser
def test_the_report_renders_the_spans_without_console_messages(traced_store, tmp_path: Path) -> None:
    page = write_report(tmp_path, render_report(traced_store, "q1"))
    opened = open_page(page, tmp_path / "profile")
    assert opened.console == []
    data = opened.body_data()
    assert int(data["rows"]) > 20 and int(data["rendered-spans"]) > 20
    assert "Where the wall time went" in opened.dom and "Child processes" in opened.dom
    screenshot(page, ARTIFACTS / "report.png", tmp_path / "profile")


@needs_browser
def test_the_waterfall_folds_shows_details_and_zooms(traced_store, tmp_path: Path) -> None:
    write_report(tmp_path, render_report(traced_store, "q1"))
    page = tmp_path / "harness.html"
    page.write_text(harness(INTERACTIONS))
    opened = open_page(page, tmp_path / "profile")
    assert opened.console == []
    data = opened.body_data()
    assert "error" not in data, data["error"]
    rows = int(data["rows-before"])
    assert data["rows-folded"] == "1" and data["rows-unfolded"] == str(rows)
    assert data["tooltip"].startswith("block:process") and "ms" in data["tooltip"]
    assert int(data["drawn-zoomed"]) < int(data["drawn-before"]) == int(data["drawn-reset"])
    assert int(data["rows-collapsed"]) < rows


@needs_browser
def test_a_large_run_draws_its_longest_spans_and_sums_the_rest(traced_store, tmp_path: Path) -> None:
    payload = collect(traced_store, "q1", span_limit=20)
    assert len(payload["spans"]) == 20
    dropped = sum(count for _, count, _, _, _ in payload["aggregates"])
    assert len(payload["spans"]) + dropped == payload["span_total"]
    kept = {span[0] for span in payload["spans"]}
    assert {span[3] for span in payload["spans"]} >= {"process", "subprocess", "http"}
    assert all(owner in kept for owner, *_ in payload["aggregates"])  # each bar hangs under a drawn span
    shortest_kept = min(span[7] for span in payload["spans"] if span[3] not in STRUCTURAL)
    _, longest_dropped = traced_store.sql(
        "SELECT max(duration_ns) FROM spans WHERE run_id = 'q1' AND span_id NOT IN (SELECT unnest($ids))",
        {"ids": list(kept)})
    assert longest_dropped[0][0] <= shortest_kept
    write_report(tmp_path, render(payload))
    page = tmp_path / "harness.html"
    page.write_text(harness('doc.getElementById("wf-expand").click(); result("rows", doc.body.dataset.rows);'))
    opened = open_page(page, tmp_path / "profile")
    assert opened.console == []
    assert int(opened.body_data()["rows"]) == 20 + len(payload["aggregates"])  # every span and aggregate bar
    assert "the rest as one grey bar per parent" in render(payload)


def test_each_server_span_is_drawn_once_whatever_else_the_store_holds(tmp_path: Path) -> None:
    """A server traced into the run, the run loaded again under another id, and a server traced as
    its own run loaded twice: every span of the page once."""
    from selfopt_trace.store import Store
    from tests.queries.builder import RunBuilder
    from tests.store.spanfiles import TRACE

    def run_with_its_server(run_id: str) -> RunBuilder:
        run = RunBuilder(run_id)
        main = run.process(100, 0, 100)
        client = run.span(100, "POST", "http", 40, 70, main, kind="CLIENT")
        run.span(100, "GET", "http", 75, 90, main, kind="CLIENT")
        run.process(300, -50, 150, command="server.py", trace="1" * 32)
        run.span(300, "POST /items", "http", 45, 65, client, kind="SERVER")
        return run

    with Store(tmp_path / "traces.duckdb") as store:
        for run_id in ("run-1", "run-2"):  # the same span ids under two run ids
            run = run_with_its_server(run_id)
            run.load(store, tmp_path)
        second_client = [span.id for span in run.spans if span.name == "GET"][0]
        for server_id in ("server-a", "server-b"):  # the same server run, loaded twice
            server_run = RunBuilder(server_id, first_id=3000)
            server_run.process(400, -100, 200, command="other.py", trace="2" * 32)
            server_run.span(400, "GET /x", "http", 78, 88, second_client, kind="SERVER", trace=TRACE)
            server_run.load(store, tmp_path)
        payload = collect(store, "run-1")
    ids = [span[0] for span in payload["spans"]]
    assert len(ids) == len(set(ids))
    assert sorted(span[2] for span in payload["spans"] if span[4] == "SERVER") == ["GET /x", "POST /items"]


def test_the_page_is_self_contained_and_data_cannot_escape_its_script(traced_store) -> None:
    payload = collect(traced_store, "q1")
    assert "waits" not in {table["query"] for table in payload["tables"]}  # not profiled with --idle: nothing to say
    payload["spans"][0][2] = "</script><script>document.title='owned'</script>"
    html = render(payload)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    assert json.loads(data)["spans"][0][2].startswith("</script>")


@needs_browser
def test_the_breakdown_bar_spans_the_page_width_and_each_piece_keeps_its_label(traced_store, tmp_path: Path) -> None:
    html = render(collect(traced_store, "q1"))
    measure = ("<script>const s = document.querySelector('.stack'), w = document.querySelector('#breakdown');"
               "const cs = getComputedStyle(w); document.body.dataset.stack = s.getBoundingClientRect().width;"
               "document.body.dataset.room = w.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);"
               "document.body.dataset.untitled = [...s.children].filter(d => !d.title).length;</script></body>")
    page_path = tmp_path / "report.html"
    page_path.write_text(html.replace("</body>", measure), encoding="utf-8")
    data = open_page(page_path, tmp_path / "chromium").body_data()
    assert abs(float(data["stack"]) - float(data["room"])) <= 2, data  # the whole width, at 1400 px too
    assert data["untitled"] == "0"
    pieces = re.findall(r'<div title="([^"]+)" style="width:', html)
    assert pieces and all(": " in title and title.endswith(" ms") for title in pieces)


def test_the_critical_path_table_shows_the_whole_run_and_says_what_it_left_out(store, tmp_path: Path) -> None:
    """The table stopped at the 100th row, 272 ms into a 14.9 s run, saying nothing. Now: the query's
    defaults (spans of 1 % of the path at least), and a last row when the limit cut some off."""
    from tests.queries.builder import RunBuilder

    run = RunBuilder("deep")
    parent = run.process(100, 0, 10_000)
    for depth in range(250):  # a chain of 250 spans each on the whole path: more than any limit shows
        parent = run.span(100, f"level{depth}", "phase", depth * 0.01, 10_000 - depth * 0.01, parent=parent)
    run.span(100, "import tiny", "import", 20, 25, parent=parent)  # 0.05 % of the path: hidden
    run.load(store, tmp_path)
    (table,) = [table for table in collect(store, "deep")["tables"] if table["query"] == "critical_path"]
    assert len(table["rows"]) == 201
    last = dict(zip(table["columns"], table["rows"][-1]))
    assert last["category"] == "cut" and last["span"].startswith("... 51 more spans on the path from here on")
    assert not any("import tiny" in str(row[0]) for row in table["rows"])
    page = render(collect(store, "deep"))
    section = page[page.index("<h2>Critical path</h2>"):].split("</section>")[0]
    assert "... 51 more spans on the path from here on, not shown (limit 200" in section
