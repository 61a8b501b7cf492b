"""`selfopt-trace flame`: a flamegraph of a run's profile samples, or of two runs' difference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import SelfoptTraceError
from .commands import app
from .inspect import DB, open_store, resolve_run


@app.command()
def flame(
    run: str = typer.Argument("latest", help="Run id, a unique prefix of one, or `latest` (with --diff: the run before)."),
    after: Optional[str] = typer.Argument(None, show_default=False, help="With --diff: the run after."),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write: .svg (a flamegraph) or .json (speedscope)."),
    span: Optional[str] = typer.Option(None, "--span", show_default=False,
                                       help="Only the samples inside spans of this name (and everything under them)."),
    category: Optional[str] = typer.Option(None, "--category", show_default=False,
                                           help="Only the samples inside spans of this category."),
    pid: Optional[int] = typer.Option(None, "--pid", show_default=False, help="Only the samples of this process."),
    diff: bool = typer.Option(False, "--diff", help="A differential flamegraph from RUN to AFTER: what grew, what shrank."),
    idle: bool = typer.Option(False, "--idle", help="Count idle samples too (kept by run --idle)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="svg|speedscope", show_default=False,
                                      help="The output format. (default: from the file name: .json is speedscope)"),
    db: Optional[Path] = DB,
) -> None:
    """Write a flamegraph of the py-spy samples (run --profile) inside the chosen spans."""
    from ..flame import diff_profiles, fetch_profile, write_flame

    if diff != (after is not None):
        raise SelfoptTraceError("compare two runs with `selfopt-trace flame --diff BEFORE AFTER -o FILE`")
    with open_store(db) as store:
        run_id = resolve_run(store, run)
        profile = fetch_profile(store, run_id, span, category, pid, idle)
        if after is not None:
            after_id = resolve_run(store, after)
            profile = diff_profiles(profile, fetch_profile(store, after_id, span, category, pid, idle))
    written = write_flame(profile, out, fmt)
    typer.echo(f"wrote {out} ({written}" + "".join(f"; {note}" for note in profile.notes) + ")", err=True)
