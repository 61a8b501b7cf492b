"""The trace database: a DuckDB file with `spans`, `runs`, `diagnostics` and the Logfire-style `records` view.

    with Store() as store:  # $SELFOPT_TRACE_DB, else <home>/traces.duckdb, as the commands'
        result = store.load_run(run_dir)
        columns, rows = store.sql("SELECT span_name, duration FROM records WHERE is_exception")
"""

from selfopt_trace.store.database import RunInfo, Store
from selfopt_trace.store.loader import LoadResult, LoadWarning

__all__ = ["LoadResult", "LoadWarning", "RunInfo", "Store"]
