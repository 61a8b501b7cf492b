"""Fixtures for CLI tests: run `python -m selfopt_trace ...` as a real process in a scratch home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[2]


def clean_environ(**extra: str) -> dict[str, str]:
    """The test runner's environment without any tracing context it may itself be running in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k not in ("TRACEPARENT", "TRACESTATE", "COLUMNS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra)
    return env


class Cli:
    """`selfopt-trace` in a scratch home: runs under `home/runs`, database `home/traces.duckdb`."""

    def __init__(self, tmp_path: Path):
        self.cwd = tmp_path
        self.home = tmp_path / "home"
        self.db = self.home / "traces.duckdb"
        self.runs_dir = self.home / "runs"

    def env(self, **extra: str) -> dict[str, str]:
        return clean_environ(SELFOPT_TRACE_HOME=str(self.home), **extra)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "selfopt_trace", *args]

    def __call__(self, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 120)
        kwargs.setdefault("cwd", self.cwd)
        return subprocess.run(self.argv(*args), env=env or self.env(), **kwargs)

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("cwd", self.cwd)
        kwargs.setdefault("env", self.env())
        return subprocess.Popen(self.argv(*args), **kwargs)

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.runs_dir.iterdir() if p.is_dir()) if self.runs_dir.exists() else []

    def run_json(self, run_id: str) -> dict:
        return json.loads((self.runs_dir / run_id / "run.json").read_text())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]
