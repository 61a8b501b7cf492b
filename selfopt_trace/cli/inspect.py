"""Commands that look at stored runs: `runs`, `sql`, `tree`, `show`, `summary`.

They open the database read-only, so several can run at once (not while a run is being loaded).
`RUN` arguments accept a run id, a unique prefix of one, or `latest` (see `resolve_run`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from datetime import date, datetime, time, timedelta
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from ..paths import ENV_DB, db_path_from
from ..errors import QueryError, RunNotFoundError, StoreOpenError
from .commands import ALL_COMMANDS, app


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


DB = typer.Option(None, "--db", envvar=ENV_DB, show_default=False,
                  help="The trace database. (default: $SELFOPT_TRACE_HOME/traces.duckdb, else ./.selfopt-trace/traces.duckdb)")
FORMAT = typer.Option(OutputFormat.table, "--format", "-f", help="table (for people), csv, or json (an array of row objects).")
RECENT = 5


class UnknownRunError(RunNotFoundError):
    """A RUN argument that names no run (or more than one), with the runs it could have meant."""

    def __init__(self, run: str, candidates: Sequence[str], ambiguous: bool = False) -> None:
        super().__init__(run)
        listing = "".join(f"\n  {run_id}" for run_id in candidates)
        if ambiguous:
            message = f"run {run!r} is ambiguous; it is the prefix of:{listing}"
        elif candidates:
            message = f"run not found: {run}; the most recent runs are:{listing}"
        else:
            message = f"run not found: {run}; the database holds no runs yet (selfopt-trace run -- CMD)"
        self.args = (message,)


def open_store(db: Optional[Path]):
    """The trace database, read-only; a clear error when there is none yet."""
    from ..store import Store

    path = (db or db_path_from(os.environ)).absolute()
    if not path.exists():
        raise StoreOpenError(path, "it does not exist; `selfopt-trace run -- CMD` creates it (or pass --db)")
    return Store(path, read_only=True)


def resolve_run(store: Any, run: str) -> str:
    """A run id from a RUN argument: an id, a unique prefix of one, or `latest`."""
    runs = [info.run_id for info in store.runs()]  # the most recent first
    if run == "latest" and runs:
        return runs[0]
    if run in runs:
        return run
    matches = [run_id for run_id in runs if run_id.startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownRunError(run, matches[:10], ambiguous=True)
    raise UnknownRunError(run, runs[:RECENT])


# ---------------------------------------------------------------------------------------------
# Output of rows in three formats


def _plain(value: Any, strict_json: bool = False) -> Any:
    """A value JSON and CSV can hold (`strict_json`: NaN and infinities, which JSON has not, as null)."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (timedelta, UUID)):  # an INTERVAL as DuckDB prints it in a table; a UUID's text
        return str(value)
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and strict_json and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_plain(item, strict_json) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item, strict_json) for key, item in value.items()}
    return value


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], output: OutputFormat,
               one_line: Sequence[str] = ()) -> None:
    """Rows on stdout; in a table, the `one_line` columns are cut with an ellipsis instead of folded."""
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps([{column: _plain(value, strict_json=True) for column, value in zip(columns, row)}
                                     for row in rows], indent=2) + "\n")
    elif output is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if value is None else _plain(value) for value in row])
    else:
        from rich.table import Table
        from rich.text import Text

        from ..summary_render import console

        table = Table(header_style="bold", box=None, padding=(0, 1))
        for column in columns:
            if column in one_line:
                table.add_column(column, overflow="ellipsis", no_wrap=True)
            else:
                table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*[Text("NULL", style="dim") if value is None else Text(str(_plain(value))) for value in row])
        out = console()
        out.print(table)
        out.print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", style="dim")


# ---------------------------------------------------------------------------------------------
# Commands


