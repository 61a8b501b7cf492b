"""Fixtures: an empty store, and one real traced run of tests/queries/workload shared by the module's tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from selfopt_trace.store import Store
from tests.cli.conftest import clean_environ

WORKLOAD = Path(__file__).resolve().parent / "workload"


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "traces.duckdb") as opened:
        yield opened


@pytest.fixture(scope="session")
def traced_db(tmp_path_factory) -> Path:
    """A database holding run `q1`: tests/queries/workload/main.py under `selfopt-trace run`."""
    home = tmp_path_factory.mktemp("queries-home")
    done = subprocess.run([sys.executable, "-m", "selfopt_trace", "run", "--run-id", "q1", "--quiet", "--",
                           sys.executable, str(WORKLOAD / "main.py")],
                          env=clean_environ(SELFOPT_TRACE_HOME=str(home)), cwd=home, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines()[-1].startswith("done"), done.stdout
    return home / "traces.duckdb"


@pytest.fixture
def traced_store(traced_db: Path):
    with Store(traced_db, read_only=True) as opened:
        yield opened
