"""docs/cli.md documents every command of this page, each of their options, and the variables they read."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from selfopt_trace import runner
from selfopt_trace.cli import app

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
COMMANDS = ("run", "demo", "runs", "sql", "tree", "show", "load", "flame")


def test_every_command_and_option_is_documented():
    group = typer.main.get_command(app)
    for name in COMMANDS:
        assert f"\n## {name}\n" in DOC, name
        command = group.commands[name]
        assert command.help, name
        for param in command.params:
            for opt in getattr(param, "opts", ()):
                if opt.startswith("--") and opt != "--help":
                    assert opt in DOC, f"{name} {opt}"
            if getattr(param, "envvar", None):
                assert param.envvar in DOC, f"{name} {param.envvar}"


def test_every_setting_variable_of_the_runner_is_documented():
    names = [value for key, value in vars(runner).items() if key.startswith("ENV_")]
    assert len(names) >= 6
    for name in names:
        assert re.search(rf"`{name}`", DOC), name