@app.command()
def runs(
    db: Optional[Path] = DB,
    output: OutputFormat = FORMAT,
    limit: int = typer.Option(20, "--limit", "-n", help="At most this many runs, the most recent first (0: all)."),
) -> None:
    """List the runs in the trace database, the most recent first."""
    from ..summary import format_ns

    with open_store(db) as store:
        infos = store.runs()
    if limit > 0:
        infos = infos[:limit]
    if output is not OutputFormat.table:
        columns = ["run_id", "group_id", "start_time", "wall_ms", "exit_code", "processes", "spans", "command", "run_dir"]
        print_rows(columns, [(info.run_id, info.group_id, _local_time(info.start_ns), _wall_ms(info),
                              info.exit_code, info.process_count, info.span_count, info.command, info.run_dir)
                             for info in infos], output)
        return
    from rich.table import Table
    from rich.text import Text

    from ..summary_render import console

    # Every column keeps its width; the command takes what is left and is cut with an ellipsis.
    table = Table(header_style="bold", box=None, padding=(0, 1))
    table.add_column("run", no_wrap=True, min_width=max((len(info.run_id) for info in infos), default=3))
    if any(info.group_id for info in infos):
        table.add_column("group", no_wrap=True, min_width=max(len(info.group_id or "") for info in infos))
    table.add_column("started", no_wrap=True, min_width=14)
    for name, width in (("wall", 7), ("exit", 4), ("procs", 5), ("spans", 7)):
        table.add_column(name, justify="right", no_wrap=True, min_width=width)
    table.add_column("command", no_wrap=True, overflow="ellipsis", ratio=1)
    for info in infos:
        wall = _wall_ms(info)
        started = _local_time(info.start_ns)
        row = [info.run_id] + ([info.group_id or ""] if len(table.columns) == 8 else [])
        row += [started.strftime("%m-%d %H:%M:%S") if started else "-",
                format_ns(int(wall * 1e6)) if wall is not None else "-",
                "-" if info.exit_code is None else str(info.exit_code), str(info.process_count), str(info.span_count),
                info.command or ""]
        table.add_row(*[Text(cell) for cell in row])  # plain text: a command may hold [brackets]
    console().print(table)


def _local_time(ns: int | None) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9) if ns else None


def _wall_ms(info: Any) -> float | None:
    return round((info.end_ns - info.start_ns) / 1e6, 3) if info.start_ns and info.end_ns else None


# An unknown option is the SQL: a query may start with a `--` comment.
@app.command(context_settings={"ignore_unknown_options": True})
def sql(
    query: str = typer.Argument(..., help="One SQL statement (DuckDB dialect). Tables: spans, runs, diagnostics; "
                                          "view: records (Logfire's columns)."),
    db: Optional[Path] = DB,
    output: OutputFormat = FORMAT,
) -> None:
    """Run one SQL statement on the trace database and print its rows."""
    with open_store(db) as store:
        count = store.statement_count(query)
        shown = query if len(query) <= 60 else query[:57] + "..."
        if count == 0:  # a mistyped option (`--fromat`) lands here too: show what was taken as the SQL
            raise QueryError(f"no SQL statement in {shown!r}: it is empty, or only `;` and comments")
        if count > 1:  # DuckDB would run them all and return the last one's rows only
            raise QueryError(f"sql runs one statement, and this text holds {count}: "
                             "run `selfopt-trace sql` once for each")
        columns, rows = store.sql(query)
    print_rows(columns, rows, output)


@app.command()
def tree(
    run: str = typer.Argument("latest", help="Run id, a unique prefix of one, or `latest`."),
    db: Optional[Path] = DB,
) -> None:
    """Print a run's process tree: every process with its timings, and the subprocess calls between them."""
    from ..summary import process_rows
    from ..summary_render import console

    with open_store(db) as store:
        run_id = resolve_run(store, run)
        _, run_rows = store.sql("SELECT start_ns, command FROM runs WHERE run_id = $run_id", {"run_id": run_id})
        processes = process_rows(store, run_id)
        _, calls = store.sql(_CALLS_SQL, {"run_id": run_id})
        _, parent_processes = store.sql(_PARENT_PROCESSES_SQL, {"run_id": run_id})
    start_ns, command = run_rows[0] if run_rows else (None, None)
    start_ns = start_ns or min((p.start_ns for p in processes), default=0)
    console().print(build_tree(run_id, command, start_ns, processes,
                                              [SubprocessCall(row[0], row[1], tuple(row[2:5]), *row[5:]) for row in calls],
                                              {row[0]: tuple(row[1:]) for row in parent_processes}))


