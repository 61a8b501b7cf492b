"""The typer app: each command group lives in its own module and registers itself on `app`."""

from __future__ import annotations

import importlib

import typer

from .. import __version__

app = typer.Typer(
    name="selfopt-trace",
    help="One connected, low-overhead trace of a whole Python process tree.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The modules that add commands to `app` when imported, each with its commands (tests/cli/test_root_help.py
# checks the table against what each module registers). A command line loads its command's module
# alone: the others' imports (`run`'s watchers and OTLP settings, the receiver) are no part of `sql`'s.
COMMAND_MODULES = {
    "run": ("run", "demo"),
    "inspect": ("runs", "sql", "tree", "show", "summary"),
    "docker": ("docker-env", "load"),
    "query": ("query", "report", "export", "compare"),
    "otel": ("push", "jaeger"),
    "flame": ("flame",),
    "collector": ("collector",),
    "prepare": ("prepare",),
}


def load(command: str | None = None) -> None:
    """Add `command` to `app` (its module's commands), or every command when `command` is none of
    them (no command, an option first, a typo: typer then lists them all)."""
    modules = [module for module, names in COMMAND_MODULES.items() if command in names] or list(COMMAND_MODULES)
    for module in modules:
        importlib.import_module(f"{__package__}.{module}")


# The app's commands, loaded or not (what a summary's next commands may name).
ALL_COMMANDS = tuple(name for names in COMMAND_MODULES.values() for name in names)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"selfopt-trace {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """One connected, low-overhead trace of a whole Python process tree."""
