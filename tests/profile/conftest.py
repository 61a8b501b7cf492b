"""A real profiled run of tests/profile/workload, shared by the tests of this folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from selfopt_trace.watchers.profiler import find_pyspy, ptrace_problem
from tests.cli.conftest import Cli

WORKLOAD = Path(__file__).resolve().parent / "workload"
TARGETS = ["--target", "hotmod:phase_parent", "--target", "hotmod:phase_child"]
PYSPY = find_pyspy(dict(os.environ))
CANNOT_PROFILE = "py-spy is not installed" if PYSPY is None else ptrace_problem()
needs_pyspy = pytest.mark.skipif(CANNOT_PROFILE is not None, reason=f"py-spy cannot run here: {CANNOT_PROFILE}")


def profiled_run(cli: Cli, *options: str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
    """`selfopt-trace run --profile ... -- python workload/main.py`; the finished process."""
    return cli("run", "--profile", "--idle", "--run-id", options[0], *options[1:], *TARGETS, "--",
               sys.executable, str(WORKLOAD / "main.py"), *args, env=env)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("profiled"))
    done = profiled_run(cli, "p1")
    assert done.returncode == 3, done.stderr.decode()
    return cli
