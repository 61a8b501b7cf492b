"""`selfopt-trace --help` without typer: the commands, each with its one-line help.

Typer's import and its rich help cost ~130 ms (docs/benchmarks.md, "Command line"); this text is
the same content in plain text, printed without them. `COMMANDS` is the typer group's list in its
order, each with the first paragraph of its help: tests/cli/test_root_help.py checks both against
the typer app, so a new or renamed command fails the test until it is listed here. A command's own
help (`selfopt-trace run --help`) is typer's.
"""

from __future__ import annotations

import os

SUMMARY = "One connected, low-overhead trace of a whole Python process tree."
COMMANDS = (
    ("run", "Run CMD with every Python process of its tree traced into one trace; print where the time went."),
    ("demo", "Trace the bundled multi-process demo workload and show where its time goes."),
    ("runs", "List the runs in the trace database, the most recent first."),
    ("sql", "Run one SQL statement on the trace database and print its rows."),
    ("tree", "Print a run's process tree: every process with its timings, and the subprocess calls between them."),
    ("show", "Print a run's text in full, nothing cut: its command, and each process's name and whole command line."),
    ("summary", "Print a stored run's summary again, as `run` printed it once CMD had exited."),
    ("docker-env", "Print what to add to `docker run` (or a compose service) to trace a container into a run."),
    ("load", "Load spans into the trace database: collector files (each only once) and run directories."),
    ("query", "Run a named SQL query (queries/*.sql) on a run: breakdown, roundtrip, subprocess, imports, ..."),
    ("report", "Write a run's visual report: one self-contained HTML file (waterfall, breakdown, tables)."),
    ("export", "Export a run's spans for other tools."),
    ("compare", "Compare two runs or groups of runs: per category and per span name, in ms and %."),
    ("push", "Send a stored run to an OpenTelemetry collector (or any OTLP receiver), ids and all."),
    ("jaeger", "Print the URL of the run's trace in the Jaeger UI (the main trace first, when there are several)."),
    ("flame", "Write a flamegraph of the py-spy samples (run --profile) inside the chosen spans."),
    ("collector", "Receive OTLP traces (HTTP: protobuf, JSON, gzip; gRPC) into the store, until SIGTERM or Ctrl-C."),
    ("prepare", "Prepare the agent for a container image's Python or another host interpreter."),
)
OPTIONS = (("--version", "Show the version and exit."), ("-h, --help", "Show this message and exit."))


def text(width: int) -> str:
    """The help, its two-column lists wrapped to `width` columns (at least 60)."""
    width = max(60, width)
    lines = ["Usage: selfopt-trace [OPTIONS] COMMAND [ARGS]...", "", *("  " + line for line in wrap(SUMMARY, width - 2)), ""]
    for title, rows in (("Options", OPTIONS), ("Commands", COMMANDS)):
        lines.append(f"{title}:")
        name_width = max(len(name) for name, _ in rows) + 2
        for name, help_text in rows:
            wrapped = wrap(help_text, width - 2 - name_width)
            lines.append(f"  {name:<{name_width}}{wrapped[0]}")
            lines.extend(" " * (2 + name_width) + line for line in wrapped[1:])
        lines.append("")
    lines.extend(wrap("Each command has its own help: selfopt-trace COMMAND --help (all of them in docs/cli.md).", width))
    return "\n".join(lines) + "\n"


def wrap(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` characters, broken at spaces (textwrap would import re: ~5 ms)."""
    lines = [""]
    for word in text.split():
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] += f" {word}" if lines[-1] else word
    return lines


def terminal_width() -> int:
    """$COLUMNS, else the terminal's width, else 80 (as click reads it, without importing shutil)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(1).columns
    except OSError:
        return 80
