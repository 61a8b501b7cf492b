"""Default locations: one home directory, $SELFOPT_TRACE_HOME or ./.selfopt-trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfopt_trace.paths import default_db_path, default_home, default_runs_dir


def test_home_is_the_environment_variable_when_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SELFOPT_TRACE_HOME", str(tmp_path / "home"))
    assert default_home() == tmp_path / "home"
    assert default_db_path() == tmp_path / "home" / "traces.duckdb"
    assert default_runs_dir() == tmp_path / "home" / "runs"


@pytest.mark.parametrize("value", [None, ""])
def test_home_defaults_to_the_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("SELFOPT_TRACE_HOME", raising=False)
    else:
        monkeypatch.setenv("SELFOPT_TRACE_HOME", value)
    monkeypatch.chdir(tmp_path)
    assert default_home() == tmp_path / ".selfopt-trace"
    assert default_db_path() == tmp_path / ".selfopt-trace" / "traces.duckdb"


def test_a_store_opened_without_a_path_is_the_commands_default_one(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """Store() opens the database `sql` and `runs` use without --db: $SELFOPT_TRACE_DB first."""
    from selfopt_trace.store import Store

    monkeypatch.setenv("SELFOPT_TRACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SELFOPT_TRACE_DB", str(tmp_path / "chosen.duckdb"))
    with Store() as store:
        assert store.path == tmp_path / "chosen.duckdb"
    assert (tmp_path / "chosen.duckdb").is_file() and not (tmp_path / "home").exists()
    monkeypatch.delenv("SELFOPT_TRACE_DB")
    with Store() as store:
        assert store.path == tmp_path / "home" / "traces.duckdb"
