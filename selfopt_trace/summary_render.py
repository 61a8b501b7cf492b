"""The end-of-run summary rendered for a person, with rich (summary.py computes it).

Apart from summary.py so that `run` can import rich (~20 ms) in a thread while DuckDB loads the run
and answers the summary's queries, which release the GIL (run_report.py).
"""

from __future__ import annotations

from typing import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .summary import (OWN_WORK, SLOWEST, GroupSummary, ProcessRow, RunSummary, UntracedSummary, describe_exit,
                      format_ns, one_line)


def console(stderr: bool = False) -> Console:
    """A rich console; when writing to a file or pipe, wide (160 columns, or $COLUMNS) rather than 80."""
    import os
    import sys

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, width=width)


def render(summary: RunSummary, console: Console) -> None:
    """The summary for a person, on `console` (stderr)."""
    wall = summary.wall_ns
    console.print()
    console.rule(f"[bold]selfopt-trace[/] run [cyan]{summary.run_id}[/]", align="left")
    head = Table.grid(padding=(0, 2))
    head.add_row("command", Text(one_line(summary.command or "-"), overflow="ellipsis", no_wrap=True))
    head.add_row("wall time", f"[bold]{format_ns(wall)}[/]   exit {describe_exit(summary.exit_code)}")
    head.add_row("traced", f"{_count(summary.processes, 'process', 'processes')}, {_count(summary.spans, 'span', 'spans')}"
                 + (f", [yellow]{summary.incomplete_spans} incomplete[/]" if summary.incomplete_spans else ", 0 incomplete")
                 + (f", [yellow]{summary.diagnostics} diagnostics[/]" if summary.diagnostics else ", 0 diagnostics")
                 + (f", [yellow]{_count(summary.damaged_lines, 'damaged line', 'damaged lines')} skipped[/]"
                    if summary.damaged_lines else ""))
    per_process = summary.overhead_ns / summary.processes if summary.processes else 0
    # its own code only: what it makes the interpreter pay around it is not counted (docs/cli.md)
    head.add_row("tracer overhead", f"{format_ns(summary.overhead_ns)} in its own code ({_pct(summary.overhead_ns, wall)} "
                 f"of wall, {per_process / 1e6:.2f} ms per process)")
    console.print(head)
    console.print()
    console.print(_category_table(summary.by_category, wall, console.width))
    if summary.slowest:
        console.print()
        console.print(_slowest_table(summary.slowest, console.width))
    for note in summary.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))
    if summary.next_commands:
        console.print()
        console.print("[bold]Next[/]")
        _print_commands(summary.next_commands, console)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _category_table(by_category: dict[str, int], wall: int, width: int) -> Table:
    table = Table(title="Time by category (the breakdown: each instant followed to what the run waited on)", title_justify="left",
                  show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    rows = [(label, ns) for label, ns in by_category.items() if ns or label == OWN_WORK]
    # The bar takes what the other columns leave of the line (each column is padded by 2).
    bar_width = max(0, min(30, width - max((len(label) for label, _ in rows), default=0) - 25))
    for label, ns in rows:
        bar = "█" * round(bar_width * ns / wall) if wall else ""
        table.add_row(label, format_ns(ns), _pct(ns, wall), Text(bar, style="cyan"))
    return table


def _print_commands(commands: Sequence[str], console: Console) -> None:
    """Commands to copy, each folded to the console's width as a shell reads it (fold_command)."""
    for command in commands:
        for line in fold_command(command, console.width - 2):
            console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)


def fold_command(command: str, width: int) -> list[str]:
    """A shell command as lines of at most `width` characters where it can be: ` \\` between
    words, and inside a double-quoted word (a SQL query) a newline between its words, which the
    query reads as a space. A word longer than the line stays whole."""
    if len(command) <= width:
        return [command]
    lines = [""]
    for word in _shell_words(command):
        pieces = _fold_words(word, width - 4) if len(word) > width - 4 and word[:1] == word[-1:] == '"' else [word]
        if lines[-1] and len(lines[-1]) + 1 + len(pieces[0]) > width - 2:
            lines[-1] += " \\"
            lines.append("   ")
        lines[-1] += " " + pieces[0] if lines[-1] else pieces[0]
        lines.extend("    " + piece for piece in pieces[1:])
    return lines


