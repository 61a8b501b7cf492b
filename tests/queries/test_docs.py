"""docs/queries.md and docs/report.md document every option of query, compare, export and report."""

from __future__ import annotations

from pathlib import Path

import typer.main

from selfopt_trace.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = {"query": "queries.md", "compare": "queries.md", "export": "queries.md", "report": "report.md"}


def test_every_option_of_these_commands_is_documented() -> None:
    group = typer.main.get_command(app)
    for name, page in PAGES.items():
        text = (DOCS / page).read_text()
        command = group.commands[name]
        assert command.help, name
        assert f"selfopt-trace {name}" in text, name
        for param in command.params:
            for opt in getattr(param, "opts", ()):
                if opt.startswith("--") and opt not in ("--help", "--db"):  # --db: docs/cli.md, for every command
                    assert opt in text, f"{name} {opt}"


def test_every_export_format_and_shipped_query_is_documented() -> None:
    from selfopt_trace.export import FORMATS
    from selfopt_trace.queries import load_queries

    text = (DOCS / "queries.md").read_text()
    for fmt in FORMATS:
        assert f"--format {fmt}" in text, fmt
    for name in load_queries():
        assert f"| `{name}` |" in text, name