@app.command()
def show(
    run: str = typer.Argument("latest", help="Run id, a unique prefix of one, or `latest`."),
    pid: Optional[int] = typer.Option(None, "--pid", help="Only this process: every attribute of its process span, as JSON."),
    db: Optional[Path] = DB,
) -> None:
    """Print a run's text in full, nothing cut: its command, and each process's name and whole command line."""
    from ..summary import process_rows

    with open_store(db) as store:
        run_id = resolve_run(store, run)
        _, run_rows = store.sql("SELECT command, cwd FROM runs WHERE run_id = $run_id", {"run_id": run_id})
        processes = process_rows(store, run_id)
        _, spans = store.sql("SELECT pid, attributes FROM spans WHERE run_id = $run_id AND name = 'process' "
                             "AND category = 'process' AND pid = $pid ORDER BY start_ns", {"run_id": run_id, "pid": pid})
    if pid is not None:
        if not spans:
            raise RunNotFoundError(f"process {pid} of run {run_id}")
        sys.stdout.write(json.dumps([json.loads(attributes) for _, attributes in spans], indent=2) + "\n")
        return
    command, cwd = run_rows[0] if run_rows else (None, None)
    lines = [f"run {run_id}", f"command {command or '-'}", f"cwd {cwd or '-'}"]
    for process in processes:
        lines += ["", f"process {process.pid}  {process.command}", process.command_line]
    sys.stdout.write("\n".join(lines) + "\n")


@app.command()
def summary(
    run: str = typer.Argument("latest", help="Run id, a unique prefix of one, or `latest`."),
    json_target: Optional[str] = typer.Option(None, "--json", metavar="FILE",
                                              help="The summary as JSON in FILE; `-`: on stdout, in place of the text."),
    db: Optional[Path] = DB,
) -> None:
    """Print a stored run's summary again, as `run` printed it once CMD had exited."""
    from ..run_report import db_option, write_json
    from ..summary import next_commands, summarize

    with open_store(db) as store:
        run_id = resolve_run(store, run)
        option = "" if db is None else db_option(db, os.environ)  # as `run` suggests them
        result = summarize(store, run_id, next_commands(run_id, option, ALL_COMMANDS), db_option=option)
    if json_target != "-":
        from ..summary_render import console, render

        render(result, console())
    if json_target is not None:
        write_json(result.to_json(), json_target)


# ---------------------------------------------------------------------------------------------
# The process tree

# Spans that start a process (subprocess, fork, multiprocessing), in the file of the process that made them.
_CALLS_SQL = """
SELECT span_id, name, source_file, pid AS caller_pid, resource_attributes->>'host.name' AS host,
       start_ns, duration_ns, incomplete,
       attributes->'process.command_args' AS command_args, attributes->>'process.command' AS command,
       TRY_CAST(attributes->>'process.pid' AS INTEGER) AS pid,
       TRY_CAST(attributes->>'process.exit.code' AS INTEGER) AS exit_code
FROM spans WHERE run_id = $run_id AND category = 'subprocess'
"""

# For each process span, the process of its parent span (the process that started it).
_PARENT_PROCESSES_SQL = """
SELECT c.span_id, p.source_file, p.pid, p.resource_attributes->>'host.name'
FROM spans c JOIN spans p ON p.run_id = $run_id AND p.span_id = c.parent_span_id
WHERE c.run_id = $run_id AND c.name = 'process' AND c.category = 'process'
"""


