"""`collector`: a local OTLP receiver writing into the store (selfopt_trace/receiver/)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from ..paths import db_path_from
from .commands import app
from .inspect import DB

ENV_TOKEN = "SELFOPT_TRACE_COLLECTOR_TOKEN"


@app.command()
def collector(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs a token."),
    port: int = typer.Option(4318, "--port", min=0, max=65535, help="OTLP/HTTP port (0: a free one)."),
    grpc_port: int = typer.Option(4317, "--grpc-port", min=0, max=65535, help="OTLP/gRPC port (0: a free one)."),
    no_grpc: bool = typer.Option(False, "--no-grpc", help="Serve OTLP/HTTP only."),
    token_file: Optional[Path] = typer.Option(
        None, "--token-file", show_default=False, dir_okay=False,
        help=f"Require `Authorization: Bearer <the file's first line>`. (default: ${ENV_TOKEN} when set)"),
    max_request_mb: float = typer.Option(20.0, "--max-request-mb", min=0.001,
                                         help="Largest request taken, compressed or not (MiB); larger: 413."),
    db: Optional[Path] = DB,
) -> None:
    """Receive OTLP traces (HTTP: protobuf, JSON, gzip; gRPC) into the store, until SIGTERM or Ctrl-C.

    Spans sent by selfopt-trace itself (`push`, a live export) go into their run; any other program's go into one run per trace, `collector-<trace id>`, as `load` does. A request is answered once its spans are on disk (synced); they reach the store within a second, or when another process holding it lets go.
    """
    from ..receiver.server import Receiver, Settings, is_loopback

    token = _token(token_file)
    if not is_loopback(host) and token is None:
        typer.echo(f"selfopt-trace: error: --host {host} is not a loopback address: anyone who reaches it could "
                   f"write to the store; give a token (--token-file, or ${ENV_TOKEN})", err=True)
        raise typer.Exit(2)
    db_path = (db or db_path_from(os.environ)).absolute()
    settings = Settings(db_path=db_path, host=host, port=port, grpc_port=None if no_grpc else grpc_port, token=token,
                        max_bytes=int(max_request_mb * (1 << 20)))
    receiver = Receiver(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        receiver.start()
    except OSError as exc:
        receiver.drain(0)
        typer.echo(f"selfopt-trace: error: {exc}", err=True)
        raise typer.Exit(2)
    where = f"[{host}]" if ":" in host else host
    typer.echo(f"selfopt-trace collector: OTLP/HTTP on http://{where}:{receiver.http_port}/v1/traces"
               + (f", OTLP/gRPC on {where}:{receiver.grpc_port}" if receiver.grpc is not None else "")
               + f", into {db_path}" + (" (bearer token required)" if token else ""))
    sys.stdout.flush()
    # Short waits: a SIGTERM taken by another thread (a request's, gRPC's) only sets a flag; the main
    # thread runs the handler when it next wakes (an hour-long wait hung the drain 4 runs in 10 beside
    # a CPU hog)
    while not stop.wait(0.2):
        pass
    receiver.drain()
    stats = receiver.writer.stats
    typer.echo(f"selfopt-trace collector: stopped; {stats.spans_received} spans received in {stats.requests} requests, "
               f"{stats.spans_added} new to the store"
               + (f", {receiver.refused} requests refused" if receiver.refused else "")
               + (f", {receiver.rejected_spans} spans rejected" if receiver.rejected_spans else "")
               + (f", {stats.failures} writes failed" if stats.failures else ""))
    for note in stats.notes:
        typer.echo(f"selfopt-trace collector: {note}")


def _token(token_file: Optional[Path]) -> str | None:
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            typer.echo(f"selfopt-trace: error: cannot read the token file {token_file}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2)
        token = lines[0].strip() if lines else ""
        if not token:
            typer.echo(f"selfopt-trace: error: the token file {token_file} is empty", err=True)
            raise typer.Exit(2)
        return token
    return os.environ.get(ENV_TOKEN) or None
