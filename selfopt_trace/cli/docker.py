"""`docker-env` (manual injection into a container) and `load` (collector output or run directories)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .. import runner
from . import app

_COLLECTOR_SUFFIXES = (".json", ".jsonl", ".gz", ".zst")


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
    db: Optional[Path] = typer.Option(None, "--db", envvar=runner.ENV_DB, show_default=False,
                                      help="The trace database. (default: $SELFOPT_TRACE_HOME/traces.duckdb)"),
) -> None:
    """Load spans into the trace database: collector files (each only once) and run directories."""
    import os

    from ..collector_ingest import load_files
    from ..errors import RunNotFoundError
    from ..store import Store

    collector: list[Path] = []
    run_dirs: list[Path] = []
    for path in files:
        if (path / "spans").is_dir():
            run_dirs.append(path)
        elif path.is_dir():
            collector += sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_COLLECTOR_SUFFIXES))
        elif path.exists():
            collector.append(path)
        else:
            raise RunNotFoundError(str(path))
    with Store(db or runner.default_db_path(os.environ)) as store:
        for run_dir in run_dirs:
            result = store.load_run(run_dir)
            typer.echo(f"{run_dir}: run {result.run_id} loaded, {result.spans} spans")
        for loaded in load_files(store, collector):
            notes = [f"{loaded.bad_lines} bad lines skipped"] if loaded.bad_lines else []
            if loaded.torn_line:
                notes.append("an unfinished last line left for later")
            typer.echo(f"{loaded.path}: {loaded.status}, {loaded.spans_added} spans added"
                       + (f" ({'; '.join(notes)})" if notes else ""))
