"""Commands over a stored run's answers: `query`, `report`, `export`, `compare`.

Thin shells over `selfopt_trace.queries`, `.report`, `.export` and `.compare`; runs are named as
everywhere else (an id, a unique prefix of one, or `latest`), compare also takes group ids.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional, Sequence

import typer

from ..errors import QueryError, SelfoptTraceError
from .commands import app
from .inspect import DB, OutputFormat, UnknownRunError, open_store, print_rows, resolve_run


class QueryFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


class ExportFormat(str, Enum):
    otlp_json = "otlp-json"
    jaeger_json = "jaeger-json"
    chrome = "chrome"


FORMAT = typer.Option(QueryFormat.table, "--format", "-f", help="table, csv, json (an array of row objects), or markdown.")
RUN = typer.Argument("latest", help="Run id, a unique prefix of one, or `latest`.")


@app.command()
def query(
    name: Optional[str] = typer.Argument(None, help="The query (see --list)."),
    run: Optional[str] = typer.Option(None, "--run", "-r", show_default=False,
                                      help="Run id, a unique prefix of one, or `latest` (the default)."),
    param: List[str] = typer.Option([], "--param", "-p", help="A parameter of the query, as key=value (repeatable)."),
    output: QueryFormat = FORMAT,
    queries_dir: List[Path] = typer.Option([], "--queries", help="A folder of your own .sql queries (repeatable); "
                                           "a file named like a shipped query replaces it."),
    list_: bool = typer.Option(False, "--list", "-l", help="List the queries with what each answers, and exit."),
    db: Optional[Path] = DB,
) -> None:
    """Run a named SQL query (queries/*.sql) on a run: breakdown, roundtrip, subprocess, imports, ..."""
    from ..queries import QueryDefinitionError, get_query, load_queries, missing_data, run_query

    if list_ or name is None:
        bad: list[QueryDefinitionError] = []
        _list_queries(load_queries(queries_dir, bad))
        for error in bad:  # listed after the good ones, and the exit status says it
            typer.echo(f"selfopt-trace: error: {error}", err=True)
        if bad:
            raise typer.Exit(2)
        return
    named = get_query(name, queries_dir)
    values: dict[str, Any] = dict(_key_value(item) for item in param)
    takes_run = any(p.name == "run_id" for p in named.parameters)
    if run is not None and "run_id" in values:  # never one silently over the other
        raise QueryError(f"--run {run} and -p run_id={values['run_id']} both name the run: give one")
    if run is not None and not takes_run:
        raise QueryError(f"query {named.name} has no run_id parameter: --run does not apply to it")
    with open_store(db) as store:
        if takes_run:  # -p run_id=... is a run as --run's: an id, a unique prefix or `latest`
            values["run_id"] = resolve_run(store, values.get("run_id", run or "latest"))
        result = run_query(store, named, values)
        why_empty = None if result.rows or "run_id" not in values else missing_data(store, named, values["run_id"])
    if output is QueryFormat.markdown:
        sys.stdout.write(markdown_table(result.columns, result.rows))
    else:
        print_rows(result.columns, result.rows, OutputFormat(output.value))
    if why_empty:
        typer.echo(f"selfopt-trace: note: {why_empty}", err=True)


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{item!r}: write a parameter as key=value", param_hint="--param")
    return key.strip(), value


def _list_queries(queries: dict) -> None:
    from rich.table import Table

    from ..summary_render import console

    table = Table(header_style="bold", box=None, padding=(0, 1))
    table.add_column("query", no_wrap=True)
    table.add_column("parameters")
    table.add_column("what it answers")
    for name, named in sorted(queries.items()):
        parameters = ", ".join(p.name if p.required else f"{p.name}={_default(p.default)}" for p in named.parameters)
        table.add_row(name, parameters, named.summary)
    console().print(table)


def _default(value: Any) -> str:
    return "null" if value is None else (f"'{value}'" if isinstance(value, str) else str(value))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned)."""
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows if row[i] is not None)
               for i in range(len(columns))]

    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "|" + "|".join("---:" if numeric[i] else "---" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@app.command()
def report(
    run: str = RUN,
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    db: Optional[Path] = DB,
) -> None:
    """Write a run's visual report: one self-contained HTML file (waterfall, breakdown, tables)."""
    from ..report import render_report

    with open_store(db) as store:
        run_id = resolve_run(store, run)
        html = render_report(store, run_id)
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise SelfoptTraceError(f"cannot write {out}: {exc.strerror or exc}") from exc
    typer.echo(f"wrote {out} (run {run_id})", err=True)


@app.command()
def export(
    run: str = RUN,
    fmt: ExportFormat = typer.Option(ExportFormat.otlp_json, "--format", "-f",
                                     help="otlp-json (OTel Collector file-exporter lines), jaeger-json (Jaeger UI "
                                          "upload), or chrome (Perfetto, chrome://tracing)."),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write (- for stdout)."),
    db: Optional[Path] = DB,
) -> None:
    """Export a run's spans for other tools."""
    from ..export import fetch_spans, write_export
    from ..export.run_span import with_run_span

    with open_store(db) as store:
        run_id = resolve_run(store, run)
        spans = fetch_spans(store, run_id)
        if fmt is not ExportFormat.chrome:  # a trace's formats: the run's span at its root; chrome's are processes
            spans = with_run_span(store, run_id, spans)
    written = write_export(spans, fmt.value, out)
    if str(out) != "-":
        typer.echo(f"wrote {out}: {len(spans)} spans, {written} bytes ({fmt.value}, run {run_id})", err=True)


@app.command()
def compare(
    before: str = typer.Argument(..., help="A run (id, prefix or `latest`) or a group id (run --repeat)."),
    after: str = typer.Argument(..., help="A run or group to compare with BEFORE."),
    output: QueryFormat = FORMAT,
    spans: int = typer.Option(20, "--spans", min=0, help="Span names shown: those with the largest differences."),
    db: Optional[Path] = DB,
) -> None:
    """Compare two runs or groups of runs: per category and per span name, in ms and %."""
    from .. import compare as comparing

    with open_store(db) as store:
        a_label, a_runs = _runs_of(store, before)
        b_label, b_runs = _runs_of(store, after)
        result = comparing.compare(store, a_runs, b_runs, a_label, b_label, span_rows=spans)
    for warning in result.warnings:
        typer.echo(f"selfopt-trace: warning: {warning}", err=True)
    if output is QueryFormat.markdown:
        sys.stdout.write(comparing.render_markdown(result))
    elif output is QueryFormat.json:
        sys.stdout.write(json.dumps({"before": {"label": a_label, "runs": a_runs}, "after": {"label": b_label, "runs": b_runs},
                                     "warnings": result.warnings,
                                     "rows": [dict(zip(comparing.COLUMNS, row)) for row in comparing.table_rows(result)]},
                                    indent=2) + "\n")
    else:
        typer.echo(f"before: {a_label} ({len(a_runs)} run{'s' if len(a_runs) > 1 else ''})   "
                   f"after: {b_label} ({len(b_runs)} run{'s' if len(b_runs) > 1 else ''})")
        print_rows(list(comparing.COLUMNS), comparing.table_rows(result), OutputFormat(output.value))


def _runs_of(store: Any, ref: str) -> tuple[str, list[str]]:
    """(label, run ids): the runs of a group id, else the one run the reference names."""
    _, rows = store.sql("SELECT run_id FROM runs WHERE group_id = $ref ORDER BY start_ns, run_id", {"ref": ref})
    if rows:
        return ref, [row[0] for row in rows]
    try:
        run_id = resolve_run(store, ref)
    except UnknownRunError as exc:
        _, groups = store.sql("SELECT DISTINCT group_id FROM runs WHERE group_id IS NOT NULL ORDER BY group_id DESC LIMIT 5")
        if not groups:
            raise
        listing = "".join(f"\n  {group}" for (group,) in groups)
        raise SelfoptTraceError(f"{exc}\nnor is it a group; the most recent groups are:{listing}") from exc
    return run_id, [run_id]
