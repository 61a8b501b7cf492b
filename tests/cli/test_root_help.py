"""`selfopt-trace --help` (cli/root_help.py, printed without typer) lists what the typer app has."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest
import typer.main

from selfopt_trace.cli import app, commands, root_help


def first_paragraph(help_text: str) -> str:
    return " ".join(inspect.cleandoc(help_text).split("\n\n")[0].split())


def test_the_commands_are_the_typer_groups_in_its_order_with_its_help():
    group = typer.main.get_command(app)
    assert [name for name, _ in root_help.COMMANDS] == group.list_commands(None)  # type: ignore[arg-type]
    for name, line in root_help.COMMANDS:
        assert line == first_paragraph(group.commands[name].help or ""), name  # type: ignore[attr-defined]
    assert root_help.SUMMARY == first_paragraph(group.help or "")


def test_each_command_s_module_is_known_and_a_command_line_loads_it_alone():
    """cli/commands.py's table names every command, under the module that registers it: a command line
    loads that module (and what it imports), so `sql` imports none of `run`'s watchers or settings."""
    assert commands.ALL_COMMANDS == tuple(name for name, _ in root_help.COMMANDS)
    for module, names in commands.COMMAND_MODULES.items():
        code = ("import json, sys, typer.main; from selfopt_trace.cli import commands; "
                f"commands.load({names[-1]!r}); "
                "print(json.dumps([typer.main.get_command(commands.app).list_commands(None), "
                "'selfopt_trace.runner' in sys.modules]))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        registered, runner_loaded = json.loads(done.stdout)
        assert set(names) <= set(registered), (module, registered)
        assert set(registered) <= set(names) | set(commands.COMMAND_MODULES["inspect"]), (module, registered)
        if module == "inspect":
            assert not runner_loaded


def test_the_options_are_the_typer_groups():
    group = typer.main.get_command(app)
    listed = {opt for names, _ in root_help.OPTIONS for opt in names.split(", ")}
    context = group.context_class(group, info_name="selfopt-trace", **group.context_settings)
    given = {opt for param in group.get_params(context) for opt in param.opts}
    assert listed == given == {"--version", "-h", "--help"}


@pytest.mark.parametrize("width", [60, 80, 200])
def test_lines_fit_the_width_and_every_word_is_there(width):
    text = root_help.text(width)
    assert max(map(len, text.splitlines())) <= width
    words = text.split()
    for name, line in root_help.COMMANDS:
        assert name in words
        assert " ".join(line.split()) in " ".join(words)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_a_real_help_without_typer(flag):
    """The whole process: exit 0, the text on stdout at $COLUMNS, nothing on stderr, no typer loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFOPT_TRACE_")}
    env["COLUMNS"] = "100"
    code = (f"import sys; sys.argv = ['selfopt-trace', {flag!r}];"
            "import atexit; atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith(('typer', 'click', 'rich'))), file=sys.stderr));"
            "from selfopt_trace.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout == root_help.text(100)
    assert result.stderr == "[]\n"


def test_a_commands_help_is_still_typers():
    result = subprocess.run([sys.executable, "-m", "selfopt_trace", "run", "--help"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "COLUMNS": "120"})
    assert result.returncode == 0
    assert "--run-id" in result.stdout and "--no-load" in result.stdout


def test_every_help_text_reads_as_written_under_rich_markup():
    """typer renders help as rich markup: a `[tool.x]` in a help text would vanish from `--help`."""
    from rich.text import Text

    def commands(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from commands(sub)

    swallowed = []
    for command in commands(typer.main.get_command(app)):
        texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
        for text in texts:
            shown = Text.from_markup(text).plain
            if shown != text.replace("\\[", "["):
                swallowed.append((command.name, text, shown))
    assert not swallowed