@dataclass
class SubprocessCall:
    span_id: str
    name: str
    process_key: tuple  # of the process that made the call: (span file, pid, host)
    start_ns: int
    duration_ns: int
    incomplete: bool
    command_args: str | None  # JSON list
    command: str | None  # its name (docs/agent.md, "Process names")
    pid: int | None
    exit_code: int | None

    @property
    def label(self) -> str:
        """One line: what the call started, by name, and its arguments (as ProcessRow.label)."""
        from ..bootstrap.selfopt_trace_agent.process import split_command
        from ..summary import display_join, one_line

        args = json.loads(self.command_args) if self.command_args else []
        if not args:
            return self.name
        name, rest = split_command(args)
        return one_line(f"{self.command or name} {display_join(rest)}")


def build_tree(run_id: str, command: str | None, start_ns: int, processes: list, calls: list[SubprocessCall],
               parent_processes: dict[str, tuple]):
    """A rich Tree: processes under the subprocess call that started them, calls under their process."""
    from rich.text import Text
    from rich.tree import Tree

    from ..summary import ProcessRow, describe_exit, format_ns

    by_key = {p.process_key: p for p in processes}
    traced_pids = {p.pid for p in processes}
    call_ids = {call.span_id for call in calls}
    children: dict[str | None, list] = {}
    for call in calls:
        owner = by_key.get(call.process_key)
        children.setdefault(owner.span_id if owner else None, []).append(call)
    for process in processes:
        if process.parent_span_id in call_ids:
            children.setdefault(process.parent_span_id, []).append(process)
            continue
        owner = by_key.get(parent_processes.get(process.span_id))
        children.setdefault(owner.span_id if owner is not None and owner is not process else None, []).append(process)

    def at(ns: int) -> str:
        return f"+{format_ns(max(0, ns - start_ns))}"

    def only_child(call: SubprocessCall):
        """The traced process a call started, when it is the program the call ran (same pid)."""
        kids = children.get(call.span_id, [])
        return kids[0] if len(kids) == 1 and isinstance(kids[0], ProcessRow) and kids[0].pid == call.pid else None

    def label(node, call: SubprocessCall | None = None) -> Text:
        text = Text()
        text.append(f"{at((call or node).start_ns):>10}  ", style="dim")
        if isinstance(node, SubprocessCall):
            text.append(f"{node.name} ", style="magenta")
            text.append(_shorten(node.label, 100))
            text.append(f"  {format_ns(node.duration_ns)}", style="bold")
            # a forkserver's fork of a worker traced under the Process.start that asked for it
            elsewhere = node.pid in traced_pids and not children.get(node.span_id)
            details = [f"pid {node.pid}" if node.pid else None,
                       "traced elsewhere in this tree" if elsewhere else None,
                       f"exit {describe_exit(node.exit_code)}" if node.exit_code is not None else None,
                       "incomplete" if node.incomplete else None]
        else:
            if call is not None:
                text.append(f"{call.name} ", style="magenta")
            text.append(_shorten(node.label, 100), style="bold cyan")
            text.append(f"  {format_ns(node.duration_ns)}", style="bold")
            exit_code = node.exit_code if node.exit_code is not None else (call.exit_code if call else None)
            details = [f"{call.name} {format_ns(call.duration_ns)}" if call else None,
                       f"pid {node.pid}", f"start-up {format_ns(node.startup_ns)}", f"imports {format_ns(node.import_ns)}",
                       f"run {format_ns(node.run_ns)}",
                       f"teardown {format_ns(node.teardown_ns)}" if node.teardown_ns is not None else None,
                       f"exit {describe_exit(exit_code)}" if exit_code is not None else None,
                       "incomplete" if node.incomplete else None]
        text.append("  (" + ", ".join(d for d in details if d) + ")", style="dim")
        return text

    def add(branch, key: str | None) -> None:
        for node in sorted(children.get(key, ()), key=lambda n: n.start_ns):
            process = only_child(node) if isinstance(node, SubprocessCall) else None
            if process is not None:  # one line for "started X" and "X ran"
                add(branch.add(label(process, node)), process.span_id)
            else:
                add(branch.add(label(node)), node.span_id)

    root = Tree(Text.assemble(("run ", "bold"), (run_id, "bold cyan"), ("  " + (command or ""), "")))
    add(root, None)
    return root


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
