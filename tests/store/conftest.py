"""The store the loader's tests load into, each test run both ways the loader plans its statements."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from selfopt_trace.store import Store, loader


@pytest.fixture(params=["small", "optimized"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A new store. `small`: the tests' runs are small, so they load without DuckDB's optimizer
    (loader.SMALL_LOAD_ROWS); `optimized`: the bound below every load, as for a big run or store."""
    if request.param == "optimized":
        monkeypatch.setattr(loader, "SMALL_LOAD_ROWS", -1)
    with Store(tmp_path / "db" / "traces.duckdb") as opened:
        yield opened
