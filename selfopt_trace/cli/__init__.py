"""The `selfopt-trace` command line: thin shells over the Python API.

The typer app and its command modules load in `commands` on first use: `selfopt-trace --version`,
`--help` (cli/root_help.py) and the common `run` command lines (cli/quick_run.py) go without them
(typer and what its option parsing loads cost ~150 ms of start-up). Library errors
(`selfopt_trace.errors.SelfoptTraceError`) become one-line messages and exit code 2 in `main`.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from .. import __version__


def __getattr__(name: str):
    if name == "app":  # `from selfopt_trace.cli import app`: the typer app, loaded now
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(f"selfopt-trace {__version__}")
        return
    if sys.argv[1:] in (["--help"], ["-h"]):
        from .root_help import terminal_width, text

        sys.stdout.write(text(terminal_width()))
        return
    if sys.argv[1:2] == ["run"]:  # the common `run` command lines, without typer (cli/quick_run.py)
        from .quick_run import run

        code = run(sys.argv[2:])
        if code is not None:
            exit_without_teardown(code)
    import typer

    from ..errors import SelfoptTraceError
    from .commands import app

    try:
        app()
    except SelfoptTraceError as exc:
        typer.echo(f"selfopt-trace: error: {exc}", err=True)
        sys.exit(2)


def exit_without_teardown(code: int) -> NoReturn:
    """Exit with `code` as the interpreter's exit would, less freeing every module and object
    (rich's, DuckDB's: ~37 M instructions, ~6 ms after each `run`): the atexit callbacks run and
    the output is flushed, then the process ends. A thread that is not a daemon, which the
    interpreter would wait for, or output that cannot be flushed: the interpreter's own exit."""
    import atexit
    import threading

    if any(not thread.daemon and thread is not threading.main_thread() for thread in threading.enumerate()):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # the interpreter reports it, with its exit status, as it does without this
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code)
