"""`push` (a stored run to an OTLP receiver) and `jaeger` (the run's trace in the Jaeger UI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..paths import db_path_from
from .commands import app
from .inspect import DB, open_store, resolve_run


@app.command()
def push(
    run: str = typer.Argument("latest", help="Run id, a unique prefix of one, or `latest`."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", show_default=False,
                                           help="Receiver URL. (default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
                                                "$OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318, gRPC 4317)"),
    protocol: Optional[str] = typer.Option(None, "--protocol", metavar="grpc|http/protobuf", show_default=False,
                                           help="OTLP protocol. (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)"),
    header: Optional[List[str]] = typer.Option(None, "--header", "-H", metavar="K=V", show_default=False,
                                               help="A request header (repeatable), over $OTEL_EXPORTER_OTLP_HEADERS."),
    db: Optional[Path] = DB,
) -> None:
    """Send a stored run to an OpenTelemetry collector (or any OTLP receiver), ids and all."""
    from ..export.ledger import record_send
    from ..export.otlp_settings import resolve
    from ..export.push import push_run
    from ..run_report import lock_patience, open_store_waiting

    settings = resolve(os.environ, endpoint, protocol, header or [])  # a bad setting: exit 2, nothing read
    with open_store(db) as store:
        run_id = resolve_run(store, run)
    db_path = (db or db_path_from(os.environ)).absolute()
    result = push_run(db_path, run_id, settings)
    target = f"{result.endpoint} (OTLP {result.protocol})"
    try:  # the store was read-only while sending (others could read it): now write down what was sent
        with open_store_waiting(db_path, lock_patience(os.environ)) as store:
            record_send(store, run_id, "push", result.endpoint, result.protocol, result.total, result.sent,
                        result.complete, result.error)
    except Exception as exc:  # the spans went out all the same
        print(f"selfopt-trace: warning: could not record the push in {db_path}: {exc}", file=sys.stderr)
    converted = sum(result.converted.values())
    extra = f"; {converted} attribute values converted ({', '.join(sorted(result.converted))})" if converted else ""
    if result.complete:
        typer.echo(f"sent {result.sent} spans of run {run_id} to {target} in {result.seconds:.1f} s{extra}")
        return
    typer.echo(f"selfopt-trace: error: could not send run {run_id} to {target}: {result.error}; "
               f"{result.sent} of {result.total} spans sent{extra}", err=True)
    raise typer.Exit(1)


@app.command()
def jaeger(
    run: str = typer.Argument("latest", help="Run id, a unique prefix of one, or `latest`."),
    url: Optional[str] = typer.Option(None, "--url", show_default=False,
                                      help="The Jaeger UI. (default: $SELFOPT_TRACE_JAEGER_URL, else http://localhost:16686)"),
    open_browser: bool = typer.Option(False, "--open", help="Open the trace in a web browser."),
    db: Optional[Path] = DB,
) -> None:
    """Print the URL of the run's trace in the Jaeger UI (the main trace first, when there are several)."""
    from ..jaeger_ui import base_url, trace_urls

    base = base_url(os.environ, url)
    with open_store(db) as store:
        run_id = resolve_run(store, run)
        urls = trace_urls(store, run_id, base)
    if not urls:
        typer.echo(f"selfopt-trace: error: run {run_id} has no spans", err=True)
        raise typer.Exit(1)
    for line in urls:
        typer.echo(line)
    if open_browser:
        import webbrowser

        if not webbrowser.open(urls[0]):
            typer.echo("selfopt-trace: error: no web browser found: open the URL above yourself", err=True)
            raise typer.Exit(1)
