"""After CMD has exited: load the runs into the store, print and write the summary.

runner.py supervises CMD (prepare, start, watch, wait); this module is everything after it. It is
imported only then, so nothing here (rich, DuckDB) costs CMD's start. DuckDB releases the GIL while
it works, so threads take what they can off the path: the summary's renderer (rich, ~20 ms) is
imported while the store opens, loads and answers the queries, and the store closes (its checkpoint)
while the summary prints (docs/benchmarks.md, "Command line").
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TextIO

from .background import Background
from .paths import db_path_from
from .runner import ENV_LOCK_WAIT, RunOptions, RunRecord, drop_output

if TYPE_CHECKING:
    from .store import Store


def report(records: list[RunRecord], options: RunOptions, disabled: str | None,
           available_commands: tuple[str, ...], environ: dict[str, str]) -> None:
    """Load into the store, print and write the summary."""
    from . import summary as summaries

    if disabled is not None or not options.load:
        # An unloaded run has no notes of its own: the watchers' (the live export's) follow the reason.
        results = [summaries.UntracedSummary(
            run_id=record.run_id, command=record.to_json()["command"], exit_code=record.returncode,
            wall_ns=record.end_ns - record.start_ns, run_dir=str(record.run_dir) if record.run_dir else None,
            reason="\n".join([f"tracing disabled by {disabled}: the command ran untraced" if disabled
                              else f"not loaded (--no-load): load later with `selfopt-trace load {shell_quote(str(record.run_dir))}`",
                              *record.notes]))
            for record in records]
        _print_and_write(results, records[0].group_id, options)
        return
    # The store's modules first: importing them holds the GIL (DuckDB's engine ~10 ms), so rich's import
    # beside them would only slow them; beside DuckDB's work it is free (docs/benchmarks.md, "Command line").
    from .store import Store  # noqa: F401

    import_in_background(f"{__package__}.summary_render")
    store = open_store_waiting(options.db_path, lock_patience(environ))
    try:
        results = _load_and_summarize(store, records, options, available_commands, environ)
    except BaseException:
        try:
            store.close()
        except Exception:  # a query of another thread still on the connection: the first error is the one to tell
            pass
        raise
    closing = Background(store.close)  # DuckDB's checkpoint and its fsyncs (~12 ms)
    try:
        _print_and_write(results, records[0].group_id, options)
    finally:
        closing.result()


def _print_and_write(results: list, group_id: str | None, options: RunOptions) -> None:
    from . import summary as summaries
    from . import summary_render  # waits for the thread's import, if it is still going

    console = summary_render.console(stderr=True)
    if group_id is not None and all(isinstance(r, summaries.RunSummary) for r in results):
        group = summaries.GroupSummary(group_id, results)  # type: ignore[arg-type]
        data: dict = group.to_json()
        if not options.quiet:
            with dropped_if_unwritable(sys.stderr):
                summary_render.render_group(group, console)
    else:
        data = results[0].to_json() if len(results) == 1 else {"group_id": group_id, "runs": [r.to_json() for r in results]}
        if not options.quiet:
            with dropped_if_unwritable(sys.stderr):
                for result in results:
                    if isinstance(result, summaries.RunSummary):
                        summary_render.render(result, console)
                    else:
                        summary_render.render_untraced(result, console)
    if options.json_target is not None:
        write_json(data, options.json_target)


def _load_and_summarize(store: Store, records: list[RunRecord], options: RunOptions,
                        available_commands: tuple[str, ...], environ: dict[str, str]) -> list:
    from . import jaeger_ui
    from . import summary as summaries
    from .export.ledger import record_live_export

    db = db_option(options.db_path, environ)
    jaeger = jaeger_ui.answering_base(environ)  # once for all runs: a connect refused at once when none runs
    results = []
    for record in records:
        assert record.run_dir is not None
        breakdown = summaries.plan_breakdown(store, record.run_id, record.run_dir)  # bound and planned beside the load
        try:
            store.load_run(record.run_dir, replace=options.replace, notes=record.notes)
            record_live_export(store, record.run_id, record.run_dir)
            next_commands = summaries.next_commands(record.run_id, db, available_commands)
            if jaeger is not None and jaeger_ui.was_sent(store, record.run_id):  # no link to a trace Jaeger never got
                next_commands += jaeger_ui.trace_urls(store, record.run_id, jaeger)[:1]
            results.append(summaries.summarize(store, record.run_id, next_commands, breakdown, db))
        finally:
            if breakdown is not None:
                breakdown.close()
    return results


def import_in_background(module: str) -> None:
    """Start importing `module` in a daemon thread. An `import` of it elsewhere waits for this one to
    finish (the module's import lock); if it fails here, that import raises the error again."""
    import importlib

    def load() -> None:
        try:
            importlib.import_module(module)
        except BaseException:  # noqa: BLE001 - the import that waits for it raises it again
            pass

    threading.Thread(target=load, name=f"import {module}", daemon=True).start()


def lock_patience(environ: dict[str, str] | os._Environ) -> float:
    try:
        return max(0.0, float(environ.get(ENV_LOCK_WAIT) or 10.0))
    except ValueError:
        return 10.0


def open_store_waiting(path: Path, patience_s: float = 10.0) -> Store:
    """The store for writing. DuckDB admits one writing process: when another holds the database
    (a parallel run loading, a `selfopt-trace sql` reading), wait for it a little before giving up."""
    from .errors import StoreLockedError
    from .store import Store

    deadline = time.monotonic() + patience_s
    pause = 0.05
    while True:
        try:
            return Store(path)
        except StoreLockedError:
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def kept(records: list[RunRecord], options: RunOptions, environ: dict[str, str]) -> str:
    """The end of an error message when loading failed: where the files are, and how to load them."""
    dirs = " ".join(shell_quote(str(record.run_dir)) for record in records if record.run_dir is not None)
    return f"; the run files are kept: load them with `selfopt-trace load {dirs}{db_option(options.db_path, environ)}`" \
        if dirs else ""


def db_option(db_path: Path, environ: dict[str, str] | os._Environ) -> str:
    """` --db PATH` for the commands we suggest (the summary's next ones, the `load` of kept run files),
    unless PATH is the default database."""
    return "" if db_path == db_path_from(environ) else f" --db {shell_quote(str(db_path))}"


def error(message: str) -> None:
    with dropped_if_unwritable(sys.stderr):
        print(f"selfopt-trace: error: {message}", file=sys.stderr, flush=True)


@contextmanager
def dropped_if_unwritable(stream: TextIO) -> Iterator[None]:
    """Our output to `stream` (stdout, stderr) that cannot be written (`... | head`: its reader gone;
    a full disk) is dropped, as CMD's own would be: it must not change the status `run` exits with."""
    try:
        yield
    except OSError:
        drop_output(stream)


def shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def write_json(data: dict, target: str) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if target == "-":
        with dropped_if_unwritable(sys.stdout):
            sys.stdout.write(text)
            sys.stdout.flush()
    else:
        try:
            Path(target).write_text(text, encoding="utf-8")
        except OSError as exc:  # a full disk, /dev/full: said, and `run` still exits with CMD's status
            error(f"the summary could not be written to {target}: {exc.strerror or exc} (the run is stored: "
                  f"`selfopt-trace query breakdown --run {data.get('run_id') or data.get('group_id') or 'latest'}` "
                  "answers from it)")