def _fold_words(text: str, width: int) -> list[str]:
    pieces = [""]
    for word in text.split(" "):
        if pieces[-1] and len(pieces[-1]) + 1 + len(word) > width:
            pieces.append(word)
        else:
            pieces[-1] += (" " if pieces[-1] else "") + word
    return pieces


def _shell_words(command: str) -> list[str]:
    """The words of a command line as written (quotes kept), split at spaces outside quotes."""
    words, quote, current = [], "", ""
    for char in command:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == " ":
            if current:
                words.append(current)
            current = ""
            continue
        current += char
    return words + ([current] if current else [])


def _slowest_table(rows: list[ProcessRow], width: int) -> Table:
    """One line per process: the figures keep their width, the process's label takes what is left
    of the line (the only column rich may narrow) and is cut with an ellipsis. Under 80 columns the
    teardown is left out, so that the label keeps room to be read (`tree` and `--json` have it); so is
    the collector's time within each process (`gc`), shown where it was timed (SELFOPT_TRACE_GC=1)."""
    table = Table(title=f"Slowest processes (top {SLOWEST})", title_justify="left", box=None, padding=(0, 1, 0, 0),
                  header_style="bold")
    teardown = width >= 80
    collected = teardown and any(row.gc_ns for row in rows)
    names = ("process", "pid", "total", "start-up", "imports", "run", *(("teardown",) if teardown else ()),
             *(("gc",) if collected else ()), "exit")
    cells = [[row.label, str(row.pid or "-"), format_ns(row.duration_ns), format_ns(row.startup_ns),
              format_ns(row.import_ns), format_ns(row.run_ns), *((format_ns(row.teardown_ns),) if teardown else ()),
              *((format_ns(row.gc_ns),) if collected else ()),
              describe_exit(row.exit_code) + (" (incomplete)" if row.incomplete else "")] for row in rows]
    for i, name in enumerate(names):
        if i == 0:
            table.add_column(name, max_width=60)
        else:
            width = max(len(name), *(len(cell[i]) for cell in cells))
            table.add_column(name, justify="right", no_wrap=True, min_width=width)
    for cell in cells:
        table.add_row(Text(cell[0], overflow="ellipsis", no_wrap=True), *cell[1:])
    return table


def render_group(group: GroupSummary, console: Console) -> None:
    console.print()
    console.rule(f"[bold]selfopt-trace[/] group [cyan]{group.group_id}[/] ({len(group.runs)} runs)", align="left")
    table = Table(box=None, padding=(0, 1), header_style="bold")
    for name, justify in (("run", "left"), ("wall", "right"), ("processes", "right"), ("spans", "right"),
                          ("overhead", "right"), ("exit", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for run in group.runs:
        table.add_row(run.run_id, format_ns(run.wall_ns), str(run.processes), str(run.spans),
                      format_ns(run.overhead_ns), describe_exit(run.exit_code))
    console.print(table)
    walls = [run.wall_ns for run in group.runs]
    console.print(f"wall time: median [bold]{format_ns(group.median_wall_ns())}[/], "
                  f"min {format_ns(min(walls))}, max {format_ns(max(walls))}")
    console.print()
    console.print(_category_table(group.median_by_category(), group.median_wall_ns(), console.width))
    last = group.runs[-1]
    if last.notes:
        console.print()
        console.print("[bold]Notes[/] (on the last run)")
        for note in last.notes:
            console.print(Text.assemble(("note: ", "yellow"), note))
    if last.next_commands:
        console.print()
        console.print("[bold]Next[/] (on the last run)")
        _print_commands(last.next_commands, console)


def render_untraced(summary: UntracedSummary, console: Console) -> None:
    console.print()
    console.rule(f"[bold]selfopt-trace[/] run [cyan]{summary.run_id}[/]", align="left")
    console.print(f"wall time [bold]{format_ns(summary.wall_ns)}[/]   exit {describe_exit(summary.exit_code)}")
    console.print(Text(summary.reason, style="yellow"))
