"""`docker-env` (manual injection into a container) and `load` (collector output or run directories)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..paths import ENV_DB, db_path_from
from .commands import app

@app.command("docker-env")
def docker_env(
    fmt: str = typer.Option("flags", "--format", help="flags (for `docker run`), env-file, or compose (a service fragment)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory the container's spans go to. "
                                           "(default: the current run inside a traced process, else a new run)"),
    image: str = typer.Option("", "--image", help="Merge this image's own ENV PYTHONPATH and name it on the spans "
                              "(asks the local Docker engine)."),
    name: str = typer.Option("", "--name", help="The container's name, recorded as container.name."),
    service: str = typer.Option("", "--service", help="service.name of the container's processes."),
) -> None:
    """Print what to add to `docker run` (or a compose service) to trace a container into a run.

    Example: docker run $(selfopt-trace docker-env --image IMAGE) IMAGE python app.py
    """
    from ..docker_env import FORMATS, DockerEnvError, injection, render

    if fmt not in FORMATS:
        raise DockerEnvError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    typer.echo(render(injection(run_dir, image=image, name=name, service=service), fmt), nl=False)


@app.command("load")
def load(
    files: List[Path] = typer.Argument(..., help="Collector file-exporter output (OTLP/JSON lines; .gz and .zst too), "
                                       "folders of it, or run directories."),
    db: Optional[Path] = typer.Option(None, "--db", envvar=ENV_DB, show_default=False,
                                      help="The trace database. (default: $SELFOPT_TRACE_HOME/traces.duckdb)"),
    replace: bool = typer.Option(False, "--replace", help="Replace a stored run of the same id loaded from elsewhere "
                                 "(without it, such a run is refused and nothing is changed)."),
) -> None:
    """Load spans into the trace database: collector files (each only once) and run directories."""
    import os

    from ..collector_ingest import load_files, sort_paths
    from ..store import Store

    run_dirs, collector = sort_paths(files)  # a wrong path: exit 2 before the database is opened
    with Store(db or db_path_from(os.environ)) as store:
        for run_dir in run_dirs:  # every run is checked before the first is loaded
            store.check_load(run_dir, replace)
        for run_dir in run_dirs:
            result = store.load_run(run_dir, replace=replace)
            for warning in result.warnings:
                typer.echo(f"selfopt-trace: warning: {warning}", err=True)
            damaged = f", {result.skipped_lines} damaged line(s) skipped" if result.skipped_lines else ""
            typer.echo(f"{run_dir}: run {result.run_id} loaded, {result.spans} spans{damaged}")
        for loaded in load_files(store, collector):
            notes = [f"{loaded.bad_lines} bad lines skipped"] if loaded.bad_lines else []
            if loaded.torn_line:
                notes.append("an unfinished last line left for later")
            typer.echo(f"{loaded.path}: {loaded.status}, {loaded.spans_added} spans added"
                       + (f" ({'; '.join(notes)})" if notes else ""))
