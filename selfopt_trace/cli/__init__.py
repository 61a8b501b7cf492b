"""The `selfopt-trace` command line: thin shells over the Python API.

The typer app and its command modules load in `commands` on first use: `selfopt-trace --version`,
`--help` (cli/root_help.py) and the common `run` command lines (cli/quick_run.py) go without them
(the typer app and what it loads cost ~60 ms of start-up), and any other command line loads its own
command's module alone (`sql` none of `run`'s: 183 -> 168 ms for `runs`). Library errors
(`selfopt_trace.errors.SelfoptTraceError`) become one-line messages and exit code 2 in `main`.
"""

from __future__ import annotations

import os
import sys

from .. import __version__


def __getattr__(name: str):
    if name == "app":  # `from selfopt_trace.cli import app`: the typer app with every command, loaded now
        from .commands import app, load

        load()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def reserve_standard_streams() -> None:
    """Our stdin, stdout or stderr closed (`>&-`): /dev/null in its place, close-on-exec (PEP 446), so
    CMD still finds it closed, what we write to it goes nowhere instead of failing, and no file we
    open (run.json, the database) takes its number."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: `fd`, as 0..fd-1 are open
            if getattr(sys, name) is None:
                setattr(sys, name, open(null, "r" if fd == 0 else "w", closefd=False))


def main() -> None:
    reserve_standard_streams()
    if sys.argv[1:] == ["--version"]:
        print(f"selfopt-trace {__version__}")
        return
    if sys.argv[1:] in (["--help"], ["-h"]):
        from .root_help import terminal_width, text

        sys.stdout.write(text(terminal_width()))
        return
    if sys.argv[1:2] == ["run"]:  # the common `run` command lines, without typer (cli/quick_run.py)
        from .quick_run import exit_without_teardown, run

        code = run(sys.argv[2:])
        if code is not None:
            exit_without_teardown(code)
    import typer

    from ..errors import SelfoptTraceError
    from .commands import app, load

    load(sys.argv[1] if len(sys.argv) > 1 else None)
    try:
        app()
    except SelfoptTraceError as exc:
        typer.echo(f"selfopt-trace: error: {exc}", err=True)
        sys.exit(2)
