"""Where a traced run's secrets are looked for: every file of its run directory, as written and with
its M records (the OpenTelemetry SDK's spans, hex-encoded marshal blocks) read as the X records they
stand for, and every table of a DuckDB store the run is loaded into (what `selfopt-trace sql` and
the exports read)."""

from __future__ import annotations

from pathlib import Path

from selfopt_trace.bootstrap.selfopt_trace_agent import spanblock
from selfopt_trace.store import Store

TABLES = ("spans", "runs", "diagnostics")


def found_secrets(run_dir: Path, store_path: Path, secrets: tuple[str, ...] | list[str]) -> list[str]:
    """Each secret found, with where: empty if none of them is stored anywhere."""
    found = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", "replace") + spanblock.expand(data).decode("utf-8", "replace")
        found += [f"{secret} in {path}" for secret in secrets if secret in text]
    with Store(store_path) as store:
        store.load_run(run_dir)
        for table in TABLES:
            for secret in secrets:
                _, rows = store.sql(f"SELECT count(*) FROM {table} t WHERE t::VARCHAR LIKE ?", [f"%{secret}%"])
                if rows[0][0]:
                    found.append(f"{secret} in {rows[0][0]} rows of the store's {table}")
    return found


def store_rows(store_path: Path, query: str) -> list[tuple]:
    """The rows of `query` on the store `found_secrets` loaded."""
    with Store(store_path) as store:
        return store.sql(query)[1]
