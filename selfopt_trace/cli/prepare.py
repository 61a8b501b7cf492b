"""`prepare`: the agent made ready ahead for interpreters `run` cannot find by itself."""

from __future__ import annotations

from typing import List

import typer

from ..errors import SelfoptTraceError
from .commands import app


@app.command("prepare")
def prepare(
    pythons: List[str] = typer.Option([], "--python", help="A host interpreter (a path, or a name on PATH)."),
    images: List[str] = typer.Option([], "--image", help="A container image: its python3, run once in a container "
                                      "(asks the local Docker engine)."),
) -> None:
    """Prepare the agent for a container image's Python or another host interpreter.

    Its .pyc files and bundles, so that their traced processes do not compile it at each start (~20 ms
    a process). `run` does it for the Pythons CMD names (and the image of a `docker run` CMD); a
    traced process whose Python it missed (a container's) says so in the run's notes. What is
    prepared here is kept where run keeps its own (interpreters.json): run does not prepare it again.

    Example: selfopt-trace prepare --image python:3.12-slim
    """
    from ..interpreters import prepare_image, prepare_python
    from ..runner import BOOTSTRAP_DIR

    if not pythons and not images:
        raise SelfoptTraceError("nothing to prepare: give --python PATH or --image IMAGE (each may repeat)")
    failures = [prepare_python(python, BOOTSTRAP_DIR) for python in pythons]
    failures += [prepare_image(image, BOOTSTRAP_DIR) for image in images]
    for failure in filter(None, failures):
        typer.echo(f"selfopt-trace: error: {failure}", err=True)
    prepared = len(failures) - sum(map(bool, failures))
    typer.echo(f"the agent prepared for {prepared} of {len(failures)}")
    if any(failures):
        raise typer.Exit(2)
