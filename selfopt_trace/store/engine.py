"""DuckDB for the store: the engine module alone, without the `duckdb` package's Python layer.

Everything the store uses (`connect`, the connection's execute and fetch methods, `Error`) is an
object of the compiled `_duckdb` module, which the `duckdb` package re-exports. The package adds a
Python relation and expression layer the store never calls: importing it costs ~90 ms, the engine
~20 ms (docs/benchmarks.md, "Command line"). A program that imports `duckdb` itself gets the same
classes. A DuckDB without a top-level `_duckdb` (older versions) is imported as the package.
"""

from __future__ import annotations

try:
    import _duckdb as duckdb
except ImportError:  # pragma: no cover - a DuckDB that keeps its engine inside the package
    import duckdb

__all__ = ["duckdb"]
