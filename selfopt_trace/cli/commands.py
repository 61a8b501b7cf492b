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

# Modules that add commands to `app` when imported (one line per module).
COMMAND_MODULES = (
    "run",
    "inspect",
    "docker",
    "query",
    "otel",
    "flame",
    "collector",
    "prepare",
)


def available_commands(ctx: typer.Context) -> tuple[str, ...]:
    """The commands of the app `ctx`'s command belongs to (what a summary's next commands may name)."""
    group = ctx.parent.command if ctx.parent is not None else None
    return tuple(group.list_commands(ctx)) if group is not None and hasattr(group, "list_commands") else ()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"selfopt-trace {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """One connected, low-overhead trace of a whole Python process tree."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}")

